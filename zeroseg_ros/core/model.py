"""Loading CLIP with open_clip: by name and pretrained tag, from a local checkpoint, or random for tests.

Robots are often offline, so the order is: an explicit local ``checkpoint`` first, then open_clip's own
download of ``pretrained`` (cached under ``cache_dir``), and, when neither gives weights, a
``WeightsNotFoundError`` that names the model, what was tried and both ways to fix it. Random weights are only
ever used when asked for. When the model hub does not answer within ``HUB_TIMEOUT_S``, the download runs in the
hub client's offline mode: cached weights load at once and missing ones fail at once, instead of after the
client's minute of retries.

Checkpoint files are read in the formats users have: open_clip's (``.pt``/``.bin``/``.safetensors``), OpenAI's
TorchScript archives (``ViT-B-16.pt`` as ``clip.load`` downloads it) and OpenAI state dicts (the archive's
``state_dict()``, with its ``input_resolution``/``context_length``/``vocab_size`` entries). The model runs
the activation its weights were trained with: OpenAI's CLIP used QuickGELU, which open_clip's plain model
names (``ViT-B-16``) do not, even for ``pretrained='openai'`` (its factory only warns).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError, WeightsNotFoundError
from zeroseg_ros.core.onednn import LinearTiming, measure_linear
from zeroseg_ros.core.progress import Progress, no_progress

LOGGER = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Entries of OpenAI's checkpoints that are not weights: they mark a state dict as OpenAI's.
OPENAI_EXTRA_ENTRIES = ("input_resolution", "context_length", "vocab_size")
BF16_TIMING_ROWS = 257  # the tokens of a 256 x 256 frame through a /16 ViT
HUB_TIMEOUT_S = 3.0  # how long the model hub may take to accept a connection before it counts as unreachable

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
    precision: str  # fp32, fp16 or bf16: what ``precision`` (maybe ``auto``) resolved to
    precision_source: str  # why, for logs and diagnostics
    activation: str  # what the model's MLPs run: QuickGELU or GELU
    activation_source: str  # why


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


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), as torch's own kernels detect them."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(spec: str, device: torch.device, bf16_timing: Callable[[], LinearTiming]) -> tuple[str, str]:
    """(precision, why): ``auto`` is fp16 on CUDA; on a CPU with AVX512-BF16 or AMX, bf16 where ``bf16_timing``
    (one of the model's products, fp32 against bf16) finds it clearly faster; fp32 otherwise. It times rather than
    reads the instruction flags because some CPUs with AVX512-BF16 run bf16 slower than fp32
    (docs/benchmarks.md, "Automatic choices")."""
    if spec != "auto":
        return spec, "set explicitly"
    if device.type == "cuda":
        return "fp16", "auto: CUDA device"
    if not cpu_has_bf16():
        return "fp32", "auto: this CPU has neither AVX512-BF16 nor AMX"
    timing = bf16_timing()
    if timing.candidate_wins:
        return "bf16", f"auto: AVX512-BF16 or AMX, {timing}"
    return "fp32", f"auto: bf16 is not clearly faster on this CPU, {timing}"


LOADING_STEPS = 4  # the model with its weights; the precision; on the device; the tokenizer


def load_clip(config: ModelConfig, progress: Progress | None = None) -> LoadedCLIP:
    """Build the open_clip model of ``config`` with its weights, in eval mode, on its device and precision.
    ``progress(done, LOADING_STEPS)`` follows the steps (open_clip shows none, except for downloads)."""
    report = progress or no_progress
    device = resolve_device(config.device)
    # bf16 runs on any CPU (natively only with AVX512-BF16 or AMX); fp16 products on a CPU are slow.
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device; use fp32 (or bf16) on {device}")
    if config.name not in open_clip.list_models() and not config.name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(
            f"unknown open_clip model {config.name!r}; known ViT models include "
            f"{', '.join(n for n in open_clip.list_models() if n.startswith('ViT-B'))}"
        )

    LOGGER.info("loading CLIP %s ...", config.name)
    if config.random_init:
        # A warning, not a log line as well: the command line shows warnings once through logging.
        warnings.warn(RANDOM_WEIGHTS_WARNING.format(name=config.name), stacklevel=2)
        with _without_records_starting("No pretrained weights loaded"):  # open_clip's copy of that warning
            model = _create(config.name, pretrained=None, quick_gelu=config.quick_gelu)
        weights = "random initialisation"
        activation_source = "set explicitly" if config.quick_gelu is not None else f"model {config.name}'s config"
    elif config.checkpoint:
        model, activation_source = _from_checkpoint(config)
        weights = f"checkpoint {config.checkpoint}"
    else:
        model, activation_source = _from_pretrained_tag(config)
        weights = f"open_clip pretrained '{config.pretrained}'"

    report(1, LOADING_STEPS)
    precision, precision_source = resolve_precision(config.precision, device, lambda: _time_bf16(model))
    dtype = _DTYPES[precision]
    report(2, LOADING_STEPS)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    report(3, LOADING_STEPS)
    tokenizer = open_clip.get_tokenizer(config.name)
    report(LOADING_STEPS, LOADING_STEPS)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    activation = "QuickGELU" if any(isinstance(m, QuickGELU) for m in model.modules()) else "GELU"
    LOGGER.info(
        "CLIP %s loaded: %s, %s (%s), %s (%s)",
        config.name,
        weights,
        precision,
        precision_source,
        activation,
        activation_source,
    )
    return LoadedCLIP(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
        weights=weights,
        precision=precision,
        precision_source=precision_source,
        activation=activation,
        activation_source=activation_source,
    )


def _time_bf16(model: nn.Module) -> LinearTiming:
    """The image tower's largest product (a ViT's MLP) on a frame's worth of tokens, fp32 against bf16."""
    largest = max((m for m in model.visual.modules() if isinstance(m, nn.Linear)), key=lambda m: m.weight.numel())
    bias = None if largest.bias is None else largest.bias.float()  # OpenAI's builder leaves fp16 weights
    return measure_linear(largest.weight.float(), bias, BF16_TIMING_ROWS, "bf16")


def _create(
    name: str, pretrained: str | None, cache_dir: str | None = None, quick_gelu: bool | None = None
) -> nn.Module:
    """open_clip's model ``name``; ``quick_gelu`` True or False overrides the activation its config names."""
    overrides: dict[str, bool] = {}
    if quick_gelu is not None:
        # force_quick_gelu is what open_clip checks against a tag's config; the keyword also allows False.
        overrides = {"force_quick_gelu": quick_gelu, "quick_gelu": quick_gelu}
    return open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir, device="cpu", **overrides)


@contextlib.contextmanager
def _without_records_starting(prefix: str) -> Iterator[None]:
    """Drops the root logger's records that start with ``prefix`` (open_clip logs through the root logger)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _from_checkpoint(config: ModelConfig) -> tuple[nn.Module, str]:
    """The model with the weights of ``config.checkpoint``, and why it runs the activation it runs."""
    path = os.path.expanduser(str(config.checkpoint))
    if not os.path.isfile(path):
        raise WeightsNotFoundError(_missing_weights_message(config, f"the checkpoint file {path!r} does not exist"))
    try:
        if _is_torchscript_archive(path):
            # OpenAI's own files; open_clip's loader refuses them (weights_only=True), this is what its
            # load_openai_model does with them.
            state_dict = torch.jit.load(path, map_location="cpu").state_dict()
            return _from_openai_state_dict(config, state_dict, "an OpenAI TorchScript archive")
        state_dict = _read_state_dict(path)
        if any(key in state_dict for key in OPENAI_EXTRA_ENTRIES):
            return _from_openai_state_dict(config, state_dict, "an OpenAI state dict")
        quick_gelu, source = _checkpoint_activation(config, path)
        return _create(config.name, pretrained=path, quick_gelu=quick_gelu), source
    except WeightsNotFoundError:
        raise
    except Exception as error:  # open_clip raises many types for a bad file; all mean the same to a user
        raise WeightsNotFoundError(
            _missing_weights_message(config, f"loading checkpoint {path!r} failed: {error}")
        ) from error


def _is_torchscript_archive(path: str) -> bool:
    """TorchScript archives are zip files with a ``constants.pkl`` record (as ``torch.load`` tells them apart)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name, as open_clip's ``load_state_dict`` reads them (a ``state_dict`` entry
    unwrapped, a ``module.`` prefix removed); zip files are memory-mapped, so nothing is copied yet."""
    if path.endswith(".safetensors"):
        return open_clip.factory.load_state_dict(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"it holds a {type(checkpoint).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _from_openai_state_dict(
    config: ModelConfig, state_dict: dict[str, torch.Tensor], file_format: str
) -> tuple[nn.Module, str]:
    """open_clip's builder for OpenAI's weights (``build_model_from_openai_state_dict``, as ``load_openai_model``
    uses it), which takes the architecture from the file: it must be the one ``config.name`` names."""
    state_dict = {key: value for key, value in state_dict.items() if key not in OPENAI_EXTRA_ENTRIES}
    expected, found = _architecture(open_clip.get_model_config(config.name)), _architecture_of(state_dict)
    if expected != found:
        raise WeightsNotFoundError(
            _missing_weights_message(
                config,
                f"checkpoint {config.checkpoint!r} ({file_format}) holds another architecture: {found}, "
                f"where model '{config.name}' is {expected}",
            )
        )
    quick_gelu = True if config.quick_gelu is None else config.quick_gelu
    if not quick_gelu:
        LOGGER.warning("quick_gelu is false, but %s holds OpenAI's weights, trained with QuickGELU", file_format)
    model = open_clip.model.build_model_from_openai_state_dict(state_dict, quick_gelu=quick_gelu, cast_dtype=None)
    model.visual.image_mean, model.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return model, "set explicitly" if config.quick_gelu is not None else f"{file_format}: OpenAI trained with it"


def _architecture(model_config: dict[str, Any] | None) -> dict[str, int] | None:
    """The numbers that tell ViT CLIPs apart, from an open_clip model config."""
    if model_config is None:
        return None
    vision, text = model_config["vision_cfg"], model_config["text_cfg"]
    return {
        "embed_dim": model_config["embed_dim"],
        "vision_width": vision.get("width"),
        "vision_layers": vision.get("layers"),
        "patch_size": vision.get("patch_size"),
        "text_width": text.get("width"),
        "text_layers": text.get("layers"),
    }


def _architecture_of(state_dict: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """The same numbers, read from an OpenAI state dict (as ``build_model_from_openai_state_dict`` reads them)."""
    if "visual.proj" not in state_dict:
        return None  # a ResNet CLIP
    return {
        "embed_dim": state_dict["text_projection"].shape[1],
        "vision_width": state_dict["visual.conv1.weight"].shape[0],
        "vision_layers": len({key.split(".")[3] for key in state_dict if key.startswith("visual.transformer.")}),
        "patch_size": state_dict["visual.conv1.weight"].shape[-1],
        "text_width": state_dict["ln_final.weight"].shape[0],
        "text_layers": len({key.split(".")[2] for key in state_dict if key.startswith("transformer.resblocks.")}),
    }


def _checkpoint_activation(config: ModelConfig, path: str) -> tuple[bool | None, str]:
    """For an open_clip-format file, which does not record the activation: the setting, or the model name's
    config, with a warning when that is GELU (OpenAI-trained weights copied from open_clip's cache need QuickGELU)."""
    if config.quick_gelu is not None:
        return config.quick_gelu, "set explicitly"
    model_config = open_clip.get_model_config(config.name) or {}
    if model_config.get("quick_gelu", False):
        return None, f"model {config.name}'s config"
    LOGGER.warning(
        "checkpoint %s is in open_clip's format, which does not record the activation: running GELU, as model "
        "'%s' is configured. If these are OpenAI-trained weights (e.g. open_clip's 'openai' download), set "
        "quick_gelu true (or use model '%s-quickgelu'); set quick_gelu false to confirm GELU.",
        path,
        config.name,
        config.name,
    )
    return None, f"model {config.name}'s config; the checkpoint does not say"


def _from_pretrained_tag(config: ModelConfig) -> tuple[nn.Module, str]:
    tags = open_clip.list_pretrained_tags_by_model(config.name)
    if config.name.startswith("hf-hub:"):
        tags = [config.pretrained]
    if config.pretrained not in tags:
        raise ConfigError(
            f"open_clip has no pretrained tag {config.pretrained!r} for {config.name!r}; "
            f"its tags are: {', '.join(tags) or '(none)'}"
        )
    pretrained_config = open_clip.get_pretrained_cfg(config.name, config.pretrained)
    quick_gelu, source = tag_activation(config)
    unreachable = _unreachable_hub(pretrained_config)
    try:
        with _hub_offline(unreachable is not None):
            return _create(config.name, config.pretrained, config.cache_dir, quick_gelu), source
    except Exception as error:  # network, hub and file errors all mean: no weights here
        what_failed = f"downloading pretrained '{config.pretrained}' failed: {error}"
        if unreachable is not None:
            what_failed = (
                f"the model hub ({unreachable}) did not answer within {HUB_TIMEOUT_S:.0f} s and pretrained "
                f"'{config.pretrained}' is not in the cache"
            )
        raise WeightsNotFoundError(_missing_weights_message(config, what_failed)) from error


def tag_activation(config: ModelConfig) -> tuple[bool | None, str]:
    """(quick_gelu override, why) for a pretrained tag: the activation open_clip's table says it was trained
    with (``quick_gelu`` in the tag's config), unless set explicitly. None leaves the model config's."""
    pretrained_config = open_clip.get_pretrained_cfg(config.name, config.pretrained)
    if not pretrained_config:  # hf-hub: models bring their own config, activation included
        source = "set explicitly" if config.quick_gelu is not None else "the hub model's config"
        return config.quick_gelu, source
    trained_with = pretrained_config.get("quick_gelu", False)
    if config.quick_gelu is None:
        return trained_with, f"pretrained '{config.pretrained}' was trained with it"
    if config.quick_gelu != trained_with:
        LOGGER.warning(
            "quick_gelu is %s, but pretrained '%s' was trained with%s QuickGELU",
            str(config.quick_gelu).lower(),
            config.pretrained,
            "" if trained_with else "out",
        )
    return config.quick_gelu, "set explicitly"


def _unreachable_hub(pretrained_config: dict[str, Any]) -> str | None:
    """``host:port`` of the hub (or its proxy) when it does not accept a connection within ``HUB_TIMEOUT_S``;
    None when it does, or when the hub client is offline already (``HF_HUB_OFFLINE``: the user's setting wins)."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or not pretrained_config.get("hf_hub") or not open_clip.pretrained.has_hf_hub():
        return None
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        endpoint = urllib.parse.urlsplit(proxy)
    host = endpoint.hostname or ""
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError:
        return f"{host}:{port}"
    return None


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """The hub client's offline mode (what ``HF_HUB_OFFLINE=1`` sets), for the calls made within: a cached file
    is used at once, a missing one fails at once. huggingface_hub reads the flag on every request."""
    from huggingface_hub import constants

    if not enabled:
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _missing_weights_message(config: ModelConfig, what_failed: str) -> str:
    cache = config.cache_dir or "open_clip's default cache (~/.cache/huggingface or ~/.cache/clip)"
    return (
        f"No weights for CLIP model '{config.name}': {what_failed}. "
        f"Fix it one of two ways: (1) on a machine with internet, leave checkpoint empty and set "
        f"pretrained to one of open_clip's tags (e.g. '{config.name}' with 'openai'); the weights are "
        f"downloaded once into {cache}; or (2) offline, copy a checkpoint file of that architecture to the "
        f"robot and set checkpoint to its path (open_clip's .pt/.bin/.safetensors, OpenAI's TorchScript .pt or "
        f"an OpenAI state dict). For a smoke test without weights, random_init / --random-weights runs the "
        f"pipeline with masks that mean nothing."
    )
