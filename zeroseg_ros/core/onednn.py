"""Linear layers through oneDNN on the CPU, and open_clip's transformer block spelled out for them.

PyTorch's fp32 ``F.linear`` on the CPU calls MKL's sgemm, which takes a slow generic path on AMD processors,
where a oneDNN inner product on a weight packed once is much faster. A ViT is almost all such products, so
running them through oneDNN shortens the image encoder's time there and gives the same fp32 results up to
rounding. On Intel Xeons, where MKL is at home, the routing can be slower, and it holds a packed copy of every
weight, so ``measure_linear`` times one of the model's own products both ways at start-up and the routing is
used only where it wins clearly (``CLEAR_WIN``). The same measurement decides whether bf16 pays. Figures per
CPU: docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


def onednn_available() -> bool:
    """Whether this torch has oneDNN's linear ops (the ones torch.compile's CPU backend uses)."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
    )


class OneDNNLinear(TorchFunctionMode):
    """Within it, fp32 ``F.linear`` on CPU tensors runs as a oneDNN inner product; everything else is unchanged.

    Each weight is packed into oneDNN's blocked layout once, on its first use, and kept: a second copy of the
    weights that go through it, which therefore must not change afterwards (inference weights do not). Inputs
    and outputs stay ordinary tensors. Calls made inside another op (the projections of
    ``nn.MultiheadAttention``, say) do not reach the mode: spell such ops out with ``F.linear``.
    """

    def __init__(self) -> None:
        super().__init__()
        # id(weight) -> (packed weight, the weight itself: keeps the id from being reused)
        self._packed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            inputs, weight, bias = _linear_arguments(args, kwargs)
            if _runs_on_onednn(inputs, weight, bias):
                return self._linear(inputs, weight, bias)
        return func(*args, **kwargs)

    def _linear(self, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows = inputs.reshape(-1, inputs.shape[-1]).contiguous()
        packed = self._packed.get(id(weight))
        if packed is None:
            # The layout is chosen for the number of rows seen first; other row counts run on it as well.
            packed = (torch.ops.mkldnn._reorder_linear_weight(weight, rows.shape[0]), weight)
            self._packed[id(weight)] = packed
        outputs = torch.ops.mkldnn._linear_pointwise(rows, packed[0], bias, "none", [], "")
        return outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])


def _linear_arguments(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    values = list(args) + [None] * (3 - len(args))
    return kwargs.get("input", values[0]), kwargs.get("weight", values[1]), kwargs.get("bias", values[2])


def _runs_on_onednn(inputs: Any, weight: Any, bias: Any) -> bool:
    tensors = [t for t in (inputs, weight, bias) if t is not None]
    return (
        all(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))  # oneDNN's op has no backward
        and inputs.dim() >= 2
        and weight.dim() == 2
        and inputs.numel() > 0
    )


def residual_attention_block(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on ``(B, N, C)`` self-attention, with the attention's projections
    as top-level ``F.linear`` calls (which ``OneDNNLinear`` sees) instead of ``nn.MultiheadAttention``'s fused
    kernel. ``attn_mask`` is additive, as open_clip's causal text mask is."""
    attn: nn.MultiheadAttention = block.attn
    q, k, v = split_heads(F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias), attn.num_heads)
    mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    x = x + block.ls_1(attn.out_proj(mixed.transpose(1, 2).flatten(2)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, N, 3C)`` packed projections to three ``(B, heads, N, C / heads)`` tensors."""
    batch, tokens, _ = qkv.shape
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


# A faster way must be this much faster to be chosen: oneDNN keeps a packed copy of every weight, bf16 rounds,
# and near a tie one product's timing does not tell which way whole frames go (docs/benchmarks.md).
CLEAR_WIN = 0.8


def cpu_times_ms(calls: Sequence[Callable[[], object]], repeats: int = 5) -> list[float]:
    """The best CPU time of each call, in this thread with one torch thread, the calls alternating. CPU time,
    unlike wall time, hardly moves when other processes share the cores (start-up on a busy robot)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = [float("inf")] * len(calls)
    try:
        with torch.inference_mode():
            for call in calls:
                call()  # packs weights, picks kernels: paid once, not timed
            for _ in range(repeats):
                for index, call in enumerate(calls):
                    start = time.thread_time()
                    call()
                    best[index] = min(best[index], time.thread_time() - start)
    finally:
        torch.set_num_threads(threads)
    return [seconds * 1e3 for seconds in best]


@dataclass(frozen=True)
class LinearTiming:
    """The best CPU time of one product each way: ``baseline`` (PyTorch's fp32) against ``candidate``."""

    shape: tuple[int, int, int]  # rows x inputs x outputs
    baseline: str
    baseline_ms: float
    candidate: str
    candidate_ms: float

    @property
    def candidate_wins(self) -> bool:
        return self.candidate_ms < CLEAR_WIN * self.baseline_ms

    def __str__(self) -> str:
        rows, inputs, outputs = self.shape
        return (
            f"a {rows} x {inputs} by {inputs} x {outputs} product: {self.baseline} {self.baseline_ms:.2f} ms, "
            f"{self.candidate} {self.candidate_ms:.2f} ms"
        )


def measure_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, candidate: str) -> LinearTiming:
    """``F.linear`` of ``rows`` random inputs with this fp32 CPU weight: PyTorch's own fp32 product against
    ``candidate``, ``"oneDNN"`` (the same product through ``OneDNNLinear``) or ``"bf16"`` (PyTorch's, in bf16).
    A few tens of milliseconds for ViT-B."""
    inputs = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0))
    if candidate == "oneDNN":
        mode = OneDNNLinear()

        def other() -> object:
            with mode:
                return F.linear(inputs, weight, bias)

    elif candidate == "bf16":
        halves = [t.to(torch.bfloat16) if t is not None else None for t in (inputs, weight, bias)]

        def other() -> object:
            return F.linear(*halves)

    else:
        raise ValueError(f"candidate must be oneDNN or bf16, got {candidate!r}")
    baseline_ms, candidate_ms = cpu_times_ms([lambda: F.linear(inputs, weight, bias), other])
    return LinearTiming((rows, weight.shape[1], weight.shape[0]), "fp32", baseline_ms, candidate, candidate_ms)
