"""The served query embedder: ONNX Runtime by default on a CPU without native bfloat16, loading build-index's
export; torch answers alike."""
from __future__ import annotations

import numpy as np

import embedder.inference.network as inference
from config import load_config
from embedder.catalogs import open_catalog
from embedder.inference.network import resolve_runtime
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


def test_lone_queries_of_large_images_run_in_fp32_and_batches_in_bf16_where_bf16_is_native(sample_artifacts,
                                                                                           monkeypatch):
    # The sample catalog's 32 px stand in for large images: there a lone query ran faster on ONNX Runtime in
    # fp32, a batch faster in bf16 (embedder.inference.network.FEW_QUERIES).
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    monkeypatch.setattr(inference, "SMALL_QUERY_IMAGES", 16)
    config = config_of(sample_artifacts, "auto", precision="auto")
    catalog = open_catalog(config.catalog, config.artifacts / "downloads")
    image = catalog.open_image(0)
    fp32 = SearchEngine.from_artifacts(config_of(sample_artifacts, "onnxruntime"))
    split = SearchEngine.from_artifacts(config)
    try:
        assert split.health()["runtime"] == "onnxruntime+torch"
        embedder = split.queries.embedder
        pixels = embedder.prepare(image)
        lone, pair = embedder.embed([pixels]), embedder.embed([pixels] * inference.FEW_QUERIES)
        np.testing.assert_allclose(lone[0], fp32.embed_image(image), atol=1e-5)  # the fp32 network
        assert not np.allclose(pair[0], lone[0], atol=1e-5)  # another network: bf16 rounds differently
        assert float(pair[0] @ lone[0]) >= 0.99 and np.array_equal(pair[0], pair[-1])
        assert split.search(image, 3).neighbours[0].item_id == fp32.search(image, 3).neighbours[0].item_id
    finally:
        fp32.close()
        split.close()
    # Without ONNX Runtime one torch network serves both, in bf16.
    monkeypatch.setattr(inference, "onnx_runtime_installed", lambda: False)
    engine = SearchEngine.from_artifacts(config)
    try:
        assert engine.health()["runtime"] == "torch"
    finally:
        engine.close()


def test_queries_are_mirror_averaged_when_the_index_was(sample_artifacts, tmp_path):
    from PIL import ImageOps

    from tests.search_app.live import build_sample_artifacts

    # The setting is build-index's; the app follows embeddings.h5 whatever its own configuration says.
    built = build_sample_artifacts(tmp_path, ("embedder.mirror_average=true",))
    assert built[-2:] == ["--set", "embedder.mirror_average=true"]
    config = config_of(built[:-2], "auto", "auto")
    assert not config.embedder.mirror_average
    catalog = open_catalog(config.catalog, config.artifacts / "downloads")
    image = catalog.open_image(1)
    mirror = ImageOps.mirror(image)
    engine = SearchEngine.from_artifacts(config)
    plain = SearchEngine.from_artifacts(config_of(sample_artifacts, "auto", "auto"))  # the same catalog, not averaged
    try:
        assert not np.allclose(plain.embed_image(mirror), plain.embed_image(image), atol=1e-3)
        np.testing.assert_allclose(engine.embed_image(mirror), engine.embed_image(image), atol=1e-5)
        found = engine.search(mirror, 3).neighbours[0]
        assert found.item_id == catalog.items[1].item_id and found.similarity >= 0.9999
    finally:
        engine.close()
        plain.close()
