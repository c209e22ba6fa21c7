"""Reports of an evaluation run: ``report.json``, ``report.md`` and ``per_class_iou.png``.

Beside our own numbers the report prints those published at the preset's reference commit for the same dataset
(``published.json``), then, apart and as context only, the other published numbers and the figures the
project's seed article claims, labelled as claims.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from zeroseg_ros.tools.evaluation.datasets import DATASETS
from zeroseg_ros.tools.evaluation.metrics import SegmentationMetrics
from zeroseg_ros.tools.evaluation.runner import EvaluationRun

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
PLOT_FILE = "per_class_iou.png"


@functools.cache
def published() -> dict[str, Any]:
    """The published numbers and claims bundled with the package (see docs/evaluation.md for sources)."""
    return json.loads(resources.files(__package__).joinpath("published.json").read_text(encoding="utf-8"))


def published_for(dataset: str, commit: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows ``{method, variant, repository, commit, source, status, miou}`` with a number for ``dataset``: those
    published at ``commit`` (a preset's reference), and all the others."""
    reference, others = [], []
    for entry in published()["results"]:
        if dataset in entry["miou"]:
            row = {**{k: v for k, v in entry.items() if k != "miou"}, "miou": entry["miou"][dataset]}
            (reference if commit is not None and entry["commit"] == commit else others).append(row)
    return reference, others


def claims_for(dataset: str) -> list[dict[str, Any]]:
    return [claim for claim in published()["claims"] if dataset in claim["datasets"]]


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else round(100.0 * value, 2)


def build_report(run: EvaluationRun) -> dict[str, Any]:
    """Everything the markdown shows, as plain JSON types (percentages, NaN as null)."""
    metrics: SegmentationMetrics = run.confusion.metrics()
    names = DATASETS[run.dataset].class_names()
    reference, others = published_for(run.dataset, run.protocol["reference"]["commit"])
    return {
        "dataset": run.dataset,
        "title": DATASETS[run.dataset].title,
        "samples_evaluated": len(run.processed),
        "samples_in_run": run.num_samples,
        "complete": len(run.processed) >= run.num_samples,
        "seconds": round(run.seconds, 2),
        "model": run.model,
        "protocol": run.protocol,
        "miou": _percent(metrics.miou),
        "aacc": _percent(metrics.aacc),
        "macc": _percent(metrics.macc),
        "per_class": [
            {
                "id": index,
                "name": name,
                "iou": _percent(float(metrics.iou[index])),
                "acc": _percent(float(metrics.acc[index])),
                "gt_pixels": int(metrics.gt_pixels[index]),
                "pred_pixels": int(metrics.pred_pixels[index]),
            }
            for index, name in enumerate(names)
        ],
        "published": reference,
        "other_published": others,
        "claims": claims_for(run.dataset),
    }


def render_markdown(report: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    model = report["model"]
    protocol = report["protocol"]
    settings = protocol["segmenter"]
    weights = (
        "RANDOM weights (smoke test: the scores mean nothing)"
        if model["random_init"]
        else (model["checkpoint"] or f"open_clip '{model['pretrained']}'")
    )
    lines = [
        f"# {report['title']}: {cell(report['miou'])} mIoU",
        "",
        f"- samples: {report['samples_evaluated']} of {report['samples_in_run']}"
        + ("" if report["complete"] else " (INCOMPLETE: resume the run to finish it)"),
        f"- model: {model['name']}, {weights}, {model['precision']}",
        f"- preset: {protocol['preset']} (method {settings['method']}), vocabulary {protocol['vocabulary']}, "
        f"templates {settings['templates']}",
        f"- {_protocol_line(protocol)}",
        f"- time: {report['seconds']:.1f} s",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mIoU | {cell(report['miou'])} |",
        f"| aAcc (pixel accuracy) | {cell(report['aacc'])} |",
        f"| mAcc (mean class accuracy) | {cell(report['macc'])} |",
        "",
        "## Compared with the reference commit (mIoU, ViT-B/16)",
        "",
        *_reference_notes(report),
        "",
        "| who | variant | mIoU | status | source |",
        "|---|---|---|---|---|",
        f"| **this run** | preset {protocol['preset']} | **{cell(report['miou'])}** | measured | - |",
    ]
    lines += [_published_row(row) for row in report["published"]]
    lines += [
        "",
        "## Other published numbers (other methods, commits or papers: context, not a target)",
        "",
        "| who | variant | mIoU | status | source |",
        "|---|---|---|---|---|",
    ]
    lines += [_published_row(row) for row in report["other_published"]]
    lines += [
        f"| seed article ({claim['what']}) | claim | {claim['miou']:.1f} | CLAIM, not a result | "
        f"{claim['source']}: {claim['note']} |"
        for claim in report["claims"]
    ]
    lines += [
        "",
        "## Per class",
        "",
        "| id | class | IoU | Acc | GT pixels | predicted pixels |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['id']} | {row['name']} | {cell(row['iou'])} | {cell(row['acc'])} | {row['gt_pixels']} | "
        f"{row['pred_pixels']} |"
        for row in report["per_class"]
    ]
    lines += [
        "",
        "n/a: the class is in neither the ground truth nor the predictions; it is left out of the means.",
        "",
    ]
    return "\n".join(lines)


def _reference_notes(report: dict[str, Any]) -> list[str]:
    """Which commit the preset follows, and why its number may not be a like-for-like target for this run."""
    protocol = report["protocol"]
    reference = protocol["reference"]
    notes = [
        f"- reference: {reference['repository']}@{reference['commit']} (the preset follows its configs; only "
        "numbers published at that commit are compared)",
        "- what the pipeline still does differently from the reference's code: docs/evaluation.md",
    ]
    if not report["published"]:
        notes.append("- the reference commit publishes no number for this dataset")
    if protocol["changed_from_preset"]:
        notes.append(
            f"- settings changed from the preset: {', '.join(protocol['changed_from_preset'])}; the reference "
            "number is not a like-for-like target"
        )
    if report["model"]["precision"] != protocol["precision"]:
        notes.append(f"- the model ran in {report['model']['precision']}, the reference in {protocol['precision']}")
    return notes


def _published_row(row: dict[str, Any]) -> str:
    where = f"{row['repository']}@{row['commit'][:7]}: {row['source']}" if row["commit"] else row["source"]
    return f"| {row['method']} | {row['variant']} | {row['miou']:.2f} | {row['status']} | {where} |"


def _protocol_line(protocol: dict[str, Any]) -> str:
    settings = protocol["segmenter"]
    if settings["slide_crop"]:
        window = f"window {settings['slide_crop']} / stride {settings['slide_stride']}"
    else:
        window = "whole image"
    parts = [
        f"short side {settings['short_side']}",
        window,
        f"logit scale {settings['logit_scale']:g}",
        f"probability threshold {settings['probability_threshold']:g}",
        _pamr_words(settings),
    ]
    if protocol["area_threshold"]:
        parts.append(f"area threshold {protocol['area_threshold']:g}")
    return ", ".join(parts)


def _pamr_words(settings: dict[str, Any]) -> str:
    if not settings["pamr"]:
        return "PAMR off"
    where = "the frame's" if settings["pamr_resolution"] == "frame" else "the model input's"
    return f"PAMR on at {where} resolution"


def plot_per_class(report: dict[str, Any], path: Path) -> None:
    """Horizontal bar per class (IoU %); classes without a score are listed with an empty bar."""
    rows = report["per_class"]
    figure = Figure(figsize=(8.0, 1.2 + 0.22 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = np.arange(len(rows))
    values = [row["iou"] if row["iou"] is not None else 0.0 for row in rows]
    colours = ["tab:blue" if row["iou"] is not None else "lightgrey" for row in rows]
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, [f"{row['name']}{'' if row['iou'] is not None else ' (n/a)'}" for row in rows])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    if report["miou"] is not None:
        axes.axvline(report["miou"], color="tab:red", linestyle="--", label=f"mIoU {report['miou']:.2f}")
        axes.legend(loc="lower right")
    axes.set_title(f"{report['dataset']}: per-class IoU ({report['samples_evaluated']} samples)")
    figure.savefig(path, dpi=100)


def write_report(run: EvaluationRun, out_dir: str | Path) -> dict[str, Any]:
    """Write the JSON, markdown and plot into ``out_dir``; return the report dictionary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(run)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out / REPORT_MARKDOWN).write_text(render_markdown(report))
    plot_per_class(report, out / PLOT_FILE)
    return report
