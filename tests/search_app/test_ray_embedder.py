"""Query embedding on Ray Serve (a local cluster of 2 CPUs): concurrent queries form batches and get the
in-process embedding's vectors; a replica that never answers, or none at all, is a JSON 503 within the deadline."""
from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from PIL import Image
from ray import serve

from config import load_config
from embedder.catalogs.sample_deepfashion import write_sample_catalog
from embedder.inference.ray_serve import APP_NAME, deploy_embedder
from indexer.embeddings_file import read_embeddings
from manage import cli
from search_app import create_app
from tests.conftest import sample_build_arguments

DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ray-serve")
    root = write_sample_catalog(directory / "catalog", images_per_category=3, seed=6)
    assert CliRunner().invoke(cli, [*sample_build_arguments(root, directory / "artifacts"), "build-index"]).exit_code == 0
    overrides = {"catalog.kind": "deepfashion", "catalog.root": str(root), "catalog.subset": "all",
                 "embedder.weights": "none", "artifacts_dir": str(directory / "artifacts"), "embedder.image_size": 32,
                 "embedder.embedding_size": 16, "app.reload_check_s": 0, "app.search_deadline_s": DEADLINE_S}
    local = load_config(env={}, overrides=overrides)
    stored = read_embeddings(local.paths.embeddings)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        handle = deploy_embedder(local.paths.checkpoint, stored.checkpoint_sha256, runtime=local.embedder.runtime,
                                 precision=local.embedder.precision, artifacts=local.artifacts,
                                 mirror_average=stored.mirror_average, max_batch=16, batch_wait_s=0.2)
        on_ray = load_config(env={}, overrides={**overrides, "app.embedder": "ray"})
        yield create_app(local), create_app(on_ray), handle
    finally:
        serve.shutdown()
        ray.shutdown()


def photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8))


def test_concurrent_queries_are_batched_and_embedded_as_in_process(apps):
    local, on_ray, handle = apps
    ray_engine, local_engine = (app.extensions["lookbook"].current for app in (on_ray, local))
    assert on_ray.test_client().get("/healthz").get_json()["runtime"] == "ray serve"
    with ThreadPoolExecutor(16) as pool:  # each a call of its own, as from 16 web servers
        vectors = list(pool.map(lambda seed: ray_engine.embed_image(photo(seed)), range(16)))
    expected = [local_engine.embed_image(photo(seed)) for seed in range(16)]
    assert min(float(np.dot(got, want)) for got, want in zip(vectors, expected)) >= 0.9999
    assert handle.stats.remote().result(timeout_s=30)["largest_batch"] > 1

    def search(seed: int) -> int:
        buffer = io.BytesIO()
        photo(seed).save(buffer, "PNG")
        return on_ray.test_client().post("/api/search", data=buffer.getvalue(), content_type="image/png").status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(search, range(16))) == {200}


@serve.deployment
class NeverAnswers:
    async def __call__(self, pixels):
        await asyncio.sleep(3600)


def test_a_replica_that_never_answers_is_a_503_within_the_deadline(apps):
    _, on_ray, _ = apps
    serve.run(NeverAnswers.bind(), name=APP_NAME, route_prefix=None)  # the replica hangs from now on
    client = on_ray.test_client()
    buffer = io.BytesIO()
    photo(1).save(buffer, "PNG")
    started = time.monotonic()
    response = client.post("/api/search", data=buffer.getvalue(), content_type="image/png")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "not answering" in response.get_json()["error"]
    assert time.monotonic() - started < DEADLINE_S + 2
    assert client.get("/healthz").status_code == 200


def test_a_deployment_without_replicas_is_a_503(apps):
    _, on_ray, _ = apps
    serve.delete(APP_NAME)  # as while an operator redeploys: the router has no replica to assign
    buffer = io.BytesIO()
    photo(2).save(buffer, "PNG")
    response = on_ray.test_client().post("/api/search", data=buffer.getvalue(), content_type="image/png")
    assert response.status_code == 503 and "not answering" in response.get_json()["error"]
