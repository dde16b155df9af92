"""`serve --prod`: the app under a production WSGI server, laid out for CPU inference.

Under gunicorn (the default on 2 cores or more), one model process embeds and scans the queries of
every worker, micro-batched together, with all the cores (search_app.model_server); each worker
loads the index and catalog once (the app factory runs in the worker) and does the requests' own work;
on a CPU it also embeds the queries that come while the server has no other (search_app.lone_queries).
Without the shared model (app.shared_model = false), and under waitress, each process loads the model
too, sets torch's intra-op threads so that workers × torch threads never exceed the cores, and funnels
its request threads' queries through one micro-batching model thread (search_app.batching).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from config import AppConfig, Config, ConfigError
from search_app.model_client import ModelAddress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingLayout:
    """How a production server spreads work over the machine."""

    server: str
    workers: int  # request-handling processes
    threads: int  # request threads per worker
    torch_threads: int  # intra-op threads of the shared model process, else of each worker's model
    max_batch: int
    batch_wait_ms: float
    shared_model: bool = False  # one model process for all workers (gunicorn only)
    # With the shared model: a query alone in the server runs on its worker's own copy (search_app.lone_queries).
    lone_queries_in_workers: bool = False

    def describe(self) -> str:
        """One line for the log and the terminal."""
        batching = (f"micro-batches of up to {self.max_batch} (waiting {self.batch_wait_ms:g} ms)"
                    if self.max_batch > 1 else "one query at a time")
        model = (f"one model process with {self.torch_threads} torch thread(s) for all workers" if self.shared_model
                 else f"{self.torch_threads} torch thread(s) per worker")
        if self.lone_queries_in_workers:
            model += " (a query alone in the server: its worker's own copy, in turn with it)"
        return f"{self.server}: {self.workers} worker(s) × {self.threads} request threads, {model}, {batching}"


# Torch threads per gunicorn worker on machines with many cores. Not measured (these machines have 2
# cores): a forward pass over a micro-batch of small images gains little from more threads than this,
# and more workers overlap more requests' own Python work (upload parsing, decoding, answers), which
# one process's GIL serialises.
THREADS_PER_WORKER = 4
MAX_AUTO_WORKERS = 8


def resolve_layout(app: AppConfig, cores: int, gunicorn_runs: bool = os.name == "posix") -> ServingLayout:
    """The layout app asks for on a machine with this many cores; ConfigError when it would oversubscribe them.

    With app.server and app.workers left to "auto" and 0: gunicorn where it runs (not on Windows) with
    2 workers or more, cores ÷ 4 on big machines; waitress, one process, on a single core. Under gunicorn
    the shared model process takes every core (app.torch_threads: fewer); without it, each worker's model
    takes cores ÷ workers. On 2 cores, the shared model served 8 clients faster than 2 workers with a
    model each, and a lone query as fast as one process (`python -m benchmarks.bench_serving`, README);
    more workers overlap more requests' Python work on bigger machines, and gunicorn restarts dead workers.
    """
    server = app.server
    if server == "auto":
        server = "gunicorn" if gunicorn_runs and (cores >= 2 or app.workers > 1) else "waitress"
    if server == "gunicorn" and not gunicorn_runs:
        raise ConfigError('app.server: gunicorn does not run on this platform (it needs POSIX); set app.server = '
                          '"waitress" or "auto"')
    if server == "waitress" and app.workers > 1:
        raise ConfigError(f"app.workers: waitress serves from one process, got {app.workers}; gunicorn does "
                          "not run on this platform")
    shared_model = server == "gunicorn" and app.shared_model
    workers = app.workers
    if not workers:
        if server == "waitress":
            workers = 1
        elif app.torch_threads and not shared_model:
            workers = max(1, min(MAX_AUTO_WORKERS, cores // app.torch_threads))
        else:
            workers = max(min(2, cores), min(MAX_AUTO_WORKERS, cores // THREADS_PER_WORKER))
    if shared_model:
        torch_threads = app.torch_threads or cores
        if torch_threads > cores:
            raise ConfigError(f"app.torch_threads = {torch_threads} is more than the {cores} CPU cores; lower it")
    else:
        torch_threads = app.torch_threads or max(1, cores // workers)
        if workers * torch_threads > cores:
            raise ConfigError(
                f"app.workers × app.torch_threads = {workers} × {torch_threads} = {workers * torch_threads} "
                f"is more than the {cores} CPU cores; lower app.workers or app.torch_threads (torch threads competing "
                "for cores make every query many times slower), or set app.shared_model = true"
            )
    return ServingLayout(server, workers, app.threads, torch_threads, app.max_batch, app.batch_wait_ms, shared_model,
                         lone_queries_in_workers=shared_model and app.lone_queries_in_workers)


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def serve_production(config: Config, host: str, port: int, cores: int | None = None) -> None:
    """Serve the app with waitress or gunicorn on host:port until interrupted."""
    layout = resolve_layout(config.app, cores or usable_cores())
    # The factory reads the resolved thread count, in whichever process it runs.
    config = dataclasses.replace(config, app=dataclasses.replace(config.app, torch_threads=layout.torch_threads))
    log.info("serving on http://%s:%d/ with %s", host, port, layout.describe())
    if layout.server == "waitress":
        _serve_waitress(config, layout, host, port)
    else:
        _serve_gunicorn(config, layout, host, port)


def _serve_waitress(config: Config, layout: ServingLayout, host: str, port: int) -> None:
    import waitress

    from search_app import create_app
    from search_app.uploads import oversized_body_allowance

    waitress.serve(
        create_app(config), host=host, port=port, threads=layout.threads, ident="lookbook",
        # Bodies a little over the app's limit reach Flask, which answers with a JSON 413; far bigger
        # ones are cut off by waitress itself before they fill the disk.
        max_request_body_size=oversized_body_allowance(config.app.max_upload_bytes),
    )


def _serve_gunicorn(config: Config, layout: ServingLayout, host: str, port: int) -> None:
    if not layout.shared_model:
        _run_gunicorn(config, layout, host, port)
        return
    from search_app.model_server import ModelProcess

    # Started and loaded before any worker, so that a model that cannot load stops the server with its reason.
    with ModelProcess(config, layout.torch_threads) as model:
        _run_gunicorn(config, layout, host, port, model.address)


def _run_gunicorn(config: Config, layout: ServingLayout, host: str, port: int, model: ModelAddress | None = None) -> None:
    from gunicorn.app.base import BaseApplication

    from search_app import create_app
    from search_app.engine import SearchEngine
    from search_app.lone_queries import SearchCounts, WorkerSlot

    # Made here, in the master, so that every worker forked from it shares the memory. Twice the workers:
    # gunicorn starts a worker's replacement as the old one leaves.
    counts = SearchCounts(2 * layout.workers) if model is not None and layout.lone_queries_in_workers else None

    def pre_fork(server, worker) -> None:  # in the master
        try:
            worker.lookbook_slot = counts.take_slot()
        except RuntimeError as error:  # more workers than planned (gunicorn's TTIN signal): this one sends every query
            log.warning("%s: a new worker sends every query to the model process", error)
            worker.lookbook_slot = None

    def child_exit(server, worker) -> None:  # in the master
        if worker.lookbook_slot is not None:
            counts.free_slot(worker.lookbook_slot)

    class LookbookGunicorn(BaseApplication):
        """Gunicorn with its settings from the layout, and the app built in each worker after the fork."""

        slot: WorkerSlot | None = None  # this worker's, set by post_fork where lone queries run in workers

        def load_config(self) -> None:
            settings = {
                "bind": f"{host}:{port}",
                "workers": layout.workers,
                "threads": layout.threads,
                "worker_class": "gthread",
                # The model is loaded in each worker, never in the master: torch's thread pools do not survive fork.
                "preload_app": False,
                "timeout": 120,
                "accesslog": None,
                **({"pre_fork": pre_fork, "post_fork": self.post_fork, "child_exit": child_exit}
                   if counts is not None else {}),
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def post_fork(self, server, worker) -> None:  # in the worker, before load()
            self.slot = None if worker.lookbook_slot is None else WorkerSlot(counts, worker.lookbook_slot)

        def load(self):
            if model is None:
                return create_app(config)
            return create_app(config, SearchEngine.from_artifacts(config, model, self.slot))

    LookbookGunicorn().run()
