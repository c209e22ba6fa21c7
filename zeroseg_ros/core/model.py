"""Loading CLIP with open_clip: by name and pretrained tag, from a local checkpoint, or random for tests.

Robots are often offline, so the order is: an explicit local ``checkpoint`` first, then open_clip's own
download of ``pretrained`` (cached under ``cache_dir``), and, when neither gives weights, a
``WeightsNotFoundError`` that names the model, what was tried and both ways to fix it. Random weights are only
ever used when asked for.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from torch import nn

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError, WeightsNotFoundError

LOGGER = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

RANDOM_WEIGHTS_WARNING = (
    "zeroseg_ros: CLIP '{name}' runs with RANDOM weights (random_init). Its masks mean nothing: "
    "use this for tests and smoke runs only."
)


@dataclass(frozen=True)
class LoadedCLIP:
    """A CLIP model ready for inference, with what the pipeline needs to feed it."""

    model: nn.Module
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    mean: tuple[float, float, float]  # on the 0-1 scale
    std: tuple[float, float, float]
    weights: str  # where the weights came from, for logs and diagnostics


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one; ``cuda[:N]`` must exist."""
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for, but this torch sees no CUDA device; use 'cpu' or 'auto'")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    return device


def load_clip(config: ModelConfig) -> LoadedCLIP:
    """Build the open_clip model of ``config`` with its weights, in eval mode, on its device and precision."""
    device = resolve_device(config.device)
    dtype = _DTYPES[config.precision]
    # bf16 runs on CPUs with AVX512-BF16 or AMX (twice as fast as fp32 there); CPU fp16 matmuls are slow.
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device; use fp32 (or bf16) on {device}")
    if config.name not in open_clip.list_models() and not config.name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(
            f"unknown open_clip model {config.name!r}; known ViT models include "
            f"{', '.join(n for n in open_clip.list_models() if n.startswith('ViT-B'))}"
        )

    if config.random_init:
        message = RANDOM_WEIGHTS_WARNING.format(name=config.name)
        warnings.warn(message, stacklevel=2)
        LOGGER.warning(message)
        model = _create(config.name, pretrained=None)
        weights = "random initialisation"
    elif config.checkpoint:
        model = _from_checkpoint(config)
        weights = f"checkpoint {config.checkpoint}"
    else:
        model = _from_pretrained_tag(config)
        weights = f"open_clip pretrained '{config.pretrained}'"

    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    return LoadedCLIP(
        model=model,
        tokenizer=open_clip.get_tokenizer(config.name),
        device=device,
        dtype=dtype,
        mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
        weights=weights,
    )


def _create(name: str, pretrained: str | None, cache_dir: str | None = None) -> nn.Module:
    return open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir, device="cpu")


def _from_checkpoint(config: ModelConfig) -> nn.Module:
    path = os.path.expanduser(str(config.checkpoint))
    if not os.path.isfile(path):
        raise WeightsNotFoundError(_missing_weights_message(config, f"the checkpoint file {path!r} does not exist"))
    try:
        return _create(config.name, pretrained=path)
    except Exception as error:  # open_clip raises many types for a bad file; all mean the same to a user
        raise WeightsNotFoundError(
            _missing_weights_message(config, f"loading checkpoint {path!r} failed: {error}")
        ) from error


def _from_pretrained_tag(config: ModelConfig) -> nn.Module:
    tags = open_clip.list_pretrained_tags_by_model(config.name)
    if config.name.startswith("hf-hub:"):
        tags = [config.pretrained]
    if config.pretrained not in tags:
        raise ConfigError(
            f"open_clip has no pretrained tag {config.pretrained!r} for {config.name!r}; "
            f"its tags are: {', '.join(tags) or '(none)'}"
        )
    try:
        return _create(config.name, pretrained=config.pretrained, cache_dir=config.cache_dir)
    except Exception as error:  # network, hub and file errors all mean: no weights here
        raise WeightsNotFoundError(
            _missing_weights_message(config, f"downloading pretrained '{config.pretrained}' failed: {error}")
        ) from error


def _missing_weights_message(config: ModelConfig, what_failed: str) -> str:
    cache = config.cache_dir or "open_clip's default cache (~/.cache/huggingface or ~/.cache/clip)"
    return (
        f"No weights for CLIP model '{config.name}': {what_failed}. "
        f"Fix it one of two ways: (1) on a machine with internet, leave checkpoint empty and set "
        f"pretrained to one of open_clip's tags (e.g. '{config.name}' with 'openai'); the weights are "
        f"downloaded once into {cache}; or (2) offline, copy a checkpoint file (.pt/.bin/.safetensors of "
        f"that architecture) to the robot and set checkpoint to its path. For a smoke test without weights, "
        f"random_init / --random-weights runs the pipeline with masks that mean nothing."
    )
