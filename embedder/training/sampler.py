"""PK batches: P classes × K images each, so every batch holds positives and negatives to mine."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Yields batches of dataset positions: ``classes_per_batch`` labels × ``images_per_class`` images.

    Classes with fewer than K images are sampled with replacement; an epoch is as many batches as
    cover the dataset once on average. Seeded per epoch (``set_epoch``) so resumed runs repeat it.
    """

    def __init__(self, labels: Sequence[int], classes_per_batch: int, images_per_class: int, seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        if classes_per_batch > len(self.by_class):
            raise ValueError(
                f"classes_per_batch={classes_per_batch} but the training data has only {len(self.by_class)} classes"
            )
        if images_per_class < 2:
            raise ValueError("images_per_class must be at least 2, or no anchor has a positive")
        self.p, self.k, self.seed, self.epoch = classes_per_batch, images_per_class, seed, 0

    @property
    def batch_size(self) -> int:
        """P × K."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        classes = np.array(sorted(self.by_class))
        for _ in range(len(self)):
            chosen = rng.choice(classes, size=self.p, replace=False)
            batch = []
            for label in chosen:
                members = self.by_class[int(label)]
                batch.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
            yield batch
