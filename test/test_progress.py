"""Progress on long waits: the text encoder reports each batch, and the command line draws it as a bar."""

from __future__ import annotations

from typing import ClassVar

import open_clip
import pytest
import torch

from zeroseg_ros.core.text import TextEncoder
from zeroseg_ros.tools import console


def test_text_encoding_reports_each_batch_of_prompts_and_only_what_it_encodes(vit_b16) -> None:
    encoder = TextEncoder(vit_b16, open_clip.get_tokenizer("ViT-B-16"), torch.device("cpu"), "short", batch_size=5)
    calls: list[tuple[int, int]] = []
    encoder.encode(["cat", "dog"], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 16), (10, 16), (15, 16), (16, 16)]  # 2 phrases x 8 templates, in batches of 5
    calls.clear()
    encoder.encode(["cat", "cone"], progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (8, 8)  # "cat" is cached: only "cone"'s prompts are encoded


class _FakeBar:
    made: ClassVar[list[_FakeBar]] = []

    def __init__(self, total: int, delay: float, **_: object) -> None:
        self.total, self.delay, self.n, self.closed = total, delay, 0, False
        _FakeBar.made.append(self)

    def update(self, count: int) -> None:
        self.n += count

    def close(self) -> None:
        self.closed = True


def test_the_progress_bar_follows_the_callback_and_waits_before_it_shows(monkeypatch) -> None:
    monkeypatch.setattr(console, "tqdm", _FakeBar)
    bar = console.ProgressBar("encoding queries", "prompt")
    for done in (256, 512, 600):
        bar(done, 600)
    bar(100, 200)  # a second run of the work gets a bar of its own
    first, second = _FakeBar.made
    assert (first.total, first.n, first.closed) == (600, 600, True)
    assert first.delay == pytest.approx(console.PROGRESS_DELAY_S)  # short waits draw nothing
    assert (second.total, second.n, second.closed) == (200, 100, False)
