"""The small-map products compute what nn.Conv2d computes, gradients included, and changes nothing else."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from embedder.model import EmbeddingNet
from embedder.training.small_map_convs import SmallMapConv2d, use_small_map_convs


def _pair(conv_args: dict, input_shape: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    plain = nn.Conv2d(**conv_args)
    fast = nn.Conv2d(**conv_args)
    fast.load_state_dict(plain.state_dict())
    use_small_map_convs(fast)
    x = torch.randn(input_shape)
    return plain, fast, x


@pytest.mark.parametrize(("conv_args", "input_shape", "kind"), [
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1), (5, 8, 1, 1), "single pixel"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=1), (5, 8, 2, 2), "single pixel"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=1, bias=False), (5, 8, 2, 1), "single pixel"),
    (dict(in_channels=4, out_channels=6, kernel_size=7, stride=2, padding=3), (3, 4, 2, 2), "single pixel"),
    (dict(in_channels=4, out_channels=6, kernel_size=7, stride=2, padding=3), (3, 4, 3, 3), "blocks"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1), (5, 8, 2, 2), "blocks"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1, bias=False), (5, 8, 3, 3), "blocks"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=1), (5, 8, 3, 3), "blocks"),
    (dict(in_channels=8, out_channels=6, kernel_size=(3, 5), padding=(1, 2)), (5, 8, 2, 3), "blocks"),
    (dict(in_channels=8, out_channels=6, kernel_size=3), (5, 8, 3, 3), "single pixel"),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1), (5, 8, 4, 4), None),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1, groups=2), (5, 8, 1, 1), None),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=2, dilation=2), (5, 8, 1, 1), None),
    (dict(in_channels=8, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"), (5, 8, 2, 2), None),
    (dict(in_channels=8, out_channels=6, kernel_size=1), (5, 8, 1, 1), "single pixel"),
    (dict(in_channels=8, out_channels=6, kernel_size=1, stride=2, bias=False), (5, 8, 2, 2), "single pixel"),
    (dict(in_channels=8, out_channels=6, kernel_size=1), (5, 8, 2, 2), None),
])
def test_same_output_and_gradients_as_a_plain_convolution(conv_args, input_shape, kind):
    plain, fast, x = _pair(conv_args, input_shape)
    assert fast.product_kind(*input_shape[-2:]) == kind
    xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yp, yf = plain(xp), fast(xf)
    assert yf.shape == yp.shape
    torch.testing.assert_close(yf, yp, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(yp)
    yp.backward(upstream)
    yf.backward(upstream)
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
    if plain.bias is not None:
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_inputs_and_weights_as_in_training(stride):
    plain, fast, x = _pair(dict(in_channels=16, out_channels=4, kernel_size=3, stride=stride, padding=1), (3, 16, 2, 2))
    plain.to(memory_format=torch.channels_last)
    fast.to(memory_format=torch.channels_last)
    xp = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    xf = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    yp, yf = plain(xp), fast(xf)
    torch.testing.assert_close(yf, yp, rtol=1e-5, atol=1e-5)
    yp.square().sum().backward()
    yf.square().sum().backward()
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_size", [1, 2])
def test_bfloat16_autocast_keeps_the_weight_gradient_in_float32(input_size):
    plain, fast, x = _pair(dict(in_channels=8, out_channels=6, kernel_size=3, padding=1, bias=False),
                           (4, 8, input_size, input_size))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, output = plain(x), fast(x)
    assert output.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected.float(), rtol=0.05, atol=0.05)
    output.float().sum().backward()
    assert fast.weight.grad.dtype == torch.float32
    expected.float().sum().backward()
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=0.05, atol=0.1)


def test_the_embedding_network_keeps_its_parameters_keys_and_outputs():
    torch.manual_seed(0)
    model = EmbeddingNet().eval()
    parameters = {name: id(p) for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    swapped = use_small_map_convs(model)
    assert swapped == 53  # the 7×7 stem, the 16 bottlenecks' three convolutions each, the 4 shortcuts
    assert sum(isinstance(m, SmallMapConv2d) for m in model.modules()) == swapped
    assert {name: id(p) for name, p in model.named_parameters()} == parameters
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
