"""The GRU annotator: it learns a tiny set by heart, decodes within its limits, and saves what it needs."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from config import CaptionsConfig, Config
from embedder.captioner.model import BOS, EOS, PAD, CaptionGRU, beam_decode, greedy_decode, teacher_forcing_batch
from embedder.captioner.training import (
    CaptionCorpus,
    CaptionerError,
    annotator_for,
    fit_captioner,
    load_captioner,
    save_captioner,
    train_captioner,
)
from embedder.captioner.vocabulary import Vocabulary, tokenize
from embedder.checkpoint import file_sha256

TITLES = [
    "Red Striped Short-Sleeve Tee", "Navy Long-Sleeve Blouse", "Black Jeans", "White Polka Dot Sleeveless Dress",
    "Olive Plaid Coat", "Red Long-Sleeve Tee",
]
SMALL = CaptionsConfig(word_size=32, hidden_size=64, dropout=0.0, min_word_count=1, epochs=150, batch_size=6,
                       lr=1e-2, weight_decay=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second thread only waits on the first (and on a busy machine, for long)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixed_vectors(count: int, dimension: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, dimension)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_vocabulary_encodes_decodes_and_counts():
    vocabulary = Vocabulary.build(["Red Tee", "red T-Shirt, men's", "Blue tee"], min_count=2)
    assert vocabulary.words == ["<pad>", "<bos>", "<eos>", "<unk>", "red", "tee"]
    assert vocabulary.encode("Red blue TEE") == [4, 3, 5, 2]
    assert vocabulary.decode([4, 3, 5, 2, 4]) == "red <unk> tee"
    assert tokenize("Men's T-Shirt, slim-fit (2)") == ["men's", "t-shirt", "slim-fit", "2"]


def test_teacher_forcing_shifts_by_one():
    inputs, targets = teacher_forcing_batch([[5, 6, EOS], [7, EOS]])
    assert inputs.tolist() == [[BOS, 5, 6], [BOS, 7, PAD]]
    assert targets.tolist() == [[5, 6, EOS], [7, EOS, PAD]]


def test_the_annotator_learns_a_tiny_set_by_heart():
    """Six fixed embeddings, six titles: after training, greedy and beam decoding give each one its own title."""
    torch.manual_seed(0)
    started = time.perf_counter()
    vectors = fixed_vectors(len(TITLES))
    vocabulary = Vocabulary.build(TITLES)
    model = CaptionGRU(16, len(vocabulary), SMALL.word_size, SMALL.hidden_size, dropout=0.0)
    fit = fit_captioner(model, vectors, [vocabulary.encode(t) for t in TITLES], SMALL)
    assert fit.train_loss < 0.05
    x = torch.as_tensor(vectors)
    expected = [" ".join(tokenize(t)) for t in TITLES]
    assert [vocabulary.decode(ids) for ids in greedy_decode(model, x, max_length=10)] == expected
    assert [vocabulary.decode(ids) for ids in beam_decode(model, x, beam_size=3, max_length=10)] == expected
    assert time.perf_counter() - started < 20


def constant_model(vocabulary_size: int, favourite: int) -> CaptionGRU:
    """A model whose every next word is ``favourite``: all weights 0, the projection's bias picks it."""
    model = CaptionGRU(4, vocabulary_size, word_size=4, hidden_size=4, dropout=0.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.project.bias[favourite] = 5.0
    return model


@pytest.mark.parametrize("decode", [lambda m, x: greedy_decode(m, x, 7), lambda m, x: beam_decode(m, x, 3, 7)])
def test_decoding_stops_at_the_length_limit(decode):
    model = constant_model(8, favourite=5)
    assert decode(model, torch.zeros(2, 4)) == [[5] * 7, [5] * 7]


@pytest.mark.parametrize("decode", [lambda m, x: greedy_decode(m, x, 7), lambda m, x: beam_decode(m, x, 3, 7)])
def test_decoding_stops_at_the_end_token(decode):
    model = constant_model(8, favourite=EOS)
    assert decode(model, torch.zeros(3, 4)) == [[], [], []]


def test_decoding_stops_at_the_end_token_after_some_words():
    """A model that says word 6 then ends: the hidden state counts the steps."""
    vocabulary = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "red", "tee"])
    model = CaptionGRU(4, len(vocabulary), word_size=4, hidden_size=8, dropout=0.0)
    fit_captioner(model, fixed_vectors(1, 4), [[4, 5, EOS]], CaptionsConfig(
        word_size=4, hidden_size=8, dropout=0.0, epochs=200, batch_size=1, lr=2e-2, weight_decay=0.0))
    x = torch.as_tensor(fixed_vectors(1, 4))
    assert greedy_decode(model, x, 10) == [[4, 5]] == beam_decode(model, x, 2, 10)
    assert greedy_decode(model, x, 1) == [[4]] == beam_decode(model, x, 2, 1)


def corpus_and_config(tmp_path, sha: str) -> tuple[CaptionCorpus, Config]:
    titles = TITLES * 4
    splits = ["train"] * len(TITLES) * 3 + ["val"] * len(TITLES)
    vectors = np.concatenate([fixed_vectors(len(TITLES))] * 4)
    settings = CaptionsConfig(**{**SMALL.__dict__, "epochs": 40, "beam_size": 2})
    return CaptionCorpus(vectors, titles, splits, sha, "test vectors"), Config(captions=settings, artifacts_dir=tmp_path)


def test_train_captioner_saves_model_vocabulary_and_embedder_hash(tmp_path):
    (tmp_path / "embedder.pt").write_bytes(b"an embedder")
    corpus, config = corpus_and_config(tmp_path, file_sha256(tmp_path / "embedder.pt"))
    report = train_captioner(config, corpus)
    assert report.checkpoint == tmp_path / "captioner.pt" and report.train_captions == 18 and report.val_captions == 6
    loaded = load_captioner(report.checkpoint, corpus.embedder_sha256)
    assert loaded.vocabulary.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and "tee" in loaded.vocabulary.words
    annotate = annotator_for(tmp_path, corpus.embedder_sha256, config.captions)
    assert annotate(fixed_vectors(len(TITLES))) == [" ".join(tokenize(t)) for t in TITLES]
    with pytest.raises(CaptionerError, match="train-captioner"):
        load_captioner(report.checkpoint, "0" * 64)
    assert annotator_for(tmp_path, "0" * 64, config.captions) is None  # auto: consensus serves instead
    with pytest.raises(CaptionerError):
        annotator_for(tmp_path, "0" * 64, CaptionsConfig(method="gru"))


def test_train_captioner_refuses_vectors_of_another_embedder(tmp_path):
    (tmp_path / "embedder.pt").write_bytes(b"a retrained embedder")
    corpus, config = corpus_and_config(tmp_path, "ab" * 32)
    with pytest.raises(CaptionerError, match="build-index"):
        train_captioner(config, corpus)


def test_a_damaged_captioner_is_a_clear_error(tmp_path):
    (tmp_path / "captioner.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CaptionerError, match="could not be read"):
        load_captioner(tmp_path / "captioner.pt")
    model = CaptionGRU(4, 5)
    save_captioner(tmp_path / "other.pt", model, Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "x"]), "s",
                   CaptionsConfig(), {})
    assert load_captioner(tmp_path / "other.pt").vocabulary.words[-1] == "x"
