import numpy as np
import pytest
import torch
import torchvision

from config import EmbedderConfig
from embedder.checkpoint import CheckpointError, create_embedder, load_checkpoint, provide_embedder, save_checkpoint
from embedder.inference.extract import embed_pil_images
from embedder.transforms import Preprocessing, build_transform
from embedder.weights import WeightsUnavailableError, imagenet_cache_file


def test_round_trip_gives_identical_embeddings(tmp_path, colour_catalog):
    model, origin = create_embedder(EmbedderConfig(weights="none", embedding_size=16))
    preprocessing = Preprocessing(image_size=32, resize="squash")
    digest = save_checkpoint(tmp_path / "e.pt", model, preprocessing, origin)
    loaded = load_checkpoint(tmp_path / "e.pt")
    assert loaded.sha256 == digest and loaded.preprocessing == preprocessing and loaded.origin == "none"
    images = [colour_catalog.open_image(i) for i in range(4)]
    transform = build_transform(preprocessing)
    before = embed_pil_images(model.eval(), images, transform)
    after = embed_pil_images(loaded.model, images, build_transform(loaded.preprocessing))
    np.testing.assert_array_equal(before, after)


def test_a_checkpoint_rebuilds_its_stem_and_one_from_before_stems_gets_imagenet_s(tmp_path):
    model, origin = create_embedder(EmbedderConfig(weights="none", embedding_size=8, stem="small"))
    save_checkpoint(tmp_path / "small.pt", model, Preprocessing(image_size=28, resize="squash"), origin)
    assert load_checkpoint(tmp_path / "small.pt").model.stem == "small"
    payload = torch.load(tmp_path / "small.pt", weights_only=False)
    old, _ = create_embedder(EmbedderConfig(weights="none", embedding_size=8))
    payload.update(model_args={"backbone": "resnet50", "embedding_size": 8}, state_dict=old.state_dict())
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").model.stem == "imagenet"


def test_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="x.pt"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="build-index"):
        load_checkpoint(tmp_path / "missing.pt")


def test_imagenet_weights_come_from_the_torch_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.resnet50(weights=None)
    cache = imagenet_cache_file()
    assert str(cache).startswith(str(tmp_path))
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    model, origin = create_embedder(EmbedderConfig(weights="imagenet", embedding_size=8))
    assert origin == "imagenet"
    assert torch.equal(model.trunk.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_offline_imagenet_says_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        create_embedder(EmbedderConfig(weights="imagenet"))
    message = str(error.value)
    assert str(imagenet_cache_file()) in message and "'none'" in message
    model, origin = create_embedder(EmbedderConfig(weights="auto", embedding_size=8))
    assert origin == "none"


def test_weights_file_path(tmp_path):
    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r50.pth")
    model, origin = create_embedder(EmbedderConfig(weights=str(tmp_path / "r50.pth"), embedding_size=8))
    assert origin.endswith("r50.pth")
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_embedder(EmbedderConfig(weights=str(tmp_path / "nope.pth")))


def test_provide_embedder_saves_then_reuses(tmp_path, colour_catalog):
    config = EmbedderConfig(weights="none", embedding_size=8, image_size=32)
    first = provide_embedder(config, colour_catalog, tmp_path, "cpu")
    assert (tmp_path / "embedder.pt").is_file()
    second = provide_embedder(config, colour_catalog, tmp_path, "cpu")
    assert second.sha256 == first.sha256
    # A configured Lookbook checkpoint wins over the artifacts' one.
    third = provide_embedder(EmbedderConfig(weights=str(tmp_path / "embedder.pt")), colour_catalog, tmp_path / "other", "cpu")
    assert third.sha256 == first.sha256
    # A different embedding size makes a new one.
    fourth = provide_embedder(EmbedderConfig(weights="none", embedding_size=4, image_size=32), colour_catalog, tmp_path, "cpu")
    assert fourth.model.embedding_size == 4 and fourth.sha256 != first.sha256
