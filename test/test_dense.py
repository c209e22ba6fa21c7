"""Dense features: equivalence with open_clip, positional interpolation, and each method against its formula."""

from __future__ import annotations

import math
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed

from zeroseg_ros.core.dense import (
    GRIDS_KEPT,
    MAX_PATCH_TOKENS,
    DenseCLIPEncoder,
    interpolate_positional_embedding,
    neighbourhood_bias,
)
from zeroseg_ros.core.errors import ConfigError, InvalidImageError


def _pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_vanilla_class_token_reproduces_open_clip_encode_image_at_224(vit_b16):
    encoder = DenseCLIPEncoder(vit_b16.visual, method="vanilla")
    pixels = _pixels(224, 224)
    ours = encoder.tokens(pixels)[:, 0]
    theirs = vit_b16.encode_image(pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_vanilla_class_token_matches_open_clip_resized_model_on_non_square_input(vit_b16):
    """Positional interpolation agrees with open_clip's own resize of a checkpoint to a 448 x 320 model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resized = open_clip.create_model("ViT-B-16", pretrained=None, force_image_size=(448, 320)).eval()
    state = {k: v.clone() for k, v in vit_b16.state_dict().items()}
    resize_pos_embed(state, resized, interpolation="bicubic", antialias=False)
    resized.load_state_dict(state)
    pixels = _pixels(448, 320, seed=1)
    ours = DenseCLIPEncoder(vit_b16.visual, method="vanilla").tokens(pixels)[:, 0]
    torch.testing.assert_close(ours, resized.encode_image(pixels), rtol=1e-4, atol=1e-4)


def test_positional_interpolation_keeps_original_grid_exactly(vit_b16):
    embedding = vit_b16.visual.positional_embedding
    assert interpolate_positional_embedding(embedding, (14, 14), (14, 14)) is embedding
    resized = interpolate_positional_embedding(embedding, (14, 14), (28, 20))
    assert resized.shape == (1 + 28 * 20, embedding.shape[1])
    torch.testing.assert_close(resized[0], embedding[0])  # the class token's embedding is never resized


@pytest.mark.parametrize(("height", "width"), [(224, 224), (448, 640), (37, 53), (16, 400)])
def test_any_input_size_gives_the_floor_patch_grid(vit_b16, height, width):
    encoder = DenseCLIPEncoder(vit_b16.visual, method="naclip")
    features = encoder(_pixels(height, width))
    assert features.shape == (1, 512, height // 16, width // 16)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(1, height // 16, width // 16))


def test_input_smaller_than_a_patch_is_rejected(vit_b16):
    with pytest.raises(ValueError, match="smaller than one patch"):
        DenseCLIPEncoder(vit_b16.visual).tokens(_pixels(8, 300))


def test_inputs_past_the_token_limit_are_refused_saying_what_to_set(vit_b16):
    assert 65 * 64 > MAX_PATCH_TOKENS >= 64 * 64
    encoder = DenseCLIPEncoder(vit_b16.visual)
    with pytest.raises(InvalidImageError, match="lower short_side"):
        encoder.tokens(_pixels(16 * 65, 16 * 64))
    assert not encoder._bias and not encoder._positional  # refused before any per-grid work


def test_per_grid_caches_keep_the_most_recently_used_grids(vit_b16):
    encoder = DenseCLIPEncoder(vit_b16.visual, "naclip")
    with torch.inference_mode():
        first = encoder(_pixels(32, 32))
        for columns in range(3, GRIDS_KEPT + 4):  # more new grids than are kept
            encoder(_pixels(32, 16 * columns))
            assert len(encoder._bias) <= GRIDS_KEPT and len(encoder._positional) <= GRIDS_KEPT
        assert (2, 2) not in encoder._bias  # the least recently used went first
        torch.testing.assert_close(encoder(_pixels(32, 32)), first)  # and is made again the same


# ------------------------------------------------------------------------------ reference formulas
def _reference_qkv(block, x):
    """Per-head q, k, v of ``ln_1(x)`` written out with the packed projection, shape (heads, N, d)."""
    attn = block.attn
    y = block.ln_1(x)[0]
    width = y.shape[-1]
    heads = attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width)

    def per_head(t):
        return t.reshape(t.shape[0], heads, -1).transpose(0, 1)

    return per_head(y @ w_q.T + b_q), per_head(y @ w_k.T + b_k), per_head(y @ w_v.T + b_v)


def _reference_out(block, mixed):
    """Concatenate heads and apply out_proj: (heads, N, d) -> (1, N, C)."""
    merged = mixed.transpose(0, 1).reshape(mixed.shape[1], -1)
    return (merged @ block.attn.out_proj.weight.T + block.attn.out_proj.bias)[None]


def _softmax_attention(a, b):
    scale = 1.0 / math.sqrt(a.shape[-1])
    return torch.softmax(a @ b.transpose(-1, -2) * scale, dim=-1)


def _gaussian_bias_by_convolution(grid, std):
    """NACLIP's bias built the long way: a Gaussian window convolved over one-hot patch maps."""
    rows, cols = grid
    window_rows = torch.arange(2 * rows - 1, dtype=torch.float32) - (rows - 1)
    window_cols = torch.arange(2 * cols - 1, dtype=torch.float32) - (cols - 1)
    window = torch.exp(-(window_rows[:, None] ** 2 + window_cols[None, :] ** 2) / (2 * std**2))
    one_hot = torch.eye(rows * cols).reshape(rows * cols, 1, rows, cols)
    spread = F.conv2d(one_hot, window[None, None], padding=(rows - 1, cols - 1))
    bias = torch.zeros(rows * cols + 1, rows * cols + 1)
    bias[1:, 1:] = spread.reshape(rows * cols, rows * cols)
    return bias


def _reference_last_block(method, block, x, grid, std=5.0):
    q, k, v = _reference_qkv(block, x)
    if method == "maskclip":
        return _reference_out(block, v)
    if method == "clearclip":
        return _reference_out(block, _softmax_attention(q, q) @ v)
    if method == "sclip":
        attention = _softmax_attention(q, q) + _softmax_attention(k, k)
        x = x + _reference_out(block, attention @ v)
        return x + block.mlp(block.ln_2(x))
    if method == "naclip":
        scale = 1.0 / math.sqrt(k.shape[-1])
        omega = _gaussian_bias_by_convolution(grid, std)
        attention = torch.softmax(k @ k.transpose(-1, -2) * scale + omega, dim=-1)
        return _reference_out(block, attention @ v)
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["maskclip", "clearclip", "sclip", "naclip"])
def test_last_block_equals_reference_formula(vit_b16, method):
    grid = (5, 7)
    x = torch.randn(1, 1 + grid[0] * grid[1], 768, generator=torch.Generator().manual_seed(3))
    block = vit_b16.visual.transformer.resblocks[-1]
    encoder = DenseCLIPEncoder(vit_b16.visual, method=method)
    ours = encoder._last_block(block, x, grid)
    torch.testing.assert_close(ours, _reference_last_block(method, block, x, grid), rtol=1e-4, atol=1e-4)


def test_vanilla_last_block_is_the_unchanged_block(vit_b16):
    x = torch.randn(1, 1 + 35, 768, generator=torch.Generator().manual_seed(4))
    block = vit_b16.visual.transformer.resblocks[-1]
    ours = DenseCLIPEncoder(vit_b16.visual, method="vanilla")._last_block(block, x, (5, 7))
    torch.testing.assert_close(ours, block(x))


def test_neighbourhood_bias_matches_convolution_construction():
    torch.testing.assert_close(neighbourhood_bias((4, 6), 2.0), _gaussian_bias_by_convolution((4, 6), 2.0))


def test_methods_differ_from_each_other(vit_b16):
    pixels = _pixels(64, 96)
    features = {m: DenseCLIPEncoder(vit_b16.visual, m)(pixels) for m in ["vanilla", "maskclip", "naclip"]}
    assert not torch.allclose(features["vanilla"], features["maskclip"])
    assert not torch.allclose(features["maskclip"], features["naclip"])


def test_non_vit_models_are_refused_with_a_clear_message():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resnet = open_clip.create_model("RN50", pretrained=None)
    with pytest.raises(ConfigError, match="VisionTransformer"):
        DenseCLIPEncoder(resnet.visual)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(ConfigError, match="method"):
        DenseCLIPEncoder(vit.visual, method="magic")
