"""Steadier masks: an exponential moving average of the class probabilities over consecutive frames.

Applied at patch resolution, before upsampling: per frame it costs one softmax and one blend of a few thousand
patches. The average restarts whenever the frame size changes, after the segmenter's queries or settings
change (``clear``) and after a warm-up (``restart``): it only ever mixes frames of one size and one query set.

Written as in-place tensor operations on buffers that outlive the frame, so a recorded CUDA graph replays the
update too: each frame size has its own buffer and restart flag, and the flag is set on the host before the
frame runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch

TINY = 1e-30  # floor of the averaged probabilities before their logarithm


class ProbabilityEMA:
    """``smooth`` turns a frame's phrase logits ``(1, S, h, w)`` into logits whose softmax (at the same
    ``logit_scale``) is the running average ``weight x past + (1 - weight) x this frame's probabilities``."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # size -> (average, restart)
        self._last: tuple[int, int] | None = None

    def begin(self, size: tuple[int, int]) -> None:
        """Before each frame of ``size`` (height, width): restart the average unless the previous frame had the
        same size."""
        buffers = self._buffers.get(size)
        if buffers is not None:
            buffers[1].fill_(0.0 if size == self._last else 1.0)
        self._last = size

    def restart(self) -> None:
        """The next frame starts a new average (its buffers, which recorded graphs hold, are kept)."""
        self._last = None

    def clear(self) -> None:
        """Forget every buffer: after a change that also drops the recorded graphs."""
        self._buffers.clear()
        self._last = None

    def smooth(self, logits: torch.Tensor, size: tuple[int, int], weight: float, logit_scale: float) -> torch.Tensor:
        probabilities = torch.softmax(logits.float() * logit_scale, dim=1)
        buffers = self._buffers.get(size)
        if buffers is None or buffers[0].shape != probabilities.shape:
            buffers = (torch.zeros_like(probabilities), torch.ones((), device=probabilities.device))
            self._buffers[size] = buffers
        average, restart = buffers
        past = weight * (1.0 - restart)  # 0 on a restart: the average becomes this frame's probabilities
        average.mul_(past).add_(probabilities * (1.0 - past))
        restart.zero_()
        return average.clamp_min(TINY).log() / logit_scale


def flicker(label_maps: Sequence[np.ndarray]) -> float:
    """The mean, over consecutive pairs of label maps of one size, of the fraction of pixels whose label changed."""
    if len(label_maps) < 2:
        raise ValueError("flicker needs at least two label maps")
    changed = [np.count_nonzero(a != b) / a.size for a, b in pairwise(label_maps)]
    return float(np.mean(changed))
