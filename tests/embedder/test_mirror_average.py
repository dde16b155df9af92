"""embedder.mirror_average: each vector is the mean direction of an image's and its mirror image's, in torch
and ONNX Runtime alike, recorded in embeddings.h5 so that a changed setting embeds the catalog again."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import embedder.inference.network as inference
from config import EmbedderConfig
from embedder.checkpoint import provide_embedder
from embedder.inference.extract import embed_catalog, embeddings_attributes
from embedder.inference.network import prepare_model
from embedder.inference.onnx_runtime import exported_model_path
from embedder.model import EmbeddingNet
from indexer.embeddings_file import read_embeddings
from tests.conftest import ColourCatalog


@pytest.fixture
def network_and_batch() -> tuple[EmbeddingNet, torch.Tensor]:
    torch.manual_seed(0)
    return EmbeddingNet(embedding_size=16).eval(), torch.randn(5, 3, 32, 32)


def vectors(model, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(batch).float().numpy()


def test_mirror_averaged_vectors_do_not_depend_on_which_way_the_image_faces(network_and_batch):
    network, batch = network_and_batch
    plain = prepare_model(network, "cpu", runtime="torch", image_size=32)
    mirrored = prepare_model(network, "cpu", runtime="torch", image_size=32, mirror_average=True)
    one_way, other_way = vectors(mirrored, batch), vectors(mirrored, batch.flip(-1))
    np.testing.assert_allclose(one_way, other_way, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one_way, axis=1), 1.0, atol=1e-5)
    # The plain network does depend on it, and the average is the mean direction of its two vectors.
    assert np.abs(vectors(plain, batch) - vectors(plain, batch.flip(-1))).max() > 1e-2
    mean = vectors(plain, batch) + vectors(plain, batch.flip(-1))
    np.testing.assert_allclose(one_way, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)


def test_onnx_runtime_exports_the_mirror_average_under_its_own_name(network_and_batch, tmp_path):
    pytest.importorskip("onnxruntime")
    network, batch = network_and_batch
    saved = exported_model_path(tmp_path, "ab" * 32, 32, mirror_average=True)
    assert saved.name.endswith("-32px-mirror.onnx") and saved != exported_model_path(tmp_path, "ab" * 32, 32)
    onnx = prepare_model(network, "cpu", runtime="onnxruntime", image_size=32, saved_export=saved,
                         mirror_average=True)
    torch_side = prepare_model(network, "cpu", runtime="torch", image_size=32, mirror_average=True)
    assert saved.is_file()
    assert (vectors(onnx, batch) * vectors(torch_side, batch)).sum(axis=1).min() >= 0.99999
    np.testing.assert_allclose(vectors(onnx, batch), vectors(onnx, batch.flip(-1)), atol=1e-5)


def test_the_catalog_file_records_it_and_a_changed_setting_embeds_again(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)
    catalog = ColourCatalog(count=6)
    loaded = provide_embedder(EmbedderConfig(weights="none", embedding_size=8, image_size=32), catalog, tmp_path, "cpu")
    output = tmp_path / "embeddings.h5"
    attributes = embeddings_attributes(catalog, loaded, "all", mirror_average=True)
    # The attributes to store decide: the file can never say otherwise than what was done.
    embed_catalog(catalog, loaded, output, attributes, batch_size=4, workers=0, runtime="torch", precision="fp32")
    stored = read_embeddings(output)
    assert stored.mirror_average
    mirrored = prepare_model(loaded.model, "cpu", runtime="torch", image_size=32, mirror_average=True)
    from embedder.transforms import build_transform

    transform = build_transform(loaded.preprocessing)
    batch = torch.stack([transform(catalog.open_image(row)) for row in range(len(catalog))])
    np.testing.assert_allclose(stored.embeddings, vectors(mirrored, batch), atol=1e-5)

    from embedder.inference.catalog_diff import diff_catalog

    def current(attributes: dict) -> bool:
        diff = diff_catalog(output, attributes, catalog.items, catalog.fingerprints())
        return diff is not None and diff.current

    assert current(attributes)
    assert not current(embeddings_attributes(catalog, loaded, "all"))
    with h5py.File(output, "a") as handle:  # a file from before the option: made without it
        del handle.attrs["mirror_average"]
    assert not read_embeddings(output).mirror_average
    assert current(embeddings_attributes(catalog, loaded, "all"))
