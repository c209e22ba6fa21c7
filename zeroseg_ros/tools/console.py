"""What the command line shows while it works: which log messages, and progress bars on long waits."""

from __future__ import annotations

import logging

from tqdm import tqdm

# Loggers of this package: their INFO lines are what a user of the command line wants to read.
OWN_LOGGERS = ("zeroseg_ros", "zeroseg")
PROGRESS_DELAY_S = 2.0  # a wait shorter than this draws no bar


def configure_logging(verbose: bool) -> None:
    """By default this package's messages (INFO and up) and other libraries' warnings, each once (Python warnings
    go through logging, where the default filter shows each once); ``verbose``: every library's DEBUG lines too,
    open_clip's "Parsing tokenizer identifier ..." among them."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)


class ProgressBar:
    """A ``(done, total)`` progress callback (``core.text.Progress``) drawn as a tqdm bar, which appears only
    when the wait passes ``PROGRESS_DELAY_S``. One bar per run of the work: it closes when done reaches total."""

    def __init__(self, description: str, unit: str) -> None:
        self._description = description
        self._unit = unit
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=total, desc=self._description, unit=self._unit, delay=PROGRESS_DELAY_S, dynamic_ncols=True
            )
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
            self._bar = None
