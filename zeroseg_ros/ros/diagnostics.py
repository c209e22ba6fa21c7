"""What the node reports on ``/diagnostics``: counters, rates and the latency window, shared by the executor
thread (frames in) and the inference thread (frames out), and the status built from them once a period.

The status tells the truth over time (``HealthMonitor``): WARN, then ERROR, when the camera stopped (no frame
for ``STALE_WARN_PERIODS`` / ``STALE_ERROR_PERIODS`` diagnostics periods after frames arrived), when frames
arrive but nothing was published for as long, and when most frames of the last ``WINDOW_PERIODS`` periods were
rejected."""

from __future__ import annotations

import platform
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

if TYPE_CHECKING:
    from zeroseg_ros.core.segmenter import Segmenter

LATENCY_WINDOW = 200
STALE_WARN_PERIODS = 3  # diagnostics periods without a frame (or without output) before WARN
STALE_ERROR_PERIODS = 10  # ... before ERROR
WINDOW_PERIODS = 10  # periods over which the rejection ratio is measured
REJECTION_WARN_RATIO = 0.5  # share of the frames received in the window that were rejected
REJECTION_ERROR_RATIO = 0.9


class PrimaryState(str, Enum):
    """The lifecycle node's primary states (ROS 2 managed nodes), as the node and its diagnostics name them."""

    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    FINALIZED = "finalized"


class RateCounter:
    """Events per second over the time since the last ``rate()`` call."""

    def __init__(self) -> None:
        self._count = 0
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._count += 1

    def rate(self) -> float:
        with self._lock:
            now = time.monotonic()
            rate = self._count / max(now - self._since, 1e-6)
            self._count, self._since = 0, now
            return rate


@dataclass(frozen=True)
class FrameCounts:
    """One consistent reading of the counters."""

    received: int
    published: int
    dropped: int
    lost_in_transport: int
    newly_lost: int  # lost since the previous reading
    rejected: int
    last_rejection: str


class FrameStatistics:
    """Frames received, dropped (replaced in the mailbox), lost in the middleware, rejected and published; the
    input and output rates; the latency from reception to publication of the last ``LATENCY_WINDOW`` frames.
    A camera's statistics count into the node's too (``parent``)."""

    def __init__(self, parent: FrameStatistics | None = None) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._received = 0
        self._dropped = 0
        self._lost_in_transport = 0
        self._lost_reported = 0
        self._rejected = 0
        self._published = 0
        self._last_rejection = ""
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.input_rate = RateCounter()
        self.output_rate = RateCounter()

    def frame_received(self, replaced_waiting_frame: bool) -> None:
        if self._parent is not None:
            self._parent.frame_received(replaced_waiting_frame)
        self.input_rate.tick()
        with self._lock:
            self._received += 1
            self._dropped += int(replaced_waiting_frame)

    def frames_lost(self, count: int) -> int:
        """Adds the middleware's count of frames that never reached the node; returns the total."""
        if self._parent is not None:
            self._parent.frames_lost(count)
        with self._lock:
            self._lost_in_transport += count
            return self._lost_in_transport

    def frame_rejected(self, reason: str) -> None:
        if self._parent is not None:
            self._parent.frame_rejected(reason)
        with self._lock:
            self._rejected += 1
            self._last_rejection = reason

    def request_rejected(self, reason: str) -> None:
        """A refused query change: reported as the last rejection, not counted as a frame."""
        with self._lock:
            self._last_rejection = reason

    def frame_published(self, latency_ms: float) -> None:
        if self._parent is not None:
            self._parent.frame_published(latency_ms)
        with self._lock:
            self._published += 1
            self._latencies_ms.append(latency_ms)
        self.output_rate.tick()

    def counts(self) -> FrameCounts:
        with self._lock:
            newly_lost = self._lost_in_transport - self._lost_reported
            self._lost_reported = self._lost_in_transport
            return FrameCounts(
                received=self._received,
                published=self._published,
                dropped=self._dropped,
                lost_in_transport=self._lost_in_transport,
                newly_lost=newly_lost,
                rejected=self._rejected,
                last_rejection=self._last_rejection,
            )

    def latency_percentiles(self) -> tuple[float, float]:
        with self._lock:
            latencies = list(self._latencies_ms)
        if not latencies:
            return float("nan"), float("nan")
        p50, p95 = np.percentile(latencies, [50, 95])
        return float(p50), float(p95)

    def rate_values(self) -> dict[str, str]:
        """Input and output rates since the previous call, and the latency percentiles, as diagnostics values."""
        p50, p95 = self.latency_percentiles()
        return {
            "input_rate_hz": f"{self.input_rate.rate():.2f}",
            "output_rate_hz": f"{self.output_rate.rate():.2f}",
            "latency_p50_ms": f"{p50:.1f}",
            "latency_p95_ms": f"{p95:.1f}",
        }


class HealthMonitor:
    """The counts read once per diagnostics period, kept for ``WINDOW_PERIODS`` periods: how many periods in a
    row had no frame, or frames but no output, and the rejection ratio over the window. ``reset`` when the
    camera subscription is (re)created, so a pause asked for (deactivate, enable false) is not held against
    the input."""

    def __init__(self) -> None:
        self._history: deque[FrameCounts] = deque(maxlen=WINDOW_PERIODS + 1)
        self._had_input = False  # input is stale only once it has flowed (before: "no images received yet")
        self.periods_without_input = 0
        self.periods_without_output = 0

    def reset(self) -> None:
        self._history.clear()
        self._had_input = False
        self.periods_without_input = self.periods_without_output = 0

    def observe(self, counts: FrameCounts, expecting_output: bool) -> None:
        """One period's reading. ``expecting_output``: queries are set and no warm-up runs, so frames that
        arrive should come out."""
        previous = self._history[-1] if self._history else None
        self._history.append(counts)
        if previous is None:
            return
        received = counts.received - previous.received
        published = counts.published - previous.published
        self._had_input = self._had_input or received > 0
        self.periods_without_input = 0 if received or not self._had_input else self.periods_without_input + 1
        if published or not received or not expecting_output:
            self.periods_without_output = 0
        else:
            self.periods_without_output += 1

    def rejection_ratio(self) -> tuple[float, int]:
        """Rejected / received over the window, and the frames received in it."""
        if len(self._history) < 2:
            return 0.0, 0
        first, last = self._history[0], self._history[-1]
        received = last.received - first.received
        return ((last.rejected - first.rejected) / received if received else 0.0), received

    def problems(self, period_s: float) -> list[tuple[bytes, str]]:
        """(level, message) of every current problem, worst first."""
        found: list[tuple[bytes, str]] = []

        def escalate(periods: int, what: str) -> None:
            if periods >= STALE_ERROR_PERIODS:
                found.append((DiagnosticStatus.ERROR, f"{what} for {periods * period_s:.0f} s"))
            elif periods >= STALE_WARN_PERIODS:
                found.append((DiagnosticStatus.WARN, f"{what} for {periods * period_s:.0f} s"))

        escalate(self.periods_without_input, "no camera frame")
        escalate(self.periods_without_output, "frames arrive but no output")
        ratio, received = self.rejection_ratio()
        if received:
            message = f"{ratio:.0%} of {received} frames rejected"
            if ratio >= REJECTION_ERROR_RATIO:
                found.append((DiagnosticStatus.ERROR, message))
            elif ratio >= REJECTION_WARN_RATIO:
                found.append((DiagnosticStatus.WARN, message))
        found.sort(key=lambda problem: -problem[0][0])
        return found


def hardware_id(device: str) -> str:
    """What the node runs on, for ``DiagnosticStatus.hardware_id``: the CUDA device's name or the CPU model."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} (cpu)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} (cpu)"


def segmenter_values(segmenter: Segmenter | None, pending_queries: str | None) -> dict[str, str]:
    """What the node segments with, as diagnostics values: model, weights, method, device, backend and the
    choices behind it, the queries in use and those being encoded."""
    if segmenter is None:
        return {"queries": ""}
    config = segmenter.config
    return {
        "model": segmenter.model_config.name,
        "weights": segmenter.weights,
        "method": config.method,
        "device": str(segmenter.device),
        "backend": segmenter.backend,
        "activation": segmenter.activation,
        "choices": segmenter.choices,
        "queries": ", ".join(segmenter.labels),
        "pending_queries": pending_queries or "",
        "background_words": ", ".join(config.background_words),
    }


def segmentation_status(
    name: str,
    hardware_id: str,
    counts: FrameCounts,
    has_queries: bool,
    warming_up: bool,
    values: dict[str, str],
    pending_queries: str | None = None,
    health: HealthMonitor | None = None,
    period_s: float = 1.0,
    state: PrimaryState = PrimaryState.ACTIVE,
    enabled: bool = True,
) -> DiagnosticStatus:
    """The node's status: level and message from the lifecycle state, the enable switch, the queries, the counts
    and their history (``health``, observed once per period), then ``values`` and the counts as key-values.

    A node without queries says so first: whatever else is wrong (no camera yet, a stale one) follows in the
    message, and the level is the worst of them."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    active = state == PrimaryState.ACTIVE
    problems = health.problems(period_s) if health is not None and active and enabled else []
    if problems and counts.newly_lost:  # named with the others: the loss may be why no frame arrives
        problems.append((DiagnosticStatus.WARN, f"{counts.newly_lost} frames lost in transport"))
    if not active:
        status.level, status.message = DiagnosticStatus.OK, f"{PrimaryState(state).value}: not segmenting (lifecycle)"
    elif not enabled:
        status.level, status.message = DiagnosticStatus.OK, "disabled: camera unsubscribed (enable service)"
    elif problems or not has_queries:
        if not has_queries:
            pending = " (encoding the requested ones)" if pending_queries else ""
            problems.insert(0, (DiagnosticStatus.WARN, f"waiting for queries{pending}"))
        status.level = max(level for level, _ in problems)
        status.message = "; ".join(message for _, message in problems)
    elif counts.newly_lost:
        status.level, status.message = DiagnosticStatus.WARN, f"{counts.newly_lost} frames lost in transport"
    elif warming_up:
        status.level, status.message = DiagnosticStatus.OK, "warming up"
    elif pending_queries:
        status.level, status.message = DiagnosticStatus.OK, "segmenting; new queries pending (encoding their text)"
    elif counts.received == 0:
        status.level, status.message = DiagnosticStatus.WARN, "no images received yet"
    else:
        status.level, status.message = DiagnosticStatus.OK, "segmenting"
    values = {
        "lifecycle_state": PrimaryState(state).value,
        "enabled": str(enabled).lower(),
        **values,
        "frames_received": str(counts.received),
        "frames_published": str(counts.published),
        "frames_dropped": str(counts.dropped),
        "frames_lost_in_transport": str(counts.lost_in_transport),
        "frames_rejected": str(counts.rejected),
        "last_rejection": counts.last_rejection,
    }
    if health is not None:  # how stale the input is: whole diagnostics periods without a frame, once frames came
        values["seconds_without_frames"] = f"{health.periods_without_input * period_s:.1f}"
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return status
