"""build-index on Ray Data (a local cluster of 2 CPUs) gives the one-process build's vectors, and resumes an
interrupted run with nothing missing and nothing embedded twice."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import ray
from click.testing import CliRunner

from embedder.catalogs.sample_deepfashion import write_sample_catalog
from embedder.inference.partial_embeddings import PartialEmbeddings
from manage import cli
from tests.conftest import sample_build_arguments

BATCH = 8


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return write_sample_catalog(tmp_path_factory.mktemp("catalog"), images_per_category=6, seed=4, truncated=1)


def build(catalog, artifacts, *more: str) -> dict:
    result = CliRunner().invoke(cli, [*sample_build_arguments(catalog, artifacts, BATCH), "build-index", *more])
    assert result.exit_code == 0, result.output
    return json.loads((artifacts / "build-report.json").read_text())["embeddings"]


def vectors(artifacts) -> tuple[list, np.ndarray]:
    with h5py.File(artifacts / "embeddings.h5") as handle:
        return list(handle["item_id"][:]), handle["embeddings"][:]


@pytest.mark.slow
def test_ray_embeds_what_one_process_does(local_cluster, catalog, tmp_path):
    local = build(catalog, tmp_path / "local")
    on_ray = build(catalog, tmp_path / "ray", "--engine", "ray")
    assert on_ray["runtime"].startswith("ray") and on_ray["images_embedded"] == local["images_embedded"] == 54
    assert [s["item_id"] for s in on_ray["skipped"]] == [s["item_id"] for s in local["skipped"]]
    (local_ids, local_vectors), (ray_ids, ray_vectors) = vectors(tmp_path / "local"), vectors(tmp_path / "ray")
    assert ray_ids == local_ids
    assert np.min(np.sum(local_vectors * ray_vectors, axis=1)) >= 0.9999


@pytest.mark.slow
def test_an_interrupted_ray_build_resumes_only_what_is_missing(local_cluster, catalog, tmp_path, monkeypatch):
    write, written = PartialEmbeddings.write, []

    def interrupted_after_three_batches(self, rows, *rest):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.extend([len(rows)])
        write(self, rows, *rest)

    monkeypatch.setattr(PartialEmbeddings, "write", interrupted_after_three_batches)
    result = CliRunner().invoke(cli, [*sample_build_arguments(catalog, tmp_path / "ray", BATCH), "build-index",
                                      "--engine", "ray"])
    assert result.exit_code != 0
    monkeypatch.setattr(PartialEmbeddings, "write", write)
    resumed = build(catalog, tmp_path / "ray", "--engine", "ray")
    assert resumed["resumed_rows"] == sum(written) == 3 * BATCH
    assert resumed["images_embedded"] == 54 - 3 * BATCH
    clean = build(catalog, tmp_path / "local")
    (clean_ids, clean_vectors), (ids, got) = vectors(tmp_path / "local"), vectors(tmp_path / "ray")
    assert ids == clean_ids and len(set(ids)) == len(ids) == clean["embedded"]
    assert np.min(np.sum(clean_vectors * got, axis=1)) >= 0.9999
