import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedder.training.losses import NormalizedSoftmaxLoss, TripletLoss, batch_hard_triplets, semi_hard_triplets
from embedder.training.sampler import PKSampler


def test_pk_batches_have_p_classes_of_k_images():
    labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 3])
    sampler = PKSampler(labels, classes_per_batch=4, images_per_class=5, seed=1)
    batches = list(sampler)
    assert len(batches) == len(labels) // 20
    for batch in batches:
        assert len(batch) == 20
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and set(counts) == {5}
    # Seeded by epoch: the same epoch repeats, another differs.
    sampler.set_epoch(0)
    again = list(sampler)
    sampler.set_epoch(1)
    assert again == batches and list(sampler) != batches


def test_pk_sampler_rejects_impossible_settings():
    with pytest.raises(ValueError, match="only 2 classes"):
        PKSampler([0, 0, 1, 1], classes_per_batch=3, images_per_class=2)
    with pytest.raises(ValueError, match="at least 2"):
        PKSampler([0, 0, 1, 1], classes_per_batch=2, images_per_class=1)


def reference_batch_hard_loss(x, labels, margin):
    """The definition, one anchor at a time (Hermans et al. 2017)."""
    losses = []
    for a in range(len(x)):
        pos = [torch.dist(x[a], x[p]) for p in range(len(x)) if p != a and labels[p] == labels[a]]
        neg = [torch.dist(x[a], x[n]) for n in range(len(x)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(F.relu(max(pos) - min(neg) + margin))
    return torch.stack(losses).mean()


def reference_semi_hard_loss(x, labels, margin):
    """Every anchor-positive pair; the closest negative farther than the positive within the margin."""
    losses = []
    for a, p in itertools.permutations(range(len(x)), 2):
        if labels[a] != labels[p]:
            continue
        d_ap = torch.dist(x[a], x[p])
        negs = [torch.dist(x[a], x[n]) for n in range(len(x)) if labels[n] != labels[a]]
        semi = [d for d in negs if d_ap < d < d_ap + margin]
        d_an = min(semi) if semi else min(negs)
        losses.append(F.relu(d_ap - d_an + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_reference_loops(seed):
    torch.manual_seed(seed)
    x = F.normalize(torch.randn(12, 5), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    for margin in (0.1, 0.5):
        assert torch.allclose(TripletLoss(margin, "batch-hard")(x, labels), reference_batch_hard_loss(x, labels, margin), atol=1e-5)
        assert torch.allclose(TripletLoss(margin, "semi-hard")(x, labels), reference_semi_hard_loss(x, labels, margin), atol=1e-5)


def test_miners_return_index_tuples_on_a_hand_made_example():
    # 1-D points: class 0 at 0 and 1, class 1 at 1.5 and 5.
    x = torch.tensor([[0.0], [1.0], [1.5], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = batch_hard_triplets(x, labels)
    assert a.tolist() == [0, 1, 2, 3] and p.tolist() == [1, 0, 3, 2] and n.tolist() == [2, 2, 1, 1]
    a, p, n = semi_hard_triplets(x, labels, margin=1.0)
    # Anchor 0 with positive 1 (d=1): negative 1.5 is semi-hard (1 < 1.5 < 2).
    assert (0, 1, 2) in list(zip(a.tolist(), p.tolist(), n.tolist()))


def test_loss_without_triplets_is_zero_and_differentiable():
    x = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(x, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None


def test_normalized_softmax_prefers_the_right_proxy():
    loss = NormalizedSoftmaxLoss(embedding_size=2, num_classes=2)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    right = loss(x, torch.tensor([0, 1]))
    wrong = loss(x, torch.tensor([1, 0]))
    assert right < 0.01 < wrong
