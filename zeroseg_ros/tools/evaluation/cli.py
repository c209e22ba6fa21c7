"""``zeroseg eval``: score a method on a benchmark with the published protocol.

    zeroseg eval --dataset voc21 --root ~/data/VOCdevkit/VOC2012 --preset naclip --out runs/naclip-voc21

The preset (default: the method's own; the default method's when neither is given) sets the protocol; any
setting given on the command line wins over it. The run writes report.md, report.json, per_class_iou.png and state.json
(the checkpoint ``--resume`` continues from) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.model import resolve_device
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.vocab import VOCABULARIES
from zeroseg_ros.tools.cli_args import (
    add_model_arguments,
    add_segmenter_arguments,
    model_config_from_args,
    segmenter_config_from_args,
)
from zeroseg_ros.tools.console import ProgressBar
from zeroseg_ros.tools.evaluation.datasets import DATASETS, open_dataset
from zeroseg_ros.tools.evaluation.presets import PRESETS, Protocol, resolve_protocol
from zeroseg_ros.tools.evaluation.report import write_report
from zeroseg_ros.tools.evaluation.runner import check_out_dir, evaluate

LOGGER = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command to the ``zeroseg`` parser."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on a segmentation benchmark (mIoU) with the published protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=tuple(DATASETS))
    parser.add_argument("--root", required=True, help="dataset folder in its standard layout (docs/evaluation.md)")
    parser.add_argument("--out", required=True, help="folder for the report and the resumable state")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples of the split")
    parser.add_argument("--save-every", type=int, default=25, help="checkpoint every N samples (default 25)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    protocol = parser.add_argument_group("protocol (the preset's values unless given)")
    protocol.add_argument("--preset", choices=tuple(PRESETS), help="protocol preset (default: the method's)")
    protocol.add_argument("--area-threshold", type=float, help="SCLIP's area threshold (0 turns it off)")
    protocol.add_argument("--vocabulary", choices=tuple(VOCABULARIES), help="class-name file to prompt with")
    add_segmenter_arguments(parser)
    add_model_arguments(parser)
    # None: the preset's precision on CUDA (the references ran fp16), fp32 on the CPU
    parser.set_defaults(precision=None)
    parser.set_defaults(func=run)


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The preset's protocol for ``--dataset`` with every option given on the command line applied."""
    if args.preset:
        preset = args.preset
    elif args.method is None:
        preset = SegmenterConfig().method  # the project's default method
    elif args.method in PRESETS:
        preset = args.method
    else:
        preset = "sclip"  # a method without a protocol of its own (vanilla) gets the common one
    protocol = resolve_protocol(
        preset, args.dataset, {"area_threshold": args.area_threshold, "vocabulary": args.vocabulary}
    )
    return dataclasses.replace(protocol, segmenter=segmenter_config_from_args(args, base=protocol.segmenter))


def model_config_from_eval_args(args: argparse.Namespace, protocol: Protocol) -> ModelConfig:
    """``zeroseg_ros.tools.cli.model_config_from_args`` with the preset's precision where the device runs it."""
    precision = args.precision
    if precision is None:
        on_cuda = resolve_device(args.device).type == "cuda"
        precision = protocol.precision if on_cuda else "fp32"
        if precision != protocol.precision:
            LOGGER.warning("preset %s ran in %s; using fp32 on the CPU", protocol.preset, protocol.precision)
    return model_config_from_args(argparse.Namespace(**{**vars(args), "precision": precision}))


def run(args: argparse.Namespace) -> int:
    protocol = protocol_from_args(args)
    dataset = open_dataset(args.dataset, args.root)
    check_out_dir(args.out, args.resume)  # before the model loads: a refusal should be quick
    model_config = model_config_from_eval_args(args, protocol)
    if model_config.random_init:
        torch.manual_seed(0)  # the same random model in a run and in its resumption
    segmenter = Segmenter(model_config, protocol.segmenter, progress=None if args.no_progress else ProgressBar)
    result = evaluate(
        segmenter,
        dataset,
        protocol,
        args.out,
        resume=args.resume,
        limit=args.limit,
        checkpoint_every=args.save_every,
        progress=not args.no_progress,
    )
    report = write_report(result, args.out)
    miou = "n/a" if report["miou"] is None else f"{report['miou']:.2f}"
    print(
        f"{args.dataset}: mIoU {miou} over {report['samples_evaluated']} of {report['samples_in_run']} "
        f"samples (preset {protocol.preset}); report in {args.out}/report.md"
    )
    return 0
