"""SC-CLIP's stages after CLIP's second-last block: anomaly tokens out, intermediate similarities in.

Bai et al., *Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation* (arXiv 2411.15869), as its
code computes it at SuleBai/SC-CLIP@0417ba9 (``clip/model.py``: ``VisionTransformer.forward``, ``custom_attn``,
``lof_pytorch``, ``mean_interpolation``, ``adaptively_aggregate``). Per image, for ViT-B/16 (12 blocks):

1. anomaly tokens: the local outlier factor over block 11's patch tokens (30 neighbours); the 5 % with the
   largest factor are outliers;
2. each outlier becomes the mean of its non-outlier 3 x 3 neighbours, in block 11's tokens and in block 9's,
   whose cosine similarity guides the rest;
3. block 11's patch tokens are averaged with that similarity (entries under 0.4 zeroed, rows normalised);
4. the last block's attention is the mean of a softmax over that similarity (centred on its mean, times 3,
   entries under the mean excluded) and the key-key softmax; no residual, no MLP; plus 0.3 x block 11's class
   token;
5. multi-level: the sum of blocks 4-10 goes through the same attention (plus 0.3 x its class token);
6. both are averaged with block 4's similarity (thresholded the same way) and added.

The result has patch tokens only: the reference drops the class token after block 11. It is computed per image
in a batch and on any patch grid (where the reference differs: docs/pipeline.md), with fixed shapes (outliers
are a top-k mask), so it can be recorded in a CUDA graph and exported to ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.onednn import split_heads


@dataclass(frozen=True)
class SCCLIPSettings:
    """SC-CLIP's hyper-parameters; block indices are 0-based into the outputs of blocks 0..L-2."""

    similarity_block: int  # whose similarity guides the last block ("pre_adjust_idx")
    refine_block: int  # whose similarity averages the result ("post_adjust_idx")
    multi_level: tuple[int, int]  # [start, end) of the blocks summed for the multi-level branch
    class_weight: float  # the class token added to the last block's output ("res_cls")
    similarity_threshold: float = 0.4  # similarities under it do not average ("beta")
    neighbours: int = 30  # of the local outlier factor ("n_neighbors")
    contamination: float = 0.05  # the share of patches taken as outliers


# The reference's settings by ViT depth: ViT-B (12 blocks) from configs/base_config.py at 0417ba9; ViT-L/14
# (24 blocks) from the same file at 74471da, where 0417ba9 removed them.
SETTINGS_BY_DEPTH: dict[int, SCCLIPSettings] = {
    12: SCCLIPSettings(similarity_block=8, refine_block=3, multi_level=(3, 10), class_weight=0.3),
    24: SCCLIPSettings(similarity_block=16, refine_block=6, multi_level=(8, 19), class_weight=0.1),
}


def settings_for_depth(blocks: int) -> SCCLIPSettings:
    """The reference's settings for a ViT of ``blocks`` transformer blocks."""
    if blocks not in SETTINGS_BY_DEPTH:
        raise ConfigError(
            f"scclip's block indices are published for ViTs of {sorted(SETTINGS_BY_DEPTH)} blocks (ViT-B, ViT-L); "
            f"this model has {blocks}: choose another method"
        )
    return SETTINGS_BY_DEPTH[blocks]


def outlier_count(patches: int, contamination: float) -> int:
    """How many of ``patches`` distinct scores exceed ``torch.quantile(scores, 1 - contamination)``, the
    reference's threshold: linear interpolation at rank ``(1 - contamination) * (patches - 1)`` in float32."""
    if patches < 2:
        return 0
    rank = np.float32(1.0 - contamination) * np.float32(patches - 1)
    return patches - 1 - int(rank)


def local_outlier_mask(tokens: torch.Tensor, neighbours: int, count: int) -> torch.Tensor:
    """``(B, N)``: the ``count`` tokens of each image with the largest local outlier factor, as the reference's
    ``lof_pytorch`` scores them, over ``(B, N, C)`` tokens.

    Distances are squared Euclidean. The reference's reach distance takes the point's own k-distance (not its
    neighbour's, as the textbook LOF and its own earlier scikit-learn version do), so every reach distance of
    point i is its k-distance d(i), its density k / d(i), and its factor the mean of d(i) / d(j) over its k
    nearest neighbours j. The squared distances come from one matrix product, in float32.
    """
    points = tokens.float()
    points = points - points.mean(dim=1, keepdim=True)  # the same distances, less cancellation in the product
    squared = points.square().sum(dim=-1)
    distances = torch.baddbmm(squared[:, :, None] + squared[:, None, :], points, points.transpose(1, 2), alpha=-2)
    position = torch.arange(points.shape[1], device=points.device)
    itself = position[:, None] == position[None, :]  # not torch.eye: ONNX Runtime has no boolean EyeLike
    distances = distances.clamp_min(0).masked_fill(itself, float("inf"))
    nearest, index = distances.topk(neighbours, dim=-1, largest=False)
    density = 1.0 / nearest[..., -1]
    neighbour_density = density.gather(1, index.flatten(1)).view_as(index)
    factor = (neighbour_density / density[..., None]).mean(dim=-1)
    return factor >= factor.topk(count, dim=-1).values[..., -1:]


def fill_outliers(tokens: torch.Tensor, outliers: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, N, C)`` tokens with each outlier replaced by the mean of its 3 x 3 neighbours on the row-major
    ``grid`` that are not outliers; an outlier with none keeps its value (the reference's
    ``mean_interpolation``)."""
    batch, _, channels = tokens.shape
    maps = tokens.transpose(1, 2).reshape(batch, channels, *grid)
    outlier_map = outliers.view(batch, 1, *grid)
    keep = (~outlier_map).to(tokens.dtype)
    # Box means of the kept tokens and of the kept count; their ratio is the neighbours' mean. An outlier's own
    # value is masked out, so at outliers the 3 x 3 box holds only its neighbours.
    neighbour_sum = F.avg_pool2d(maps * keep, 3, stride=1, padding=1)
    neighbour_count = F.avg_pool2d(keep, 3, stride=1, padding=1)
    has_neighbours = neighbour_count > 0
    mean = neighbour_sum / torch.where(has_neighbours, neighbour_count, torch.ones_like(neighbour_count))
    filled = torch.where(outlier_map & has_neighbours, mean, maps)
    return filled.flatten(2).transpose(1, 2)


def patch_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(B, N, N)`` between the ``(B, N, C)`` tokens of each image, in float32."""
    unit = F.normalize(tokens.float(), dim=-1)
    return unit @ unit.transpose(1, 2)


def aggregate(tokens: torch.Tensor, similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Each token replaced by the mean of the tokens, weighted by its similarity to them where it reaches
    ``threshold`` (the reference's thresholded ``adaptively_aggregate``)."""
    weights = similarity.masked_fill(similarity < threshold, 0.0)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
    return weights.to(tokens.dtype) @ tokens


def attention_guide(similarity: torch.Tensor) -> torch.Tensor:
    """The similarity-based attention ``(B, N, N)``: a softmax over the similarity centred on its image's mean,
    times 3, with the entries under the mean excluded (never all of a row: a token's similarity to itself is 1)."""
    centred = (similarity - similarity.mean(dim=(1, 2), keepdim=True)) * 3.0
    return torch.softmax(centred.masked_fill(centred < 0, float("-inf")), dim=-1)


def calibrated_attention(block: ResidualAttentionBlock, tokens: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """The last block as SC-CLIP runs it: ``out_proj(((guide + softmax(k kᵀ/√d)) / 2) v)`` on ``ln_1(tokens)``,
    no residual, no MLP. ``tokens`` ``(G * B, N, C)`` are G groups of the B images ``guide`` ``(B, N, N)`` is for.
    """
    attn = block.attn
    width = tokens.shape[-1]
    qkv = F.linear(block.ln_1(tokens), attn.in_proj_weight, attn.in_proj_bias)
    _, k, v = split_heads(qkv, attn.num_heads)
    key_attention = F.scaled_dot_product_attention(k, k, v).transpose(1, 2).flatten(2)
    # The guide is the same for every head, so it applies to the heads' values before they are split.
    values = qkv[..., 2 * width :].unflatten(0, (-1, guide.shape[0]))
    guided = (guide.to(values.dtype) @ values).flatten(0, 1)
    return attn.out_proj((guided + key_attention) / 2)


def scclip_patches(
    states: Sequence[torch.Tensor], last_block: ResidualAttentionBlock, grid: tuple[int, int], settings: SCCLIPSettings
) -> torch.Tensor:
    """SC-CLIP's patch tokens ``(B, N, C)`` (before ``ln_post``) from ``states``, the ``(B, 1 + N, C)`` outputs
    of blocks 0..L-2 in order (class token first)."""
    class_token, patches = states[-1][:, :1], states[-1][:, 1:]
    guide_tokens = states[settings.similarity_block][:, 1:]
    count = outlier_count(patches.shape[1], settings.contamination)
    if count > 0:
        outliers = local_outlier_mask(patches, min(settings.neighbours, patches.shape[1] - 1), count)
        patches = fill_outliers(patches, outliers, grid)
        guide_tokens = fill_outliers(guide_tokens, outliers, grid)
    similarity = patch_similarity(guide_tokens)
    patches = aggregate(patches, similarity, settings.similarity_threshold)

    start, end = settings.multi_level
    multi_level = states[start]
    for state in states[start + 1 : end]:
        multi_level = multi_level + state
    # The two branches share the block's weights and the guide: one batch.
    attended = calibrated_attention(last_block, torch.cat([patches, multi_level[:, 1:]]), attention_guide(similarity))
    images = patches.shape[0]
    mixed = attended[:images] + attended[images:] + settings.class_weight * (class_token + multi_level[:, :1])
    # Averaging is linear: one averaging of the sum equals the reference's two of the branches.
    refine = patch_similarity(states[settings.refine_block][:, 1:])
    return aggregate(mixed, refine, settings.similarity_threshold)
