"""Progress of long waits (model loading, text encoding, warm-up, CUDA-graph recording), reported the same way
to whoever shows it: the command line draws bars (``tools.console.ProgressBar``), the node logs lines
(``LoggedProgress``).

ROS-free and display-free: the pipeline calls a ``Progress`` as work gets done; what it shows is the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[int, int], None]  # (steps done so far, steps in all) of one piece of work
# A fresh Progress for one piece of work: (what is done, e.g. "loading CLIP ViT-B-16", the unit of its steps).
ProgressFactory = Callable[[str, str], Progress]

QUIET_S = 2.0  # a wait shorter than this shows nothing


def no_progress(done: int, total: int) -> None:
    """The ``Progress`` of work nobody watches."""


class LoggedProgress:
    """A ``Progress`` written as log lines ("encoding queries: 40 % (5,472 of 13,680 prompts)"), at most one every
    ``interval`` seconds, the first after ``interval`` seconds; a closing line only when progress was shown."""

    def __init__(self, log: Callable[[str], None], description: str, unit: str, interval: float = QUIET_S) -> None:
        self._log = log
        self._description = description
        self._unit = unit
        self._interval = interval
        self._started = self._last = time.monotonic()
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total:
            if self._shown or now - self._started >= self._interval:
                self._log(f"{self._description}: done ({total:,} {self._unit}s in {now - self._started:.1f} s)")
            return
        if now - self._last >= self._interval:
            self._last, self._shown = now, True
            percent = 100 * done // max(total, 1)
            self._log(f"{self._description}: {percent} % ({done:,} of {total:,} {self._unit}s)")
