"""fp32 linear layers through oneDNN on the CPU (onednn.py): the same results as PyTorch's own products, for
single layers and for the whole dense encoder of every method, with every weight packed once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core import segmenter as segmenter_module
from zeroseg_ros.core.config import METHODS, ModelConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.onednn import (
    LinearTiming,
    OneDNNLinear,
    cpu_times_ms,
    measure_linear,
    onednn_available,
    residual_attention_block,
)
from zeroseg_ros.core.text import encode_text_trimmed

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear ops")


@pytest.mark.parametrize("shape", [(5, 48), (2, 7, 48), (1, 3, 4, 48)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_pytorch(shape: tuple[int, ...], with_bias: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(shape, generator=generator)
    weight = torch.randn(64, 48, generator=generator)
    bias = torch.randn(64, generator=generator) if with_bias else None
    mode = OneDNNLinear()
    with torch.inference_mode(), mode:
        first = F.linear(inputs, weight, bias)
        second = F.linear(input=inputs * 2, weight=weight, bias=bias)
    torch.testing.assert_close(first, F.linear(inputs, weight, bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, F.linear(inputs * 2, weight, bias), rtol=1e-5, atol=1e-5)
    assert len(mode._packed) == 1  # packed on the first call, reused on the second


def test_what_onednn_does_not_take_runs_unchanged() -> None:
    weight = torch.randn(4, 3, dtype=torch.float64)
    inputs = torch.randn(2, 3, dtype=torch.float64)
    trainable = torch.nn.Linear(3, 4)
    mode = OneDNNLinear()
    with mode:
        doubles = F.linear(inputs, weight)
        with_grad = trainable(inputs.float())
    assert torch.equal(doubles, F.linear(inputs, weight))
    assert with_grad.requires_grad and not mode._packed
    with torch.no_grad(), mode:  # the same layer without autograd does run on oneDNN
        torch.testing.assert_close(trainable(inputs.float()), with_grad.detach(), rtol=1e-5, atol=1e-6)
    assert len(mode._packed) == 1


@pytest.mark.parametrize("method", METHODS)
def test_dense_encoder_through_onednn_equals_pytorch(vit_b16, method: str) -> None:
    pixels = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    reference = DenseCLIPEncoder(vit_b16.visual, method)
    fast = DenseCLIPEncoder(vit_b16.visual, method, onednn=True)
    with torch.inference_mode():
        torch.testing.assert_close(fast(pixels), reference(pixels), rtol=1e-4, atol=1e-5)
    # Every block's projections went through it: the attention's two and the MLP's two, last block as the method has it.
    blocks = len(vit_b16.visual.transformer.resblocks)
    assert len(fast._onednn._packed) >= 4 * (blocks - 1)


def test_spelled_out_block_equals_open_clip_s_with_and_without_the_causal_mask(vit_b16) -> None:
    x = torch.randn(2, 9, vit_b16.transformer.width, generator=torch.Generator().manual_seed(2))
    block = vit_b16.transformer.resblocks[0]
    mask = vit_b16.attn_mask[:9, :9]
    with torch.inference_mode():
        torch.testing.assert_close(residual_attention_block(block, x), block(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            residual_attention_block(block, x, mask), block(x, attn_mask=mask), rtol=1e-5, atol=1e-5
        )


def test_text_encoder_through_onednn_equals_open_clip(vit_b16) -> None:
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a traffic cone.", "a dog", "door handle"])
    mode = OneDNNLinear()
    with torch.inference_mode():
        fast = encode_text_trimmed(vit_b16, tokens, mode)
        torch.testing.assert_close(fast, vit_b16.encode_text(tokens), rtol=1e-4, atol=1e-4)
    assert len(mode._packed) == 4 * len(vit_b16.transformer.resblocks)


@pytest.mark.parametrize("candidate", ["oneDNN", "bf16"])
def test_measure_linear_times_the_product_both_ways(candidate: str) -> None:
    weight, bias = torch.randn(96, 32), torch.randn(96)
    timing = measure_linear(weight, bias, rows=17, candidate=candidate)
    assert timing.shape == (17, 32, 96) and timing.baseline_ms > 0 and timing.candidate_ms > 0
    assert str(timing).startswith("a 17 x 32 by 32 x 96 product: fp32 ") and f"{candidate} " in str(timing)
    with pytest.raises(ValueError, match="oneDNN or bf16"):
        measure_linear(weight, bias, rows=17, candidate="int8")


def test_a_way_is_chosen_only_when_clearly_faster() -> None:
    """oneDNN keeps a packed copy of every weight and bf16 rounds: a tie goes to PyTorch's fp32."""
    assert LinearTiming((1, 1, 1), "fp32", 10.0, "oneDNN", 7.0).candidate_wins
    assert not LinearTiming((1, 1, 1), "fp32", 10.0, "oneDNN", 8.7).candidate_wins


def test_cpu_times_are_measured_on_one_thread_and_the_thread_count_is_restored() -> None:
    threads = torch.get_num_threads()
    seen: list[int] = []
    cpu_times_ms([lambda: seen.append(torch.get_num_threads())], repeats=2)
    assert set(seen) == {1} and torch.get_num_threads() == threads


@pytest.mark.parametrize("onednn_ms", [1.0, 20.0])
def test_auto_routes_through_onednn_only_where_the_start_up_measurement_says_it_wins(monkeypatch, onednn_ms) -> None:
    measured: list[tuple[object, ...]] = []

    def fake_measure(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, candidate: str) -> LinearTiming:
        measured.append((rows, *weight.shape, candidate))
        return LinearTiming((rows, weight.shape[1], weight.shape[0]), "fp32", 10.0, candidate, onednn_ms)

    monkeypatch.setattr(segmenter_module, "measure_linear", fake_measure)
    model = ModelConfig(name="ViT-S-32", random_init=True, device="cpu", precision="fp32")
    with pytest.warns(UserWarning, match="RANDOM"):
        automatic = segmenter_module.Segmenter(model)
    # ViT-S-32's MLP, the tokens of a 4:3 frame at short side 448
    assert measured == [(14 * 18 + 1, 1536, 384, "oneDNN")]
    assert automatic.uses_onednn == (onednn_ms < 10.0)
    expected = f"oneDNN {'on' if onednn_ms < 10.0 else 'off'} (auto: a 253 x 384 by 384 x 1536 product: fp32 10.00 ms"
    assert expected in automatic.choices
    with pytest.warns(UserWarning, match="RANDOM"):
        forced = segmenter_module.Segmenter(model, onednn=onednn_ms > 10.0)
    assert forced.uses_onednn == (onednn_ms > 10.0) and "(set explicitly)" in forced.choices
    assert len(measured) == 1  # an explicit setting measures nothing


def test_bf16_never_routes_through_onednn_and_says_why() -> None:
    model = ModelConfig(name="ViT-S-32", random_init=True, device="cpu", precision="bf16")
    with pytest.warns(UserWarning, match="RANDOM"):
        segmenter = segmenter_module.Segmenter(model, onednn=True)
    assert not segmenter.uses_onednn and segmenter.backend == "PyTorch bf16" and segmenter.precision == "bf16"
    assert "precision bf16 (set explicitly)" in segmenter.choices
    assert "oneDNN off (fp32 on the CPU only)" in segmenter.choices
