"""The served query embedder: ONNX Runtime by default on a CPU without native bfloat16, loading build-index's
export; torch answers alike."""
from __future__ import annotations

import numpy as np

from config import load_config
from embedder.catalogs import open_catalog
import embedder.inference as inference
from embedder.inference import resolve_runtime
from search_app.engine import SearchEngine


def config_of(args: list[str], runtime: str, precision: str = "fp32"):
    """The Config the CLI arguments of sample_artifacts name, with embedder.runtime set."""
    named = dict(zip(args[0::2], args[1::2]))
    overrides = dict(setting.split("=", 1) for flag, setting in zip(args[0::2], args[1::2]) if flag == "--set")
    overrides.update({"catalog.kind": named["--catalog"], "catalog.root": named["--root"],
                      "embedder.weights": named["--weights"], "artifacts_dir": named["--artifacts"],
                      "embedder.runtime": runtime, "embedder.precision": precision})
    return load_config(env={}, overrides=overrides)


def test_onnx_runtime_and_torch_serve_the_same_neighbours(sample_artifacts):
    # build-index's "auto" runtime: ONNX Runtime, or torch in bfloat16 on CPUs that compute it natively.
    built_with = resolve_runtime("auto", "cpu")
    configs = {runtime: config_of(sample_artifacts, runtime) for runtime in ("onnxruntime", "torch")}
    artifacts = configs["onnxruntime"].artifacts
    exports = sorted(artifacts.glob("embedder-*.onnx"))
    # build-index left its export when it used ONNX Runtime (else a web app of another test may have made it);
    # the engine loads it rather than exporting again.
    assert len(exports) == 1 if built_with == "onnxruntime" else len(exports) <= 1
    catalog = open_catalog(configs["onnxruntime"].catalog, artifacts / "downloads")
    queries = [catalog.open_image(row) for row in (0, len(catalog) // 2, len(catalog) - 1)]
    engines = {runtime: SearchEngine.from_artifacts(config) for runtime, config in configs.items()}
    try:
        assert engines["onnxruntime"].health()["runtime"] == "onnxruntime"
        assert engines["torch"].health()["runtime"] == "torch"
        for image in queries:
            onnx, torch = (engines[runtime].search(image, 6) for runtime in ("onnxruntime", "torch"))
            assert onnx.neighbours[0].item_id == torch.neighbours[0].item_id
            np.testing.assert_allclose([n.similarity for n in onnx.neighbours],
                                       [n.similarity for n in torch.neighbours], atol=1e-4)
            assert [p.category for p in onnx.predictions[:1]] == [p.category for p in torch.predictions[:1]]
    finally:
        for engine in engines.values():
            engine.close()
    assert len(sorted(artifacts.glob("embedder-*.onnx"))) == 1
    if exports:
        assert sorted(artifacts.glob("embedder-*.onnx")) == exports


def test_the_web_app_embeds_small_images_with_onnx_runtime_where_bf16_is_native(sample_artifacts, monkeypatch):
    # There "auto" is torch in bf16 (build-index's batches gain), but a query of 32 px took 6x longer.
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    engine = SearchEngine.from_artifacts(config_of(sample_artifacts, "auto", precision="auto"))
    try:
        assert engine.health()["runtime"] == "onnxruntime"
    finally:
        engine.close()
    engine = SearchEngine.from_artifacts(config_of(sample_artifacts, "auto", precision="bf16"))
    try:
        assert engine.health()["runtime"] == "torch"  # bf16 asked for
    finally:
        engine.close()
