"""Command-line options shared by the subcommands that build a ``Segmenter`` (segment, bench, eval,
export-onnx): defined once here, turned into ``ModelConfig`` / ``SegmenterConfig`` here."""

from __future__ import annotations

import argparse

from zeroseg_ros.core.config import (
    METHODS,
    PAMR_RESOLUTIONS,
    PRECISIONS,
    TEMPLATE_SETS,
    TRISTATE,
    ModelConfig,
    SegmenterConfig,
    parse_tristate,
)
from zeroseg_ros.core.queries import parse_background_words


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the CLIP model: the fields of ``ModelConfig``."""
    defaults = ModelConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=defaults.name, help="open_clip model name (default %(default)s)")
    group.add_argument("--pretrained", default=defaults.pretrained, help="open_clip pretrained tag (%(default)s)")
    group.add_argument("--checkpoint", default=None, help="local checkpoint file, for machines without internet")
    group.add_argument("--cache-dir", default=None, help="where downloaded weights are kept")
    group.add_argument(
        "--random-weights", action="store_true", help="random weights: a smoke test whose masks mean nothing"
    )
    group.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (%(default)s)")
    group.add_argument(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="auto: fp16 on CUDA, bf16 on CPUs where it is measurably faster, fp32 otherwise (%(default)s)",
    )
    group.add_argument(
        "--quick-gelu",
        default="auto",
        choices=TRISTATE,
        help="the activation the weights were trained with; auto: from the pretrained tag or an OpenAI "
        "checkpoint's format, else the model name's (%(default)s)",
    )


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that change how the segmentation is computed: the fields of ``SegmenterConfig``.

    Every default is ``None`` so that a caller can tell an explicit option from a preset's value.
    """
    group = parser.add_argument_group("segmentation")
    group.add_argument("--method", choices=METHODS, default=None, help="last-block method (default naclip)")
    group.add_argument("--templates", choices=TEMPLATE_SETS, default=None, help="prompt templates (imagenet80)")
    group.add_argument(
        "--background", default=None, help="comma-separated background words (label 0); default @background, '' none"
    )
    group.add_argument(
        "--threshold", type=float, default=None, help="probability below which a pixel is background (default 0.1)"
    )
    group.add_argument("--logit-scale", type=float, default=None, help="softmax temperature (default 40)")
    group.add_argument("--short-side", type=int, default=None, help="resize short side to this (0 keeps; 448)")
    group.add_argument("--slide-crop", type=int, default=None, help="sliding-window crop (0: one pass)")
    group.add_argument("--slide-stride", type=int, default=None, help="sliding-window stride")
    group.add_argument("--pamr", action=argparse.BooleanOptionalAction, default=None, help="PAMR refinement")
    group.add_argument(
        "--pamr-resolution",
        choices=PAMR_RESOLUTIONS,
        default=None,
        help="where PAMR runs: the model input's size (input, the default) or the frame's (frame, as NACLIP v2)",
    )
    group.add_argument(
        "--exact-labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score every label at every pixel, not each pixel's candidates (the evaluation's default)",
    )


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        name=args.model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        cache_dir=args.cache_dir,
        random_init=args.random_weights,
        device=args.device,
        precision=args.precision,
        quick_gelu=parse_tristate("--quick-gelu", args.quick_gelu),
    )


def segmenter_config_from_args(args: argparse.Namespace, base: SegmenterConfig | None = None) -> SegmenterConfig:
    """``base`` (defaults or a preset) with every option given on the command line applied over it."""
    changes: dict[str, object] = {
        "method": args.method,
        "templates": args.templates,
        "probability_threshold": args.threshold,
        "logit_scale": args.logit_scale,
        "short_side": args.short_side,
        "slide_crop": args.slide_crop,
        "slide_stride": args.slide_stride,
        "pamr": args.pamr,
        "pamr_resolution": args.pamr_resolution,
        "exact_labels": args.exact_labels,
    }
    if args.background is not None:
        changes["background_words"] = parse_background_words(args.background)
    return (base or SegmenterConfig()).replace(**{k: v for k, v in changes.items() if v is not None})
