"""``zeroseg``: the command line of zeroseg_ros, and the one place that wires its subcommands.

``segment``, ``label``, ``run``, ``eval``, ``bench`` and ``export-onnx`` are modules of ``zeroseg_ros.tools`` with a
``register(subparsers)`` of their own; ``node`` and ``demo-camera`` hand their arguments to the ROS entry points
of ``zeroseg_ros.ros``. A subcommand whose optional dependency (rclpy, onnx, ...) is missing is still listed,
and says what is missing when it is called.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.console import configure_logging

# subcommand -> module whose register(subparsers) adds it
SUBCOMMAND_MODULES = {
    "segment": "zeroseg_ros.tools.segment",
    "label": "zeroseg_ros.tools.label.cli",
    "run": "zeroseg_ros.tools.run_demo",
    "eval": "zeroseg_ros.tools.evaluation.cli",
    "bench": "zeroseg_ros.tools.bench.cli",
    "export-onnx": "zeroseg_ros.tools.export_onnx",
}

# subcommand -> (module with main(argv), executable name, help, example of what follows the subcommand)
ROS_ENTRY_POINTS = {
    "node": (
        "zeroseg_ros.ros.node",
        "zeroseg_node",
        "run the ROS 2 segmentation node",
        "--ros-args -p queries:='person, cone' -r image:=/camera/image_raw",
    ),
    "demo-camera": (
        "zeroseg_ros.ros.demo_camera",
        "zeroseg_demo_camera",
        "publish generated camera frames on a ROS 2 image topic",
        "--ros-args -p rate:=5.0 -r image:=/camera/image_raw",
    ),
}


def _import_or_report(subparsers: argparse._SubParsersAction, name: str, module_name: str):
    """The subcommand's module, or None after registering ``name`` as unavailable (a dependency is missing)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise
        missing = str(error)
        parser = subparsers.add_parser(name, help=f"(unavailable: {missing})", add_help=False)
        parser.add_argument("rest", nargs=argparse.REMAINDER)

        def unavailable(_: argparse.Namespace) -> int:
            raise ZerosegError(f"'zeroseg {name}' needs a package that is not installed: {missing}")

        parser.set_defaults(func=unavailable)
        return None


def _register_ros_passthrough(subparsers: argparse._SubParsersAction, name: str) -> None:
    """A subcommand that hands everything after its name to a ROS entry point (``--ros-args -p ... -r ...``)."""
    module_name, executable, help_text, example = ROS_ENTRY_POINTS[name]
    module = _import_or_report(subparsers, name, module_name)
    if module is None:
        return
    parser = subparsers.add_parser(
        name, help=help_text, description=f"Everything after '{name}' goes to ROS, e.g. zeroseg {name} {example}"
    )
    parser.add_argument("ros_arguments", nargs=argparse.REMAINDER, help="--ros-args ... (parameters, remaps)")
    parser.set_defaults(func=lambda args: module.main([executable, *args.ros_arguments]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroseg", description="Zero-shot segmentation by text with CLIP.")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="every library's log lines (default: zeroseg's and warnings)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMAND_MODULES.items():
        module = _import_or_report(subparsers, name, module_name)
        if module is not None:
            module.register(subparsers)
    for name in ROS_ENTRY_POINTS:
        _register_ros_passthrough(subparsers, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ZerosegError as error:
        print(f"zeroseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
