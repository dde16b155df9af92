"""Inference precision: bfloat16 embeddings agree with float32 ones; precision choices; a compiled run's padding."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import embedder.inference.network as inference
from config import EmbedderConfig
from embedder.checkpoint import provide_embedder
from embedder.inference.extract import embed_batch, embed_catalog, embeddings_attributes
from embedder.inference.network import resolve_precision
from embedder.model import EmbeddingNet
from embedder.transforms import Preprocessing, build_transform
from tests.conftest import ColourCatalog


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's k most similar other rows, best first."""
    scores = x @ x.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_bfloat16_embeddings_agree_with_float32():
    torch.manual_seed(0)
    model = EmbeddingNet(embedding_size=16).eval()
    catalog = ColourCatalog(count=48)
    transform = build_transform(Preprocessing(image_size=32))
    batch = torch.stack([transform(catalog.open_image(row)) for row in range(len(catalog))])
    fp32 = embed_batch(model, batch, "cpu", "fp32")
    bf16 = embed_batch(model, batch, "cpu", "bf16")
    assert bf16.dtype == np.float32 and not np.array_equal(fp32, bf16)  # bfloat16 really ran
    assert (fp32 * bf16).sum(axis=1).min() >= 0.99  # cosine of each vector with its float32 self
    labels = np.array([item.label for item in catalog.items])
    near32, near16 = neighbours(fp32, 5), neighbours(bf16, 5)
    # kNN top-1 predicts the same classes; the neighbours themselves mostly agree (same-class items are
    # near-duplicates here, so their order among themselves can flip).
    assert np.array_equal(labels[near32[:, 0]], labels[near16[:, 0]])
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(near32, near16)])
    assert overlap >= 0.6


def test_auto_precision_follows_the_device(monkeypatch):
    assert resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="embedder.precision 'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="embedder.precision 'int8' is not one of"):
        resolve_precision("int8", "cpu")


def test_a_compiled_run_sees_only_full_batches(tmp_path, monkeypatch):
    """torch.compile would recompile for a short last batch, so embed_catalog pads it and drops the padding."""
    catalog = ColourCatalog(count=10)
    loaded = provide_embedder(EmbedderConfig(weights="none", embedding_size=8, image_size=32), catalog, tmp_path, "cpu")
    attributes = embeddings_attributes(catalog, loaded, "all")
    eager = embed_catalog(catalog, loaded, tmp_path / "eager.h5", attributes, batch_size=4, workers=0, precision="fp32",
                          runtime="torch")
    shapes = []

    def fake_compile(model, device, compile_model=False, *_, **__):
        prepared = model.eval().to(memory_format=torch.channels_last)

        def forward(batch):
            shapes.append(len(batch))
            return prepared(batch)

        return forward

    monkeypatch.setattr(inference, "prepare_model", fake_compile)
    padded = embed_catalog(catalog, loaded, tmp_path / "padded.h5", attributes, batch_size=4, workers=0,
                           precision="fp32", compile_model=True)
    assert shapes == [4, 4, 4] and padded.compiled and not eager.compiled
    assert (padded.embedded, eager.precision) == (10, "fp32")
    with h5py.File(tmp_path / "eager.h5") as a, h5py.File(tmp_path / "padded.h5") as b:
        np.testing.assert_allclose(a["embeddings"][()], b["embeddings"][()], atol=1e-5)


def test_folding_batch_norms_keeps_the_embeddings():
    torch.manual_seed(0)
    model = EmbeddingNet(embedding_size=16).eval()
    for module in model.modules():  # running statistics unlike the identity they start as
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    folded = inference.fold_batch_norms(model)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())  # the original is untouched
    batch = torch.randn(6, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(batch).numpy(), model(batch).numpy(), atol=1e-5)


def test_onnx_runtime_embeds_like_torch(tmp_path):
    catalog = ColourCatalog(count=10)
    loaded = provide_embedder(EmbedderConfig(weights="none", embedding_size=8, image_size=32), catalog, tmp_path, "cpu")
    attributes = embeddings_attributes(catalog, loaded, "all")
    # torch in float32 even where "auto" would take bfloat16 (CPUs with AVX512-BF16 or AMX); ONNX Runtime's
    # "auto" is float32 everywhere.
    reports = {runtime: embed_catalog(catalog, loaded, tmp_path / f"{runtime}.h5", attributes, batch_size=4,
                                      workers=0, precision=precision, runtime=runtime)
               for runtime, precision in (("torch", "fp32"), ("onnxruntime", "auto"))}
    assert reports["onnxruntime"].runtime == "onnxruntime" and reports["onnxruntime"].precision == "fp32"
    with h5py.File(tmp_path / "torch.h5") as a, h5py.File(tmp_path / "onnxruntime.h5") as b:
        assert (a["embeddings"][()] * b["embeddings"][()]).sum(axis=1).min() >= 0.99999


def test_onnx_runtime_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="embedder.precision 'bf16': the onnxruntime runtime computes in fp32"):
        resolve_precision("bf16", "cpu", "onnxruntime")
    with pytest.raises(ValueError, match="runs uncompiled on the CPU"):
        inference.prepare_model(EmbeddingNet(embedding_size=8), "cpu", compile_model=True, runtime="onnxruntime")


def test_inference_settings_are_checked():
    from config import ConfigError, load_config

    config = load_config(env={}, overrides={"embedder.precision": "bf16", "embedder.compile": "true",
                                            "embedder.runtime": "torch"})
    assert (config.embedder.precision, config.embedder.compile, config.embedder.runtime) == ("bf16", True, "torch")
    with pytest.raises(ConfigError, match="embedder.precision: 'fp8' is not one of"):
        load_config(env={}, overrides={"embedder.precision": "fp8"})
    with pytest.raises(ConfigError, match="embedder.runtime: 'tvm' is not one of"):
        load_config(env={}, overrides={"embedder.runtime": "tvm"})


def test_query_precisions_split_only_for_large_images_on_native_bf16_cpus(monkeypatch):
    from embedder.inference.network import QueryPrecisions, query_precisions

    monkeypatch.setattr(inference, "onnx_runtime_installed", lambda: True)
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    assert query_precisions("auto", "auto", "cpu", 32) == QueryPrecisions("fp32", "fp32")
    assert query_precisions("auto", "auto", "cpu", 224) == QueryPrecisions("fp32", "auto")
    assert query_precisions("auto", "auto", "cpu", 224).split
    # What the operator set, and GPUs, are left alone.
    assert query_precisions("bf16", "auto", "cpu", 224) == QueryPrecisions("bf16", "bf16")
    assert query_precisions("auto", "torch", "cpu", 224) == QueryPrecisions("auto", "auto")
    assert query_precisions("auto", "auto", "cuda", 224) == QueryPrecisions("auto", "auto")
    monkeypatch.setattr(inference, "native_bfloat16", lambda: False)
    assert not query_precisions("auto", "auto", "cpu", 224).split
