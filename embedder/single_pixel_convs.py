"""Convolutions whose output is a single pixel, computed as one matrix product, for training at small sizes.

At 32 px, ResNet-50's last stage works on 2×2 and 1×1 maps, where a 3×3 convolution with padding 1
only ever multiplies the taps that land on real pixels: the rest see zero padding. oneDNN's backward
pass for those convolutions is far off its speed elsewhere: for a batch of 120 with 512 channels on a
2-core CPU, forward + backward of the 3×3 over a 1×1 map took 139 ms, and the product over the taps
that matter 12 ms; the three such layers were a third of a training step. The 1×1 convolutions of
that stage are plain products of the same kind. The result is the same up
to float rounding, and the weights keep their shape and state-dict keys, so checkpoints do not change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SinglePixelConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that, when its output is 1×1, multiplies the covered input window by the matching taps."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Conv2d's own argument name
        window = self.single_pixel_window(input.shape[-2], input.shape[-1])
        if window is None:
            return super().forward(input)
        rows, cols = window
        pad_top, pad_left = self.padding
        taps = self.weight[:, :, pad_top:pad_top + rows, pad_left:pad_left + cols]
        covered = input[:, :, :rows, :cols].reshape(input.shape[0], -1)
        output = F.linear(covered, taps.reshape(self.out_channels, -1), self.bias)
        return output.reshape(input.shape[0], self.out_channels, 1, 1)

    def single_pixel_window(self, height: int, width: int) -> tuple[int, int] | None:
        """Rows and columns of input the single output pixel covers, or None when the output is larger (or
        the convolution is of a kind this shortcut does not cover: grouped, dilated, non-zero padding)."""
        if self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return None
        window = []
        for size, kernel, stride, padding in zip((height, width), self.kernel_size, self.stride, self.padding):
            if (size + 2 * padding - kernel) // stride + 1 != 1 or padding >= kernel:
                return None
            window.append(min(kernel - padding, size))
        return window[0], window[1]


def use_single_pixel_convs(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` in ``model`` a SinglePixelConv2d, in place (the modules and their
    parameters stay the same objects); returns how many changed.

    1×1 convolutions too: on layer4's 1×1 maps (and its stride-2 shortcut from 2×2) oneDNN's backward
    took 17-38 ms a call at a batch of 120; as products, a training step took 1,036 against 1,184 ms
    (2026-12-02, best of 5 interleaved, random inputs, 2-core CPU)."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            # The subclass only adds a forward path, so the module can simply change class.
            module.__class__ = SinglePixelConv2d
            swapped += 1
    return swapped
