"""Shared fixtures: random-weight open_clip models of the real architectures (no weights can be downloaded)."""

from __future__ import annotations

import os
import warnings

# No test may reach a model hub: a download attempt fails at once instead of contacting the network.
# Set before huggingface_hub is imported (it reads this once), and inherited by every child process.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from zeroseg_ros.core.config import ModelConfig


@pytest.fixture(scope="session")
def random_model_config() -> ModelConfig:
    return ModelConfig(name="ViT-B-16", random_init=True, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def vit_b16():
    """A randomly initialised open_clip ViT-B-16 (the default architecture), fp32, eval mode."""
    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-B-16", pretrained=None)
    return model.eval().requires_grad_(False)
