"""From low-resolution class logits to the frame's label map, confidence and per-label statistics.

The logits of S phrases come at the model's resolution (h x w), or already at the frame's (PAMR run there); a
pixel's label is the class of the phrase with the largest bilinearly upsampled logit, its confidence that
phrase's softmax probability over all S phrases. Two ways to get there:

- ``exact_labels``: every phrase upsampled to the whole frame, softmax, best phrase per class, argmax. Its cost
  and memory grow with S x H x W (171 phrases on a 1920 x 1080 frame: 1.4 G values).
- ``candidate_labels``: bilinear upsampling is a convex combination of the 4 low-resolution corners of a
  pixel's cell, so a phrase outside the union of the corners' top-k phrases cannot beat ``sum_j w_j t_j``, with
  ``t_j`` the corner's (k+1)-th largest logit: in practice the winner is always among those at most 4k
  candidates, and only they are upsampled, exactly. The softmax denominator adds to the candidates' exact sum
  the rest's: its log at the corners, interpolated linearly (by Hoelder's inequality an upper bound), less a
  second-order term from its curvature between the corners (exact were the log-sum-exp quadratic). The logits
  are first refined, exactly, to a grid of cells of about ``FINE_CELL_PIXELS`` output pixels, so that corners
  lie close together. Per-pixel cost and memory grow with 4k x H x W, independent of S; per-cell work with
  S x the refined grid. Shapes are static (fixed k, no masks that select), so a CUDA graph records it.

``label_statistics`` counts each label's pixels in integers and sums its confidence in float64, exact past
16.7 M pixels (float32 stops counting there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CANDIDATES_PER_CORNER = 2  # k: each cell scores the union of its 4 corners' top-k phrases
FINE_CELL_PIXELS = 8  # the refined grid's cells span at most about this many output pixels
_ABSENT = -1.0e30  # a logit that never wins and adds nothing to a sum of exponentials; finite, so 0 * it = 0
# exp below this underflows into subnormal floats, which x86 computes about 100 times slower; e^-80 is < 1e-34
# of the largest term, nothing next to it.
_EXP_FLOOR = -80.0
_MIN_REST_SHARE = 1e-4
PARTITION_CHUNK = 16  # phrases upsampled at a time for query_probability's softmax denominator


def _exp_(shifted: torch.Tensor) -> torch.Tensor:
    """In place ``exp`` of values ``<= 0`` (shifted by their maximum), negligible ones flushed to e^-80."""
    return shifted.clamp_(min=_EXP_FLOOR).exp_()


def _logsumexp(values: torch.Tensor, dim: int) -> torch.Tensor:
    top = values.amax(dim=dim, keepdim=True)
    return _exp_(values - top).sum(dim=dim).log_().add_(top.squeeze(dim))


def upsampled(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(S, h, w)`` logits bilinearly at ``size``; those already there (PAMR at the frame's resolution) as
    they are, without a copy."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]


def exact_labels(
    logits: torch.Tensor, size: tuple[int, int], logit_scale: float, class_of_row: torch.Tensor, num_columns: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence and class column per pixel from ``(S, h, w)`` logits, every phrase at full resolution."""
    height, width = size
    logits = upsampled(logits, size)
    probabilities = torch.softmax(logits.float() * logit_scale, dim=0)
    if probabilities.shape[0] != num_columns:  # synonyms or background words: best phrase per class
        index = class_of_row.view(-1, 1, 1).expand_as(probabilities)
        probabilities = probabilities.new_zeros((num_columns, height, width)).scatter_reduce_(
            0, index, probabilities, "amax"
        )
    return probabilities.max(dim=0)


def _source_axis(out_size: int, in_size: int, fine: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output index: its cell (lower node) on a grid refined ``fine`` times between source nodes, and the
    weight of the upper node, from the source position ``F.interpolate`` uses (bilinear, ``align_corners=False``:
    clamped to the first and last source node)."""
    source = (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * (in_size / out_size) - 0.5
    source = source.clamp_(min=0.0, max=in_size - 1) * fine
    cell = source.floor().long()
    return cell, source - cell


def _upsample_cells(corners: torch.Tensor, axes: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> torch.Tensor:
    """Bilinear interpolation of per-cell corner values ``(C, 4, h, w)`` (top-left, top-right, bottom-left,
    bottom-right of cell (y, x)), ``axes`` giving each output row's and column's cell and weight. The result is
    laid out ``(W, C, H)``: picking columns along the first dimension copies whole rows, along the last it
    would gather element by element (5 times slower)."""
    (rows, row_weight), (cols, col_weight) = axes
    corners = corners.index_select(2, rows).permute(3, 0, 1, 2).contiguous()  # (w, C, 4, H): w source columns
    left = torch.lerp(corners[:, :, 0], corners[:, :, 2], row_weight).index_select(0, cols)
    right = torch.lerp(corners[:, :, 1], corners[:, :, 3], row_weight).index_select(0, cols)
    return torch.lerp(left, right, col_weight.view(-1, 1, 1))


def _cell_corners(grid: torch.Tensor) -> torch.Tensor:
    """``(..., h, w)`` values at the 4 corners of every cell: ``(..., 4, h, w)``; the last row and column of
    cells repeat their own corner, as bilinear upsampling clamps at the border."""
    down = torch.cat([grid[..., 1:, :], grid[..., -1:, :]], dim=-2)
    right = torch.cat([grid[..., :, 1:], grid[..., :, -1:]], dim=-1)
    down_right = torch.cat([down[..., :, 1:], down[..., :, -1:]], dim=-1)
    return torch.stack([grid, right, down, down_right], dim=-3)


_PAIRS = ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2))  # corner pairs: top, bottom, left, right edges, diagonals


def _rest_curvature(
    scaled: torch.Tensor,
    node_lse: torch.Tensor,
    candidate_values: torch.Tensor,
    candidate_share: torch.Tensor,
    rest_share: torch.Tensor,
) -> torch.Tensor:
    """Per cell and corner pair (i, j), ``(E_j[x_j - x_i] + E_i[x_i - x_j]) / 2``: the curvature of the rest's
    log-sum-exp along the pair, ``E_j`` the mean under the rest's softmax at corner j; ``(6, h, w)``."""
    h, w = scaled.shape[1:]
    probability = _exp_(scaled - node_lse)
    # Corner j of every cell as a view of the grid padded by its last row and column (the clamp at the border).
    padded_probability = F.pad(probability[None], (0, 1, 0, 1), mode="replicate")[0]
    padded_logits = F.pad(scaled[None], (0, 1, 0, 1), mode="replicate")[0]
    offsets = ((0, 0), (0, 1), (1, 0), (1, 1))

    def corner(grid: torch.Tensor, j: int) -> torch.Tensor:
        return grid[:, offsets[j][0] : offsets[j][0] + h, offsets[j][1] : offsets[j][1] + w]

    own = _cell_corners((probability * scaled).sum(dim=0))  # E_j[x_j] over all phrases: (4, h, w)
    # mean[j][i] = E_j[x_i] for the rest: over all phrases, less the candidates, over the rest's share.
    mean = [
        [
            (
                (own[j] if i == j else (corner(padded_probability, j) * corner(padded_logits, i)).sum(dim=0))
                - (candidate_share[:, j] * candidate_values[:, i]).sum(dim=0)
            )
            / rest_share[j].clamp(min=_MIN_REST_SHARE)
            for i in range(4)
        ]
        for j in range(4)
    ]
    curvature = torch.stack(
        [(mean[j][j] - mean[j][i] + mean[i][i] - mean[i][j]).clamp_(min=0.0) / 2 for i, j in _PAIRS]
    )
    # Where the rest holds almost nothing its means are rounding noise, and it moves the confidence by < 1e-4.
    return curvature.masked_fill_(rest_share.amin(dim=0) < _MIN_REST_SHARE, 0.0)


def _rest_correction(curvature: torch.Tensor, axes: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> torch.Tensor:
    """``sum_{i<j} w_i w_j c_ij`` per pixel, ``(W, H)``, with bilinear corner weights w: in row weight a and
    column weight b it is ``b(1-b) [(1-a)^2 c01 + a^2 c23 + a(1-a)(c03 + c12)] + a(1-a) [(1-b)^2 c02 + b^2 c13]``,
    each bracket computed where it varies (rows x cells, cells x columns) before it is spread to the pixels."""
    (rows, a), (cols, b) = axes
    top, bottom, left, right, diagonal, antidiagonal = curvature
    a_ = a.view(-1, 1)
    across = (1 - a_).square() * top.index_select(0, rows) + a_.square() * bottom.index_select(0, rows)
    across += a_ * (1 - a_) * (diagonal + antidiagonal).index_select(0, rows)  # (H, w)
    down = (1 - b).square() * left.index_select(1, cols) + b.square() * right.index_select(1, cols)  # (h, W)
    across = across.t().contiguous().index_select(0, cols)  # (W, H)
    down = down.index_select(0, rows).t()  # (W, H)
    return (b * (1 - b)).view(-1, 1) * across + (a * (1 - a)).view(1, -1) * down


def candidate_labels(
    logits: torch.Tensor,
    size: tuple[int, int],
    logit_scale: float,
    class_of_row: torch.Tensor,
    k: int = CANDIDATES_PER_CORNER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence and class column per pixel from ``(S, h, w)`` logits, scoring each pixel's candidates only."""
    phrases = logits.shape[0]
    scaled = logits.float() * logit_scale
    # Refine first: a bilinear function sampled on a finer aligned grid and interpolated again is the same
    # function, so this changes no pixel's logits; it only brings each cell's corners closer together.
    fine = max(1, math.ceil(max(size[0] / scaled.shape[1], size[1] / scaled.shape[2]) / FINE_CELL_PIXELS))
    source_h, source_w = scaled.shape[1:]
    if fine > 1:
        refined = ((source_h - 1) * fine + 1, (source_w - 1) * fine + 1)
        scaled = F.interpolate(scaled[None], size=refined, mode="bilinear", align_corners=True)[0]
    h, w = scaled.shape[1:]
    k = min(k, phrases)
    top = _cell_corners(scaled.topk(k, dim=0).indices)  # (k, 4, h, w)
    candidates = top.transpose(0, 1).reshape(4 * k, h, w)  # per cell: the corners' top-k, repeats included
    # A slot repeating an earlier slot's phrase in its cell is dropped, so that no phrase counts twice.
    earlier = torch.ones(4 * k, 4 * k, dtype=torch.bool, device=logits.device).tril_(-1)
    repeated = ((candidates[:, None] == candidates[None]) & earlier[:, :, None, None]).any(dim=1)

    # Each candidate's logit at its cell's 4 corners, gathered by flat index: (4k, 4, h, w).
    nodes = _cell_corners(torch.arange(h * w, device=logits.device).view(h, w))  # (4, h, w)
    index = candidates[:, None] * (h * w) + nodes[None]
    values = scaled.view(-1).gather(0, index.view(-1)).view(index.shape).masked_fill_(repeated[:, None], _ABSENT)
    # The rest's share of each corner's softmax, by difference: where it is lost to rounding it is < 1e-6 of
    # the sum, and so is its effect on the confidence.
    node_lse = _logsumexp(scaled, dim=0)
    corner_lse = _cell_corners(node_lse)  # (4, h, w)
    candidate_share = _exp_(values - corner_lse)  # (4k, 4, h, w): each candidate's softmax at each corner
    rest_share = (1.0 - candidate_share.sum(dim=0)).clamp_(min=0.0)
    rest_lse = (corner_lse + rest_share.log()).clamp_(min=_ABSENT)  # _ABSENT where no phrase is left
    curvature = _rest_curvature(
        scaled, node_lse, values.masked_fill(repeated[:, None], 0.0), candidate_share, rest_share
    )

    axes = (
        _source_axis(size[0], source_h, fine, logits.device),
        _source_axis(size[1], source_w, fine, logits.device),
    )
    scores = _upsample_cells(values, axes)  # (W, 4k, H): the candidates' upsampled logits
    best, slot = scores.max(dim=1)
    candidate_sum = _exp_(scores.sub_(best[:, None])).sum(dim=1)
    rest_log = _upsample_cells(rest_lse[None], axes)[:, 0].sub_(_rest_correction(curvature, axes))
    rest_sum = _exp_(rest_log.sub_(best))
    confidence = (candidate_sum + rest_sum).reciprocal_().t().contiguous()

    cell = axes[0][0].view(-1, 1) * w + axes[1][0].view(1, -1)
    phrase = candidates.view(-1).gather(0, (cell + slot.t() * (h * w)).reshape(-1)).view(size)
    return confidence, class_of_row[phrase]


def pixel_labels(
    logits: torch.Tensor,
    size: tuple[int, int],
    logit_scale: float,
    class_of_row: torch.Tensor,
    num_columns: int,
    exact: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence and class column per pixel: ``exact_labels`` when asked for, when there are no more phrases
    than candidate slots, or when the logits are already at ``size`` (in both it is also the cheaper: nothing is
    left to upsample), else ``candidate_labels``."""
    if exact or logits.shape[0] <= 4 * CANDIDATES_PER_CORNER or tuple(logits.shape[-2:]) == tuple(size):
        return exact_labels(logits, size, logit_scale, class_of_row, num_columns)
    return candidate_labels(logits, size, logit_scale, class_of_row)


def query_probability(
    logits: torch.Tensor, size: tuple[int, int], logit_scale: float, rows: slice, chunk: int = PARTITION_CHUNK
) -> torch.Tensor:
    """One query's probability per pixel, as ``exact_labels`` computes it before the argmax: its best phrase's
    softmax over all S phrases. Exact; the softmax's denominator is summed over phrases in chunks, so memory
    stays at ``chunk x H x W`` while the time grows with S x H x W (the heat map is one query's, on demand)."""

    def scaled(part: torch.Tensor) -> torch.Tensor:
        return upsampled(part, size).float() * logit_scale

    log_partition = torch.logsumexp(scaled(logits[:chunk]), dim=0)
    for start in range(chunk, logits.shape[0], chunk):
        log_partition = torch.logaddexp(log_partition, torch.logsumexp(scaled(logits[start : start + chunk]), dim=0))
    return (scaled(logits[rows]).amax(dim=0) - log_partition).exp_()


def label_statistics(label_map: torch.Tensor, confidence: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels per label (int64) and the sum of their confidence (float64), label 0 included."""
    flat = label_map.flatten().long()
    areas = torch.zeros(bins, dtype=torch.int64, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat, dtype=torch.int64)
    )
    sums = torch.zeros(bins, dtype=torch.float64, device=flat.device).scatter_add_(
        0, flat, confidence.flatten().double()
    )
    return areas, sums
