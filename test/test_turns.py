"""Frames and text batches take turns at the CPU's cores (core/turns.py): never both at once, a frame leaves the
text its turn after it, a due frame goes before the next batch, the batches run on the frame's thread while it
waits (else on the text's own); without an encoding frames never wait."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from zeroseg_ros.core.turns import HANDOVER_S, CoreTurns

FRAME_S = 0.05
GENEROUS_S = 60.0
Log = list[tuple[str, float, float, str]]  # (kind, start, end, thread name)


def _work(kind: str, seconds: float, log: Log) -> str:
    started = time.monotonic()
    time.sleep(seconds)
    log.append((kind, started, time.monotonic(), threading.current_thread().name))
    return kind


def _frame(turns: CoreTurns, log: Log) -> None:
    with turns.frame():
        _work("frame", FRAME_S, log)


def _encoding(turns: CoreTurns, log: Log, batches: int, batch_s: float) -> list[str]:
    with turns.encoding():
        return [turns.text_batch(lambda: _work("text", batch_s, log)) for _ in range(batches)]


def _frames_until(turns: CoreTurns, log: Log, done: threading.Event) -> None:
    threading.current_thread().name = "frames"
    while not done.is_set():
        _frame(turns, log)


def _never_both(log: Log) -> bool:
    ordered = sorted(log, key=lambda entry: entry[1])
    return all(before[2] <= after[1] for before, after in itertools.pairwise(ordered))


def test_without_an_encoding_frames_follow_each_other_at_once() -> None:
    turns, log = CoreTurns(text_turn=100.0), []  # a turn would be 5 s
    started = time.monotonic()
    for _ in range(3):
        _frame(turns, log)
    assert time.monotonic() - started < 3 * FRAME_S + 4.0  # no turn was waited for


def test_frames_and_batches_alternate_on_the_frame_thread_and_each_frame_leaves_the_text_its_turn() -> None:
    turns, log = CoreTurns(text_turn=1.0), []
    _frame(turns, log)  # the frame time the turn is measured in
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        frames = pool.submit(_frames_until, turns, log, done)
        while not turns._frames_waiting and not turns._running:
            time.sleep(0.001)
        results = pool.submit(_encoding, turns, log, 12, FRAME_S / 5).result(timeout=GENEROUS_S)
        done.set()
        frames.result(timeout=GENEROUS_S)
    assert results == ["text"] * 12
    assert _never_both(log)
    text = [entry for entry in log if entry[0] == "text"]
    frame_log = sorted((entry for entry in log if entry[0] == "frame"), key=lambda entry: entry[1])
    first_text, last_text = min(e[1] for e in text), max(e[2] for e in text)
    assert any(first_text < entry[1] < last_text for entry in frame_log)  # frames kept coming
    assert sum(entry[3] == "frames" for entry in text) >= len(text) // 2  # mostly on the frame's thread
    for before, after in itertools.pairwise(frame_log):
        if first_text <= before[2] and after[1] <= last_text:
            # The text's turn (one frame time) passed between two frames of the encoding.
            assert after[1] - before[2] >= (before[2] - before[1]) * 0.999


def test_a_due_frame_goes_before_the_next_batch() -> None:
    turns, log = CoreTurns(text_turn=0.0), []  # a frame is due at once
    _frame(turns, log)
    release = threading.Event()
    batch_started = threading.Event()

    def slow() -> str:
        batch_started.set()
        assert release.wait(GENEROUS_S)
        return _work("text", 0.0, log)

    with turns.encoding(), ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(turns.text_batch, slow)  # runs on its own thread: no frame is waiting
        assert batch_started.wait(GENEROUS_S)
        frame = pool.submit(_frame, turns, log)
        while turns._frames_waiting == 0:  # the frame waits for the batch in progress
            time.sleep(0.001)
        second = pool.submit(turns.text_batch, lambda: _work("text", 0.0, log))
        time.sleep(2 * HANDOVER_S)
        release.set()
        for future in (first, frame, second):
            future.result(timeout=GENEROUS_S)
    assert [kind for kind, *_ in log] == ["frame", "text", "frame", "text"]


def test_without_frames_a_batch_runs_on_the_text_thread_and_its_error_reaches_the_caller() -> None:
    turns, log = CoreTurns(), []
    with turns.encoding():
        assert turns.text_batch(lambda: _work("text", 0.0, log)) == "text"
    assert log[0][3] == threading.current_thread().name

    def failing() -> None:
        raise ValueError("broken batch")

    done = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        _frame(turns, log)
        frames = pool.submit(_frames_until, turns, log, done)
        with turns.encoding(), pytest.raises(ValueError, match="broken batch"):
            turns.text_batch(failing)  # on whichever thread: the caller hears of it
        done.set()
        frames.result(timeout=GENEROUS_S)


def test_disabled_turns_never_wait() -> None:
    turns = CoreTurns(enabled=False)
    with turns.encoding(), turns.frame():  # nested: would deadlock if it waited
        assert turns.text_batch(lambda: 42) == 42
