"""Convolutions over the smallest maps of a training network, computed as matrix products.

At 32 px, ResNet-50's last stages work on 2×2 and 1×1 maps, where oneDNN's backward pass is far off
its speed elsewhere (benchmarks/README.md, Training step). Two cases become products here:

- a single output pixel: it sees one window of the input, so it is the window times the taps that
  land on it (the 3×3s and 1×1s of layer4);
- an input with no more pixels than the kernel has taps (layer3's 3×3s over 2×2 maps): every output
  pixel is a sum over input pixels of one tap each, so the whole convolution is the input times one
  block matrix whose block (input pixel, output pixel) is the tap linking them, or zero. The padded
  convolution multiplies 9 taps for each of the 4 outputs, the block product only the 16 that touch
  pixels, as one large product.

The result is the same up to float rounding, and the weights keep their shape and state-dict keys, so
checkpoints do not change.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

# (input pixel, output pixel, tap row, tap column) for every input pixel an output pixel's window covers
Links = tuple[tuple[int, int, int, int], ...]


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes itself as a matrix product when its output is one pixel or its
    input has no more pixels than its kernel has taps; otherwise as ``nn.Conv2d`` does."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Conv2d's own argument name
        kind, plan = self.plan(input.shape[-2], input.shape[-1])
        if kind == "single pixel":
            return self.single_pixel_product(input, plan)
        if kind == "blocks":
            return self.block_product(input, plan)
        return super().forward(input)

    def product_kind(self, height: int, width: int) -> str | None:
        """"single pixel", "blocks", or None where oneDNN computes it (larger maps; grouped or dilated
        convolutions; padding other than zeros)."""
        return self.plan(height, width)[0]

    def plan(self, height: int, width: int) -> tuple[str | None, object]:
        """The product for an input size and what it needs (the covered window, or the pixel links and
        output size), worked out once per call."""
        if self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return None, None  # the shortcuts' arithmetic covers plain convolutions only
        window = self.single_pixel_window(height, width)
        if window is not None:
            return "single pixel", window
        links = pixel_links(height, width, self.kernel_size, self.stride, self.padding)
        _, out_height, out_width = links
        if height * width <= self.kernel_size[0] * self.kernel_size[1] and out_height > 0 and out_width > 0:
            return "blocks", links
        return None, None

    def single_pixel_window(self, height: int, width: int) -> tuple[int, int] | None:
        """Rows and columns of input a plain convolution's single output pixel covers, or None when the
        output is larger."""
        window = []
        for size, kernel, stride, padding in zip((height, width), self.kernel_size, self.stride, self.padding):
            if (size + 2 * padding - kernel) // stride + 1 != 1 or padding >= kernel:
                return None
            window.append(min(kernel - padding, size))
        return window[0], window[1]

    def single_pixel_product(self, input: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:  # noqa: A002
        rows, cols = window
        pad_top, pad_left = self.padding
        taps = self.weight[:, :, pad_top:pad_top + rows, pad_left:pad_left + cols]
        covered = input[:, :, :rows, :cols].reshape(input.shape[0], -1)
        output = F.linear(covered, taps.reshape(self.out_channels, -1), self.bias)
        return output.reshape(input.shape[0], self.out_channels, 1, 1)

    def block_product(self, input: torch.Tensor, plan: tuple[Links, int, int]) -> torch.Tensor:  # noqa: A002
        batch, _, height, width = input.shape
        links, out_height, out_width = plan
        # Pixel-major rows (a view when the input is channels_last, as in training).
        pixels = input.permute(0, 2, 3, 1).reshape(batch, -1)
        output = BlockProduct.apply(pixels, self.weight, links, height * width, out_height * out_width)
        output = output.view(batch, out_height, out_width, self.out_channels)
        if self.bias is not None:
            output = output + self.bias
        return output.permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=64)
def pixel_links(height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> tuple[Links, int, int]:
    """Which tap joins each input pixel to each output pixel whose window covers it; and the output size."""
    out_height = (height + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_width = (width + 2 * padding[1] - kernel[1]) // stride[1] + 1
    links = []
    for a in range(height):
        for b in range(width):
            for i in range(out_height):
                for j in range(out_width):
                    row, col = a - i * stride[0] + padding[0], b - j * stride[1] + padding[1]
                    if 0 <= row < kernel[0] and 0 <= col < kernel[1]:
                        links.append((a * width + b, i * out_width + j, row, col))
    return tuple(links), out_height, out_width


class BlockProduct(torch.autograd.Function):
    """(batch, input pixels × in channels) times the block matrix of taps; the weight's gradient sums
    each tap's blocks. Written out because indexing the weight into the matrix with autograd spends
    as long on the scatter of its backward as on the products."""

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, weight: torch.Tensor, links: Links, in_pixels: int,  # noqa: ANN001
                out_pixels: int) -> torch.Tensor:
        # Autocast does not reach into a Function's own products: pick its precision here, as it would.
        device = pixels.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else pixels.dtype
        out_channels, in_channels = weight.shape[:2]
        taps = weight.permute(2, 3, 1, 0)  # (kernel rows, kernel columns, in, out)
        blocks = pixels.new_zeros(in_pixels, in_channels, out_pixels, out_channels, dtype=dtype)
        for source, target, row, col in links:
            blocks[source, :, target, :] = taps[row, col]
        matrix = blocks.view(in_pixels * in_channels, out_pixels * out_channels)
        pixels_in_dtype = pixels.to(dtype)
        ctx.save_for_backward(pixels_in_dtype, matrix)
        ctx.links, ctx.blocks_shape, ctx.weight_shape = links, blocks.shape, weight.shape
        ctx.dtypes = pixels.dtype, weight.dtype
        return pixels_in_dtype @ matrix

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        pixels, matrix = ctx.saved_tensors
        grad = grad.to(matrix.dtype)
        pixels_dtype, weight_dtype = ctx.dtypes
        grad_pixels = (grad @ matrix.t()).to(pixels_dtype) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            blocks = (pixels.t() @ grad).view(ctx.blocks_shape)
            out_channels, in_channels, rows, cols = ctx.weight_shape
            taps = grad.new_zeros(rows, cols, in_channels, out_channels, dtype=weight_dtype)
            for source, target, row, col in ctx.links:
                taps[row, col] += blocks[source, :, target, :]
            grad_weight = taps.permute(3, 2, 0, 1)
        return grad_pixels, grad_weight, None, None, None


def use_small_map_convs(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` in ``model`` a SmallMapConv2d, in place (the modules and their
    parameters stay the same objects); returns how many changed.

    1×1 convolutions too: on layer4's 1×1 maps (and its stride-2 shortcut from 2×2) oneDNN's backward is
    as slow as for the 3×3s."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            # The subclass only adds forward paths, so the module can simply change class.
            module.__class__ = SmallMapConv2d
            swapped += 1
    return swapped
