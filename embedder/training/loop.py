"""Triplet-loss fine-tuning: P×K batches, in-batch mining, an auxiliary classification loss,
kNN validation, the best checkpoint kept, and resumption where an interrupted run stopped."""
from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import Config, TrainConfig
from embedder.catalogs import open_catalog
from embedder.catalogs.base import Catalog
from embedder.catalogs.dataset import CatalogImages
from embedder.checkpoint import (
    CheckpointError,
    catalog_preprocessing,
    create_embedder,
    is_lookbook_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from embedder.inference.extract import embed_batch, resolve_device, resolve_workers
from embedder.inference.network import native_bfloat16
from embedder.model import EmbeddingNet
from embedder.training.augment import preset_for, training_pixels
from embedder.training.losses import NormalizedSoftmaxLoss, TripletLoss
from embedder.training.sampler import PKSampler
from embedder.training.small_map_convs import use_small_map_convs
from embedder.training.state import (
    LOSS_POINTS_PER_EPOCH,
    TrainingLog,
    TrainState,
    freeze_trunk,
    keep_frozen_batchnorm_still,
    load_state,
    same_run,
    save_state,
    split_validation,
)
from embedder.transforms import Preprocessing, build_pixel_transform, normalize_batch

log = logging.getLogger(__name__)

# (query embeddings, query labels, index embeddings, index labels, k) -> kNN top-1 accuracy
KnnAccuracy = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], float]
STATE_EVERY_SECONDS = 60.0
FINAL_CHECKPOINT_NAME = "final.pt"  # in <artifacts>/train/, written when a run ends


@dataclass
class TrainReport:
    """How a training run ended."""

    best_top1: float
    best_step: int
    steps: int
    epochs: float
    seconds: float
    images_per_second: float
    stopped_because: str
    checkpoint: str
    resumed_from_step: int


@dataclass
class Trainee:
    """The network, its losses and optimiser: everything a training step changes."""

    model: EmbeddingNet
    triplet: TripletLoss
    aux: NormalizedSoftmaxLoss | None
    optimizer: torch.optim.Optimizer
    origin: str


def build_trainee(config: Config, num_classes: int, device: str) -> Trainee:
    """Model from the configured starting weights, losses, and the optimiser over what is not frozen."""
    weights = Path(config.embedder.weights)
    if config.embedder.weights not in ("imagenet", "auto", "none") and is_lookbook_checkpoint(weights):
        model, origin = load_checkpoint(weights).model, str(weights)
    else:
        model, origin = create_embedder(config.embedder)
    freeze_trunk(model, config.train.freeze)
    if device == "cpu":
        # Measured on CPUs only (oneDNN's slow backward over tiny maps); GPUs keep cuDNN for every convolution.
        use_small_map_convs(model)
    model.to(device).to(memory_format=torch.channels_last).train()
    aux = None
    if config.train.aux_loss_weight > 0:
        aux = NormalizedSoftmaxLoss(model.embedding_size, num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + (list(aux.parameters()) if aux else [])
    optimizer = build_optimizer(config.train, params, fused=torch.device(device).type in FUSED_OPTIMIZER_DEVICES)
    return Trainee(model, TripletLoss(config.train.margin, config.train.mining), aux, optimizer, origin)


# Devices where torch updates every parameter in one fused kernel: one tensor at a time, the update of
# ResNet-50's parameters is a noticeable share of a CPU training step (benchmarks/bench_training.py).
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")


def build_optimizer(train: TrainConfig, params: list[torch.nn.Parameter], fused: bool) -> torch.optim.Optimizer:
    """The configured optimiser over params; ``fused``: one kernel for the whole update (same arithmetic)."""
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay, nesterov=True,
                           fused=fused or None)


def schedule_progress(train: TrainConfig, step: int, steps_per_epoch: int, seconds: float) -> float:
    """How far the run is, from 0 to 1, by whichever ends first: the epochs, the steps or the time budget."""
    progress = step / (train.epochs * steps_per_epoch)
    if train.steps:
        progress = max(progress, step / train.steps)
    if train.time_budget:
        progress = max(progress, seconds / train.time_budget)
    return min(1.0, progress)


def learning_rate(train: TrainConfig, step: int, steps_per_epoch: int, seconds: float) -> float:
    """Linear warm-up, then the configured schedule (cosine, linear to zero or constant) over schedule_progress."""
    warmup = train.warmup_epochs * steps_per_epoch
    scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if train.schedule == "cosine":
        scale *= 0.5 * (1 + math.cos(math.pi * schedule_progress(train, step, steps_per_epoch, seconds)))
    elif train.schedule == "linear":
        scale *= 1 - schedule_progress(train, step, steps_per_epoch, seconds)
    return train.lr * scale


def fast_bfloat16(device: str) -> bool:
    """Whether bfloat16 autocast speeds training here: CUDA GPUs, and CPUs with AVX512-BF16 or AMX
    (benchmarks/README.md, Training step and GPU)."""
    return device.startswith("cuda") or native_bfloat16()


def train_step(trainee: Trainee, batch: torch.Tensor, labels: torch.Tensor, aux_weight: float, amp: bool) -> dict:
    """One optimisation step; returns the losses as floats."""
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
        embeddings = trainee.model(batch)
    triplet = trainee.triplet(embeddings, labels)
    aux = trainee.aux(embeddings, labels) if trainee.aux is not None else torch.zeros((), device=batch.device)
    loss = triplet + aux_weight * aux
    trainee.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainee.optimizer.step()
    return {"loss": loss.item(), "triplet": triplet.item(), "aux": aux.item()}


def embed_rows(model: EmbeddingNet, images: CatalogImages, preprocessing: Preprocessing, batch_size: int,
               workers: int | None, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a dataset's rows (uint8 pixels) in eval mode, unreadable images left out."""
    model.eval()
    vectors, labels = [], []
    loader = DataLoader(images, batch_size=batch_size, num_workers=resolve_workers(workers, device))
    for batch, rows, errors in loader:
        ok = torch.tensor([not error for error in errors], dtype=torch.bool)
        if ok.any():
            vectors.append(embed_batch(model, normalize_batch(batch[ok].to(device), preprocessing), device))
            labels.append(np.array([images.catalog.items[int(row)].label for row in rows[ok]]))
    model.train()
    keep_frozen_batchnorm_still(model)
    return np.concatenate(vectors), np.concatenate(labels)


class Validator:
    """kNN top-1 of held-out queries against a fixed sample of training items, with the eval transform."""

    def __init__(self, catalog: Catalog, train_rows: np.ndarray, val_rows: np.ndarray, preprocessing: Preprocessing,
                 config: Config, knn_accuracy: KnnAccuracy, device: str, index_size: int = 5_000) -> None:
        # A sample of the training items as the index: embedding all of them would dominate a CPU run.
        index_rows = np.sort(np.random.default_rng(config.train.seed).permutation(train_rows)[:index_size])
        pixels, size = build_pixel_transform(preprocessing), preprocessing.image_size
        self.queries = CatalogImages(catalog, val_rows, pixels, size, dtype=torch.uint8)
        self.index = CatalogImages(catalog, index_rows, pixels, size, dtype=torch.uint8)
        self.preprocessing = preprocessing
        self.batch_size, self.workers, self.device = config.embedder.batch_size, config.embedder.workers, device
        self.knn_accuracy, self.k = knn_accuracy, config.index.k

    def __call__(self, model: EmbeddingNet) -> float:
        xq, yq = embed_rows(model, self.queries, self.preprocessing, self.batch_size, self.workers, self.device)
        xb, yb = embed_rows(model, self.index, self.preprocessing, self.batch_size, self.workers, self.device)
        return float(self.knn_accuracy(xq, yq, xb, yb, self.k))


# Settings that only decide when a run stops, not what it computes: a run may be resumed with other values
# (more patience lets a run that early stopping ended go on).
STOPPING_SETTINGS = ("early_stopping", "early_stopping_after")


def earlier_best(checkpoint: Path, identity: dict) -> float:
    """The validation kNN top-1 of the checkpoint an earlier run of the same settings and data kept, so that a
    run starting over (its state lost, or `train --restart`) replaces it only by one as good; -1 otherwise."""
    try:
        training = read_checkpoint(checkpoint).get("training", {})
    except CheckpointError:
        return -1.0
    if "val_top1" not in training or not same_run(training.get("identity"), identity, STOPPING_SETTINGS):
        return -1.0
    log.warning("%s holds an earlier run's best (validation kNN top-1 %.4f) with these settings; this run replaces "
                "it only when it does as well", checkpoint, training["val_top1"])
    return float(training["val_top1"])


def run_identity(config: Config, catalog: Catalog) -> dict:
    """What must match for a saved training state to be resumed."""
    settings = {key: value for key, value in asdict(config.train).items() if key not in STOPPING_SETTINGS}
    return {
        "train": settings,
        "embedder": {**asdict(config.embedder), "batch_size": None, "workers": None, "device": None},
        "catalog": [catalog.kind, str(catalog.root), len(catalog)],
    }


def train(config: Config, knn_accuracy: KnnAccuracy, restart: bool = False, catalog: Catalog | None = None) -> TrainReport:
    """Train the embedder on the configured catalog (or ``catalog``); the best becomes <artifacts>/embedder.pt."""
    started = time.perf_counter()
    device = resolve_device(config.embedder.device)
    torch.manual_seed(config.train.seed)
    catalog = catalog or open_catalog(config.catalog, config.paths.downloads)
    train_rows, val_rows = split_validation(catalog, config.train.holdout_per_class, config.train.seed)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"the {catalog.kind} catalog needs training and validation items to train on")
    preprocessing = catalog_preprocessing(config.embedder, catalog)
    trainee = build_trainee(config, len(catalog.class_names), device)
    directory = config.paths.training
    state_path = directory / "last.pt"
    identity = run_identity(config, catalog)
    modules = {"model": trainee.model, "aux": trainee.aux, "optimizer": trainee.optimizer}
    if restart:
        state_path.unlink(missing_ok=True)
    state = load_state(state_path, identity, modules, passed_over=STOPPING_SETTINGS) or TrainState()
    if not state.step:
        state.best_top1 = max(state.best_top1, earlier_best(config.paths.checkpoint, identity))
        start_stem_from_catalog(trainee.model, trainee.origin, catalog, train_rows, preprocessing, config, device)
    if state.step:
        log.info("Resuming training at step %d (epoch %d, %.0f s done)", state.step, state.epoch, state.seconds)
    resumed_from, seconds_before = state.step, state.seconds
    loop = TrainingLoop(config, catalog, trainee, preprocessing, train_rows, device, state, identity)
    if state.stopped_because == "early stopping" and not loop.patience_lost():
        log.info("Going on with a run that early stopping ended at step %d: train.early_stopping now allows more",
                 state.step)
        state.stopped_because = ""
    if state.stopped_because:
        log.info("This training run already finished (%s); `train --restart` starts a new one", state.stopped_because)
    else:
        validate = Validator(catalog, train_rows, val_rows, preprocessing, config, knn_accuracy, device)
        state.stopped_because = loop.run(validate, lambda: save_state(state_path, state, identity, modules),
                                         TrainingLog(directory), config.paths.checkpoint)
        save_state(state_path, state, identity, modules)
        # The run's last weights beside its best: an ingredient of a weight soup (`manage.py average-weights`).
        save_checkpoint(directory / FINAL_CHECKPOINT_NAME, trainee.model, preprocessing, trainee.origin,
                        extra={"training": {"step": state.step, "final": True, "config": asdict(config.train)}})
    stopped = state.stopped_because
    fresh_steps = state.step - resumed_from
    fresh_seconds = max(state.seconds - seconds_before, 1e-9)
    log.info("Training stopped (%s) after %.0f s; best kNN top-1 %.4f at step %d",
             stopped, time.perf_counter() - started, state.best_top1, state.best_step)
    return TrainReport(
        best_top1=state.best_top1, best_step=state.best_step, steps=state.step,
        epochs=state.step / len(loop.sampler), seconds=state.seconds,
        images_per_second=fresh_steps * loop.sampler.batch_size / fresh_seconds,
        stopped_because=stopped, checkpoint=str(config.paths.checkpoint), resumed_from_step=resumed_from,
    )


# Enough images for a stable estimate of the stem's patch statistics, read in seconds even at 224 px.
STEM_IMAGES = 1_000


def start_stem_from_catalog(model: EmbeddingNet, origin: str, catalog: Catalog, train_rows: np.ndarray,
                            preprocessing: Preprocessing, config: Config, device: str) -> None:
    """Start the stem from the patches of a sample of the training images (model.py) when the network's
    weights are random (create_embedder's origin "none"); pretrained weights keep their stem."""
    if origin != "none":
        return
    rows = np.sort(np.random.default_rng(config.train.seed).permutation(train_rows)[:STEM_IMAGES])
    images = CatalogImages(catalog, rows, build_pixel_transform(preprocessing), preprocessing.image_size,
                           dtype=torch.uint8)
    loader = DataLoader(images, batch_size=config.embedder.batch_size,
                        num_workers=resolve_workers(config.embedder.workers, device))
    batches = [batch[[not error for error in errors]] for batch, _, errors in loader]
    pixels = normalize_batch(torch.cat(batches), preprocessing)
    filters = model.start_stem_from_patches(pixels.to(device))
    log.info("The stem's first %d filters start along the principal directions of %d training images' patches",
             filters, len(pixels))


class TrainingLoop:
    """Steps, validations, checkpoints and stopping rules over one catalog."""

    def __init__(self, config: Config, catalog: Catalog, trainee: Trainee, preprocessing: Preprocessing,
                 train_rows: np.ndarray, device: str, state: TrainState, identity: dict) -> None:
        self.config, self.train, self.trainee, self.state = config, config.train, trainee, state
        self.preprocessing, self.device = preprocessing, device
        self.identity = identity  # run_identity's, saved in each best checkpoint (earlier_best)
        labels = np.array([catalog.items[row].label for row in train_rows])
        p = min(self.train.classes_per_batch, len(np.unique(labels)))
        self.sampler = PKSampler(labels, p, self.train.images_per_class, seed=self.train.seed)
        preset = preset_for(catalog.kind) if self.train.augment == "auto" else self.train.augment
        pixels = training_pixels(preset, preprocessing)
        self.images = CatalogImages(catalog, train_rows, pixels, preprocessing.image_size, dtype=torch.uint8)
        self.amp = self.train.amp == "on" or (self.train.amp == "auto" and fast_bfloat16(device))
        self.validate_every = max(1, round(self.train.validate_every * len(self.sampler)))
        self.trace_every = max(1, len(self.sampler) // LOSS_POINTS_PER_EPOCH)

    def run(self, validate: Validator, save: Callable[[], None], metrics: TrainingLog, best_path: Path) -> str:
        """Train until the epochs, the time budget or the patience run out; returns why it stopped."""
        state, train = self.state, self.train
        window: list[dict] = []  # the steps since the last validation
        trace_window: list[dict] = []  # since the last point of the loss curve
        clock = time.perf_counter() - state.seconds
        last_save = time.perf_counter()
        while state.epoch < train.epochs:
            self.sampler.set_epoch(state.epoch)
            batches = itertools.islice(iter(self.sampler), state.batch_in_epoch, None)
            loader = DataLoader(self.images, batch_sampler=list(batches),
                                num_workers=resolve_workers(self.config.embedder.workers, self.device),
                                pin_memory=self.device.startswith("cuda"))
            progress = tqdm(loader, desc=f"epoch {state.epoch + 1}/{train.epochs}", unit="batch",
                            initial=state.batch_in_epoch, total=len(self.sampler))
            for batch, rows, errors in progress:
                window.append(self._step(batch, rows, errors))
                trace_window.append(window[-1])
                if state.step % self.trace_every == 0:
                    state.loss_trace.append({"step": state.step, **_means(trace_window)})
                    trace_window = []
                state.seconds = time.perf_counter() - clock
                progress.set_postfix(loss=f"{window[-1]['loss']:.3f}",
                                     img_s=f"{state.step * self.sampler.batch_size / max(state.seconds, 1e-9):.0f}")
                out_of_time = bool(train.time_budget) and state.seconds >= train.time_budget
                out_of_steps = bool(train.steps) and state.step >= train.steps
                if state.step % self.validate_every == 0 or out_of_time or out_of_steps:
                    patience_lost = self._validate(validate, window, metrics, best_path)
                    window = []
                    save()
                    last_save = time.perf_counter()
                    if out_of_time:
                        return "time budget"
                    if out_of_steps:
                        return "steps done"
                    if patience_lost:
                        return "early stopping"
                elif time.perf_counter() - last_save > STATE_EVERY_SECONDS:
                    save()
                    last_save = time.perf_counter()
            progress.close()
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            save()
        if window:
            self._validate(validate, window, metrics, best_path)
            save()
        return "epochs done"

    def _step(self, batch: torch.Tensor, rows: torch.Tensor, errors: list[str]) -> dict:
        state = self.state
        lr = learning_rate(self.train, state.step, len(self.sampler), state.seconds)
        for group in self.trainee.optimizer.param_groups:
            group["lr"] = lr
        ok = torch.tensor([not error for error in errors], dtype=torch.bool)
        labels = torch.tensor([self.images.catalog.items[int(row)].label for row in rows[ok]])
        batch = normalize_batch(batch[ok].to(self.device, non_blocking=True), self.preprocessing)
        batch = batch.contiguous(memory_format=torch.channels_last)
        losses = train_step(self.trainee, batch, labels.to(self.device), self.train.aux_loss_weight, self.amp)
        state.step += 1
        state.batch_in_epoch += 1
        return {**losses, "lr": lr}

    def _validate(self, validate: Validator, window: list[dict], metrics: TrainingLog, best_path: Path) -> bool:
        """Measure, log, keep the best checkpoint; True when patience has run out."""
        state = self.state
        top1 = validate(self.trainee.model)
        row = _means(window)
        row.update(epoch=round(state.step / len(self.sampler), 3), step=state.step, seconds=round(state.seconds, 1),
                   lr=window[-1]["lr"], val_top1=top1,
                   images_per_second=round(state.step * self.sampler.batch_size / max(state.seconds, 1e-9), 1))
        state.history.append(row)
        metrics.write(state.history, state.loss_trace)
        log.info("step %d: loss %.4f, validation kNN top-1 %.4f", state.step, row["loss"], top1)
        improved = top1 > state.best_top1
        # On a tie the later model is kept: it has trained longer at a lower learning rate.
        if top1 >= state.best_top1:
            state.best_top1, state.best_step = top1, state.step
            save_checkpoint(best_path, self.trainee.model, self.preprocessing, self.trainee.origin,
                            extra={"training": {"step": state.step, "val_top1": top1, "config": asdict(self.train),
                                                     "identity": self.identity}})
        if improved:
            state.validations_without_gain = 0
            return False
        progress = schedule_progress(self.train, state.step, len(self.sampler), state.seconds)
        if progress >= self.train.early_stopping_after:
            state.validations_without_gain += 1
        return self.patience_lost()

    def patience_lost(self) -> bool:
        """Whether early stopping, as configured now, ends the run."""
        patience = self.train.early_stopping
        return bool(patience) and self.state.validations_without_gain >= patience


def _means(steps: list[dict]) -> dict:
    """The mean losses of some steps (train_step's dicts)."""
    return {key: float(np.mean([step[key] for step in steps])) for key in ("loss", "triplet", "aux")}
