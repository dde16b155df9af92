"""An exponential moving average of the network's weights during training (EMA, as in timm's ModelEma):
validation and the kept checkpoint use the average, which is smoother than any one step's weights."""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of an update after ``updates`` earlier ones: ramped up as (1 + n) / (10 + n), so that the
    weights the run started from fade within the first tens of steps, then ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` that update_parameters(model) moves towards the model's weights and BatchNorm
    statistics by 1 - decay (ema_decay_at) each time; its state_dict carries the update count, so it resumes."""

    @torch.no_grad()
    def lerp(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        # update_parameters copies the weights on the first call (updates == 0) and calls this after.
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(decay, int(updates)))
        else:  # BatchNorm's step counters: the model's own
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=lerp, use_buffers=True)
