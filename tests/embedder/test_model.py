import pytest
import torch

from embedder.model import EmbeddingNet


def test_output_shape_and_unit_norm():
    model = EmbeddingNet("resnet50", embedding_size=16).eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_trunk_loads_torchvision_state_dict_and_rejects_others():
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    model = EmbeddingNet(embedding_size=8)
    model.load_trunk_state_dict(reference.state_dict())
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    try:
        model.load_trunk_state_dict({"not.a.key": torch.zeros(1)})
    except ValueError as error:
        assert "missing keys" in str(error)
    else:
        raise AssertionError("a foreign state dict was accepted")


def test_residual_blocks_start_as_identity_for_training_from_scratch():
    model = EmbeddingNet(embedding_size=8).eval()
    model.start_residual_blocks_as_identity()
    block = model.trunk.layer1[1]  # no downsample: the block is relu(x + branch(x))
    x = torch.randn(2, 256, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(block(x), torch.relu(x))
        # The network as a whole still maps different images to different embeddings.
        out = model(torch.randn(4, 3, 32, 32))
    assert torch.cdist(out, out)[~torch.eye(4, dtype=torch.bool)].min() > 0


def test_the_small_stem_keeps_a_small_image_s_detail_to_the_last_stage():
    import torchvision

    maps = {}
    for stem in ("imagenet", "small"):
        model = EmbeddingNet(embedding_size=8, stem=stem).eval()
        model.trunk.layer4.register_forward_hook(lambda module, args, out, stem=stem: maps.__setitem__(stem, out.shape))
        with torch.inference_mode():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    assert maps == {"imagenet": (2, 2048, 1, 1), "small": (2, 2048, 4, 4)}
    # ImageNet weights load into everything but the 3×3 first convolution.
    reference = torchvision.models.resnet50(weights=None)
    model = EmbeddingNet(embedding_size=8, stem="small")
    before = model.trunk.conv1.weight.clone()
    model.load_trunk_state_dict(reference.state_dict())
    assert torch.equal(model.trunk.conv1.weight, before)
    assert torch.equal(model.trunk.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert EmbeddingNet(**model.model_args()).trunk.conv1.kernel_size == (3, 3)


def test_the_stem_starts_along_the_patches_principal_directions():
    torch.manual_seed(0)
    # Gray images (three copies of one channel) of smoothed noise: 3×3 patches vary along 9 directions, unequally.
    gray = torch.nn.functional.avg_pool2d(torch.randn(40, 1, 20, 20), 3, stride=1)
    images = gray.expand(-1, 3, -1, -1)
    model = EmbeddingNet(embedding_size=8, stem="small")
    before = model.trunk.conv1.weight.clone()
    assert model.start_stem_from_patches(images) == 18  # ± the 9 directions; the other 46 filters stay random
    after = model.trunk.conv1.weight
    assert torch.equal(after[18:], before[18:])
    filters = after[:18].flatten(1)
    torch.testing.assert_close(filters.norm(dim=1), before[:18].flatten(1).norm(dim=1))  # the random init's scale
    unit = filters / filters.norm(dim=1, keepdim=True)
    torch.testing.assert_close(unit[:9], -unit[9:])
    unit = unit[:9]
    torch.testing.assert_close(unit @ unit.T, torch.eye(9), atol=1e-5, rtol=0)
    # Each filter's response varies at least as much as the next one's and any random direction's.
    patches = torch.nn.functional.unfold(images, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    spread = (patches @ unit.T).var(dim=0)
    assert (spread[:-1] >= spread[1:] - 1e-6).all()
    random_directions = torch.nn.functional.normalize(torch.randn(27, 200), dim=0)
    assert spread[0] >= (patches @ random_directions).var(dim=0).max()


def test_the_imagenet_stem_takes_as_many_directions_as_it_has_filter_pairs():
    torch.manual_seed(0)
    model = EmbeddingNet(embedding_size=8)  # 7×7 over 3 channels: 147 directions for 32 pairs of filters
    assert model.start_stem_from_patches(torch.randn(4, 3, 32, 32)) == 64
    with pytest.raises(ValueError, match="at least one image"):
        model.start_stem_from_patches(torch.zeros(0, 3, 32, 32))
