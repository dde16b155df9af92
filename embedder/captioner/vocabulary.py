"""Words of product titles as token ids, for the GRU annotator; travels inside captioner.pt."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
# Lower-case words; hyphens and apostrophes inside a word keep it whole ("t-shirt", "men's").
# indexer/captions/metrics.py tokenises with the same pattern, so that scores see the annotator's words.
WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """'Red Striped T-Shirt, Slim' -> ['red', 'striped', 't-shirt', 'slim']."""
    return WORD.findall(text.lower())


class Vocabulary:
    """Token ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>, then the words, most frequent first."""

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {', '.join(SPECIALS)}, got {list(words[:4])}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary lists each word once")
        self.words = list(words)
        self.ids = {word: number for number, word in enumerate(self.words)}

    pad, bos, eos, unk = 0, 1, 2, 3

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The words seen at least ``min_count`` times in ``texts``; ties in frequency by spelling."""
        counts = Counter(word for text in texts for word in tokenize(text))
        kept = sorted((word for word, count in counts.items() if count >= min_count),
                      key=lambda word: (-counts[word], word))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        """The title's word ids followed by <eos> (no <bos>); unknown words become <unk>."""
        return [self.ids.get(word, self.unk) for word in tokenize(text)] + [self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first <eos>, joined by spaces; <pad> and <bos> are dropped."""
        words = []
        for token in ids:
            token = int(token)
            if token == self.eos:
                break
            if token in (self.pad, self.bos):
                continue
            words.append(self.words[token] if 0 <= token < len(self.words) else UNK)
        return " ".join(words)
