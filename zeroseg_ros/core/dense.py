"""Dense patch features from an open_clip VisionTransformer, training-free.

CLIP is trained to align one pooled token with text, so its last block mixes every patch into a global summary
and its patch tokens are poor local descriptors. The training-free methods keep blocks 0..L-2 as they are and
replace only the last block's self-attention with one that keeps each patch about itself or its neighbours:

- ``maskclip``  (Zhou et al., ECCV 2022): identity attention, ``out_proj(v)``; no residual, no FFN.
- ``sclip``     (Wang et al., ECCV 2024): correlative attention ``softmax(q qᵀ s) + softmax(k kᵀ s)`` times v;
  residual and FFN kept, as in the SCLIP reference.
- ``clearclip`` (Lan et al., ECCV 2024): ``softmax(q qᵀ s)`` times v; no residual, no FFN.
- ``naclip``    (Hajimiri et al., WACV 2025): ``softmax(k kᵀ s + ω)`` times v, ω a Gaussian over patch
  distances (the neighbourhood prior); no residual, no FFN.
- ``scclip``    (Bai et al., arXiv 2411.15869): anomaly tokens of block L-1 replaced by their neighbours' mean,
  tokens averaged by an intermediate block's similarity, a last block that mixes that similarity with k-k
  attention, and a multi-level branch (``scclip.py``). Its output has no class token.
- ``vanilla``: the last block unchanged (CLIP's own features), for comparison and for equivalence tests.

The module wraps open_clip's modules without copying or forking them; the positional embedding is interpolated
to any patch grid so that non-square and larger inputs keep their aspect ratio.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from zeroseg_ros.core.config import METHODS
from zeroseg_ros.core.errors import ConfigError, InvalidImageError
from zeroseg_ros.core.onednn import OneDNNLinear, residual_attention_block, split_heads
from zeroseg_ros.core.scclip import scclip_patches, settings_for_depth

# Attention over N tokens holds N x N weights per head: 4096 patches (a 1024 x 1024 input at patch 16) already
# take 0.8 GB in fp32 for ViT-B's 12 heads; 8040 (1080p at its own size) would take 3 GB. More are refused.
MAX_PATCH_TOKENS = 4096
GRIDS_KEPT = 8  # per-grid positional embeddings and NACLIP biases kept; the least recently used go first


def interpolate_positional_embedding(
    positional_embedding: torch.Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a ``(1 + gh*gw, C)`` positional embedding (class token first) to another patch grid.

    The class token's embedding is kept; the patch embeddings are resized bicubically as a 2-D map. The
    original grid is returned unchanged, so inputs at the training resolution get CLIP's exact embedding.
    """
    if tuple(target_grid) == tuple(source_grid):
        return positional_embedding
    class_embedding, patch_embedding = positional_embedding[:1], positional_embedding[1:]
    channels = patch_embedding.shape[-1]
    grid = patch_embedding.reshape(1, source_grid[0], source_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=target_grid, mode="bicubic", align_corners=False)
    patch_embedding = grid.permute(0, 2, 3, 1).reshape(-1, channels).to(positional_embedding.dtype)
    return torch.cat([class_embedding, patch_embedding], dim=0)


def neighbourhood_bias(grid: tuple[int, int], std: float) -> torch.Tensor:
    """NACLIP's attention bias ω over ``1 + gh*gw`` tokens: ``exp(-|p - q|² / 2σ²)`` between patch positions.

    The class token's row and column are zero: it gets no neighbourhood prior and gives none.
    """
    rows = torch.arange(grid[0], dtype=torch.float32)
    cols = torch.arange(grid[1], dtype=torch.float32)
    positions = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    squared_distance = torch.cdist(positions, positions).square()
    bias = torch.zeros(positions.shape[0] + 1, positions.shape[0] + 1)
    bias[1:, 1:] = torch.exp(-squared_distance / (2.0 * std * std))
    return bias


class DenseCLIPEncoder(nn.Module):
    """Per-patch CLIP embeddings, L2-normalised, on the image's patch grid.

    ``forward(pixels)`` takes normalised images ``(B, 3, H, W)`` and returns ``(B, D, H // p, W // p)`` with p
    the patch size and D the joint image-text embedding size. With ``onednn`` (fp32 on the CPU) the linear
    layers run as oneDNN inner products (``onednn.py``), about twice as fast on AMD processors.
    """

    def __init__(
        self, visual: nn.Module, method: str = "naclip", neighbourhood_std: float = 5.0, onednn: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise ConfigError(
                f"dense features need an open_clip VisionTransformer, got {type(visual).__name__}; "
                "choose a ViT model such as ViT-B-16"
            )
        if visual.attn_pool is not None or visual.proj is None:
            raise ConfigError("dense features need a ViT with class-token pooling and a projection (CLIP ViTs)")
        last_block = visual.transformer.resblocks[-1]
        if not isinstance(last_block, ResidualAttentionBlock) or not isinstance(last_block.attn, nn.MultiheadAttention):
            raise ConfigError("dense features need open_clip's ResidualAttentionBlock with nn.MultiheadAttention")
        if method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
        self.visual = visual
        self.method = method
        # SC-CLIP's block indices depend on the depth: refused at construction when none are published for it.
        self._scclip = settings_for_depth(len(visual.transformer.resblocks)) if method == "scclip" else None
        self.neighbourhood_std = neighbourhood_std
        self.patch_size: tuple[int, int] = tuple(visual.conv1.kernel_size)  # type: ignore[assignment]
        self.source_grid: tuple[int, int] = tuple(visual.grid_size)  # type: ignore[assignment]
        # Per-grid caches: a camera stream has one input size, so these are computed once; bounded, as a folder of
        # images of mixed sizes brings a new grid with each.
        self._positional: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._bias: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._onednn = OneDNNLinear() if onednn else None

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid an ``height x width`` input produces."""
        return height // self.patch_size[0], width // self.patch_size[1]

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """All output tokens ``(B, 1 + gh*gw, D)`` after ln_post and proj, class token first, not normalised.

        ``scclip`` ends without a class token, as its reference does: use ``patch_tokens``.
        """
        if self._scclip is not None:
            raise ConfigError("scclip's output has no class token; use patch_tokens")
        x, grid = self._embed(pixels)
        with self._onednn or nullcontext():
            (x,) = self._hidden_states(x, keep_all=False)
            x = self._last_block(self.visual.transformer.resblocks[-1], x, grid)
            return self.visual.ln_post(x) @ self.visual.proj

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The patch tokens ``(B, gh*gw, D)`` after ln_post and proj, row-major, not normalised."""
        if self._scclip is None:
            return self.tokens(pixels)[:, 1:]
        x, grid = self._embed(pixels)
        with self._onednn or nullcontext():
            states = self._hidden_states(x, keep_all=True)
            x = scclip_patches(states, self.visual.transformer.resblocks[-1], grid, self._scclip)
            return self.visual.ln_post(x) @ self.visual.proj

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.grid_for(pixels.shape[-2], pixels.shape[-1])
        patches = F.normalize(self.patch_tokens(pixels).float(), dim=-1)
        return patches.transpose(1, 2).reshape(pixels.shape[0], -1, grid[0], grid[1])

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The tokens ``(B, 1 + gh*gw, C)`` that enter the first block (class token first), and the patch grid."""
        visual = self.visual
        grid = self.grid_for(pixels.shape[-2], pixels.shape[-1])
        if grid[0] == 0 or grid[1] == 0:
            raise ValueError(f"input {tuple(pixels.shape[-2:])} is smaller than one patch {self.patch_size}")
        if grid[0] * grid[1] > MAX_PATCH_TOKENS:
            raise InvalidImageError(
                f"a {pixels.shape[-1]} x {pixels.shape[-2]} model input makes {grid[0] * grid[1]} patches, more than "
                f"the {MAX_PATCH_TOKENS} one attention may take; lower short_side (0 keeps the frame's own size) or "
                "use sliding windows (slide_crop)"
            )
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        class_token = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([class_token, x], dim=1) + self._positional_embedding(grid).to(x.dtype)
        return visual.ln_pre(x), grid

    def _hidden_states(self, x: torch.Tensor, keep_all: bool) -> list[torch.Tensor]:
        """The outputs ``(B, 1 + N, C)`` of blocks 0..L-2 on ``x``: all of them in order, or only the last."""
        sequence_first = self._onednn is None and not self.visual.transformer.batch_first
        x = x.transpose(0, 1) if sequence_first else x
        states = []
        for block in self.visual.transformer.resblocks[:-1]:
            # With oneDNN the attention is spelled out, so that its projections go through oneDNN too.
            x = residual_attention_block(block, x) if self._onednn is not None else block(x)
            if keep_all:
                states.append(x)
        states = states if keep_all else [x]
        return [state.transpose(0, 1) for state in states] if sequence_first else states

    def _positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        return _cached(
            self._positional,
            grid,
            lambda: interpolate_positional_embedding(self.visual.positional_embedding, self.source_grid, grid),
        )

    def _neighbourhood_bias(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        return _cached(
            self._bias, grid, lambda: neighbourhood_bias(grid, self.neighbourhood_std).to(like.device, like.dtype)
        )

    def _last_block(self, block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The last transformer block, as the method replaces it; x is ``(B, N, C)``."""
        if self.method == "vanilla":
            return residual_attention_block(block, x)
        attn: nn.MultiheadAttention = block.attn
        q, k, v = split_heads(F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias), attn.num_heads)
        if self.method == "maskclip":
            mixed = v
        elif self.method == "clearclip":
            mixed = F.scaled_dot_product_attention(q, q, v)
        elif self.method == "sclip":
            mixed = F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)
        else:  # naclip
            bias = self._neighbourhood_bias(grid, q)
            mixed = F.scaled_dot_product_attention(k, k, v, attn_mask=bias)
        out = attn.out_proj(mixed.transpose(1, 2).flatten(2))
        if self.method == "sclip":
            x = x + block.ls_1(out)
            return x + block.ls_2(block.mlp(block.ln_2(x)))
        return out


def _cached(
    cache: OrderedDict[tuple[int, int], torch.Tensor], grid: tuple[int, int], make: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """``cache[grid]``, made when missing; at most ``GRIDS_KEPT`` entries, the least recently used dropped."""
    if grid in cache:
        cache.move_to_end(grid)
        return cache[grid]
    while len(cache) >= GRIDS_KEPT:
        cache.popitem(last=False)
    cache[grid] = make()
    return cache[grid]
