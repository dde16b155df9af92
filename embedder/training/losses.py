"""Triplet mining inside a batch and the losses over the mined triplets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between all rows (N×N); stable at zero, where sqrt's gradient is infinite."""
    squared = (embeddings.unsqueeze(1) - embeddings.unsqueeze(0)).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt() * (squared > 1e-12)


def batch_hard_triplets(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each anchor with a positive: its farthest positive and its nearest negative (anchor, pos, neg)."""
    with torch.no_grad():
        distances = pairwise_distances(embeddings)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive = same & ~eye
        negative = ~same
        usable = positive.any(1) & negative.any(1)
        hardest_positive = distances.masked_fill(~positive, -1.0).argmax(1)
        hardest_negative = distances.masked_fill(~negative, float("inf")).argmin(1)
    anchors = torch.nonzero(usable).squeeze(1)
    return anchors, hardest_positive[anchors], hardest_negative[anchors]


def semi_hard_triplets(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, ...]:
    """Every (anchor, positive) pair with its nearest negative farther than the positive (FaceNet);
    the hardest negative when no semi-hard one exists."""
    with torch.no_grad():
        distances = pairwise_distances(embeddings)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        anchors, positives = torch.nonzero(same & ~eye, as_tuple=True)
        negative = ~same[anchors]  # P×N: negatives of each pair's anchor
        d_an = distances[anchors]
        d_ap = distances[anchors, positives].unsqueeze(1)
        semi = negative & (d_an > d_ap) & (d_an < d_ap + margin)
        semi_choice = d_an.masked_fill(~semi, float("inf")).argmin(1)
        hard_choice = d_an.masked_fill(~negative, float("inf")).argmin(1)
        negatives = torch.where(semi.any(1), semi_choice, hard_choice)
        keep = negative.any(1)
    return anchors[keep], positives[keep], negatives[keep]


class TripletLoss(nn.Module):
    """Margin ranking over mined triplets: mean of max(0, d(a,p) - d(a,n) + margin)."""

    def __init__(self, margin: float = 0.2, mining: str = "batch-hard") -> None:
        super().__init__()
        if mining not in ("batch-hard", "semi-hard"):
            raise ValueError(f"mining {mining!r} is not batch-hard or semi-hard")
        self.margin, self.mining = margin, mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.mining == "batch-hard":
            a, p, n = batch_hard_triplets(embeddings, labels)
        else:
            a, p, n = semi_hard_triplets(embeddings, labels, self.margin)
        if len(a) == 0:
            return embeddings.sum() * 0.0  # keeps the graph; nothing to learn from this batch
        d_ap = (embeddings[a] - embeddings[p]).pow(2).sum(1).clamp_min(1e-12).sqrt()
        d_an = (embeddings[a] - embeddings[n]).pow(2).sum(1).clamp_min(1e-12).sqrt()
        return F.relu(d_ap - d_an + self.margin).mean()


class NormalizedSoftmaxLoss(nn.Module):
    """Cross-entropy over cosine similarities to learned class proxies, scaled by a temperature.

    An auxiliary classification loss on the embedding itself: it converges far faster than triplets
    alone from random weights, and triplets then shape the neighbourhoods.
    """

    def __init__(self, embedding_size: int, num_classes: int, temperature: float = 0.05) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        return F.cross_entropy(logits / self.temperature, labels)
