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


def test_measure_linear_times_the_product_both_ways() -> None:
    weight, bias = torch.randn(96, 32), torch.randn(96)
    timing = measure_linear(weight, bias, rows=17, repeats=2)
    assert timing.shape == (17, 32, 96) and timing.pytorch_ms > 0 and timing.onednn_ms > 0
    assert "PyTorch" in str(timing) and "oneDNN" in str(timing)
    # oneDNN keeps a packed copy of every weight: it is chosen only when clearly faster.
    assert LinearTiming((1, 1, 1), 10.0, 8.0).onednn_wins and not LinearTiming((1, 1, 1), 10.0, 9.5).onednn_wins


@pytest.mark.parametrize("onednn_ms", [1.0, 20.0])
def test_auto_routes_through_onednn_only_where_the_start_up_measurement_says_it_wins(monkeypatch, onednn_ms) -> None:
    measured: list[tuple[int, ...]] = []

    def fake_measure(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> LinearTiming:
        measured.append((rows, *weight.shape))
        return LinearTiming((rows, weight.shape[1], weight.shape[0]), 10.0, onednn_ms)

    monkeypatch.setattr(segmenter_module, "measure_linear", fake_measure)
    model = ModelConfig(name="ViT-S-32", random_init=True, device="cpu", precision="fp32")
    with pytest.warns(UserWarning, match="RANDOM"):
        automatic = segmenter_module.Segmenter(model)
    assert measured == [(14 * 18 + 1, 1536, 384)]  # ViT-S-32's MLP, the tokens of a 4:3 frame at short side 448
    assert automatic.uses_onednn == (onednn_ms < 10.0)
    assert f"oneDNN {'on' if onednn_ms < 10.0 else 'off'} (auto: a 253 x 384 by 384 x 1536 product" in automatic.choices
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
