"""Explicit, typed configuration of the model and of the segmentation.

Two frozen dataclasses: ``ModelConfig`` says which CLIP to load and where to run it; ``SegmenterConfig`` says
how to turn its patches into a segmentation. Both validate themselves on construction, so a bad value is a
``ConfigError`` at start-up rather than a failure on the first frame.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.queries import check_background_words

METHODS = ("naclip", "sclip", "clearclip", "maskclip", "vanilla")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
TRISTATE = ("auto", "true", "false")
TEMPLATE_SETS = ("imagenet80", "short", "none")
PAMR_RESOLUTIONS = ("input", "frame")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ModelConfig:
    """Which CLIP to load and where to run it.

    ``name`` and ``pretrained`` are open_clip's model name and pretrained tag (downloaded on first use into
    ``cache_dir``); ``checkpoint`` is a local file for machines without internet and wins over the tag.
    ``random_init`` builds the architecture with random weights: for tests and smoke runs only.
    ``precision`` ``auto`` is fp16 on CUDA; on a CPU with AVX512-BF16 or AMX, bf16 where a product timed at
    load is clearly faster in it; fp32 otherwise.
    ``quick_gelu``: the activation the weights were trained with (OpenAI's CLIP: QuickGELU). None (auto) takes it
    from open_clip's table for a pretrained tag, from the format of an OpenAI checkpoint file (TorchScript
    archive or OpenAI state dict), and otherwise from the model name's config, with a warning that says so.
    ``text_cache`` is where text embeddings are kept between runs (``text_cache.py``): ``"auto"`` for
    ``$XDG_CACHE_HOME/zeroseg_ros`` (``~/.cache/zeroseg_ros``), a directory, or ``""`` for no disk cache.
    """

    name: str = "ViT-B-16"
    pretrained: str = "openai"
    checkpoint: str | None = None
    cache_dir: str | None = None
    random_init: bool = False
    device: str = "auto"
    precision: str = "auto"
    quick_gelu: bool | None = None
    text_cache: str = "auto"

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("model name must not be empty (e.g. 'ViT-B-16')")
        if not _DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.quick_gelu not in (None, True, False):
            raise ConfigError(f"quick_gelu must be None (auto), True or False, got {self.quick_gelu!r}")


@dataclass(frozen=True)
class SegmenterConfig:
    """How patch features become a segmentation.

    method: the last-block variant (see ``zeroseg_ros.core.dense``); ``vanilla`` leaves CLIP untouched.
    templates: prompt template set averaged per query (``imagenet80``, ``short`` or ``none``).
    background_words: extra classes whose pixels are reported as background (label 0); ``"@name"`` stands for
        every phrase of a vocabulary. The default ``@background`` (generic scene words: sky, wall, floor, ...)
        gives a lone query something to compete with; ``()`` scores the queries only against each other.
    probability_threshold: pixels whose winning probability is below it become background. The default 0.1 with
        the ``@background`` words is the published VOC21 protocol (SCLIP, NACLIP): a pixel that matches neither a
        query nor a background word spreads its probability and becomes background.
    logit_scale: temperature applied to cosine similarities before the softmax over classes.
    short_side: the image is resized so that its short side has this many pixels (0 keeps its size).
    slide_crop, slide_stride: sliding-window inference when ``slide_crop`` > 0, else one forward pass.
    pamr: pixel-adaptive mask refinement of the logits (10 steps, dilations 8 and 16).
    pamr_resolution: where PAMR runs. ``input``: on the logits and normalised pixels at the model input's size,
        before labels are upsampled to the frame (cheaper; the node's). ``frame``: as NACLIP v2's ``predict``,
        on the logits upsampled bilinearly to the frame's size, guided by the normalised model input upsampled
        bilinearly to it; the dilations are then frame pixels, and memory grows with phrases x frame pixels x
        16 neighbours. Nothing changes without ``pamr``.
    neighbourhood_std: standard deviation, in patches, of NACLIP's Gaussian attention bias.
    exact_labels: upsample every phrase's logits to the whole frame (cost and memory grow with phrases x
        pixels) instead of only each pixel's few candidates (``labels.candidate_labels``: the same labels on
        real photos, confidence within about 1e-4); the evaluation uses the exact path.
    max_queries: the most labels (queries) one frame may carry; the node's ``max_queries`` parameter sets it.
    max_pixels: the largest image accepted, in pixels (width x height).
    temporal_smoothing: in [0, 1), the weight of the past in an exponential moving average of the class
        probabilities at patch resolution over consecutive frames of one size and one query set (0: off).
    heatmap_query: a query's name whose probability per pixel the result also holds (empty: none).
    """

    method: str = "naclip"
    templates: str = "imagenet80"
    background_words: tuple[str, ...] = ("@background",)
    probability_threshold: float = 0.1
    logit_scale: float = 40.0
    short_side: int = 448
    slide_crop: int = 0
    slide_stride: int = 112
    pamr: bool = False
    pamr_resolution: str = "input"
    neighbourhood_std: float = 5.0
    exact_labels: bool = False
    max_queries: int = 256
    max_pixels: int = 8192 * 8192
    temporal_smoothing: float = 0.0
    heatmap_query: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.templates not in TEMPLATE_SETS:
            raise ConfigError(f"templates must be one of {TEMPLATE_SETS}, got {self.templates!r}")
        if not 0.0 <= self.probability_threshold <= 1.0:
            raise ConfigError(f"probability_threshold must be in [0, 1], got {self.probability_threshold}")
        if not 0.0 < self.logit_scale <= 1000.0:
            raise ConfigError(f"logit_scale must be in (0, 1000], got {self.logit_scale}")
        if self.short_side < 0 or (0 < self.short_side < 32):
            raise ConfigError(f"short_side must be 0 (keep size) or at least 32, got {self.short_side}")
        if self.slide_crop < 0 or (self.slide_crop > 0 and not 0 < self.slide_stride <= self.slide_crop):
            raise ConfigError(
                f"slide_crop must be >= 0 and 0 < slide_stride <= slide_crop, got crop {self.slide_crop}, "
                f"stride {self.slide_stride}"
            )
        if self.pamr_resolution not in PAMR_RESOLUTIONS:
            raise ConfigError(f"pamr_resolution must be one of {PAMR_RESOLUTIONS}, got {self.pamr_resolution!r}")
        if self.neighbourhood_std <= 0:
            raise ConfigError(f"neighbourhood_std must be positive, got {self.neighbourhood_std}")
        if self.max_queries < 1:
            raise ConfigError(f"max_queries must be at least 1, got {self.max_queries}")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")
        if not 0.0 <= self.temporal_smoothing < 1.0:
            raise ConfigError(f"temporal_smoothing must be in [0, 1), got {self.temporal_smoothing}")
        check_background_words(self.background_words)  # the queries' rules; an unknown @vocabulary too

    def replace(self, **changes: Any) -> SegmenterConfig:
        """A copy with some fields changed (validated like a new config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown segmenter settings: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)


def split_words(text: str) -> tuple[str, ...]:
    """'sky, wall,, floor ' -> ('sky', 'wall', 'floor')."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def parse_tristate(name: str, text: str) -> bool | None:
    """``auto`` -> None, ``true`` -> True, ``false`` -> False, for settings that are chosen when left on auto."""
    if text not in TRISTATE:
        raise ConfigError(f"{name} must be one of {', '.join(TRISTATE)}, got {text!r}")
    return None if text == "auto" else text == "true"


def parse_frame_sizes(text: str) -> list[tuple[int, int]]:
    """``"640x480, 1280x720"`` (width x height, as cameras state them) -> ``[(480, 640), (720, 1280)]`` as
    (height, width); empty text gives none."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            width, height = (int(number) for number in part.lower().split("x"))
        except ValueError as error:
            raise ConfigError(f"frame size must look like 640x480 (width x height), got {part!r}") from error
        if width <= 0 or height <= 0:
            raise ConfigError(f"frame size must be positive, got {part!r}")
        sizes.append((height, width))
    return sizes
