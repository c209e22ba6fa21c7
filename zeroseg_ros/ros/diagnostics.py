"""What the node reports on ``/diagnostics``: counters, rates and the latency window, shared by the executor
thread (frames in) and the inference thread (frames out), and the status built from them once a period."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

LATENCY_WINDOW = 200


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
    input and output rates; the latency from reception to publication of the last ``LATENCY_WINDOW`` frames."""

    def __init__(self) -> None:
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
        self.input_rate.tick()
        with self._lock:
            self._received += 1
            self._dropped += int(replaced_waiting_frame)

    def frames_lost(self, count: int) -> int:
        """Adds the middleware's count of frames that never reached the node; returns the total."""
        with self._lock:
            self._lost_in_transport += count
            return self._lost_in_transport

    def frame_rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected += 1
            self._last_rejection = reason

    def request_rejected(self, reason: str) -> None:
        """A refused query change: reported as the last rejection, not counted as a frame."""
        with self._lock:
            self._last_rejection = reason

    def frame_published(self, latency_ms: float) -> None:
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


def segmentation_status(
    name: str,
    hardware_id: str,
    counts: FrameCounts,
    has_queries: bool,
    warming_up: bool,
    values: dict[str, str],
    pending_queries: str | None = None,
) -> DiagnosticStatus:
    """The node's status: level and message from the counts, then ``values`` and the counts as key-values."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if not has_queries:
        pending = " (encoding the requested ones)" if pending_queries else ""
        status.level, status.message = DiagnosticStatus.WARN, f"waiting for queries{pending}"
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
        **values,
        "frames_received": str(counts.received),
        "frames_published": str(counts.published),
        "frames_dropped": str(counts.dropped),
        "frames_lost_in_transport": str(counts.lost_in_transport),
        "frames_rejected": str(counts.rejected),
        "last_rejection": counts.last_rejection,
    }
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return status
