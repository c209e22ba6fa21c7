"""fp32 linear layers through oneDNN on the CPU (onednn.py): the same results as PyTorch's own products, for
single layers and for the whole dense encoder of every method, with every weight packed once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core.config import METHODS
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.onednn import OneDNNLinear, onednn_available, residual_attention_block
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
