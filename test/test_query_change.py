"""Query and setting changes are encoded beside the running pipeline: frames keep being answered with the old
queries while a (gated, so deterministically slow) encoding runs, and each frame sees all old or all new
labels."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import InvalidQueryError
from zeroseg_ros.core.segmenter import CPU_TEXT_BATCH, SegmentationResult, Segmenter

CONFIG = SegmenterConfig(templates="none", short_side=64, background_words=())
GENEROUS_S = 120.0  # a deadlock guard on a busy machine, not a speed bound
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter(ModelConfig(name="ViT-S-16", random_init=True, device="cpu", text_cache=""), CONFIG)


class Gate:
    """Wraps ``TextEncoder.encode`` so that an encoding blocks until ``open()``: a slow encoding on demand."""

    def __init__(self, encode: Callable) -> None:
        self._encode = encode
        self.entered = threading.Event()
        self._open = threading.Event()

    def __call__(self, phrases, progress=None):
        self.entered.set()
        assert self._open.wait(GENEROUS_S), "the gate was never opened"
        return self._encode(phrases, progress)

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def gate(segmenter, monkeypatch) -> Iterator[Gate]:
    segmenter.update_config(**dataclasses.asdict(CONFIG))
    segmenter.set_queries("cat, dog")
    gate = Gate(segmenter.text_encoder.encode)
    monkeypatch.setattr(segmenter.text_encoder, "encode", gate)
    yield gate
    gate.open()


def _consistent(result: SegmentationResult) -> bool:
    count = len(result.labels)
    return len(result.scores) == len(result.areas) == count and int(result.label_map.max()) <= count


def test_frames_are_answered_with_the_old_queries_while_new_ones_are_encoded(segmenter, gate):
    with ThreadPoolExecutor(max_workers=2) as pool:
        change = pool.submit(segmenter.set_queries, "car, road, sky")
        assert gate.entered.wait(GENEROUS_S)
        for _ in range(3):
            frame = pool.submit(segmenter.segment, IMAGE)
            assert frame.result(timeout=GENEROUS_S).labels == ("cat", "dog")  # not blocked by the encoding
        assert not change.done()
        gate.open()
        change.result(timeout=GENEROUS_S)
    assert segmenter.segment(IMAGE).labels == ("car", "road", "sky")


def test_settings_that_need_new_text_do_not_stall_frames_either(segmenter, gate):
    with ThreadPoolExecutor(max_workers=2) as pool:
        change = pool.submit(segmenter.update_config, background_words=("wall", "floor"), probability_threshold=0.2)
        assert gate.entered.wait(GENEROUS_S)
        old = pool.submit(segmenter.segment, IMAGE).result(timeout=GENEROUS_S)
        assert segmenter.config.probability_threshold == CONFIG.probability_threshold  # nothing applied yet
        gate.open()
        change.result(timeout=GENEROUS_S)
    assert old.labels == ("cat", "dog")
    assert segmenter.config.background_words == ("wall", "floor")
    assert segmenter._state.embeddings.shape[0] == 4  # wall, floor, cat, dog: swapped in with the settings


def test_every_frame_sees_all_old_or_all_new_labels(segmenter, gate):
    old, new = ("cat", "dog"), tuple(f"class {index}" for index in range(40))
    results: list[SegmentationResult] = []
    stop = threading.Event()

    def frames() -> None:
        while not stop.is_set():
            results.append(segmenter.segment(IMAGE))

    loop = threading.Thread(target=frames)
    loop.start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            change = pool.submit(segmenter.set_queries, ", ".join(new))
            assert gate.entered.wait(GENEROUS_S)
            gate.open()
            change.result(timeout=GENEROUS_S)
        answered = len(results)
        while len(results) < answered + 2:  # frames after the swap
            assert loop.is_alive()
            stop.wait(0.01)
    finally:
        stop.set()
        loop.join(GENEROUS_S)
    assert {result.labels for result in results} <= {old, new}
    assert results[-1].labels == new
    assert all(_consistent(result) for result in results)


def test_a_rejected_change_keeps_the_old_queries_and_frames(segmenter, gate):
    gate.open()
    segmenter.update_config(max_queries=3)
    try:  # max_queries counts labels: 4 > 3
        with pytest.raises(InvalidQueryError, match="exceed max_queries"):
            segmenter.set_queries("a, b, c, d")
        assert segmenter.segment(IMAGE).labels == ("cat", "dog")
    finally:
        segmenter.update_config(max_queries=CONFIG.max_queries)


def test_on_the_cpu_frames_and_text_batches_take_turns_and_both_progress(segmenter, monkeypatch):
    from zeroseg_ros.core import text as text_module

    segmenter.update_config(**dataclasses.asdict(CONFIG))
    segmenter.set_queries("cat, dog")
    intervals: list[tuple[str, float, float]] = []

    def timed(kind: str, function: Callable) -> Callable:
        def run(*args, **kwargs):
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                intervals.append((kind, started, time.monotonic()))

        return run

    monkeypatch.setattr(text_module, "encode_text_trimmed", timed("text", text_module.encode_text_trimmed))
    monkeypatch.setattr(segmenter, "_segment", timed("frame", segmenter._segment))
    phrases = [f"thing number {n}" for n in range(4 * CPU_TEXT_BATCH)]  # templates "none": 4 batches
    stop = threading.Event()

    def frames() -> None:
        while not stop.is_set():
            segmenter.segment(IMAGE)

    with ThreadPoolExecutor(max_workers=1) as pool:
        loop = pool.submit(frames)
        segmenter.set_queries(phrases)
        stop.set()
        loop.result(timeout=GENEROUS_S)
    text = [i for i in intervals if i[0] == "text"]
    assert len(text) == 4
    ordered = sorted(intervals, key=lambda interval: interval[1])
    assert all(before[2] <= after[1] for before, after in itertools.pairwise(ordered))  # never both at once
    during = [i for i in intervals if i[0] == "frame" and text[0][1] < i[1] < text[-1][2]]
    assert during  # frames kept coming while the text was encoded
