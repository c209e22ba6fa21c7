"""The inference thread's mailbox (ros/worker.py) with a stand-in segmenter: a settings change that fails is
reported and does not lose the queries sent with it; set_queries callers are told when their queries are in
use, refused or replaced."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from zeroseg_ros.core.errors import ConfigError, InvalidQueryError
from zeroseg_ros.ros.worker import Frame, InferenceWorker


class StandInSegmenter:
    """update_config raises for method 'naclip' (as with an exported maskclip encoder); set_queries refuses
    blank text."""

    records_graphs = False

    def __init__(self) -> None:
        self.labels: tuple[str, ...] = ()
        self.config: dict[str, Any] = {"method": "maskclip"}

    def update_config(self, **changes: Any) -> None:
        if changes.get("method") == "naclip":
            raise ConfigError("the image encoder engine computes method 'maskclip', not 'naclip'")
        self.config.update(changes)

    def set_queries(self, text: str, progress: Any = None) -> None:
        labels = tuple(word.strip() for word in text.split(",") if word.strip())
        if not labels:
            raise InvalidQueryError("no queries")
        self.labels = labels

    def warmup(self, sizes: Any, overlay_alpha: Any, batch_sizes: Any = (1,)) -> None:
        pass


class Handler:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def _record(self, event: str, value: Any) -> None:
        with self.changed:
            self.events.append((event, value))
            self.changed.notify_all()

    def wait_for(self, event: str, timeout: float = 10.0) -> Any:
        with self.changed:
            assert self.changed.wait_for(lambda: any(e == event for e, _ in self.events), timeout), self.events
            return next(value for e, value in self.events if e == event)

    def process_batch(self, frames: Sequence[Frame]) -> list[tuple[int, int] | None]:
        for frame in frames:
            self._record("frame", frame.msg)
        return [None] * len(frames)

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
        pass


def make_worker(segmenter: StandInSegmenter, handler: Handler) -> InferenceWorker:
    return InferenceWorker(
        segmenter,  # type: ignore[arg-type]
        handler,
        max_rate=lambda: 0.0,
        overlay_alpha=lambda: None,
        warmup_sizes=[],
        is_running=lambda: True,
    )


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
