"""Lookbook's command line: each command loads the configuration once and calls the library."""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from pathlib import Path

import click

from config import Config, LookbookError, load_config

log = logging.getLogger("lookbook")

# Errors meant for people: shown as one clear message, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (LookbookError, FileNotFoundError)


def command(function):
    """Turn the packages' errors for people into a clean message and exit status 1."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from error

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="LOOKBOOK_CONFIG",
              help="TOML configuration file (also LOOKBOOK_CONFIG).")
@click.option("--catalog", "catalog_kind", help="Catalog kind: fashion-mnist, deepfashion or fashion-product-images.")
@click.option("--root", help="Catalog root directory.")
@click.option("--weights", help="imagenet, auto, none, or a checkpoint / weights file.")
@click.option("--artifacts", help="Artifacts directory (default var/<catalog>/).")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE", help="Any setting; repeatable.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx, config_file, catalog_kind, root, weights, artifacts, settings, verbose):
    """Lookbook: visual similarity search for fashion catalogs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    overrides = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise click.BadParameter(f"{setting!r} is not SECTION.KEY=VALUE", param_hint="--set")
        overrides[key.strip()] = value.strip()
    for key, value in (("catalog.kind", catalog_kind), ("catalog.root", root),
                       ("embedder.weights", weights), ("artifacts_dir", artifacts)):
        if value is not None:
            overrides[key] = value
    try:
        ctx.obj = load_config(config_file, os.environ, overrides)
    except LookbookError as error:
        raise click.ClickException(str(error)) from error


@cli.command("prepare-catalog")
@click.pass_obj
@command
def prepare_catalog(config: Config):
    """Find (or download) the configured catalog and say what it holds."""
    from embedder.catalogs import open_catalog

    catalog = open_catalog(config.catalog, config.paths.downloads)
    splits = {split: sum(item.split == split for item in catalog.items) for split in ("train", "val", "test")}
    click.echo(
        f"{catalog.kind} catalog at {catalog.root}: {len(catalog)} items, {len(catalog.class_names)} classes, "
        + ", ".join(f"{split} {count}" for split, count in splits.items() if count)
    )


@cli.command("make-sample-catalog")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--per-category", default=12, show_default=True, help="Images (products) per category.")
@click.option("--seed", default=0, show_default=True)
@click.option("--layout", type=click.Choice(["deepfashion", "fashion-product-images"]), default="deepfashion",
              show_default=True, help="Whose file layout to write.")
@command
def make_sample_catalog(root, per_category, seed, layout):
    """Write a small catalog of drawn garments in a real catalog's layout, to try Lookbook without the real data."""
    if layout == "fashion-product-images":
        from embedder.catalogs.sample_products import write_sample_products as write
    else:
        from embedder.catalogs.sample_deepfashion import write_sample_catalog as write

    path = write(Path(root), per_category, seed=seed)
    click.echo(f"Wrote a sample {layout}-layout catalog to {path}; use --catalog {layout} --root {path}")


@cli.command()
@click.option("--restart", is_flag=True, help="Start over instead of resuming an interrupted run.")
@click.option("--time-budget", type=int, default=None, help="Seconds of training (default train.time_budget).")
@click.option("--epochs", type=int, default=None, help="Epochs (default train.epochs).")
@click.pass_obj
@command
def train(config: Config, restart: bool, time_budget: int | None, epochs: int | None):
    """Fine-tune the embedder with a triplet loss; the best checkpoint becomes <artifacts>/embedder.pt."""
    import dataclasses

    from embedder.training.loop import train as train_embedder
    from indexer.evaluation.protocol import knn_top1

    changes = {key: value for key, value in (("time_budget", time_budget), ("epochs", epochs)) if value is not None}
    if changes:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    report = train_embedder(config, knn_accuracy=knn_top1, restart=restart)
    click.echo(
        f"Trained {report.steps} steps ({report.epochs:.2f} epochs) in {report.seconds:.0f} s at "
        f"{report.images_per_second:.0f} images/s; stopped: {report.stopped_because}.\n"
        f"Best validation kNN top-1 {report.best_top1:.4f} at step {report.best_step}, saved to {report.checkpoint}\n"
        f"Curve and metrics: {config.artifacts / 'train'}"
    )


@cli.command("average-weights")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "output", type=click.Path(dir_okay=False), default=None,
              help="Where the soup goes (default <artifacts>/embedder.pt, which build-index and the app use).")
@click.option("--replace", is_flag=True, help="Overwrite --out even when it is not one of the checkpoints averaged.")
@click.pass_obj
@command
def average_weights(config: Config, checkpoints: tuple[str, ...], output: str | None, replace: bool):
    """Average trained checkpoints' weights (a weight soup), recalibrate BatchNorm on the catalog, validate."""
    from embedder.training.soup import check_output, make_soup
    from indexer.evaluation.protocol import knn_top1

    paths = [Path(path) for path in checkpoints]
    target = Path(output) if output else config.paths.checkpoint
    check_output(target, paths, replace)
    report = make_soup(config, paths, target, knn_accuracy=knn_top1)
    for path, top1 in report.ingredients_val_top1.items():
        click.echo(f"{path}: validation kNN top-1 {top1:.4f}")
    click.echo(f"Weight soup of {len(paths)} checkpoints (BatchNorm recalibrated on {report.recalibration_images} "
               f"training images): validation kNN top-1 {report.val_top1:.4f}, saved to {report.output}")


@cli.command("build-index")
@click.option("--force", is_flag=True, help="Re-embed and re-index even when the artifacts are current.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Embed in this process, or on Ray Data (pip install -e '.[cluster]').")
@click.option("--address", default=None, metavar="ADDRESS",
              help="With --engine ray: the Ray cluster to use ('auto': this machine's; default: start a local one).")
@click.pass_obj
@command
def build_index(config: Config, force: bool, engine: str, address: str | None):
    """Embed every catalog image into embeddings.h5 and build the FAISS index over them."""
    from embedder.inference.build import build_embeddings, build_lock
    from indexer.index import build_index_file

    with build_lock(config.artifacts):
        extraction = build_embeddings(config, force=force, engine=engine, address=address)
        # Milvus first: index.json, which running servers watch for a new build, is written last.
        synced = {"milvus": _as_dict(_sync_milvus(config))} if config.index.backend == "milvus" else {}
        index = build_index_file(config.paths.embeddings, config.paths.index, config.index, force=force)
        report = {"embeddings": _as_dict(extraction), "index": _as_dict(index), **synced}
        _write_json(config.paths.build_report, report)
    click.echo(_build_summary(extraction, index))
    if "milvus" in report:
        sync = report["milvus"]
        click.echo(f"  milvus          {sync['collection']}: {sync['rows']} items ({sync['added']} added, "
                   f"{sync['updated']} updated, {sync['removed']} removed), {sync['seconds']:.1f} s")


def _sync_milvus(config: Config):
    """Make the catalog's Milvus collection hold what embeddings.h5 holds (index.backend = "milvus")."""
    from indexer.embeddings_file import read_embeddings
    from indexer.vector_store import sync_milvus

    stored = read_embeddings(config.paths.embeddings)
    return sync_milvus(config.index, config.artifacts, stored.catalog_kind, stored.item_id, stored.embeddings,
                       stored.label, config.index.metric)


@cli.command()
@click.option("--k", type=int, default=None, help="Neighbours in the vote and in P@k / R@k (default index.k).")
@click.option("--sweep", default=None, metavar="K,K,...",
              help="k values of the accuracy-versus-k curve (default evaluate.k_sweep; '' for none).")
@click.option("--leave-one-out", is_flag=True, help="Every item queries all the others (evaluate.leave_one_out).")
@click.option("--compare", "compare_with", type=click.Path(), default=None, metavar="REPORT",
              help="An earlier report (its directory or report.json): print and write per-class differences.")
@click.pass_obj
@command
def evaluate(config: Config, k: int | None, sweep: str | None, leave_one_out: bool, compare_with: str | None):
    """kNN accuracy and retrieval metrics per class; a report with pictures in <artifacts>/reports/<time>/."""
    import dataclasses

    from indexer.embeddings_file import read_embeddings
    from indexer.report.baselines import read_baselines
    from indexer.report.compare import comparison_table
    from indexer.report.run import write_knn_report
    from indexer.report.text import evaluation_table, write_evaluation

    changes = {"leave_one_out": True} if leave_one_out else {}
    if sweep is not None:
        try:
            changes["k_sweep"] = tuple(int(part) for part in sweep.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"{sweep!r} is not a comma-separated list of integers", param_hint="--sweep")
    config = dataclasses.replace(config, evaluate=dataclasses.replace(config.evaluate, **changes))
    vectors = read_embeddings(config.paths.embeddings)
    report = write_knn_report(vectors, config.evaluate, config.index, config.index.k if k is None else k,
                              config.evaluate.reports_dir or config.paths.reports,
                              load_image=_item_image_loader(config, vectors), compare_with=compare_with,
                              baselines=read_baselines(config.paths.baselines))
    json_path, markdown_path = write_evaluation(report.evaluation, config.artifacts)
    click.echo(evaluation_table(report.evaluation))
    if report.comparison is not None:
        click.echo("\n" + comparison_table(report.comparison))
    click.echo(f"Wrote the report to {report.directory} (report.html, report.md, report.json, classes.csv, "
               f"{sum(path.suffix == '.png' for path in report.files)} pictures) and {json_path}, {markdown_path}")
    if vectors.has_titles:
        _evaluate_captions(config, vectors)


@cli.command("train-captioner")
@click.option("--epochs", type=int, default=None, help="Epochs (default captions.epochs).")
@click.option("--time-budget", type=int, default=None, help="Seconds of training (default captions.time_budget).")
@click.pass_obj
@command
def train_captioner(config: Config, epochs: int | None, time_budget: int | None):
    """Train the GRU annotator on the titles and stored vectors of embeddings.h5; saves <artifacts>/captioner.pt."""
    import dataclasses

    from embedder.captioner.training import CaptionCorpus
    from embedder.captioner.training import train_captioner as train
    from embedder.inference.extract import resolve_device
    from indexer.embeddings_file import read_embeddings

    changes = {key: value for key, value in (("epochs", epochs), ("time_budget", time_budget)) if value is not None}
    if changes:
        config = dataclasses.replace(config, captions=dataclasses.replace(config.captions, **changes))
    stored = read_embeddings(config.paths.embeddings)
    corpus = CaptionCorpus(stored.embeddings, stored.title.tolist(), stored.split.tolist(), stored.checkpoint_sha256,
                           str(stored.source))
    report = train(config, corpus, device=resolve_device(config.embedder.device))
    best = "" if report.best_val_loss is None else f", best validation loss {report.best_val_loss:.4f}"
    click.echo(f"Trained the annotator on {report.train_captions} titles ({report.vocabulary} words) for "
               f"{report.epochs} epochs in {report.seconds:.0f} s: train loss {report.train_loss:.4f}{best}; "
               f"stopped: {report.stopped_because}.\nSaved to {report.checkpoint}")


@cli.command()
@click.option("--host", default=None, help="Listen address (default app.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default app.port, 5000).")
@click.option("--prod", is_flag=True, help="A production WSGI server (app.server, app.threads, app.max_batch, ...).")
@click.pass_obj
@command
def serve(config: Config, host: str | None, port: int | None, prod: bool):
    """Serve the search page and API."""
    host, port = host or config.app.host, config.app.port if port is None else port
    if prod:
        # OpenMP threads that spin after each parallel region (libgomp's default) take the cores from
        # the request threads between forward passes and index scans (benchmarks/README.md, Serving).
        # torch and faiss read it once, when they load, so it is set before either is imported; an
        # operator's own OMP_WAIT_POLICY wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from search_app.serving import serve_production

        click.echo(f"Lookbook is serving {config.catalog.kind} search on http://{host}:{port}/ (production server)")
        serve_production(config, host, port)
        return
    from search_app import create_app

    app = create_app(config)
    click.echo(f"Lookbook is serving {config.catalog.kind} search on http://{host}:{port}/")
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@cli.command("serve-embedder")
@click.option("--address", default=None, metavar="ADDRESS",
              help="The Ray cluster to deploy on ('auto': this machine's; default: start a local one and keep it).")
@click.option("--replicas", type=int, default=1, show_default=True, help="Replicas to start with.")
@click.option("--max-replicas", type=int, default=0, help="Let Ray Serve add replicas up to this many while queries queue.")
@click.option("--gpus", type=float, default=0.0, show_default=True, help="GPUs per replica.")
@click.pass_obj
@command
def serve_embedder(config: Config, address: str | None, replicas: int, max_replicas: int, gpus: float):
    """Deploy the query embedder on Ray Serve, for web servers run with app.embedder = "ray"."""
    import ray

    from embedder.inference.ray_serve import deploy_embedder
    from indexer.embeddings_file import read_embeddings

    stored = read_embeddings(config.paths.embeddings)  # queries must be embedded by the catalog's checkpoint
    checkpoint = Path(stored.checkpoint_path)
    checkpoint = checkpoint if checkpoint.is_file() else config.paths.checkpoint
    ray.init(address=address, include_dashboard=False)
    deploy_embedder(checkpoint, stored.checkpoint_sha256, runtime=config.embedder.runtime,
                    precision=config.embedder.precision, artifacts=config.artifacts,
                    mirror_average=stored.mirror_average, replicas=replicas, max_replicas=max_replicas, gpus=gpus,
                    max_batch=config.app.max_batch, batch_wait_s=config.app.batch_wait_ms / 1e3)
    click.echo(f"The query embedder is deployed on Ray ({ray.get_runtime_context().gcs_address}); run the web "
               "server with --set app.embedder=ray")
    if address is None:  # the local cluster lives as long as this process
        click.echo("Serving until interrupted (Ctrl-C).")
        threading.Event().wait()


def _evaluate_captions(config: Config, vectors) -> None:
    """Caption metrics of consensus and (when trained for this embedder) the annotator; captions.json and .md."""
    from embedder.captioner.training import annotator_for
    from embedder.inference.extract import resolve_device
    from indexer.captions.evaluation import caption_table, evaluate_captions, write_caption_report

    device = resolve_device(config.embedder.device)
    annotate = annotator_for(config.artifacts, vectors.checkpoint_sha256, config.captions, device)
    captions = evaluate_captions(vectors, config.evaluate.query_split, config.evaluate.index_splits,
                                 config.captions.consensus_k, config.index.metric, annotate=annotate,
                                 use_gpu=config.index.gpu)
    json_path, markdown_path = write_caption_report(captions, config.artifacts)
    click.echo("\n" + caption_table(captions))
    if annotate is None:
        click.echo("No GRU annotator for this embedder: `python manage.py train-captioner` trains one.")
    click.echo(f"Wrote {json_path} and {markdown_path}")


def _item_image_loader(config: Config, vectors):
    """Embeddings row -> catalog image, for the report's failed-query strips; None (and a note) without the catalog."""
    from embedder.catalogs.base import CatalogError
    from embedder.catalogs.item_images import catalog_image_loader

    try:
        return catalog_image_loader(vectors, config.paths.downloads)
    except CatalogError as error:
        click.echo(f"No failed-query pictures: {error}")
        return None


def _as_dict(report) -> dict:
    from dataclasses import asdict

    return asdict(report)


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def _build_summary(extraction, index) -> str:
    lines = [
        "Build report",
        f"  catalog items   {extraction.catalog_items}",
        f"  embedded        {extraction.embedded}" + (" (reused)" if extraction.reused else ""),
        f"  skipped         {len(extraction.skipped)}",
    ]
    if not extraction.reused:
        lines.append(f"  since the last build: {extraction.added} added, {extraction.changed} changed, "
                     f"{extraction.removed} removed, {extraction.kept} kept; {extraction.images_embedded} "
                     "images embedded now")
    if extraction.rejected:
        lines.append(f"  rejected rows   {len(extraction.rejected)} (catalog file rows that could not be used; "
                     "listed in build-report.json)")
    lines += [f"    {item.item_id} ({item.path}): {item.reason}" for item in extraction.skipped[:20]]
    if len(extraction.skipped) > 20:
        lines.append(f"    ... and {len(extraction.skipped) - 20} more in build-report.json")
    if not extraction.reused:
        lines.append(f"  embedding time  {extraction.seconds:.1f} s, {extraction.images_per_second:.0f} images/s"
                     f" on {extraction.device}")
    lines.append(f"  index           {index.count} × {index.dimension} {index.metric} on {index.device}"
                 + (" (reused)" if index.reused else f", {index.seconds:.2f} s"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(cli())
