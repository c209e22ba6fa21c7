"""The inference thread's mailbox (ros/worker.py) with a stand-in segmenter, without ROS: the newest frame
replaces a waiting one, ``max_rate`` holds frames back, settings apply before the next frame, the pipeline is
warmed up after a change for the frame sizes seen; a settings change that fails is reported and does not lose
the queries sent with it; set_queries callers are told when their queries are in use, refused or replaced.

Each test waits for the event it needs; what must not happen is checked after the worker had time to do it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from zeroseg_ros.core.errors import ConfigError, InvalidQueryError
from zeroseg_ros.ros.worker import Frame, InferenceWorker

GENEROUS_S = 30.0  # for an event that must come, on a loaded machine
SETTLE_S = 0.3  # time given to the worker to do what it must not do


class StandInSegmenter:
    """update_config raises for method 'naclip' (as with an exported maskclip encoder) and waits for ``gate``;
    set_queries refuses blank text; warmup records its sizes."""

    def __init__(self, records_graphs: bool = False) -> None:
        self.records_graphs = records_graphs
        self.labels: tuple[str, ...] = ()
        self.config: dict[str, Any] = {"method": "maskclip"}
        self.gate = threading.Event()
        self.gate.set()
        self.warmups: list[list[tuple[int, int]]] = []

    def update_config(self, **changes: Any) -> None:
        assert self.gate.wait(GENEROUS_S)
        if changes.get("method") == "naclip":
            raise ConfigError("the image encoder engine computes method 'maskclip', not 'naclip'")
        self.config.update(changes)

    def set_queries(self, text: str, progress: Any = None) -> None:
        labels = tuple(word.strip() for word in text.split(",") if word.strip())
        if not labels:
            raise InvalidQueryError("no queries")
        self.labels = labels

    def warmup(self, sizes: Any, overlay_alpha: Any, batch_sizes: Any = (1,)) -> None:
        self.warmups.append(list(sizes))


class Handler:
    """Records what the worker tells it; ``process_batch`` returns the size given for each frame in ``sizes`` and
    records the segmenter's settings they ran with."""

    def __init__(self, segmenter: StandInSegmenter | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = threading.Condition()
        self.segmenter = segmenter
        self.sizes: dict[str, tuple[int, int]] = {}
        self.settings_of_frames: dict[str, dict[str, Any]] = {}

    def _record(self, event: str, value: Any) -> None:
        with self.changed:
            self.events.append((event, value))
            self.changed.notify_all()

    def wait_for(self, event: str, timeout: float = 10.0) -> Any:
        with self.changed:
            assert self.changed.wait_for(lambda: any(e == event for e, _ in self.events), timeout), self.events
            return next(value for e, value in self.events if e == event)

    def frames(self) -> list[Any]:
        with self.changed:
            return [value for event, value in self.events if event == "frame"]

    def count(self, event: str) -> int:
        with self.changed:
            return sum(1 for e, _ in self.events if e == event)

    def wait_for_count(self, event: str, count: int, timeout: float = GENEROUS_S) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: sum(1 for e, _ in self.events if e == event) >= count, timeout), (
                self.events
            )

    def process_batch(self, frames: Sequence[Frame]) -> list[tuple[int, int] | None]:
        for frame in frames:
            if self.segmenter is not None:
                self.settings_of_frames[frame.msg] = dict(self.segmenter.config)
            self._record("frame", frame.msg)
        return [self.sizes.get(frame.msg) for frame in frames]

    def segmenter_changes(self, parameters: dict[str, Any]) -> dict[str, object]:
        return dict(parameters)

    def config_failed(self, parameters: dict[str, Any], reason: str) -> None:
        self._record("config_failed", (parameters, reason))

    def queries_applied(self, labels: tuple[str, ...], seconds: float) -> None:
        self._record("queries_applied", labels)

    def queries_rejected(self, reason: str) -> None:
        self._record("queries_rejected", reason)

    def frame_failed(self, reason: str, unexpected: bool) -> None:
        self._record("frame_failed", reason)

    def warmed_up(self, sizes: list[tuple[int, int]], seconds: float) -> None:
        self._record("warmed_up", sizes)


def make_worker(
    segmenter: StandInSegmenter,
    handler: Handler,
    max_rate: Callable[[], float] = lambda: 0.0,
    warmup_sizes: list[tuple[int, int]] | None = None,
) -> InferenceWorker:
    return InferenceWorker(
        segmenter,  # type: ignore[arg-type]
        handler,
        max_rate=max_rate,
        overlay_alpha=lambda: None,
        warmup_sizes=warmup_sizes or [],
        is_running=lambda: True,
    )


def test_a_frame_that_arrives_while_another_waits_replaces_it() -> None:
    segmenter, handler = StandInSegmenter(), Handler()
    worker = make_worker(segmenter, handler)
    assert worker.put_frame(Frame("old", 0.0)) is False
    assert worker.put_frame(Frame("new", 0.0)) is True  # the caller counts the old one as dropped
    worker.start()
    try:
        handler.wait_for("frame")
        time.sleep(SETTLE_S)
        assert handler.frames() == ["new"]
    finally:
        worker.stop()


def test_max_rate_holds_the_newest_frame_back_newer_ones_replace_it_and_drop_frames_forgets_it() -> None:
    segmenter, handler = StandInSegmenter(), Handler()
    rate = [0.01]  # one frame per 100 s: the second frame waits
    worker = make_worker(segmenter, handler, max_rate=lambda: rate[0])
    worker.start()
    try:
        worker.put_frame(Frame("first", 0.0))
        handler.wait_for("frame")
        assert worker.put_frame(Frame("second", 0.0)) is False
        assert worker.put_frame(Frame("third", 0.0)) is True  # replaces the one held back
        time.sleep(SETTLE_S)
        assert handler.frames() == ["first"]
        assert worker.drop_frames() == [""]  # the node stopped taking frames: the held frame is forgotten
        rate[0] = 0.0  # no limit: applies from the next frame
        assert worker.put_frame(Frame("fourth", 0.0)) is False
        handler.wait_for_count("frame", 2)
        time.sleep(SETTLE_S)
        assert handler.frames() == ["first", "fourth"]
    finally:
        worker.stop()


def test_a_frame_waits_for_a_settings_change_being_applied() -> None:
    segmenter = StandInSegmenter()
    handler = Handler(segmenter)
    worker = make_worker(segmenter, handler)
    worker.start()
    try:
        segmenter.gate.clear()  # update_config blocks until the gate opens
        worker.put_config({"probability_threshold": 0.5})
        worker.put_frame(Frame("after the change", 0.0))
        time.sleep(SETTLE_S)
        assert handler.frames() == []  # the frame waits while the change is applied
        segmenter.gate.set()
        handler.wait_for("frame")
        assert handler.settings_of_frames["after the change"]["probability_threshold"] == 0.5
    finally:
        segmenter.gate.set()
        worker.stop()


@pytest.mark.parametrize("records_graphs", [False, True])
def test_the_pipeline_is_warmed_up_after_a_change_for_the_sizes_seen(records_graphs: bool) -> None:
    segmenter = StandInSegmenter(records_graphs=records_graphs)
    handler = Handler(segmenter)
    handler.sizes["frame"] = (48, 64)
    worker = make_worker(segmenter, handler, warmup_sizes=[(480, 640)])
    worker.put_queries("cat, dog")
    worker.start()
    try:
        # The first queries: the configured sizes are warmed up before any frame.
        assert handler.wait_for("warmed_up") == [(480, 640)]
        worker.put_frame(Frame("frame", 0.0))
        handler.wait_for("frame")
        worker.put_queries("tree")
        if records_graphs:  # every change drops the recorded graphs: all sizes seen are recorded again
            handler.wait_for_count("warmed_up", 2)
            assert segmenter.warmups == [[(480, 640)], [(48, 64), (480, 640)]]
        else:  # model caches fill once
            handler.wait_for_count("queries_applied", 2)
        worker.put_frame(Frame("next", 0.0))
        handler.wait_for_count("frame", 2)
        time.sleep(SETTLE_S)
        assert segmenter.warmups == ([[(480, 640)], [(48, 64), (480, 640)]] if records_graphs else [[(480, 640)]])
    finally:
        worker.stop()


def test_a_failed_settings_change_is_reported_and_the_queries_sent_with_it_are_applied() -> None:
    segmenter, handler = StandInSegmenter(), Handler()
    worker = make_worker(segmenter, handler)
    answers: list[tuple[Any, str]] = []
    answered = threading.Event()
    # Both wait in the mailbox before the thread starts: they are taken together.
    worker.put_config({"method": "naclip"})
    worker.put_queries("sky, tree", lambda labels, why: (answers.append((labels, why)), answered.set()))
    worker.start()
    try:
        parameters, reason = handler.wait_for("config_failed")
        assert parameters == {"method": "naclip"} and "maskclip" in reason
        assert handler.wait_for("queries_applied") == ("sky", "tree")
        assert answered.wait(10.0) and answers == [(("sky", "tree"), "")]
        assert segmenter.config == {"method": "maskclip"}
        # The worker goes on: a later change applies, frames are processed.
        worker.put_config({"probability_threshold": 0.5})
        worker.put_frame(Frame("frame 1", 0.0))
        assert handler.wait_for("frame") == "frame 1"
        assert segmenter.config == {"method": "maskclip", "probability_threshold": 0.5}
    finally:
        worker.stop()


def test_set_queries_callers_hear_of_refusal_replacement_and_stop() -> None:
    segmenter, handler = StandInSegmenter(), Handler()
    worker = make_worker(segmenter, handler)
    answers: dict[str, tuple[Any, str]] = {}

    def done(name: str):
        return lambda labels, why: answers.__setitem__(name, (labels, why))

    worker.put_queries("first", done("first"))
    worker.put_queries("second", done("second"))  # replaces the first before the thread ran
    assert answers["first"] == (None, "replaced by newer queries before they were applied")
    worker.start()
    try:
        handler.wait_for("queries_applied")
        assert answers["second"] == (("second",), "")
        refused = threading.Event()
        worker.put_queries(" , ", lambda labels, why: (answers.__setitem__("blank", (labels, why)), refused.set()))
        assert refused.wait(10.0)
        assert answers["blank"] == (None, "no queries") and segmenter.labels == ("second",)
    finally:
        worker.stop()
    stopped = make_worker(StandInSegmenter(), Handler())
    stopped.put_queries("never", done("never"))
    stopped.stop()
    assert answers["never"][0] is None and "stopped" in answers["never"][1]
