"""Frames and text batches take turns at the CPU's cores (core/turns.py): never both at once, a frame leaves the
text its turn after it, and a due frame goes before the next batch; without an encoding frames never wait."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from zeroseg_ros.core.turns import CoreTurns

FRAME_S = 0.05
GENEROUS_S = 60.0


def _frame(turns: CoreTurns, log: list[tuple[str, float, float]]) -> None:
    with turns.frame():
        started = time.monotonic()
        time.sleep(FRAME_S)
        log.append(("frame", started, time.monotonic()))


def _batches(turns: CoreTurns, log: list[tuple[str, float, float]], count: int, batch_s: float) -> None:
    with turns.encoding():
        for _ in range(count):
            with turns.text_batch():
                started = time.monotonic()
                time.sleep(batch_s)
                log.append(("text", started, time.monotonic()))


def _frames_until(turns: CoreTurns, log: list[tuple[str, float, float]], done: threading.Event) -> None:
    while not done.is_set():
        _frame(turns, log)


def test_without_an_encoding_frames_follow_each_other_at_once() -> None:
    turns, log = CoreTurns(text_turn=100.0), []  # a turn would be 5 s
    started = time.monotonic()
    for _ in range(3):
        _frame(turns, log)
    assert time.monotonic() - started < 3 * FRAME_S + 4.0  # no turn was waited for
    assert all(before[2] <= after[1] for before, after in itertools.pairwise(log))


def test_frames_and_batches_alternate_and_each_frame_leaves_the_text_its_turn() -> None:
    turns, log = CoreTurns(text_turn=1.0), []
    _frame(turns, log)  # the frame time the turn is measured in
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        frames = pool.submit(_frames_until, turns, log, done)
        text = pool.submit(_batches, turns, log, 12, FRAME_S / 5)
        text.result(timeout=GENEROUS_S)
        done.set()
        frames.result(timeout=GENEROUS_S)
    ordered = sorted(log, key=lambda entry: entry[1])
    assert all(before[2] <= after[1] for before, after in itertools.pairwise(ordered))  # never both at once
    first_text = next(entry[1] for entry in ordered if entry[0] == "text")
    last_text = max(entry[2] for entry in ordered if entry[0] == "text")
    frame_times = [entry for entry in ordered if entry[0] == "frame"]
    during = [entry for entry in frame_times if first_text < entry[1] < last_text]
    assert during  # frames kept coming
    for before, after in itertools.pairwise(frame_times):
        if first_text <= before[2] and after[1] <= last_text:
            # The text's turn (one frame time) passed between two frames of the encoding.
            assert after[1] - before[2] >= (before[2] - before[1]) * 0.999


def test_a_due_frame_goes_before_the_next_batch() -> None:
    turns, log = CoreTurns(text_turn=0.0), []  # a frame is due at once
    _frame(turns, log)
    with turns.encoding():
        batch_started = threading.Event()
        release = threading.Event()

        def slow_batch() -> None:
            with turns.text_batch():
                batch_started.set()
                assert release.wait(GENEROUS_S)
                log.append(("text", 0.0, time.monotonic()))

        with ThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(slow_batch)
            assert batch_started.wait(GENEROUS_S)
            frame = pool.submit(_frame, turns, log)
            while turns._frames_waiting == 0:  # the frame waits for the batch in progress
                time.sleep(0.001)
            second = pool.submit(slow_batch)
            release.set()
            for future in (first, frame, second):
                future.result(timeout=GENEROUS_S)
    assert [kind for kind, *_ in log] == ["frame", "text", "frame", "text"]


def test_disabled_turns_never_wait() -> None:
    turns = CoreTurns(enabled=False)
    with turns.encoding(), turns.text_batch(), turns.frame():  # nested: would deadlock if it waited
        pass
