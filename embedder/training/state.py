"""What a training run keeps between steps and between runs: resumable state, the metrics log and curve,
the validation split, and which trunk layers are frozen."""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedder.catalogs.base import Catalog
from embedder.checkpoint import save_atomically
from embedder.model import EmbeddingNet

log = logging.getLogger(__name__)

STATE_FORMAT = "lookbook-training-state"
# Trunk modules in forward order; freezing "layer2" freezes the stem, layer1 and layer2.
TRUNK_BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4")
METRIC_FIELDS = ("epoch", "step", "seconds", "lr", "loss", "triplet", "aux", "images_per_second", "val_top1")
LOSS_FIELDS = ("step", "loss", "triplet", "aux")
# Points of the loss curve per epoch, each the mean of the steps since the last: validations come once an
# epoch, and a short run's curve would otherwise be two or three points.
LOSS_POINTS_PER_EPOCH = 25


@dataclass
class TrainState:
    """The counters of a run; with the model and optimiser state they make it resumable."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    seconds: float = 0.0
    best_top1: float = -1.0
    best_step: int = 0
    validations_without_gain: int = 0
    stopped_because: str = ""  # set when the run is over; a finished run is not trained further
    history: list[dict] = field(default_factory=list)  # a row per validation (metrics.csv)
    loss_trace: list[dict] = field(default_factory=list)  # a row per LOSS_POINTS_PER_EPOCH-th of an epoch (loss.csv)


def save_state(path: Path, state: TrainState, run_identity: dict, modules: dict[str, object]) -> None:
    """Write the resumable state atomically: counters, the run's identity, and each module's state_dict."""
    payload = {
        "format": STATE_FORMAT,
        "state": asdict(state),
        "identity": run_identity,
        "modules": {name: module.state_dict() for name, module in modules.items() if module is not None},
    }
    save_atomically(payload, path)


def load_state(path: Path, run_identity: dict, modules: dict[str, object],
               passed_over: Collection[str] = ()) -> TrainState | None:
    """Restore a run saved by save_state when it is the same run (same settings and data, see same_run); else None."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged state: start over rather than crash, but keep it and say so
        damaged = path.with_name(path.name + ".damaged")
        os.replace(path, damaged)
        log.warning("The training state %s is damaged (%s); it is kept as %s, and this run STARTS OVER from step 0 "
                    "(an earlier run's better checkpoint is kept until this run does as well)", path, error, damaged)
        return None
    if payload.get("format") != STATE_FORMAT or not same_run(payload.get("identity"), run_identity, passed_over):
        log.info("Not resuming %s: it belongs to a run with other settings", path)
        return None
    for name, module in modules.items():
        if module is not None:
            module.load_state_dict(payload["modules"][name])
    return TrainState(**payload["state"])


def same_run(saved: object, current: object, passed_over: Collection[str] = ()) -> bool:
    """Whether a saved run identity matches the current one. Settings named in ``passed_over`` that the saved
    one has and the current one does not are passed over: they were taken out of the identity because a run
    may change them."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return set(saved) - set(current) <= set(passed_over) and \
            all(key in saved and same_run(saved[key], value, passed_over) for key, value in current.items())
    return saved == current


class TrainingLog:
    """metrics.csv (one row per validation), loss.csv (the loss curve's points) and training-curve.png,
    rewritten from the run's history."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.csv_path = directory / "metrics.csv"
        self.loss_path = directory / "loss.csv"
        self.png_path = directory / "training-curve.png"

    def write(self, history: list[dict], loss_trace: list[dict]) -> None:
        """Rewrite the files from the full history (cheap, and correct after a resume)."""
        _write_csv(self.csv_path, METRIC_FIELDS, history)
        _write_csv(self.loss_path, LOSS_FIELDS, loss_trace)
        self._plot(history, loss_trace)

    def _plot(self, history: list[dict], loss_trace: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [row["step"] for row in history]
        figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        # The loss curve's points when the run has them (a mean every 1/25 epoch), else the validations' means.
        curve = loss_trace or history
        for key, label in (("loss", "total"), ("triplet", "triplet"), ("aux", "classification")):
            losses.plot([row["step"] for row in curve], [row[key] for row in curve], marker=None if loss_trace else "o",
                        linewidth=1 if loss_trace else 1.5, label=label)
        losses.set(xlabel="step", ylabel="training loss", title="Loss")
        losses.legend()
        top1 = [row["val_top1"] for row in history]
        accuracy.plot(steps, top1, marker="o", color="tab:green")
        best = int(np.argmax(top1))
        accuracy.annotate(f"best {top1[best]:.3f}", (steps[best], top1[best]), textcoords="offset points",
                          xytext=(0, 8), ha="center")
        accuracy.set(xlabel="step", ylabel="kNN top-1", title="Validation kNN top-1", ylim=accuracy_axis_range(top1))
        accuracy.grid(alpha=0.3)
        temporary = self.png_path.with_name("training-curve.tmp.png")
        figure.savefig(temporary, dpi=100)
        plt.close(figure)
        os.replace(temporary, self.png_path)


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def accuracy_axis_range(values: list[float]) -> tuple[float, float]:
    """The accuracy axis from a little below the lowest value to 1: on a 0-1 axis the last points'
    differences (0.89 against 0.92) are a few pixels."""
    return max(0.0, min(values) - 0.05), 1.0


def split_validation(catalog: Catalog, holdout_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): the val split, or a seeded per-class slice of train without one."""
    splits = np.array([item.split for item in catalog.items])
    train = np.flatnonzero(splits == "train")
    val = np.flatnonzero(splits == "val")
    if len(val):
        return train, val
    labels = np.array([catalog.items[row].label for row in train])
    rng = np.random.default_rng(seed)
    held = [rng.permutation(train[labels == c])[:holdout_per_class] for c in np.unique(labels)]
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(train, val), val


def freeze_trunk(model: EmbeddingNet, up_to: str) -> None:
    """Freeze the trunk's blocks up to and including ``up_to`` ("none" freezes nothing)."""
    if up_to == "none":
        return
    if up_to not in TRUNK_BLOCKS:
        raise ValueError(f"freeze {up_to!r} is not one of none, {', '.join(TRUNK_BLOCKS)}")
    trunk = model.trunk
    blocks = {"stem": [trunk.conv1, trunk.bn1], **{name: [getattr(trunk, name)] for name in TRUNK_BLOCKS[1:]}}
    for name in TRUNK_BLOCKS[: TRUNK_BLOCKS.index(up_to) + 1]:
        for module in blocks[name]:
            module.requires_grad_(False)


def keep_frozen_batchnorm_still(model: EmbeddingNet) -> None:
    """Batch-norm layers whose weights are frozen keep their running statistics too (call after train())."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d) and not module.weight.requires_grad:
            module.eval()
