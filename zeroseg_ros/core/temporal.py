"""Steadier masks: an exponential moving average of the class probabilities over consecutive frames.

Applied at patch resolution, before upsampling: per frame it costs one softmax and one blend of a few thousand
patches. Each stream (a camera) has its own average, which restarts whenever its frame size changes, after the
segmenter's queries or settings change and after a warm-up (``clear``): it only ever mixes frames of one
stream, one size and one query set.

The blend (``blend``) is one batched tensor expression over the frames of a pass, which a recorded CUDA graph
replays: each frame's past average and weight are copied in before the pass (``ProbabilityEMA.past``) and its
new average kept after it (``ProbabilityEMA.keep``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import pairwise

import numpy as np
import torch

TINY = 1e-30  # floor of the averaged probabilities before their logarithm


def blend(
    logits: torch.Tensor, past: torch.Tensor, weights: torch.Tensor, logit_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrase logits ``(B, S, h, w)`` whose softmax (at ``logit_scale``) is ``weight x past + (1 - weight) x
    this frame's probabilities``, per frame (``weights`` ``(B, 1, 1, 1)``, 0 starts a new average), and that
    new average."""
    probabilities = torch.softmax(logits.float() * logit_scale, dim=1)
    average = past * weights + probabilities * (1.0 - weights)
    return average.clamp_min(TINY).log() / logit_scale, average


class ProbabilityEMA:
    """The running average of each stream: what ``blend`` takes before a pass and gives after it."""

    def __init__(self) -> None:
        self._averages: dict[Hashable, tuple[tuple[int, int], torch.Tensor]] = {}  # stream -> (frame size, average)

    def past(
        self,
        streams: Sequence[Hashable],
        size: tuple[int, int],
        shape: tuple[int, ...],
        weight: float,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For frames of ``size`` (height, width) of ``streams`` whose averages have ``shape`` ``(S, h, w)``: the
        past averages ``(B, S, h, w)`` and blending weights ``(B, 1, 1, 1)``; a stream without an average of that
        size and shape starts one (weight 0)."""
        rows, weights = [], []
        for stream in streams:
            kept = self._averages.get(stream)
            if kept is not None and kept[0] == size and tuple(kept[1].shape) == tuple(shape):
                rows.append(kept[1])
                weights.append(weight)
            else:
                rows.append(torch.zeros(shape, device=device))
                weights.append(0.0)
        return torch.stack(rows), torch.tensor(weights, device=device).view(-1, 1, 1, 1)

    def keep(self, streams: Sequence[Hashable], size: tuple[int, int], averages: torch.Tensor) -> None:
        """After a pass: each stream's new average (copied: a recorded graph reuses its output)."""
        for stream, average in zip(streams, averages, strict=True):
            self._averages[stream] = (size, average.clone())

    def clear(self) -> None:
        """Every stream starts a new average with its next frame."""
        self._averages.clear()


def flicker(label_maps: Sequence[np.ndarray]) -> float:
    """The mean, over consecutive pairs of label maps of one size, of the fraction of pixels whose label changed."""
    if len(label_maps) < 2:
        raise ValueError("flicker needs at least two label maps")
    changed = [np.count_nonzero(a != b) / a.size for a, b in pairwise(label_maps)]
    return float(np.mean(changed))
