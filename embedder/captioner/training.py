"""Training the GRU annotator on stored catalog embeddings and titles; saving and loading captioner.pt.

It trains on the vectors of embeddings.h5 (no image is decoded), so the annotator only makes sense
with the embedder that made them: captioner.pt records that embedder's checkpoint hash, and loading
checks it against the embedder in use.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from config import CaptionsConfig, Config
from embedder.captioner.model import CaptionGRU, beam_decode, greedy_decode, teacher_forcing_batch
from embedder.captioner.vocabulary import Vocabulary
from embedder.checkpoint import CheckpointError, file_sha256, save_atomically

log = logging.getLogger(__name__)

CAPTIONER_FORMAT = "lookbook-captioner"
CAPTIONER_VERSION = 1
CAPTIONER_NAME = "captioner.pt"
DECODE_BATCH = 512


class CaptionerError(CheckpointError):
    """A captioner that cannot be trained or used as asked: no titles, or made for another embedder."""


@dataclass(frozen=True)
class CaptionCorpus:
    """Stored catalog vectors with their titles and splits, and the embedder checkpoint that made them."""

    vectors: np.ndarray  # N x D float32
    titles: Sequence[str]
    splits: Sequence[str]
    embedder_sha256: str
    source: str  # where the vectors came from, for messages


@dataclass
class CaptionTrainingReport:
    """What train_captioner did."""

    checkpoint: Path
    train_captions: int
    val_captions: int
    vocabulary: int
    epochs: int
    steps: int
    seconds: float
    train_loss: float
    best_val_loss: float | None
    stopped_because: str


@dataclass
class LoadedCaptioner:
    """A trained annotator ready to caption embedding vectors."""

    model: CaptionGRU
    vocabulary: Vocabulary
    embedder_sha256: str
    path: Path
    device: str = "cpu"

    def caption(self, vectors: np.ndarray, beam_size: int = 3, max_length: int = 16) -> list[str]:
        """One caption per row of ``vectors`` (N x D): beam search, or greedy when beam_size is 1."""
        captions: list[str] = []
        for start in range(0, len(vectors), DECODE_BATCH):
            batch = torch.as_tensor(np.asarray(vectors[start:start + DECODE_BATCH], np.float32), device=self.device)
            ids = (greedy_decode(self.model, batch, max_length) if beam_size == 1
                   else beam_decode(self.model, batch, beam_size, max_length))
            captions += [self.vocabulary.decode(row) for row in ids]
        return captions


def check_embedder(corpus: CaptionCorpus, embedder_checkpoint: Path) -> None:
    """The embedder checkpoint must be the one that made the stored vectors, else the annotator would be useless."""
    if not embedder_checkpoint.is_file():
        raise CaptionerError(f"{embedder_checkpoint} does not exist; run `python manage.py build-index` first")
    found = file_sha256(embedder_checkpoint)
    if found != corpus.embedder_sha256:
        raise CaptionerError(
            f"{corpus.source} was made by the embedder of sha256 {corpus.embedder_sha256[:12]}..., but "
            f"{embedder_checkpoint} has sha256 {found[:12]}...; re-run `python manage.py build-index` so that the "
            "stored vectors come from the embedder the app uses"
        )


def train_captioner(config: Config, corpus: CaptionCorpus, device: str = "cpu") -> CaptionTrainingReport:
    """Train the GRU annotator on the train split's titles (best val loss kept) and save <artifacts>/captioner.pt."""
    settings = config.captions
    check_embedder(corpus, config.paths.checkpoint)
    train_rows, val_rows = _rows(corpus, "train"), _rows(corpus, "val")
    if len(train_rows) == 0:
        raise CaptionerError(f"{corpus.source}: no train item has a title; this catalog has nothing to learn "
                             "captions from")
    vocabulary = Vocabulary.build([corpus.titles[row] for row in train_rows], settings.min_word_count)
    torch.manual_seed(settings.seed)
    model = CaptionGRU(corpus.vectors.shape[1], len(vocabulary), settings.word_size, settings.hidden_size,
                       settings.layers, settings.dropout).to(device)
    model.standardise_inputs(torch.as_tensor(corpus.vectors[train_rows], device=device))
    log.info("training the annotator on %d titles (%d words), validating on %d", len(train_rows), len(vocabulary),
             len(val_rows))
    fit = fit_captioner(model, corpus.vectors[train_rows], [vocabulary.encode(corpus.titles[row]) for row in train_rows],
                        settings, device, validation=(corpus.vectors[val_rows],
                                                      [vocabulary.encode(corpus.titles[row]) for row in val_rows]))
    path = config.artifacts / CAPTIONER_NAME
    save_captioner(path, model, vocabulary, corpus.embedder_sha256, settings,
                   {"epochs": fit.epochs, "train_loss": fit.train_loss, "best_val_loss": fit.best_val_loss})
    return CaptionTrainingReport(path, len(train_rows), len(val_rows), len(vocabulary), fit.epochs, fit.steps,
                                 fit.seconds, fit.train_loss, fit.best_val_loss, fit.stopped_because)


@dataclass
class Fit:
    """How a fit_captioner run went."""

    epochs: int
    steps: int
    seconds: float
    train_loss: float
    best_val_loss: float | None
    stopped_because: str


def fit_captioner(
    model: CaptionGRU,
    vectors: np.ndarray,
    captions: list[list[int]],
    settings: CaptionsConfig,
    device: str = "cpu",
    validation: tuple[np.ndarray, list[list[int]]] | None = None,
) -> Fit:
    """Teacher-forced training on ``captions`` (word ids then <eos>) of ``vectors[i]``; the model ends at its best.

    With validation captions the weights of the lowest validation loss are kept, else the last.
    """
    if len(captions) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(captions)} captions")
    x = torch.as_tensor(np.asarray(vectors, np.float32), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    has_validation = validation is not None and len(validation[1]) > 0
    best_loss, best_state, steps, train_loss = math.inf, None, 0, math.nan
    started, stopped, epoch = time.perf_counter(), "epochs done", 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(captions), generator=generator).tolist()
        total, count = 0.0, 0
        for start in tqdm(range(0, len(order), settings.batch_size), desc=f"captioner epoch {epoch}", leave=False,
                          disable=len(order) < 50 * settings.batch_size):
            rows = order[start:start + settings.batch_size]
            loss = _loss(model, x[rows], [captions[row] for row in rows], device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            steps += 1
            total, count = total + loss.item() * len(rows), count + len(rows)
        train_loss = total / count
        if has_validation:
            val_loss = caption_loss(model, validation[0], validation[1], device)
            log.info("captioner epoch %d: train loss %.4f, val loss %.4f", epoch, train_loss, val_loss)
            if val_loss < best_loss:
                best_loss = val_loss
                best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        else:
            log.info("captioner epoch %d: train loss %.4f", epoch, train_loss)
        if settings.time_budget and time.perf_counter() - started >= settings.time_budget:
            stopped = f"time budget of {settings.time_budget} s"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return Fit(epoch, steps, time.perf_counter() - started, train_loss,
               best_loss if has_validation else None, stopped)


@torch.no_grad()
def caption_loss(model: CaptionGRU, vectors: np.ndarray, captions: list[list[int]], device: str = "cpu",
                 batch_size: int = 512) -> float:
    """Mean cross-entropy per word (teacher forcing, eval mode) of ``captions`` given ``vectors``."""
    model.eval()
    x = torch.as_tensor(np.asarray(vectors, np.float32), device=device)
    total, words = 0.0, 0
    for start in range(0, len(captions), batch_size):
        batch = captions[start:start + batch_size]
        count = sum(len(caption) for caption in batch)
        total += _loss(model, x[start:start + batch_size], batch, device).item() * count
        words += count
    return total / max(words, 1)


def _loss(model: CaptionGRU, vectors: torch.Tensor, captions: list[list[int]], device: str) -> torch.Tensor:
    inputs, targets = teacher_forcing_batch(captions)
    logits = model(vectors, inputs.to(device))
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1),
                                       ignore_index=0)


def _rows(corpus: CaptionCorpus, split: str) -> np.ndarray:
    return np.array([row for row, (title, where) in enumerate(zip(corpus.titles, corpus.splits))
                     if where == split and title.strip()], dtype=np.int64)


def save_captioner(path: Path, model: CaptionGRU, vocabulary: Vocabulary, embedder_sha256: str,
                   settings: CaptionsConfig, history: dict) -> None:
    """Write captioner.pt atomically: the model, its vocabulary, the embedder hash and the settings that made it."""
    save_atomically({
        "format": CAPTIONER_FORMAT,
        "format_version": CAPTIONER_VERSION,
        "model_args": model.model_args(),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "vocabulary": list(vocabulary.words),
        "embedder_sha256": embedder_sha256,
        "settings": asdict(settings),
        "history": history,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, path)
    log.info("saved the annotator to %s", path)


def load_captioner(path: Path, embedder_sha256: str | None = None, device: str = "cpu") -> LoadedCaptioner:
    """Rebuild the annotator from captioner.pt; CaptionerError if unreadable or made for another embedder."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CaptionerError(f"{path} does not exist; run `python manage.py train-captioner`") from None
    except Exception as error:
        raise CaptionerError(f"{path} could not be read: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CAPTIONER_FORMAT:
        raise CaptionerError(f"{path} is not a Lookbook captioner (no format '{CAPTIONER_FORMAT}')")
    if payload.get("format_version") != CAPTIONER_VERSION:
        raise CaptionerError(f"{path} has format version {payload.get('format_version')}; this Lookbook reads "
                             f"{CAPTIONER_VERSION}")
    if embedder_sha256 is not None and payload.get("embedder_sha256") != embedder_sha256:
        raise CaptionerError(
            f"{path} was trained on the vectors of the embedder {str(payload.get('embedder_sha256'))[:12]}..., not "
            f"{embedder_sha256[:12]}... in use; run `python manage.py train-captioner` again"
        )
    try:
        model = CaptionGRU(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        vocabulary = Vocabulary(payload["vocabulary"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CaptionerError(f"{path} is damaged or from another version: {error}") from error
    return LoadedCaptioner(model.eval().to(device), vocabulary, str(payload["embedder_sha256"]), path, device)


def annotator_for(artifacts: Path, embedder_sha256: str, settings: CaptionsConfig,
                  device: str = "cpu") -> Callable[[np.ndarray], list[str]] | None:
    """The trained annotator of ``artifacts`` as vectors -> captions, or None when there is none for this embedder.

    A missing captioner.pt is normal (consensus captions serve); one made for another embedder is
    logged and ignored, unless captions.method is "gru", which then insists on it.
    """
    path = Path(artifacts) / CAPTIONER_NAME
    if settings.method == "consensus" or (not path.is_file() and settings.method == "auto"):
        return None
    try:
        loaded = load_captioner(path, embedder_sha256, device)
    except CaptionerError as error:
        if settings.method == "gru":
            raise
        log.warning("%s; using neighbour consensus captions instead", error)
        return None
    return lambda vectors: loaded.caption(vectors, settings.beam_size, settings.max_length)
