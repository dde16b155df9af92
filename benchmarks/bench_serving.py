"""Serving: N concurrent clients against `serve --prod` on 127.0.0.1, next to in-process decode + embed + search.

Everything is measured in one run on the same images: the in-process time of one query (decode,
embed, search; no HTTP), the embedder's batched forward throughput at the catalog's image size, and
HTTP latency (p50/p95/p99), throughput and errors for each server layout and client count, and, from
the server's /healthz, where its micro-batches' time went (embedding, index scan, and the wall time
per batch, which also holds the requests' own work: upload parsing, decoding, answers).
A lone shopper's ratio is also taken side by side (slices in process and over HTTP in turns, the median
of their ratios), and each load run's CPU a request (server and clients) gives the throughput all the
cores could reach at that cost: when a run comes near that ceiling, only less work a request raises it.
The output ends with each run against the targets (LONE_TARGET, LOAD_TARGET), met or not.
The clients are lean ones (benchmarks.http_clients: one write a request, answers read by their
Content-Length, as wrk does); `--client http.client` loads the server through the standard library's.
Artifacts: the Fashion-MNIST ones of `make demo` when var/fashion-mnist holds them (or `--catalog demo`),
else (or with `--catalog generated`) a generated sample catalog in DeepFashion's layout at `--image-size`,
embedded with random weights (the model's cost is the same either way): `--catalog generated
--image-size 224` serves at DeepFashion's size, where the forward pass outweighs the rest of a request.

    python -m benchmarks.bench_serving [--clients 1,8] [--seconds 10] [--layouts waitress,gunicorn,serial]
                                       [--catalog auto|demo|generated] [--image-size 32] [--client lean|http.client]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.common import usable_cores
from benchmarks.http_clients import CLIENTS, AnswerError
from benchmarks.server_process import free_port, health, start_server, stop_server
from config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = ROOT / "var" / "fashion-mnist"
QUERIES = 64
K = 12
MAX_REQUESTS = 20_000  # per load run, on top of the time limit
# The forward pass is timed for as long as this, not best-of-a-few: a sustained rate, like the HTTP runs'.
FORWARD_SECONDS = 3.0
# A lone shopper's ratio (HTTP p50 ÷ in-process p50) from slices taken in turns, in-process then HTTP, this
# many of each: on a shared 2-core machine one in-process reading taken before a run swung from 7.8 to 13.6
# ms within minutes (2026-12-03, AMD EPYC, 32 px), more than the ~1 ms the ratio is about.
SIDE_BY_SIDE_ROUNDS = 6
SIDE_BY_SIDE_QUERIES = 32  # per slice
# Server layouts: name -> --set overrides. "serial" runs one query at a time through the model.
# Any name with "-ivf" or "-flat" added ("batched-flat") serves the same embeddings through an index of
# that kind built beside them (index_artifacts); without, through the artifacts' own index. With "-torch"
# or "-onnx" added ("waitress-torch", "waitress-flat-onnx") the server embeds with torch or ONNX Runtime
# instead of embedder.runtime's choice, and the in-process columns do too. (The servers get the runtime as
# a --set, so a LOOKBOOK_EMBEDDER_RUNTIME in the environment does not reach them: name it here.)
# The serving targets the benchmark is held to: a lone shopper's HTTP p50 at most LONE_TARGET × in-process,
# no errors, and with LOAD_TARGET_CLIENTS clients at least LOAD_TARGET × the embedder's batched forward rate.
LONE_TARGET = 1.3
LOAD_TARGET = 0.8
LOAD_TARGET_CLIENTS = 8
INDEX_KINDS = ("ivf", "flat")
RUNTIMES = {"torch": "torch", "onnx": "onnxruntime"}
# How the clients send the photo: as the body (what the search page does), or, with "-multipart" added to
# the layout's name, as a multipart form (what an HTML form or curl -F does).
BODY, MULTIPART = "body", "multipart"
LAYOUTS = {
    # serve --prod as it runs by default: one waitress process, micro-batched queries.
    "waitress": ["app.server=waitress", "app.max_batch=8"],
    # The same one process as a gunicorn worker (for use behind a buffering proxy).
    "gunicorn": ["app.server=gunicorn", "app.max_batch=8"],
    # One query at a time through the model.
    "serial": ["app.server=waitress", "app.max_batch=1"],
}


@dataclass(frozen=True)
class Sending:
    """How the load's clients send their searches: the photo as the body or as a multipart form (``upload``),
    and over which HTTP client (benchmarks.http_clients.CLIENTS)."""

    upload: str = BODY
    client: str = "lean"


@dataclass
class LoadResult:
    """What one load run measured."""

    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    # The server's own time for each answered request (its timing_ms.total: from the view's start to the
    # answer's dict), so the HTTP p50 splits into the view's work and what HTTP, WSGI and the client add.
    view_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def view_percentile(self, q: float) -> float:
        return float(np.percentile(self.view_ms, q)) if self.view_ms else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds


def prepare_artifacts(workdir: Path, catalog: str, image_size: int) -> tuple[list[str], Config]:
    """CLI arguments and Config naming artifacts to serve: make demo's Fashion-MNIST ones ("demo", or "auto"
    when they are built), else a fresh sample catalog's at ``image_size``."""
    demo_built = (FASHION_MNIST / "embeddings.h5").is_file() and (FASHION_MNIST / "index.faiss").is_file()
    if catalog == "demo" and not demo_built:
        raise SystemExit(f"--catalog demo: no embeddings.h5 and index.faiss in {FASHION_MNIST}; run make demo first")
    if catalog == "demo" or (catalog == "auto" and demo_built):
        demo = ROOT / "configs" / "demo.toml"
        return ["--config", str(demo)], load_config(demo, env={})
    from embedder.catalogs.sample_deepfashion import write_sample_catalog

    root = write_sample_catalog(workdir / "catalog", images_per_category=8, seed=1)
    settings = {"catalog.kind": "deepfashion", "catalog.root": str(root), "embedder.weights": "none",
                "artifacts_dir": str(workdir / "artifacts"), "catalog.subset": "all",
                "embedder.image_size": str(image_size), "embedder.workers": "0"}
    args = [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    subprocess.run([sys.executable, "manage.py", *args, "build-index"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return args, load_config(env={}, overrides=settings)


def index_artifacts(args: list[str], config: Config, workdir: Path, kind: str) -> list[str]:
    """--set overrides that serve the same embeddings and checkpoint through an index of this kind, built here."""
    target = workdir / f"{kind}-artifacts"
    target.mkdir(exist_ok=True)
    for name in ("embeddings.h5", "embedder.pt"):
        if not (target / name).exists():
            (target / name).symlink_to((config.artifacts / name).resolve())
    overrides = [f"artifacts_dir={target}", f"index.kind={kind}"]
    sets = [item for setting in overrides for item in ("--set", setting)]
    subprocess.run([sys.executable, "manage.py", *args, *sets, "build-index"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return overrides


def query_images(config, count: int) -> list[bytes]:
    """PNG files of catalog items, as a shopper would upload them."""
    from embedder.catalogs import open_catalog

    catalog = open_catalog(config.catalog, config.artifacts / "downloads")
    rows = np.random.default_rng(0).choice(len(catalog), size=min(count, len(catalog)), replace=False)
    files = []
    for row in rows.tolist():
        buffer = io.BytesIO()
        catalog.open_image(row).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files


class InProcess:
    """The same work without HTTP, in this process: the engine the server loads, and its model alone."""

    def __init__(self, config: Config, files: list[bytes], torch_threads: int) -> None:
        import torch

        from embedder.checkpoint import load_checkpoint
        from embedder.inference.network import prepare_checkpoint
        from embedder.transforms import build_transform
        from indexer.embeddings_file import read_embeddings
        from search_app.engine import SearchEngine
        from search_app.uploads import decode_image

        torch.set_num_threads(torch_threads)
        self.config, self.files = config, files
        self.engine = SearchEngine.from_artifacts(config)
        self.loaded = load_checkpoint(config.artifacts / "embedder.pt")
        # The network as the server runs it: the same runtime (ONNX Runtime, or torch with BatchNorms folded).
        mirror_average = read_embeddings(config.artifacts / "embeddings.h5").mirror_average
        self.model, self.runtime = prepare_checkpoint(self.loaded, "cpu", config.embedder.runtime,
                                                      config.embedder.precision, config.artifacts, spinning=False,
                                                      mirror_average=mirror_average)
        transform = build_transform(self.loaded.preprocessing)
        self.tensors = torch.stack([transform(decode_image(data, "q.png", 10**8)) for data in files])
        self.image_size = self.loaded.preprocessing.image_size

    def query_ms(self, files: list[bytes] | None = None) -> tuple[float, float, float]:
        """p50 and p95 wall time of decode + embed + search (caption included) per query, and CPU ms per query,
        over ``files`` (default: all the query images)."""
        from search_app.uploads import decode_image

        files = self.files if files is None else files
        for data in files[:4]:  # warm-up
            self.engine.search(decode_image(data, "warm-up.png", self.config.app.max_image_pixels), K)
        timings, cpu = [], time.process_time()
        for data in files:
            started = time.perf_counter()
            self.engine.search(decode_image(data, "query.png", self.config.app.max_image_pixels), K)
            timings.append(1e3 * (time.perf_counter() - started))
        cpu_ms = 1e3 * (time.process_time() - cpu) / len(timings)
        return float(np.percentile(timings, 50)), float(np.percentile(timings, 95)), cpu_ms

    def forward_images_per_second(self, size: int, seconds: float = FORWARD_SECONDS) -> float:
        """The embedder's sustained forward throughput on batches of this size, over a few seconds after a warm-up."""
        from embedder.inference.extract import embed_batch

        chunk = self.tensors.repeat((size + len(self.tensors) - 1) // len(self.tensors), 1, 1, 1)[:size]
        embed_batch(self.model, chunk, "cpu", self.config.embedder.precision)
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            embed_batch(self.model, chunk, "cpu", self.config.embedder.precision)
            images += size
        return images / (time.perf_counter() - started)

    def caption_ms(self) -> float:
        """Median time of the caption step alone; NaN when the engine's captions work differently."""
        try:
            return _caption_ms(self.engine, self.files, self.config)
        except AttributeError:
            return float("nan")

    def close(self) -> None:
        self.engine.close()


def _caption_ms(engine, files: list[bytes], config) -> float:
    """Median time of the caption step alone (pure Python; it holds the GIL, unlike the forward pass)."""
    from indexer.index import search as index_search
    from search_app.uploads import decode_image

    timings = []
    for data in files[:16]:
        xq = np.asarray(engine.embed_image(decode_image(data, "q.png", config.app.max_image_pixels)),
                        dtype=np.float32).reshape(1, -1)
        D, I = index_search(engine.index, xq, min(engine.count, max(engine.captions.depth, engine.k)))
        engine.captions.describe(xq, D, I, engine.metric)  # a server has seen these titles before (TitleGrams)
        timings.append(_timed(lambda: engine.captions.describe(xq, D, I, engine.metric)))
    return 1e3 * float(np.median(timings))


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def search_request(data: bytes, upload: str) -> tuple[str, bytes, str]:
    """(URL, body, content type) of a search for the image, its settings in the query string: the image as the
    body, as the search page sends it ("body"), or as a multipart form ("multipart") with a boundary of its
    own, as a browser makes one for each form it sends (werkzeug compiles regexes for each boundary)."""
    if upload == BODY:
        return f"/api/search?k={K}&filename=q.png", data, "image/png"
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"/api/search?k={K}", body, f"multipart/form-data; boundary={boundary}"


def run_load(port: int, files: list[bytes], clients: int, seconds: float, sending: Sending = Sending(),
             max_requests: int = MAX_REQUESTS) -> LoadResult:
    """`clients` threads, each on its own keep-alive connection, posting searches for `seconds` (at most
    ``max_requests`` in all)."""
    result = LoadResult(clients, seconds)
    lock = threading.Lock()
    budget = [max_requests]
    start = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        connection = CLIENTS[sending.client]("127.0.0.1", port, timeout=60)
        start.wait()
        deadline, turn = time.perf_counter() + seconds, number
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            url, body, content_type = search_request(files[turn % len(files)], sending.upload)
            turn += clients
            began = time.perf_counter()
            try:
                status, payload = connection.post(url, body, content_type)
                problem = None if status == 200 and b'"results"' in payload else f"HTTP {status}"
            except AnswerError as error:
                problem = f"{type(error).__name__}: {error}"
            except OSError as error:  # the next post() connects again
                problem = type(error).__name__
            elapsed = 1e3 * (time.perf_counter() - began)
            view = json.loads(payload)["timing_ms"]["total"] if problem is None else None
            with lock:
                if problem is None:
                    result.latencies_ms.append(elapsed)
                    result.view_ms.append(view)
                else:
                    result.errors[problem] = result.errors.get(problem, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


@dataclass
class SideBySide:
    """A lone shopper's HTTP p50 over its in-process p50, from slices taken in turns on the same images."""

    ratios: list[float]
    in_process_ms: list[float]
    http_ms: list[float]

    @property
    def ratio(self) -> float:
        """The median of the turns' ratios."""
        return float(np.median(self.ratios))

    def line(self) -> str:
        return (f"{self.ratio:.2f} ({min(self.ratios):.2f}-{max(self.ratios):.2f}; "
                f"{float(np.median(self.http_ms)):.1f} ÷ {float(np.median(self.in_process_ms)):.1f})")


def side_by_side(port: int, local: InProcess, files: list[bytes], sending: Sending = Sending(),
                 rounds: int = SIDE_BY_SIDE_ROUNDS, queries: int = SIDE_BY_SIDE_QUERIES) -> SideBySide:
    """``rounds`` turns of the same ``queries`` images in process (the server idle) and then over HTTP (one
    client): each turn's ratio of p50s, so that the machine's swings between minutes fall on both sides."""
    measured = SideBySide([], [], [])
    for turn in range(rounds):
        start = (turn * queries) % len(files)
        chosen = (files[start:] + files[:start])[:queries]
        in_process, _, _ = local.query_ms(chosen)  # after a warm-up of 4 queries, as here:
        run_load(port, chosen[:4], 1, 600.0, sending, max_requests=4)
        http = run_load(port, chosen, 1, 600.0, sending, max_requests=len(chosen)).percentile(50)
        measured.ratios.append(http / in_process)
        measured.in_process_ms.append(in_process)
        measured.http_ms.append(http)
    return measured


@dataclass(frozen=True)
class RunSummary:
    """What one load run says about the targets."""

    layout: str
    clients: int
    errors: int
    lone_ratio: float | None  # side by side, after a 1-client run
    load_ratio: float  # req/s over the mean forward rate at a batch of `clients`
    ceiling_ratio: float  # the CPU ceiling over the same


def target_lines(runs: list[RunSummary]) -> list[str]:
    """Each run against the targets, in words: met or not, and whether its CPU ceiling leaves room to meet it."""
    lines = []
    for run in runs:
        checks = [f"{run.errors} errors ({'met' if run.errors == 0 else 'NOT met'})"]
        if run.lone_ratio is not None:
            met = "met" if run.lone_ratio <= LONE_TARGET else "NOT met"
            checks.append(f"lone p50 {run.lone_ratio:.2f} × in-process, side by side (target ≤ {LONE_TARGET}: {met})")
        if run.clients == LOAD_TARGET_CLIENTS:
            met = "met" if run.load_ratio >= LOAD_TARGET else "NOT met"
            check = f"{run.load_ratio:.2f} × the forward rate (target ≥ {LOAD_TARGET}: {met}"
            if run.load_ratio < LOAD_TARGET and run.ceiling_ratio < LOAD_TARGET:
                check += (f"; the CPU ceiling, {run.ceiling_ratio:.2f}, is below the target: at this CPU a request "
                          "no layout can meet it, only cheaper requests")
            checks.append(check + ")")
        lines.append(f"- {run.layout}, {run.clients} client{'s' if run.clients != 1 else ''}: {'; '.join(checks)}")
    return lines


def cpu_ceiling(cores: int, server_cpu_ms: float, client_cpu_ms: float) -> float:
    """Requests a second the machine's cores could serve at this much CPU a request (server and clients):
    with every core busy, throughput cannot pass it, however the work is laid out."""
    return 1e3 * cores / (server_cpu_ms + client_cpu_ms) if server_cpu_ms + client_cpu_ms > 0 else float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far (gunicorn's workers are children)."""
    total = 0.0
    for child in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load run (default 10)")
    parser.add_argument("--layouts", default="waitress,gunicorn",
                        help=f"among {', '.join(LAYOUTS)}, each also with -ivf or -flat (that index over the same "
                             "vectors), -torch or -onnx (embedding with torch or ONNX Runtime) and -multipart "
                             "(photos sent as forms)")
    parser.add_argument("--catalog", choices=("auto", "demo", "generated"), default="auto",
                        help="make demo's Fashion-MNIST artifacts, a generated sample catalog, or (auto) the first "
                             "when built")
    parser.add_argument("--image-size", type=int, default=32, help="for a generated catalog (default 32)")
    parser.add_argument("--client", choices=tuple(CLIENTS), default=Sending.client,
                        help="the load's HTTP client: lean (one write a request, answers read by Content-Length, as "
                             f"wrk does) or the standard library's http.client (default {Sending.client})")
    options = parser.parse_args(argv if argv is not None else [])
    clients = [int(c) for c in options.clients.split(",")]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="lookbook-bench-") as directory:
        workdir = Path(directory)
        args, config = prepare_artifacts(workdir, options.catalog, options.image_size)
        files = query_images(config, QUERIES)
        plans = [plan_layout(layout, args, config, workdir) for layout in options.layouts.split(",")]
        in_process: dict[str, InProcess] = {}
        try:
            for runtime in dict.fromkeys(runtime for _, _, runtime, _ in plans):
                in_process[runtime] = InProcess(replace(config, embedder=replace(config.embedder, runtime=runtime)),
                                                files, cores)
            image_size = next(iter(in_process.values())).image_size
            print(f"\n## serving: {config.catalog.kind} artifacts, {image_size} px images, {len(files)} query images, "
                  f"{cores} cores, load average {os.getloadavg()[0]:.1f} at the start, {options.client} clients")
            for local in in_process.values():
                print(f"{local.runtime}: caption step alone (Python, holds the GIL): {local.caption_ms():.1f} ms per query")
            print("In-process numbers are measured right before each HTTP run, the server idle, with the server's runtime; "
                  f"the side-by-side ratio from {SIDE_BY_SIDE_ROUNDS} turns of {SIDE_BY_SIDE_QUERIES} queries each way "
                  "after the 1-client run.\n")
            print("| layout | clients | in-process p50 ms | in-process CPU ms | batched forward img/s (before / after the load) | requests | errors "
                  "| p50 ms | p95 ms | p99 ms | req/s | p50 / in-process | lone p50 / in-process, side by side (range; ms ÷ ms) "
                  "| view p50 ms | req/s / mean forward | CPU ceiling / mean forward | mean batch "
                  "| server CPU ms / request | client CPU ms / request | per batch: embed ms | scan ms | wall ms |")
            print("|" + "---|" * 22)
            runs: list[RunSummary] = []
            for layout, settings, runtime, upload in plans:
                runs += measure_layout(layout, args, settings, in_process[runtime], files, clients, options.seconds,
                                       workdir, Sending(upload, options.client))
            print(f"\nAgainst the targets ({image_size} px, {usable_cores()} usable cores):")
            print("\n".join(target_lines(runs)))
        finally:
            for local in in_process.values():
                local.close()


def plan_layout(layout: str, args: list[str], config: Config, workdir: Path) -> tuple[str, list[str], str, str]:
    """(name, --set overrides, runtime, upload) of a layout name such as "gunicorn-flat-torch-multipart";
    builds the index it names."""
    base, *variants = layout.split("-")
    unknown = set(variants) - {*INDEX_KINDS, *RUNTIMES, MULTIPART}
    if base not in LAYOUTS or unknown:
        raise SystemExit(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}, "
                         f"each with any of -{', -'.join((*INDEX_KINDS, *RUNTIMES, MULTIPART))}")
    settings = list(LAYOUTS[base])
    for kind in INDEX_KINDS:
        if kind in variants:
            settings += index_artifacts(args, config, workdir, kind)
    named = [RUNTIMES[variant] for variant in variants if variant in RUNTIMES]
    if len(named) > 1:
        raise SystemExit(f"layout {layout!r} names two runtimes")
    runtime = named[0] if named else config.embedder.runtime
    return layout, settings + [f"embedder.runtime={runtime}"], runtime, MULTIPART if MULTIPART in variants else BODY


def measure_layout(layout: str, args: list[str], settings: list[str], local: InProcess, files: list[bytes],
                   clients: list[int], seconds: float, workdir: Path, sending: Sending = Sending()) -> list[RunSummary]:
    """Start the server with one layout and load it with each client count, next to in-process numbers; prints
    a table row for each run and returns what they say about the targets."""
    port = free_port()
    server = start_server(args, port, workdir / f"serve-{layout}.log", settings)
    runs = []
    try:
        for count in clients:
            p50, _, cpu_ms = local.query_ms()
            forward_before = local.forward_images_per_second(count)
            run_load(port, files, count, min(2.0, seconds), sending)  # warm-up, not counted
            before, cpu, client_cpu = health(port).get("batching") or {}, cpu_seconds(server.pid), time.process_time()
            result = run_load(port, files, count, seconds, sending)
            cpu, client_cpu = cpu_seconds(server.pid) - cpu, time.process_time() - client_cpu
            after = health(port).get("batching") or {}
            # Timed again after the load: on a shared machine one reading swung from 43 to 87 images/s between
            # runs minutes apart (2026-12-03, 224 px), so the ratio divides by the mean of the two.
            forward_after = local.forward_images_per_second(count)
            forward = (forward_before + forward_after) / 2
            lone = side_by_side(port, local, files, sending) if count == 1 else None
            errors = sum(result.errors.values())
            answered = max(len(result.latencies_ms), 1)
            server_cpu_ms, client_cpu_ms = 1e3 * cpu / answered, 1e3 * client_cpu / answered
            ceiling = cpu_ceiling(usable_cores(), server_cpu_ms, client_cpu_ms)
            print(f"| {layout} | {count} | {p50:.1f} | {cpu_ms:.1f} | {forward_before:.0f} / {forward_after:.0f} "
                  f"| {len(result.latencies_ms)} "
                  f"| {errors}{' ' + json.dumps(result.errors) if errors else ''} | {result.percentile(50):.1f} "
                  f"| {result.percentile(95):.1f} | {result.percentile(99):.1f} | {result.throughput:.1f} "
                  f"| {result.percentile(50) / p50:.2f} | {lone.line() if lone else '-'} | {result.view_percentile(50):.1f} "
                  f"| {result.throughput / forward:.2f} | {ceiling / forward:.2f} "
                  f"| {mean_batch(before, after)} | {server_cpu_ms:.1f} "
                  f"| {client_cpu_ms:.1f} | {batch_times(before, after, result.seconds)} |",
                  flush=True)
            runs.append(RunSummary(layout, count, errors, lone.ratio if lone else None, result.throughput / forward,
                                   ceiling / forward))
    finally:
        stop_server(server)
    return runs


def batch_times(before: dict, after: dict, seconds: float) -> str:
    """Mean ms per micro-batch embedding, scanning the index, and in all (the wall time over the batches)."""
    batches = after.get("batches", 0) - before.get("batches", 0)
    if batches <= 0 or "embed_seconds" not in after:
        return "- | - | -"
    embed, scan = (1e3 * (after[key] - before[key]) / batches for key in ("embed_seconds", "scan_seconds"))
    return f"{embed:.1f} | {scan:.1f} | {1e3 * seconds / batches:.1f}"


def mean_batch(before: dict, after: dict) -> str:
    """The mean micro-batch size between two /healthz readings."""
    batches = after.get("batches", 0) - before.get("batches", 0)
    return f"{(after.get('items', 0) - before.get('items', 0)) / batches:.2f}" if batches > 0 else "-"


if __name__ == "__main__":
    main(sys.argv[1:])
