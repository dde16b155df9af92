"""ONNX Runtime as the default CPU runtime: when "auto" picks it, and its export saved once beside the artifacts."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import embedder.inference.network as inference
import embedder.inference.onnx_runtime as onnx_runtime
from config import EmbedderConfig
from embedder.checkpoint import provide_embedder
from embedder.inference.extract import embed_catalog, embeddings_attributes
from embedder.inference.network import prepare_model, resolve_runtime
from embedder.inference.onnx_runtime import exported_model_path
from embedder.model import EmbeddingNet
from tests.conftest import ColourCatalog

SHA = "ab" * 32


def test_auto_runtime_is_onnx_runtime_for_float32_on_a_cpu(monkeypatch):
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)
    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    assert resolve_runtime("auto", "cpu", "fp32") == "onnxruntime"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("auto", "cpu", "bf16") == "torch"
    assert resolve_runtime("auto", "cpu", compile_model=True) == "torch"
    assert resolve_runtime("torch", "cpu") == "torch"
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    assert resolve_runtime("auto", "cpu") == "torch"  # bf16 is what "auto" precision takes there
    assert resolve_runtime("auto", "cpu", "fp32") == "onnxruntime"
    monkeypatch.setattr(inference, "onnx_runtime_installed", lambda: False)
    assert resolve_runtime("auto", "cpu", "fp32") == "torch"
    with pytest.raises(ValueError, match="embedder.runtime 'tvm' is not one of auto, torch, onnxruntime"):
        resolve_runtime("tvm", "cpu")


def embeddings(model, batch: torch.Tensor) -> np.ndarray:
    return model(batch).numpy()


def test_the_export_is_saved_once_then_loaded(tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    network = EmbeddingNet(embedding_size=8).eval()
    batch = torch.randn(3, 3, 32, 32)
    saved = exported_model_path(tmp_path, SHA, 32)
    stale = exported_model_path(tmp_path, "cd" * 32, 32)
    stale.write_bytes(b"an older checkpoint's export")
    first = prepare_model(network, "cpu", runtime="onnxruntime", image_size=32, saved_export=saved)
    assert saved.is_file() and not stale.exists()
    assert not list(tmp_path.glob("*.tmp"))

    def no_export(*_):
        raise AssertionError("exported again although the export was saved")

    monkeypatch.setattr(onnx_runtime, "_export", no_export)
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)  # where "auto" is ONNX Runtime
    second = prepare_model(network, "cpu", runtime="auto", image_size=32, saved_export=saved, spinning=False)
    np.testing.assert_array_equal(embeddings(first, batch), embeddings(second, batch))
    with torch.inference_mode():
        reference = network(batch).numpy()
    assert (embeddings(second, batch) * reference).sum(axis=1).min() >= 0.99999
    monkeypatch.undo()

    saved.write_bytes(b"not an onnx model")  # a damaged file is replaced, not served
    with caplog.at_level(logging.WARNING, logger="embedder.inference.onnx_runtime"):
        third = prepare_model(network, "cpu", runtime="onnxruntime", image_size=32, saved_export=saved)
    assert f"Could not load {saved}" in caplog.text
    np.testing.assert_allclose(embeddings(third, batch), embeddings(first, batch), atol=1e-6)
    assert saved.stat().st_size > 1000


def test_build_index_embeds_with_onnx_runtime_and_leaves_its_export(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)
    catalog = ColourCatalog(count=6)
    loaded = provide_embedder(EmbedderConfig(weights="none", embedding_size=8, image_size=32), catalog, tmp_path, "cpu")
    report = embed_catalog(catalog, loaded, tmp_path / "embeddings.h5", embeddings_attributes(catalog, loaded, "all"),
                           batch_size=4, workers=0)
    assert (report.runtime, report.precision, report.embedded) == ("onnxruntime", "fp32", 6)
    assert [path.name for path in tmp_path.glob("*.onnx")] == [exported_model_path(tmp_path, loaded.sha256, 32).name]


@pytest.mark.parametrize("spinning", [True, False])
def test_pool_threads_spin_within_runs_and_between_them_only_when_asked(tmp_path, spinning):
    network = EmbeddingNet(embedding_size=8).eval()
    model = prepare_model(network, "cpu", runtime="onnxruntime", image_size=32,
                          saved_export=tmp_path / "export.onnx", spinning=spinning)
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    if spinning:  # the setting is absent: ONNX Runtime's default, spinning on between runs
        with pytest.raises(RuntimeError, match="force_spinning_stop"):
            options.get_session_config_entry("session.force_spinning_stop")
    else:
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 8)
