"""The CUDA paths: mixed-precision embedding, training steps and a whole run, build-index's embedding loop.

Skipped without a CUDA GPU (CI has none); `python -m benchmarks.bench_gpu` runs them on one.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import embedder.training.loop as training
from config import Config, EmbedderConfig, TrainConfig
from embedder.checkpoint import load_checkpoint, provide_embedder
from embedder.inference.extract import embed_batch, embed_catalog, embeddings_attributes
from embedder.inference.network import prepare_model, resolve_precision
from embedder.model import EmbeddingNet
from embedder.transforms import Preprocessing, build_transform
from indexer.evaluation.protocol import knn_top1
from tests.conftest import ColourCatalog

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def colour_batch(count: int = 48, size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    catalog = ColourCatalog(count=count)
    transform = build_transform(Preprocessing(image_size=size))
    batch = torch.stack([transform(catalog.open_image(row)) for row in range(count)])
    return batch, np.array([item.label for item in catalog.items])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cuda_agrees_with_float32_on_the_cpu(precision):
    torch.manual_seed(0)
    model = EmbeddingNet(embedding_size=32).eval()
    batch, labels = colour_batch()
    reference = embed_batch(model, batch, "cpu", "fp32")
    network = prepare_model(model, "cuda")
    assert next(network.parameters()).is_cuda
    mixed = embed_batch(network, batch, "cuda", precision)
    assert mixed.dtype == np.float32 and not np.array_equal(mixed, reference)
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 1, atol=1e-3)
    assert (reference * mixed).sum(axis=1).min() >= 0.99
    scores = mixed @ mixed.T
    np.fill_diagonal(scores, -np.inf)
    assert np.array_equal(labels[scores.argmax(axis=1)], labels)  # each image's nearest is its own colour


def test_auto_precision_on_cuda_is_float16():
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cuda:0") == "fp16"


def test_training_steps_on_cuda_in_bfloat16_lower_the_loss():
    torch.manual_seed(0)
    config = Config(embedder=EmbedderConfig(weights="none", embedding_size=16, image_size=32),
                    train=TrainConfig(classes_per_batch=3, images_per_class=4, lr=1e-3))
    trainee = training.build_trainee(config, 3, "cuda")
    assert all(type(m) is torch.nn.Conv2d for m in trainee.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert trainee.optimizer.defaults["fused"] is True
    batch, labels = colour_batch(12, 32)
    batch = batch.cuda().contiguous(memory_format=torch.channels_last)
    losses = [training.train_step(trainee, batch, torch.from_numpy(labels).cuda(), 1.0, amp=True)["loss"]
              for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


def test_a_training_run_on_cuda_with_loader_workers_keeps_its_best_checkpoint(tmp_path):
    config = Config(
        embedder=EmbedderConfig(weights="none", embedding_size=16, image_size=32, batch_size=32, device="cuda",
                                workers=2),
        train=TrainConfig(epochs=2, classes_per_batch=3, images_per_class=4, holdout_per_class=2, warmup_epochs=0.0),
        artifacts_dir=tmp_path,
    )
    report = training.train(config, knn_top1, catalog=ColourCatalog(count=48))
    assert report.stopped_because == "epochs done" and report.steps > 0 and report.best_top1 > 0.5
    assert load_checkpoint(tmp_path / "embedder.pt").model.embedding_size == 16


def test_build_index_embedding_on_cuda_matches_the_cpu(tmp_path):
    catalog = ColourCatalog(count=40, broken=(5,))
    config = EmbedderConfig(weights="none", embedding_size=16, image_size=64)
    embedder = provide_embedder(config, catalog, tmp_path, "cuda")
    stored = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "auto")):
        output = tmp_path / f"{device}.h5"
        report = embed_catalog(catalog, embedder, output, embeddings_attributes(catalog, embedder, "all"),
                               batch_size=16, workers=2, device=device, precision=precision, runtime="torch")
        assert (report.embedded, len(report.skipped), report.device) == (39, 1, device)
        with h5py.File(output) as handle:
            stored[device] = (handle["item_id"][:], handle["embeddings"][:])
    assert report.precision == "fp16"
    np.testing.assert_array_equal(stored["cpu"][0], stored["cuda"][0])
    assert (stored["cpu"][1] * stored["cuda"][1]).sum(axis=1).min() >= 0.99
