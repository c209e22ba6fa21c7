"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020), as NACLIP uses it.

Coarse CLIP logits are smoothed along the image's own edges: each pixel's mask becomes an affinity-weighted
average of its 8 neighbours at several dilations, the affinities being a softmax over neighbours of the
negative, locally standardised colour difference. Iterated a few times, masks snap to object boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Offsets of the 8 neighbours in a 3x3 window.
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shifted(x: torch.Tensor, offsets: tuple[tuple[int, int], ...], dilation: int) -> torch.Tensor:
    """``(B, C, len(offsets), H, W)``: x seen from each offset times ``dilation``, borders replicated."""
    height, width = x.shape[-2:]
    padded = F.pad(x, [dilation] * 4, mode="replicate")
    views = [
        padded[..., dilation + dy * dilation : dilation + dy * dilation + height,
               dilation + dx * dilation : dilation + dx * dilation + width]
        for dy, dx in offsets
    ]  # fmt: skip
    return torch.stack(views, dim=2)


def pamr(
    image: torch.Tensor, mask: torch.Tensor, iterations: int = 10, dilations: tuple[int, ...] = (8, 16)
) -> torch.Tensor:
    """Refine ``mask`` ``(B, K, H, W)`` with the affinities of ``image`` ``(B, C, H, W)`` (same H and W)."""
    image = image.float()
    neighbours = torch.cat([_shifted(image, _NEIGHBOURS, d) for d in dilations], dim=2)
    window = torch.cat([_shifted(image, ((0, 0), *_NEIGHBOURS), d) for d in dilations], dim=2)
    local_std = window.std(dim=2, keepdim=True)
    difference = (image.unsqueeze(2) - neighbours).abs()
    affinity = F.softmax((-difference / (1e-8 + 0.1 * local_std)).mean(dim=1, keepdim=True), dim=2)

    refined = mask.float()
    for _ in range(iterations):
        refined = (torch.cat([_shifted(refined, _NEIGHBOURS, d) for d in dilations], dim=2) * affinity).sum(2)
    return refined.to(mask.dtype)
