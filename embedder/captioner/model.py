"""The GRU annotator: an image embedding sets the GRU's first hidden state, the GRU then writes the title.

As in the Zalando Research model library's annotator: word embedding -> GRU -> projection to the
vocabulary, trained with teacher forcing; decoded greedily or by beam search. Token ids follow
embedder/captioner/vocabulary.py: 0 <pad>, 1 <bos>, 2 <eos>.
"""
from __future__ import annotations

import torch
from torch import nn

PAD, BOS, EOS = 0, 1, 2


class CaptionGRU(nn.Module):
    """Embedding vector (D) -> initial hidden state; words -> GRU -> logits over the vocabulary."""

    def __init__(self, embedding_size: int, vocabulary_size: int, word_size: int = 128, hidden_size: int = 256,
                 layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.args = {"embedding_size": embedding_size, "vocabulary_size": vocabulary_size, "word_size": word_size,
                     "hidden_size": hidden_size, "layers": layers, "dropout": dropout}
        self.layers, self.hidden_size = layers, hidden_size
        self.init_hidden = nn.Sequential(nn.Linear(embedding_size, layers * hidden_size), nn.Tanh())
        self.words = nn.Embedding(vocabulary_size, word_size, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(word_size, hidden_size, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.project = nn.Linear(hidden_size, vocabulary_size)
        # Catalog embeddings share a large common component: standardising them (with the training
        # set's statistics, saved in the state dict) lets the small differences between items steer the GRU.
        self.register_buffer("input_mean", torch.zeros(embedding_size))
        self.register_buffer("input_scale", torch.ones(embedding_size))

    @torch.no_grad()
    def standardise_inputs(self, vectors: torch.Tensor) -> None:
        """Use the mean and standard deviation of ``vectors`` (N x D, the training set) to standardise inputs."""
        self.input_mean.copy_(vectors.mean(dim=0))
        self.input_scale.copy_(vectors.std(dim=0, unbiased=False).clamp_min(1e-6))

    def model_args(self) -> dict:
        """The keyword arguments that rebuild this network."""
        return dict(self.args)

    def initial_state(self, vectors: torch.Tensor) -> torch.Tensor:
        """layers x B x H hidden state from B x D image embeddings."""
        vectors = (vectors - self.input_mean) / self.input_scale
        state = self.init_hidden(vectors).view(vectors.shape[0], self.layers, self.hidden_size)
        return state.transpose(0, 1).contiguous()

    def step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B x T x V) for the next word after each of ``tokens`` (B x T), and the new state."""
        output, state = self.gru(self.drop(self.words(tokens)), state)
        return self.project(self.drop(output)), state

    def forward(self, vectors: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits B x T x V for ``inputs`` (B x T, starting with <bos>)."""
        logits, _ = self.step(inputs, self.initial_state(vectors))
        return logits


def teacher_forcing_batch(captions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (<bos> + words) and targets (words + <eos>), padded: ``captions`` hold words then <eos>."""
    length = max(len(caption) for caption in captions)
    inputs = torch.full((len(captions), length), PAD, dtype=torch.long)
    targets = torch.full((len(captions), length), PAD, dtype=torch.long)
    for row, caption in enumerate(captions):
        inputs[row, 0] = BOS
        inputs[row, 1:len(caption)] = torch.tensor(caption[:-1], dtype=torch.long)
        targets[row, :len(caption)] = torch.tensor(caption, dtype=torch.long)
    return inputs, targets


@torch.no_grad()
def greedy_decode(model: CaptionGRU, vectors: torch.Tensor, max_length: int) -> list[list[int]]:
    """The most likely word at each step, until <eos> or ``max_length`` words; token ids without <eos>."""
    model.eval()
    count = vectors.shape[0]
    state = model.initial_state(vectors)
    token = torch.full((count, 1), BOS, dtype=torch.long, device=vectors.device)
    words = torch.full((count, max_length), PAD, dtype=torch.long, device=vectors.device)
    done = torch.zeros(count, dtype=torch.bool, device=vectors.device)
    for position in range(max_length):
        logits, state = model.step(token, state)
        token = _allowed(logits[:, -1]).argmax(dim=-1, keepdim=True)
        done |= token[:, 0] == EOS
        if done.all():
            break
        words[:, position] = torch.where(done, torch.full_like(token[:, 0], PAD), token[:, 0])
    return [_strip(row) for row in words.tolist()]


@torch.no_grad()
def beam_decode(model: CaptionGRU, vectors: torch.Tensor, beam_size: int, max_length: int) -> list[list[int]]:
    """Beam search per image: the finished caption of best mean log-probability per token (<eos> counted).

    A beam that reaches ``max_length`` words without <eos> finishes there. Token ids without <eos>.
    """
    model.eval()
    count, width = vectors.shape[0], beam_size
    device = vectors.device
    state = model.initial_state(vectors).repeat_interleave(width, dim=1)  # layers x (B*W) x H
    scores = torch.full((count, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at first, so that the W beams do not start as copies
    tokens = torch.full((count, width, 1), BOS, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(count)]
    for position in range(max_length + 1):
        logits, state = model.step(tokens[:, :, -1].reshape(-1, 1), state)
        logp = torch.log_softmax(_allowed(logits[:, -1].float()), dim=-1).view(count, width, -1)
        if position == max_length:  # out of room: only <eos> may follow
            keep = torch.full_like(logp, float("-inf"))
            keep[:, :, EOS] = logp[:, :, EOS]
            logp = keep
        vocabulary = logp.shape[-1]
        total = (scores[:, :, None] + logp).view(count, -1)
        # 2W candidates hold at least W that are not <eos>: at most one <eos> comes from each beam.
        best, flat = total.topk(min(2 * width, total.shape[1]), dim=1)
        histories = tokens[:, :, 1:].tolist()
        next_scores = [[float("-inf")] * width for _ in range(count)]
        parents = [[0] * width for _ in range(count)]
        words = [[PAD] * width for _ in range(count)]
        for query, (candidates, indices) in enumerate(zip(best.tolist(), flat.tolist())):
            live = 0
            for score, index in zip(candidates, indices):
                if score == float("-inf") or live == width:
                    break
                beam, word = divmod(index, vocabulary)
                if word == EOS:
                    history = histories[query][beam]
                    finished[query].append((score / (len(history) + 1), history))
                    continue
                next_scores[query][live], parents[query][live], words[query][live] = score, beam, word
                live += 1
        scores = torch.tensor(next_scores, device=device)
        if position == max_length or all(len(done) >= width for done in finished) or torch.isinf(scores).all():
            break
        parent = torch.tensor(parents, dtype=torch.long, device=device)
        tokens = torch.cat([tokens.gather(1, parent[:, :, None].expand(-1, -1, tokens.shape[2])),
                            torch.tensor(words, dtype=torch.long, device=device)[:, :, None]], dim=2)
        state = state[:, (parent + torch.arange(count, device=device)[:, None] * width).view(-1)]
    return [max(done, key=lambda pair: pair[0])[1] if done else [] for done in finished]


def _strip(row: list[int]) -> list[int]:
    """Token ids up to the first <pad> (greedy rows are padded after <eos>)."""
    return row[: row.index(PAD)] if PAD in row else row


def _allowed(logits: torch.Tensor) -> torch.Tensor:
    """Logits with <pad> and <bos> ruled out: neither is ever a next word."""
    logits = logits.clone()
    logits[:, [PAD, BOS]] = float("-inf")
    return logits
