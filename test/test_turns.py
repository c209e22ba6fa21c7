"""Frames and text batches take turns at the CPU's cores (core/turns.py), by the rule it states: the text's turn
after a frame is gap_target x the median of the last quiet frame times (no encoding in progress) less the slowest
of the last frame times; a handed batch starts while it is
predicted (prompts x the median time per prompt) to end within the turn, the turn's first always; batches are
sized to the time left of the turn but at most 1 / BATCHES_PER_TURN of a turn, or for the next turn when
fewer than MIN_BATCH prompts fit; never both at
once; the batches run on the frame's thread while it waits (else on the text's own); without an encoding
frames never wait. Times come from a fake clock that only the test's frames and batches advance."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from zeroseg_ros.core.turns import BATCHES_PER_TURN, GAP_TARGET, HANDOVER_S, KEPT, MIN_BATCH, CoreTurns

GENEROUS_S = 60.0
FRAME_S = 0.25
PROMPT_S = 1 / 256  # binary fractions: the rule's sums and quotients are exact
Log = list[tuple[str, float, float, str]]  # (kind, start, end, thread name) on the fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cores:
    """Work that advances the fake clock, logs itself, and fails if two pieces ever run at once."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.log: Log = []
        self._busy = threading.Lock()

    def work(self, kind: str, seconds: float) -> str:
        assert self._busy.acquire(blocking=False), f"{kind} ran beside other work"
        try:
            started = self.clock.now
            self.clock.now += seconds
            self.log.append((kind, started, self.clock.now, threading.current_thread().name))
        finally:
            self._busy.release()
        return kind

    def batch(self, prompts: int, prompt_s: float = PROMPT_S) -> Callable[[], str]:
        return lambda: self.work("text", prompts * prompt_s)


def _measured(
    frame_times: tuple[float, ...] = (FRAME_S,) * KEPT, prompt_s: float | None = PROMPT_S, gap_target: float = 2.0
) -> tuple[CoreTurns, Cores]:
    """Turns that have measured ``frame_times`` and (unless None) batches at ``prompt_s`` per prompt."""
    clock = FakeClock()
    turns, cores = CoreTurns(gap_target=gap_target, clock=clock), Cores(clock)
    for seconds in frame_times:
        with turns.frame():
            cores.work("frame", seconds)
    if prompt_s is not None:
        clock.now += 2 * HANDOVER_S  # no frame comes: the text's own thread runs its batches
        with turns.encoding():
            for _ in range(KEPT):
                turns.text_batch(cores.batch(32, prompt_s), 32)
    cores.log.clear()
    return turns, cores


def test_without_an_encoding_frames_never_wait() -> None:
    turns, cores = _measured()
    with ThreadPoolExecutor(max_workers=1) as pool:  # a wait would never end: the fake clock stands still

        def frames() -> None:
            for _ in range(3):
                with turns.frame():
                    cores.work("frame", FRAME_S)

        pool.submit(frames).result(timeout=GENEROUS_S)
    assert [entry[1] for entry in cores.log] == [cores.log[0][1] + n * FRAME_S for n in range(3)]


def test_batches_hold_most_prompts_before_frames_and_the_fewest_before_a_batch_is_measured() -> None:
    assert CoreTurns(clock=FakeClock()).text_batch_prompts(256) == 256
    turns, _ = _measured(prompt_s=None)
    assert turns.text_batch_prompts(256) == MIN_BATCH
    assert turns.text_batch_prompts(3) == 3
    assert CoreTurns(enabled=False).text_batch_prompts(256) == 256


def test_a_batch_handed_during_a_frame_fills_a_share_of_a_turn() -> None:
    turns, _ = _measured()  # turn (2 - 1) x 0.25 s = 64 prompts
    with turns.frame():
        assert turns.text_batch_prompts(256) == int(64 / BATCHES_PER_TURN)
        assert turns.text_batch_prompts(12) == 12


def test_a_batch_handed_within_a_turn_fills_what_is_left_of_it_or_else_the_next_turn() -> None:
    turns, cores = _measured()
    with turns.frame():
        pass  # ends at the fake clock's now
    assert turns.text_batch_prompts(256) == int(64 / BATCHES_PER_TURN)  # at most a share of the turn
    cores.clock.now += 48 * PROMPT_S
    assert turns.text_batch_prompts(256) == 64 - 48
    cores.clock.now += (64 - 48 - MIN_BATCH) * PROMPT_S
    assert turns.text_batch_prompts(256) == MIN_BATCH
    cores.clock.now += PROMPT_S  # fewer than MIN_BATCH fit: the batch waits for the next turn
    assert turns.text_batch_prompts(256) == int(64 / BATCHES_PER_TURN)


def test_the_turn_keeps_the_gap_at_the_target_in_quiet_frame_times_planning_for_the_slowest_frame() -> None:
    # Quiet frames (no encoding) of FRAME_S: with frames that fast the turn is (GAP_TARGET - 1) x FRAME_S.
    turns, _ = _measured(frame_times=(1.0,) * KEPT + (FRAME_S,) * KEPT, gap_target=GAP_TARGET)
    with turns.frame():
        turn_prompts = int((GAP_TARGET - 1) * FRAME_S / PROMPT_S)
        assert turns.text_batch_prompts(1000) == int(turn_prompts / BATCHES_PER_TURN)
    # Frames beside an encoding run slower; the turn shrinks by the slowest of the last ones, so that a frame and
    # a turn stay within GAP_TARGET quiet frame times.
    clock = turns._clock

    def frame(seconds: float) -> None:
        clock.now += GENEROUS_S  # each frame comes after the text's turn (nothing is handed: it would wait)
        with turns.frame():
            clock.now += seconds

    with turns.encoding():
        for seconds in (FRAME_S, 1.25 * FRAME_S, FRAME_S, FRAME_S, FRAME_S):
            frame(seconds)
        clock.now += GENEROUS_S
        with turns.frame():
            turn_prompts = int((GAP_TARGET * FRAME_S - 1.25 * FRAME_S) / PROMPT_S)
            assert turns.text_batch_prompts(1000) == int(turn_prompts / BATCHES_PER_TURN)
        # Frames slower than the whole target leave no turn: a turn's batch still holds MIN_BATCH prompts.
        for _ in range(KEPT):
            frame(GAP_TARGET * FRAME_S)
        clock.now += GENEROUS_S
        with turns.frame():
            assert turns.text_batch_prompts(1000) == MIN_BATCH
    turns, _ = _measured(prompt_s=2 * PROMPT_S)  # a turn: 32 prompts
    with turns.frame():
        assert turns.text_batch_prompts(256) == int(32 / BATCHES_PER_TURN)
    turns, _ = _measured(prompt_s=FRAME_S / MIN_BATCH * 2)  # a turn fits fewer than MIN_BATCH: MIN_BATCH
    with turns.frame():
        assert turns.text_batch_prompts(256) == MIN_BATCH


Batch = tuple[Callable[[], str], int]  # (compute, prompts)


def _encoding_beside_frames(turns: CoreTurns, cores: Cores, batches: list[Batch]) -> list[str]:
    """Encode ``batches`` while a frame loop runs (from its first frame on); returns the batches' results."""
    done = threading.Event()

    def frames() -> None:
        threading.current_thread().name = "frames"
        while not done.is_set():
            with turns.frame():
                cores.work("frame", FRAME_S)

    def encode() -> list[str]:
        with turns.encoding():
            return [turns.text_batch(compute, prompts) for compute, prompts in batches]

    with ThreadPoolExecutor(max_workers=2) as pool:
        loop = pool.submit(frames)
        try:
            while not cores.log:  # from then on a frame's thread is always there to run the batches
                threading.Event().wait(0.001)
            return pool.submit(encode).result(timeout=GENEROUS_S)
        finally:
            done.set()
            loop.result(timeout=GENEROUS_S)


def _turns_between_frames(log: Log) -> list[list[float]]:
    """The text batches' times between each two frames, leaving out the turns in which the encoding began
    and ended (they may hold fewer batches)."""
    ordered = sorted(log, key=lambda entry: entry[1])
    assert all(before[2] <= after[1] for before, after in itertools.pairwise(ordered))
    kinds = "".join("f" if kind == "frame" else "t" for kind, *_ in ordered)
    first, last = kinds.index("t"), kinds.rindex("t")
    turns: list[list[float]] = []
    for kind, started, ended, _ in ordered[kinds.rindex("f", 0, first) : kinds.index("f", last)]:
        if kind == "frame":
            turns.append([])
        else:
            turns[-1].append(ended - started)
    return turns[1:-1]


def test_beside_frames_batches_run_on_the_frame_thread_while_they_are_predicted_to_end_within_the_turn() -> None:
    turns, cores = _measured()  # the turn: 0.25 s; a batch of 32 prompts: 0.125 s
    results = _encoding_beside_frames(turns, cores, [(cores.batch(32), 32)] * 12)
    assert results == ["text"] * 12
    middle = _turns_between_frames(cores.log)
    assert len(middle) >= 3
    assert middle == [[0.125, 0.125]] * len(middle)  # a third would end after the turn
    assert all(thread == "frames" for kind, *_, thread in cores.log if kind == "text")


def test_a_turns_first_batch_runs_even_when_it_is_longer_than_the_turn() -> None:
    prompt_s = 2 * FRAME_S / 32  # a batch of 32 prompts: two turns
    turns, cores = _measured(prompt_s=prompt_s)
    _encoding_beside_frames(turns, cores, [(cores.batch(32, prompt_s), 32)] * 6)
    middle = _turns_between_frames(cores.log)
    assert len(middle) >= 3
    assert middle == [[2 * FRAME_S]] * len(middle)


def test_a_frame_goes_before_a_batch_that_would_end_after_the_turn() -> None:
    turns, cores = _measured()
    with turns.frame():
        cores.work("frame", FRAME_S)
    cores.clock.now += 2 * HANDOVER_S  # no frame comes: the first batch runs on the text's own thread
    release, batch_started = threading.Event(), threading.Event()

    def slow() -> str:
        batch_started.set()
        assert release.wait(GENEROUS_S)
        return cores.work("text", 32 * PROMPT_S)

    def frame() -> None:
        with turns.frame():
            cores.work("frame", FRAME_S)

    with turns.encoding(), ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(turns.text_batch, slow, 32)
        assert batch_started.wait(GENEROUS_S)
        waiting = pool.submit(frame)
        while turns._frames_waiting == 0:  # the frame waits for the batch in progress
            threading.Event().wait(0.001)
        second = pool.submit(turns.text_batch, cores.batch(64), 64)
        while turns._handed is None:
            threading.Event().wait(0.001)
        release.set()  # then 0.025 s are left of the turn: the second batch (0.25 s) waits for the frame
        first.result(timeout=GENEROUS_S)
        waiting.result(timeout=GENEROUS_S)
        cores.clock.now += 2 * HANDOVER_S  # no frame comes: the text's own thread runs the second batch
        second.result(timeout=GENEROUS_S)
    assert [kind for kind, *_ in cores.log] == ["frame", "text", "frame", "text"]


def test_without_frames_a_batch_runs_on_the_text_thread() -> None:
    turns, cores = _measured(prompt_s=None)
    cores.clock.now += 2 * HANDOVER_S
    with turns.encoding():
        assert turns.text_batch(cores.batch(8), 8) == "text"
    assert cores.log[0][3] == threading.current_thread().name


def _failing() -> str:
    raise ValueError("broken batch")


def test_a_batchs_error_reaches_the_caller_on_either_thread_and_frees_the_cores() -> None:
    turns, cores = _measured()
    with pytest.raises(ValueError, match="broken batch"):
        _encoding_beside_frames(turns, cores, [(_failing, 8)])
    cores.clock.now += 2 * HANDOVER_S
    with turns.encoding(), pytest.raises(ValueError, match="broken batch"):
        turns.text_batch(_failing, 8)  # no frames: on this thread
    assert not turns._running


def test_disabled_turns_never_wait() -> None:
    turns = CoreTurns(enabled=False)
    with turns.encoding(), turns.frame():  # nested: would deadlock if it waited
        assert turns.text_batch(lambda: 42, 1) == 42


def test_a_gap_target_of_one_frame_time_or_less_is_refused() -> None:
    with pytest.raises(ValueError, match="gap_target"):
        CoreTurns(gap_target=1.0)
