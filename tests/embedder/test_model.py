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
