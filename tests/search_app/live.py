"""A real server for the end-to-end tests: sample-catalog artifacts built by the CLI, `serve --prod` in a subprocess."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from embedder.catalogs.sample_deepfashion import write_sample_catalog
from manage import cli
from tests.conftest import sample_build_arguments


def build_sample_artifacts(directory: Path, settings: tuple[str, ...] = ()) -> list[str]:
    """A small DeepFashion-layout catalog embedded (random weights, 32 px) and indexed; the CLI arguments naming it.
    ``settings``: more SECTION.KEY=VALUE settings for build-index (and whoever uses the arguments)."""
    root = write_sample_catalog(directory / "catalog", images_per_category=3, seed=5)
    args = sample_build_arguments(root, directory / "artifacts")
    args += [part for setting in settings for part in ("--set", setting)]
    result = CliRunner().invoke(cli, args + ["build-index"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return args
