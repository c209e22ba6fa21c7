"""The evaluation loop: the project's ``Segmenter`` over a dataset, into a confusion matrix, resumable.

The loop only maps the segmenter's labels to dataset class ids; everything else is the same pipeline the
robot runs. Label 0 of the segmenter is background: on a dataset with a background class it is class 0 and
label ``i`` is class ``i``; on a dataset without one, label ``i`` is class ``i - 1`` and label 0 (possible
only with a probability threshold) is no class at all (a miss).

Progress is checkpointed to ``<out>/state.json`` (processed ids and the confusion matrix) every few images
and at the end, so an interrupted run continues with ``resume=True`` and ends with the same matrix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.console import ProgressBar
from zeroseg_ros.tools.evaluation.datasets import SegmentationDataset
from zeroseg_ros.tools.evaluation.metrics import NO_PREDICTION, ConfusionMatrix
from zeroseg_ros.tools.evaluation.presets import Protocol

LOGGER = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1


def to_dataset_labels(label_map: np.ndarray, has_background: bool) -> np.ndarray:
    """Segmenter labels to dataset class ids (``NO_PREDICTION`` where a dataset without background gets 0)."""
    labels = label_map.astype(np.int32)
    return labels if has_background else np.where(labels == 0, NO_PREDICTION, labels - 1)


def apply_area_threshold(labels: np.ndarray, threshold: float) -> np.ndarray:
    """SCLIP's area threshold, on the label map: a foreground class covering no more than ``threshold`` of
    all foreground pixels becomes background (class 0). SCLIP instead re-ranks the remaining classes per
    pixel, which needs the probabilities; see docs/evaluation.md."""
    classes, areas = np.unique(labels[labels > 0], return_counts=True)
    small = classes[areas <= threshold * areas.sum()]
    return np.where(np.isin(labels, small), 0, labels) if small.size else labels


def thresholded_labels(
    label_map: np.ndarray, confidence: np.ndarray, probability_threshold: float, area_threshold: float
) -> np.ndarray:
    """SCLIP's order: areas measured on the unthresholded argmax, small classes dropped, then the probability
    threshold (on the winning probability, which dropping other classes leaves unchanged)."""
    labels = apply_area_threshold(label_map, area_threshold)
    return np.where(confidence < probability_threshold, 0, labels)


@dataclass
class EvaluationRun:
    """What a run produced (and what its state file holds)."""

    dataset: str
    num_samples: int  # size of the split (or of --limit)
    processed: list[str]
    confusion: ConfusionMatrix
    protocol: dict[str, Any]
    model: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "protocol": self.protocol,
            "model": self.model,
            "seconds": self.seconds,
            "processed": self.processed,
            "confusion": self.confusion.counts.tolist(),
        }


def model_summary(segmenter: Segmenter) -> dict[str, Any]:
    """What identifies the weights, so a resumed run cannot mix two models in one matrix."""
    config = segmenter.model_config
    return {
        "name": config.name,
        "pretrained": config.pretrained,
        "checkpoint": config.checkpoint,
        "random_init": config.random_init,
        "precision": config.precision,
    }


def load_state(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the saved evaluation state {path}: {error}") from None
    if state.get("version") != STATE_VERSION:
        raise ConfigError(f"{path} was written by another version of the evaluation; start a new --out")
    return state


def save_state(out_dir: Path, run: EvaluationRun) -> None:
    """Write the state atomically, so a kill mid-write leaves the previous checkpoint intact."""
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = out_dir / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(run.to_json()))
    os.replace(temporary, out_dir / STATE_FILE)


def evaluate(
    segmenter: Segmenter,
    dataset: SegmentationDataset,
    protocol: Protocol,
    out_dir: str | Path,
    *,
    resume: bool = False,
    limit: int | None = None,
    checkpoint_every: int = 25,
    progress: bool = True,
) -> EvaluationRun:
    """Evaluate ``segmenter`` under ``protocol`` on ``dataset`` (its first ``limit`` samples if given).

    The segmenter's settings and queries are replaced by the protocol's. With ``resume``, samples already in
    ``<out_dir>/state.json`` are skipped; without it an existing state is an error, never overwritten.
    """
    out = Path(out_dir)
    if protocol.dataset != dataset.spec.name:
        raise ConfigError(f"protocol is for {protocol.dataset!r}, dataset is {dataset.spec.name!r}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if checkpoint_every < 1:
        raise ConfigError(f"the checkpoint interval must be at least 1 sample, got {checkpoint_every}")
    ids = dataset.ids[:limit] if limit else list(dataset.ids)

    settings = protocol.segmenter
    if protocol.area_threshold:  # the loop applies the probability threshold after the area threshold
        settings = settings.replace(probability_threshold=0.0)
    segmenter.update_config(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})
    segmenter.set_queries(list(protocol.queries), ProgressBar("encoding class names", "prompt") if progress else None)
    if len(segmenter.labels) != len(protocol.queries):
        raise ConfigError(f"segmenter took {len(segmenter.labels)} labels for {len(protocol.queries)} classes")

    run = EvaluationRun(
        dataset=dataset.spec.name,
        num_samples=len(ids),
        processed=[],
        confusion=ConfusionMatrix(dataset.spec.num_classes),
        protocol=protocol.summary(),
        model=model_summary(segmenter),
        seconds=0.0,
    )
    _restore(run, out, resume)
    done = set(run.processed)
    todo = [i for i in ids if i not in done]

    has_background = dataset.spec.has_background
    started = time.perf_counter()
    elapsed_before = run.seconds
    bar = tqdm(
        total=len(ids),
        initial=len(ids) - len(todo),
        desc=f"eval {dataset.spec.name}",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for count, sample_id in enumerate(todo, start=1):
            image, ground_truth = dataset.load(sample_id)
            result = segmenter.segment(image)
            label_map = result.label_map
            if protocol.area_threshold:
                label_map = thresholded_labels(
                    label_map, result.confidence, protocol.segmenter.probability_threshold, protocol.area_threshold
                )
            run.confusion.update(ground_truth, to_dataset_labels(label_map, has_background))
            run.processed.append(sample_id)
            run.seconds = elapsed_before + time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(mIoU=f"{100 * run.confusion.metrics().miou:.2f}")
            if count % checkpoint_every == 0:
                save_state(out, run)
    finally:
        bar.close()
        save_state(out, run)
    return run


def check_out_dir(out_dir: str | Path, resume: bool) -> dict[str, Any] | None:
    """The saved state of ``out_dir`` if any; an error when there is one and ``resume`` is not set."""
    out = Path(out_dir)
    state = load_state(out)
    if state is not None and not resume:
        raise ConfigError(
            f"{out / STATE_FILE} holds a previous run ({len(state.get('processed', []))} samples); pass "
            "--resume to continue it, or choose another --out"
        )
    return state


def _restore(run: EvaluationRun, out: Path, resume: bool) -> None:
    state = check_out_dir(out, resume)
    if state is None:
        if resume:
            LOGGER.info("no saved state in %s: starting from the first sample", out)
        return
    mismatched = [
        key for key in ("dataset", "protocol", "model") if state[key] != json.loads(json.dumps(getattr(run, key)))
    ]
    if mismatched:
        raise ConfigError(
            f"cannot resume {out}: its {' and '.join(mismatched)} differ from this run's "
            f"(saved: {json.dumps({k: state[k] for k in mismatched})}); start a new --out"
        )
    run.processed = list(state["processed"])
    run.confusion = ConfusionMatrix(run.confusion.num_classes, np.asarray(state["confusion"], dtype=np.int64))
    run.seconds = float(state.get("seconds", 0.0))
    LOGGER.info("resuming %s: %d samples already evaluated", out, len(run.processed))
