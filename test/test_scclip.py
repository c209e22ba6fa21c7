"""SC-CLIP: the encoder's features against a restatement of the reference code, and its parts one by one.

The reference is SuleBai/SC-CLIP@0417ba9, ``clip/model.py``: ``VisionTransformer.forward(return_all=True)``,
``custom_attn``, ``lof_pytorch``, ``mean_interpolation``, ``adaptively_aggregate``. ``_reference_features``
below computes what that code computes, step by step and in its layout (sequence first, one image, outliers as
indices mapped to (row, column) as there), on open_clip's modules: OpenAI's blocks and open_clip's compute the
same. Only the positional embedding is ours (the reference's ``scale_factor`` interpolation differs at every
grid but 14 x 14 for every method alike: docs/evaluation.md).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core.dense import DenseCLIPEncoder, interpolate_positional_embedding
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.scclip import (
    SETTINGS_BY_DEPTH,
    fill_outliers,
    local_outlier_mask,
    outlier_count,
    settings_for_depth,
)

SIMILARITY_BLOCK, REFINE_BLOCK, MULTI_START, MULTI_END, CLASS_WEIGHT, BETA = 8, 3, 3, 10, 0.3, 0.4


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- the reference, restated
def _reference_lof(x: torch.Tensor, n_neighbors: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """``lof_pytorch``: outlier indices of ``(N, C)`` tokens. Its ``N x N x C`` differences are formed a block of
    rows at a time here (the same numbers, less memory)."""
    distances = torch.cat([torch.norm(rows[:, None] - x[None, :], dim=2, p=2) ** 2 for rows in x.split(64)])
    knn_distances, knn_indices = torch.topk(distances, k=n_neighbors + 1, largest=False)
    knn_distances, knn_indices = knn_distances[:, 1:], knn_indices[:, 1:]
    k_distances = knn_distances[:, -1].unsqueeze(1).expand_as(knn_distances)
    reach_distances = torch.max(knn_distances, k_distances)
    lrd = n_neighbors / torch.nan_to_num(reach_distances.mean(dim=1), nan=1e-6)
    lof_scores = (lrd[knn_indices] / lrd.unsqueeze(1)).mean(dim=1)
    threshold = torch.quantile(lof_scores.to(torch.float32), 1 - contamination)
    return torch.where(lof_scores > threshold)[0]


def _reference_mean_interpolation(feature_map: torch.Tensor, top_indices: list) -> torch.Tensor:
    """``mean_interpolation``: outliers at ``top_indices`` (row, column) replaced by their 3 x 3 neighbours' mean."""
    _, channels, height, width = feature_map.shape
    kernel = torch.ones(channels, 1, 3, 3, dtype=feature_map.dtype)
    kernel[:, 0, 1, 1] = 0
    indices = torch.tensor(top_indices, dtype=torch.long).reshape(-1, 2)
    mask = torch.ones(height, width, dtype=feature_map.dtype)
    mask[indices[:, 0], indices[:, 1]] = 0
    mask = mask[None, None]
    neighbour_sum = F.conv2d(F.pad(feature_map * mask, (1, 1, 1, 1)), kernel, groups=channels)
    valid_neighbours = F.conv2d(F.pad(mask, (1, 1, 1, 1)), kernel[:1])
    valid_neighbour_mask = (valid_neighbours > 0).to(feature_map.dtype)
    safe_valid_neighbours = valid_neighbours.clone()
    safe_valid_neighbours[safe_valid_neighbours == 0] = 1
    mean_neighbours = neighbour_sum / safe_valid_neighbours
    top_indices_mask = torch.zeros(height, width, dtype=feature_map.dtype)
    top_indices_mask[indices[:, 0], indices[:, 1]] = 1
    update_mask = top_indices_mask[None, None] * valid_neighbour_mask
    return feature_map * (1 - update_mask) + mean_neighbours * update_mask


def _reference_custom_attn(attn_layer, x: torch.Tensor, mid_simi: torch.Tensor) -> torch.Tensor:
    """``custom_attn`` on ``(N, B, C)``: global mean of the similarity, the guide repeated over the heads."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    _, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    mid_simi = (mid_simi - torch.mean(mid_simi)) * 3.0
    mid_simi[mid_simi < 0.0] = float("-inf")
    attn_weights = F.softmax(mid_simi.repeat(num_heads, 1, 1), dim=-1)
    attn_weights += F.softmax(torch.bmm(k, k.transpose(1, 2)) * head_dim**-0.5, dim=-1)
    attn_weights /= 2
    output = torch.bmm(attn_weights, v).transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    return attn_layer.out_proj(output)


def _reference_aggregate(feats: torch.Tensor, corrs: torch.Tensor) -> torch.Tensor:
    """``adaptively_aggregate`` on ``(N, B, C)``."""
    corrs_normalized = corrs / (corrs.sum(dim=-1, keepdim=True) + 1e-6)
    return torch.matmul(corrs_normalized, feats.permute(1, 0, 2)).permute(1, 0, 2)


def _reference_features(visual, pixels: torch.Tensor, columns_for_rows: bool = True) -> torch.Tensor:
    """``forward(return_all=True)`` of one image, normalised as the segmentor does: ``(N, D)``.

    ``columns_for_rows`` maps an outlier's index to (index // rows, index % rows) as the reference does (right
    on square grids only); False maps it to (index // columns, index % columns).
    """
    batch, width = pixels.shape[0], visual.conv1.out_channels
    x = visual.conv1(pixels)
    feat_w, feat_h = x.shape[-2], x.shape[-1]  # the reference's names: rows, then columns
    x = x.reshape(batch, width, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(batch, 1, width), x], dim=1)
    x = x + interpolate_positional_embedding(visual.positional_embedding, visual.grid_size, (feat_w, feat_h))
    x = visual.ln_pre(x).permute(1, 0, 2)
    blocks = visual.transformer.resblocks
    feats_list = []
    for index, block in enumerate(blocks[:-1], start=1):
        x = block(x.transpose(0, 1)).transpose(0, 1)  # open_clip's blocks are batch first
        feats_list.append(x)
        if index == len(blocks) - 1:
            cls_token = x[:1]
            outliers = _reference_lof(x[1:].squeeze(1))
            stride = feat_w if columns_for_rows else feat_h
            top_indices = [(torch.div(i, stride, rounding_mode="trunc"), i % stride) for i in outliers]
            feature_map = x[1:].permute(1, 2, 0).reshape(batch, width, feat_w, feat_h)
            feature_map = _reference_mean_interpolation(feature_map, top_indices)
            x = feature_map.reshape(batch, width, feat_w * feat_h).permute(2, 0, 1)

    feats = feats_list[SIMILARITY_BLOCK][1:].clone().permute(1, 2, 0).reshape(batch, width, feat_w, feat_h)
    feats = _reference_mean_interpolation(feats, top_indices).reshape(batch, width, -1).permute(2, 0, 1)
    feats = feats / feats.norm(dim=2, keepdim=True)
    before_simi = torch.matmul(feats.permute(1, 0, 2), feats.permute(1, 2, 0))
    mid_simi = before_simi.clone()
    before_simi[before_simi < BETA] = 0.0
    x = _reference_aggregate(x, before_simi)
    last = blocks[-1]
    x = _reference_custom_attn(last.attn, last.ln_1(x), mid_simi) + CLASS_WEIGHT * cls_token

    feats = feats_list[REFINE_BLOCK][1:].clone()
    feats = feats / feats.norm(dim=2, keepdim=True)
    after_simi = torch.matmul(feats.permute(1, 0, 2), feats.permute(1, 2, 0))
    after_simi[after_simi < BETA] = 0.0
    x = _reference_aggregate(x, after_simi)

    re_feats = torch.zeros_like(feats_list[0])
    for i in range(MULTI_START, MULTI_END):
        re_feats += feats_list[i]
    cls_token = re_feats[:1]
    re_feats = _reference_custom_attn(last.attn, last.ln_1(re_feats[1:]), mid_simi) + CLASS_WEIGHT * cls_token
    x = x + _reference_aggregate(re_feats, after_simi)
    tokens = visual.ln_post(x.permute(1, 0, 2)) @ visual.proj
    return F.normalize(tokens[0], dim=-1)


def _our_features(encoder: DenseCLIPEncoder, pixels: torch.Tensor) -> torch.Tensor:
    """``(B, N, D)`` unit patch features, row-major."""
    return encoder(pixels).flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------------------------- the tests
def test_settings_are_the_reference_s_for_vit_b():
    assert settings_for_depth(12) == SETTINGS_BY_DEPTH[12]
    settings = SETTINGS_BY_DEPTH[12]
    assert (settings.similarity_block, settings.refine_block, settings.multi_level) == (8, 3, (3, 10))
    assert (settings.class_weight, settings.similarity_threshold) == (0.3, 0.4)
    assert (settings.neighbours, settings.contamination) == (30, 0.05)


@pytest.mark.parametrize("size", [224, 336, 448])
def test_features_equal_the_reference_code_on_square_inputs(vit_b16, size):
    pixels = _pixels(1, size, size, seed=size)
    encoder = DenseCLIPEncoder(vit_b16.visual, method="scclip")
    with torch.inference_mode():
        ours = _our_features(encoder, pixels)[0]
        theirs = _reference_features(vit_b16.visual, pixels)
    cosines = F.cosine_similarity(ours, theirs, dim=-1)
    assert cosines.min() >= 0.9999, float(cosines.min())


@pytest.mark.parametrize(("height", "width"), [(320, 224), (224, 320)])
def test_non_square_inputs_map_outliers_row_major(vit_b16, height, width):
    """Ours equals the reference with (index // columns, index % columns). The reference's own
    (index // rows, index % rows) puts outliers in other cells, and fails with an IndexError where a cell falls
    off the grid (a column past the last on a tall grid, a row past the last on a wide one): both happen on
    these inputs."""
    pixels = _pixels(1, height, width, seed=5)
    encoder = DenseCLIPEncoder(vit_b16.visual, method="scclip")
    with torch.inference_mode():
        ours = _our_features(encoder, pixels)[0]
        row_major = _reference_features(vit_b16.visual, pixels, columns_for_rows=False)
        assert F.cosine_similarity(ours, row_major, dim=-1).min() >= 0.9999
        with pytest.raises(IndexError):
            _reference_features(vit_b16.visual, pixels)


def test_each_image_of_a_batch_gets_its_own_features(vit_b16):
    """The reference's similarity mean spans the whole batch and its guide is repeated in the wrong head order
    for more than one image; ours is per image."""
    pixels = torch.cat([_pixels(1, 224, 224, seed=1), _pixels(1, 224, 224, seed=2) * 2.0])
    encoder = DenseCLIPEncoder(vit_b16.visual, method="scclip")
    with torch.inference_mode():
        batch = _our_features(encoder, pixels)
        for index in range(2):
            alone = _our_features(encoder, pixels[index : index + 1])[0]
            assert F.cosine_similarity(batch[index], alone, dim=-1).min() >= 0.99999


def test_grids_with_fewer_patches_than_neighbours_run(vit_b16):
    encoder = DenseCLIPEncoder(vit_b16.visual, method="scclip")
    for height, width in [(64, 96), (16, 32), (16, 16)]:
        features = encoder(_pixels(1, height, width))
        assert features.shape == (1, 512, height // 16, width // 16)
        assert torch.isfinite(features).all()


@pytest.mark.parametrize("patches", [24, 196, 280, 441, 784, 1200])
def test_outlier_count_is_what_the_reference_s_quantile_keeps(patches):
    scores = torch.rand(patches, generator=torch.Generator().manual_seed(patches))
    kept = int((scores > torch.quantile(scores, 1 - 0.05)).sum())
    assert outlier_count(patches, 0.05) == kept


@pytest.mark.parametrize("patches", [196, 441, 784])
def test_local_outlier_mask_selects_the_reference_s_outliers(patches):
    generator = torch.Generator().manual_seed(patches)
    tokens = torch.randn(patches, 64, generator=generator)
    tokens[:: patches // 7] *= 6.0  # a few tokens far from the rest, as anomaly tokens are
    ours = local_outlier_mask(tokens[None], 30, outlier_count(patches, 0.05))[0]
    theirs = torch.zeros(patches, dtype=torch.bool)
    theirs[_reference_lof(tokens)] = True
    assert torch.equal(ours, theirs)


def test_fill_outliers_equals_the_reference_s_mean_interpolation():
    grid = (6, 6)
    tokens = torch.randn(1, 36, 8, generator=torch.Generator().manual_seed(3))
    outliers = torch.zeros(1, 36, dtype=torch.bool)
    outliers[0, [0, 1, 7, 20, 35]] = True  # a corner, neighbours of each other, an inner patch, the last corner
    ours = fill_outliers(tokens, outliers, grid)
    cells = [(index // 6, index % 6) for index in [0, 1, 7, 20, 35]]
    theirs = _reference_mean_interpolation(tokens.transpose(1, 2).reshape(1, 8, *grid), cells)
    torch.testing.assert_close(ours, theirs.flatten(2).transpose(1, 2))
    assert torch.equal(ours[0, ~outliers[0]], tokens[0, ~outliers[0]])


def test_an_outlier_without_kept_neighbours_keeps_its_value():
    tokens = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(4))
    filled = fill_outliers(tokens, torch.ones(1, 4, dtype=torch.bool), (2, 2))
    torch.testing.assert_close(filled, tokens)


def test_depths_without_published_settings_and_the_class_token_are_refused(vit_b16):
    shallow = copy.deepcopy(vit_b16.visual)
    shallow.transformer.resblocks = shallow.transformer.resblocks[:6]
    with pytest.raises(ConfigError, match="12, 24"):
        DenseCLIPEncoder(shallow, method="scclip")
    with pytest.raises(ConfigError, match="no class token"):
        DenseCLIPEncoder(vit_b16.visual, method="scclip").tokens(_pixels(1, 32, 32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_close_to_fp32(vit_b16, dtype):
    """The outlier factor and the similarities run in float32 in every precision; the rest in the model's."""
    pixels = _pixels(2, 160, 224, seed=6)
    with torch.inference_mode():
        full = DenseCLIPEncoder(vit_b16.visual, method="scclip")(pixels)
        half = DenseCLIPEncoder(copy.deepcopy(vit_b16.visual).to(dtype), method="scclip")(pixels.to(dtype))
    cosines = (full * half).sum(dim=1)
    assert cosines.mean() > 0.9995 and cosines.min() > 0.99
