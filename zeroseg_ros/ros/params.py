"""Every parameter of the zeroseg ROS node, declared once: name, default, description, range, run-time rule.

Plain Python (rclpy's message types only inside ``descriptor``), so the launch/config tests and the docs can
read it without ROS. ``descriptor`` turns each entry into the ParameterDescriptor the node declares;
``config/zeroseg.yaml`` lists the same names and defaults (a test keeps them in step).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zeroseg_ros.core.config import (
    METHODS,
    PRECISIONS,
    TEMPLATE_SETS,
    TRISTATE,
    ModelConfig,
    SegmenterConfig,
    parse_frame_sizes,
    parse_tristate,
)
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.queries import parse_background_words

if TYPE_CHECKING:
    from rcl_interfaces.msg import ParameterDescriptor

ParamValue = bool | int | float | str

_MODEL = ModelConfig()
_SEGMENTER = SegmenterConfig()

# A relative ROS name: tokens of letters, digits and underscores (not starting with a digit, no "__"), joined by
# single slashes; it becomes the namespace of a camera's topics.
_ROS_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_camera_names(text: str) -> tuple[str, ...]:
    """``"front, left, right"`` -> ``("front", "left", "right")``; ``""`` -> no cameras (the node's own topics).
    Raises ConfigError on a name that is empty, repeated or not a relative ROS name."""
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if not name:
            raise ConfigError(f"camera names must not be empty, got {text!r}; separate names by single commas")
        tokens = name.split("/")
        if not all(_ROS_NAME_TOKEN.fullmatch(token) and "__" not in token for token in tokens):
            raise ConfigError(
                f"camera name {name!r} is not a relative ROS name: use letters, digits and underscores (not first "
                "a digit, no double underscore), tokens joined by single slashes, e.g. front or car/front_left"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"camera names must differ, {', '.join(repeated)} is given more than once in {text!r}")
    return names


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    runtime: True when ``ros2 param set`` applies it to the running node; False when it is fixed at start-up
    (a change is refused with that reason). minimum/maximum: the range advertised to ROS tools and enforced.
    choices: the accepted strings (enforced by the node, listed in the descriptor's constraints).
    parse: for a string with a syntax of its own, the parser that raises ConfigError on a bad value.
    """

    name: str
    default: ParamValue
    description: str
    runtime: bool
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    parse: Callable[[str], object] | None = None


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- queries
    ParamSpec(
        "queries",
        "",
        'Comma-separated labels, "|" between synonyms, e.g. "person|pedestrian, traffic cone". The queries '
        "topic and the set_queries service set the same list; the last one received wins. The way to give "
        "queries before the node starts.",
        runtime=True,
    ),
    ParamSpec(
        "max_queries",
        _SEGMENTER.max_queries,
        "Most labels one query string may hold (past 255 the mask is mono16). More are refused.",
        runtime=True,
        minimum=1,
        maximum=4096,
    ),
    # --- life cycle
    ParamSpec(
        "autostart",
        True,
        "Configure and activate at start (ros2 run, the launch file). false: the node waits unconfigured for a "
        "lifecycle manager (configure loads the model, activate subscribes and publishes).",
        runtime=False,
    ),
    # --- model (fixed at start-up: changing it means loading another network)
    ParamSpec("model", _MODEL.name, "open_clip model name, e.g. ViT-B-16.", runtime=False),
    ParamSpec(
        "pretrained",
        _MODEL.pretrained,
        "open_clip pretrained tag, downloaded once into cache_dir (needs internet). Ignored when checkpoint is set.",
        runtime=False,
    ),
    ParamSpec("checkpoint", "", "Local checkpoint file (offline robots); wins over pretrained.", runtime=False),
    ParamSpec("cache_dir", "", "Where downloaded weights are kept (empty: open_clip's default).", runtime=False),
    ParamSpec(
        "text_cache",
        _MODEL.text_cache,
        "Where text embeddings are kept between runs, so a restart with the same queries needs no text encoding: "
        "auto ($XDG_CACHE_HOME/zeroseg_ros, else ~/.cache/zeroseg_ros), a directory, or empty for none. Keyed by "
        "model, weights and templates; random weights are never cached.",
        runtime=False,
    ),
    ParamSpec(
        "random_weights",
        False,
        "Random network weights: a smoke test whose masks mean nothing. Never on a robot.",
        runtime=False,
    ),
    ParamSpec(
        "image_encoder_engine",
        "",
        "Exported image encoder to run instead of PyTorch's: an .onnx file (ONNX Runtime) or a TensorRT "
        ".engine/.plan (Jetson). Built for one input size and method, which it then fixes (docs/jetson.md).",
        runtime=False,
    ),
    ParamSpec("device", _MODEL.device, "auto, cpu, cuda or cuda:N.", runtime=False),
    ParamSpec(
        "precision",
        _MODEL.precision,
        "auto: fp16 on CUDA; on a CPU with AVX512-BF16 or AMX, bf16 where one product timed at start-up is at "
        "least 20 % faster in it; fp32 otherwise. Or fp32, fp16 (CUDA only), bf16. The start-up log and "
        "/diagnostics say what was chosen and why.",
        runtime=False,
        choices=PRECISIONS,
    ),
    ParamSpec(
        "onednn",
        "auto",
        "CPU, fp32: run the encoders' linear layers as oneDNN inner products (the same results; twice as fast as "
        "PyTorch's own products on an AMD EPYC, slower on some Intel Xeons). auto: times one product both ways "
        "at start-up and uses oneDNN where it is at least 20 % faster. true, false: always, never.",
        runtime=False,
        choices=TRISTATE,
    ),
    ParamSpec(
        "quick_gelu",
        "auto",
        "The activation the weights were trained with (OpenAI's CLIP: QuickGELU). auto: from open_clip's table "
        "for a pretrained tag; from an OpenAI checkpoint's format (TorchScript archive, OpenAI state dict); "
        "otherwise the model name's (with a warning). true, false: QuickGELU, GELU.",
        runtime=False,
        choices=TRISTATE,
    ),
    # --- segmentation (applied from the next frame on)
    ParamSpec("method", _SEGMENTER.method, "Training-free last-block method.", runtime=True, choices=METHODS),
    ParamSpec("templates", _SEGMENTER.templates, "Prompt template set per query.", runtime=True, choices=TEMPLATE_SETS),
    ParamSpec(
        "background_words",
        ", ".join(_SEGMENTER.background_words),
        "Comma-separated extra classes reported as background (label 0), written like queries (| between "
        "synonyms); @name adds a vocabulary's words. The "
        "default @background (sky, wall, floor, ...) lets one query compete with the scene instead of winning "
        "every pixel. Empty: none (queries only compete with each other).",
        runtime=True,
        parse=lambda text: SegmenterConfig(background_words=parse_background_words(text)),
    ),
    ParamSpec(
        "probability_threshold",
        _SEGMENTER.probability_threshold,
        "Pixels whose winning probability is below this become background.",
        runtime=True,
        minimum=0.0,
        maximum=1.0,
    ),
    ParamSpec(
        "logit_scale",
        _SEGMENTER.logit_scale,
        "Softmax temperature applied to the cosine similarities.",
        runtime=True,
        minimum=1.0,
        maximum=1000.0,
    ),
    ParamSpec(
        "short_side",
        _SEGMENTER.short_side,
        "Input resized so its short side has this many pixels (0 keeps the camera size).",
        runtime=True,
        minimum=0,
        maximum=4096,
    ),
    ParamSpec(
        "slide_crop",
        _SEGMENTER.slide_crop,
        "Sliding-window crop size (0: one forward pass).",
        runtime=True,
        minimum=0,
        maximum=4096,
    ),
    ParamSpec("slide_stride", _SEGMENTER.slide_stride, "Sliding-window stride.", runtime=True, minimum=1, maximum=4096),
    ParamSpec("pamr", _SEGMENTER.pamr, "Pixel-adaptive mask refinement (slower, sharper edges).", runtime=True),
    ParamSpec(
        "temporal_smoothing",
        _SEGMENTER.temporal_smoothing,
        "Weight of the past in an exponential moving average of the class probabilities (at patch resolution) "
        "over consecutive frames of one size and one query set: steadier masks, slower to follow motion. "
        "0: off.",
        runtime=True,
        minimum=0.0,
        maximum=0.99,
    ),
    ParamSpec(
        "exact_labels",
        _SEGMENTER.exact_labels,
        "Score every label at every pixel (cost grows with labels x pixels) instead of each pixel's few "
        "candidates (the same labels on real photos, confidence within about 1e-3; docs/benchmarks.md).",
        runtime=True,
    ),
    ParamSpec(
        "max_pixels",
        4096 * 4096,
        "Largest input image accepted, in pixels (width x height); larger frames are refused.",
        runtime=True,
        minimum=1,
        maximum=8192 * 8192,
    ),
    # --- input
    ParamSpec(
        "reliable",
        False,
        "Subscribe to images with reliable QoS (bag replay) instead of the sensor-data best-effort profile.",
        runtime=False,
    ),
    ParamSpec("use_compressed", False, "Subscribe to image/compressed (jpeg/png) instead of image.", runtime=False),
    ParamSpec(
        "cameras",
        "",
        'Cameras one node segments with one model, comma separated, e.g. "front, left, right": camera C reads '
        "C/image (C/image/compressed, C/depth, C/camera_info) and publishes every per-frame output under C/ "
        "(C/mask, C/overlay, C/objects, ...); queries, labels and services stay the node's. Frames of all "
        "cameras go through the model as one batch (max_batch). Empty: one camera on the node's own topics.",
        runtime=False,
        parse=parse_camera_names,
    ),
    ParamSpec(
        "max_batch",
        8,
        "Most frames (one per camera) segmented together in one pass; cameras beyond it take turns.",
        runtime=True,
        minimum=1,
        maximum=64,
    ),
    ParamSpec(
        "max_rate",
        0.0,
        "Most frames segmented per second, per camera (0: as fast as the model goes). Frames in between are dropped.",
        runtime=True,
        minimum=0.0,
        maximum=1000.0,
    ),
    # --- output
    ParamSpec("publish_confidence", True, "Publish the confidence map (32FC1).", runtime=True),
    ParamSpec("publish_overlay", True, "Publish the colour overlay with a legend.", runtime=True),
    ParamSpec("publish_segmentation", True, "Publish the zeroseg_ros/Segmentation message.", runtime=True),
    ParamSpec(
        "publish_mask_color",
        True,
        "Publish mask_color: the label mask in the overlay's colours (rgb8), for RViz (which shows mono8 "
        "label values 1..N as almost black).",
        runtime=True,
    ),
    ParamSpec(
        "publish_mask_compressed",
        False,
        "Also publish mask/compressed: the label mask as a lossless PNG (a fraction of the bandwidth).",
        runtime=True,
    ),
    ParamSpec(
        "publish_overlay_compressed",
        False,
        "Also publish overlay/compressed: the overlay as a JPEG (quality 90), for remote viewing.",
        runtime=True,
    ),
    ParamSpec(
        "overlay_alpha", 0.5, "Opacity of the label colours in the overlay.", runtime=True, minimum=0.0, maximum=1.0
    ),
    ParamSpec("overlay_legend", True, "Draw the label legend on the overlay.", runtime=True),
    ParamSpec(
        "heatmap_query",
        _SEGMENTER.heatmap_query,
        "A label of the queries whose probability per pixel is published on heatmap (32FC1). Empty: none.",
        runtime=True,
    ),
    ParamSpec(
        "publish_objects",
        True,
        "Publish objects (each connected region of a label, with 3-D centroid and extents when depth is on), "
        "objects/markers and, where vision_msgs is installed, detections and detections_3d.",
        runtime=True,
    ),
    ParamSpec(
        "min_object_pixels",
        100,
        "Smallest connected region of one label, in colour pixels, reported as an object.",
        runtime=True,
        minimum=1,
        maximum=8192 * 8192,
    ),
    # --- depth (3-D outputs)
    ParamSpec(
        "use_depth",
        False,
        "Subscribe to depth (16UC1 millimetres or 32FC1 metres, registered to the colour camera, any resolution) "
        "and camera_info (the colour camera's); publish points and 3-D objects.",
        runtime=False,
    ),
    ParamSpec(
        "depth_tolerance",
        0.02,
        "Most seconds between a frame's stamp and its depth image's (the nearest is taken); a frame without one "
        "is segmented without 3-D output and counted as frames_without_depth.",
        runtime=True,
        minimum=0.0,
        maximum=1.0,
    ),
    ParamSpec(
        "points_stride",
        2,
        "Every n-th depth pixel in both directions becomes a point (and feeds the objects' 3-D statistics).",
        runtime=True,
        minimum=1,
        maximum=64,
    ),
    ParamSpec(
        "diagnostics_period", 1.0, "Seconds between /diagnostics messages.", runtime=False, minimum=0.1, maximum=60.0
    ),
    ParamSpec(
        "warmup_sizes",
        "640x480",
        "Frame sizes WxH, comma separated, run (on CUDA: recorded as graphs) as soon as the queries are set, and "
        "again after a change, so that no frame waits for it. Sizes seen later are added. Empty: none.",
        runtime=False,
        parse=parse_frame_sizes,
    ),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}

# Node parameters that are fields of SegmenterConfig (the rest are handled by the node itself). pamr_resolution
# is not one: PAMR at the frame's size is for NACLIP's evaluation protocol, and on camera frames it costs memory
# and time in phrases x frame pixels; the node runs PAMR at the model input's size.
SEGMENTER_FIELDS = (
    "method",
    "templates",
    "probability_threshold",
    "logit_scale",
    "short_side",
    "slide_crop",
    "slide_stride",
    "pamr",
    "exact_labels",
    "max_queries",
    "max_pixels",
    "temporal_smoothing",
    "heatmap_query",
)


_TYPE_NAMES = {bool: "boolean (true/false)", int: "integer", float: "number", str: "string"}


def check_value(spec: ParamSpec, value: object) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (None when it is). An integer is accepted for a double
    parameter (YAML's ``1`` for ``1.0``), as ROS users expect."""
    if type(value) is not type(spec.default) and not (isinstance(spec.default, float) and type(value) is int):
        shown = "nothing" if value is None else f"{value!r} ({_TYPE_NAMES.get(type(value), type(value).__name__)})"
        expected = _TYPE_NAMES[type(spec.default)]
        return f"{spec.name} must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}, got {shown}"
    if spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.minimum is not None and value < spec.minimum:  # type: ignore[operator]
        return f"{spec.name} must be at least {spec.minimum}, got {value}"
    if spec.maximum is not None and value > spec.maximum:  # type: ignore[operator]
        return f"{spec.name} must be at most {spec.maximum}, got {value}"
    if spec.parse is not None:
        try:
            spec.parse(str(value))
        except ConfigError as error:
            return f"{spec.name}: {error}"
    return None


def coerce(spec: ParamSpec, value: object) -> ParamValue:
    """``value`` checked for ``spec`` and in its type (an integer for a double becomes a float); raises
    ConfigError naming the parameter, the value and what is allowed."""
    reason = check_value(spec, value)
    if reason:
        raise ConfigError(reason)
    if isinstance(spec.default, float):
        return float(value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def model_config(values: dict[str, ParamValue]) -> ModelConfig:
    """The ModelConfig named by the node's parameter values."""
    return ModelConfig(
        name=str(values["model"]),
        pretrained=str(values["pretrained"]),
        checkpoint=str(values["checkpoint"]) or None,
        cache_dir=str(values["cache_dir"]) or None,
        random_init=bool(values["random_weights"]),
        device=str(values["device"]),
        precision=str(values["precision"]),
        quick_gelu=parse_tristate("quick_gelu", str(values["quick_gelu"])),
        text_cache=str(values["text_cache"]),
    )


def segmenter_config(values: dict[str, ParamValue], base: SegmenterConfig | None = None) -> SegmenterConfig:
    """``base`` with the segmentation parameters in ``values`` applied (raises ConfigError when invalid)."""
    changes: dict[str, object] = {name: values[name] for name in SEGMENTER_FIELDS if name in values}
    for name in ("logit_scale", "probability_threshold", "temporal_smoothing"):
        if name in changes:
            changes[name] = float(changes[name])  # type: ignore[arg-type]
    if "background_words" in values:
        changes["background_words"] = parse_background_words(str(values["background_words"]))
    return (base or SegmenterConfig()).replace(**changes)


def descriptor(name: str) -> ParameterDescriptor:
    """The ROS descriptor of parameter ``name``: description, constraints, range, read-only for start-up ones."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    spec = PARAMETERS_BY_NAME[name]
    constraints = []
    if spec.choices:
        constraints.append(f"one of: {', '.join(spec.choices)}")
    if not spec.runtime:
        constraints.append("fixed at start-up (restart the node to change it)")
    if isinstance(spec.default, float):
        constraints.append("an integer is accepted")
    # dynamic_typing: the node checks types itself (check_value), so that a YAML integer for a double is
    # accepted and a wrong type is refused with a clear reason instead of an exception in rclpy.
    result = ParameterDescriptor(
        name=name,
        description=spec.description,
        additional_constraints="; ".join(constraints),
        read_only=not spec.runtime,
        dynamic_typing=True,
    )
    if spec.minimum is not None and spec.maximum is not None:
        if isinstance(spec.default, float):
            result.floating_point_range = [
                FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)
            ]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            result.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return result
