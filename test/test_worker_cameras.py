"""The worker's mailboxes with several cameras (ros/worker.py), without ROS: one mailbox per camera, the waiting
frames of all cameras taken as one batch up to max_batch, and every camera served in turn when the model is
slower than the cameras, whatever their names and rates."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from zeroseg_ros.ros.worker import Frame, InferenceWorker

TIMEOUT_S = 10.0


class StandInSegmenter:
    records_graphs = False
    labels = ("sky",)

    def __init__(self) -> None:
        self.warmups: list[tuple[list[tuple[int, int]], list[int]]] = []
        self.warmed_up = threading.Event()

    def update_config(self, **changes: Any) -> None:
        pass

    def warmup(self, sizes: list[tuple[int, int]], overlay_alpha: Any, batch_sizes: Sequence[int] = (1,)) -> None:
        self.warmups.append((list(sizes), list(batch_sizes)))
        self.warmed_up.set()


class GatedHandler:
    """Records each pass's cameras, then holds the worker in the pass until the test releases it."""

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.changed = threading.Condition()
        self.gate = threading.Semaphore(0)

    def process_batch(self, frames: Sequence[Frame]) -> list[tuple[int, int] | None]:
        with self.changed:
            self.passes.append([frame.camera for frame in frames])
            self.changed.notify_all()
        assert self.gate.acquire(timeout=TIMEOUT_S)
        return [frame.msg for frame in frames]  # the stand-in frames are their (height, width)

    def wait_for_passes(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.passes) >= count, TIMEOUT_S), self.passes

    def segmenter_changes(self, parameters: dict[str, Any]) -> dict[str, object]:
        return dict(parameters)

    def frame_failed(self, reason: str, unexpected: bool) -> None:
        raise AssertionError(reason)

    def warmed_up(self, sizes: list[tuple[int, int]], seconds: float) -> None:
        pass


def make_worker(handler: GatedHandler, max_batch: int, segmenter: StandInSegmenter | None = None) -> InferenceWorker:
    return InferenceWorker(
        segmenter or StandInSegmenter(),  # type: ignore[arg-type]
        handler,  # type: ignore[arg-type]
        max_rate=lambda: 0.0,
        overlay_alpha=lambda: None,
        warmup_sizes=[],
        is_running=lambda: True,
        max_batch=lambda: max_batch,
    )


def test_each_camera_has_its_own_one_slot_mailbox() -> None:
    worker = make_worker(GatedHandler(), max_batch=8)
    assert not worker.put_frame(Frame((48, 64), 0.0, "front"))
    assert not worker.put_frame(Frame((48, 64), 0.1, "left"))  # another camera's frame replaces nothing
    assert worker.put_frame(Frame((48, 64), 0.2, "front"))  # the newer front frame replaces the older
    assert sorted(worker.drop_frames()) == ["front", "left"]
    assert worker.drop_frames() == []


def test_the_waiting_frames_of_every_camera_go_as_one_batch() -> None:
    handler = GatedHandler()
    worker = make_worker(handler, max_batch=8)
    for camera in ("front", "left", "right"):
        worker.put_frame(Frame((48, 64), 0.0, camera))
    worker.start()
    try:
        handler.wait_for_passes(1)
        assert sorted(handler.passes[0]) == ["front", "left", "right"]
    finally:
        handler.gate.release()
        worker.stop()


def test_under_overload_every_camera_gets_its_turn_whatever_its_name_or_rate() -> None:
    """Five cameras, two frames a pass: the model is slower than the cameras, so every mailbox is full before
    each pass. "a" sends three frames per pass (the fastest, first by name), the others one, in an order that
    changes; over five passes each camera must be served exactly twice."""
    cameras = ["a", "b", "c", "d", "e"]
    handler = GatedHandler()
    worker = make_worker(handler, max_batch=2)
    clock = 0.0

    def fill(order: list[str]) -> None:
        nonlocal clock
        for camera in order:
            for _ in range(3 if camera == "a" else 1):
                clock += 1.0
                worker.put_frame(Frame((48, 64), clock, camera))

    fill(cameras)
    worker.start()
    try:
        for done in range(1, 6):
            handler.wait_for_passes(done)
            fill(cameras[done % 5 :] + cameras[: done % 5])
            handler.gate.release()
        handler.wait_for_passes(6)
    finally:
        handler.gate.release()
        worker.stop()
    served = [camera for batch in handler.passes[:5] for camera in batch]
    assert all(len(batch) == 2 for batch in handler.passes[:5])
    assert {camera: served.count(camera) for camera in cameras} == dict.fromkeys(cameras, 2)


def test_max_batch_applies_from_the_next_pass_and_warm_up_covers_the_batch_sizes_seen() -> None:
    handler, segmenter = GatedHandler(), StandInSegmenter()
    limit = [3]
    worker = InferenceWorker(
        segmenter,  # type: ignore[arg-type]
        handler,  # type: ignore[arg-type]
        max_rate=lambda: 0.0,
        overlay_alpha=lambda: None,
        warmup_sizes=[],
        is_running=lambda: True,
        max_batch=lambda: limit[0],
    )
    for camera in ("front", "left", "right", "rear"):
        worker.put_frame(Frame((48, 64), 0.0, camera))
    worker.start()
    try:
        handler.wait_for_passes(1)
        limit[0] = 1
        handler.gate.release()
        handler.wait_for_passes(2)
        assert [len(batch) for batch in handler.passes] == [3, 1]
        handler.gate.release()
        worker.put_config({"probability_threshold": 0.5})  # a change warms up what frames have used
        assert segmenter.warmed_up.wait(TIMEOUT_S)
        assert segmenter.warmups[0] == ([(48, 64)], [1, 3])
    finally:
        handler.gate.release()
        worker.stop()
