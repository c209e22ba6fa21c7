"""Progress on long waits: the text encoder reports each batch, model loading each step, the segmenter's warm-up
each frame size; the command line draws it as bars, the node as throttled log lines."""

from __future__ import annotations

from typing import ClassVar

import open_clip
import pytest
import torch

from zeroseg_ros.core import progress as progress_module
from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.model import LOADING_STEPS, load_clip
from zeroseg_ros.core.progress import LoggedProgress
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.text import TextEncoder
from zeroseg_ros.tools import console
from zeroseg_ros.tools.cli import main as zeroseg_main


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

    def __init__(self, total: int, delay: float, desc: str = "", **_: object) -> None:
        self.total, self.delay, self.desc, self.n, self.closed = total, delay, desc, 0, False
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


SMALL_MODEL = ModelConfig(name="ViT-S-32", random_init=True, device="cpu", precision="fp32")


class _Recorder:
    """A ``ProgressFactory`` that keeps every call: (description, unit) -> [(done, total), ...]."""

    def __init__(self) -> None:
        self.works: list[tuple[str, str, list[tuple[int, int]]]] = []

    def __call__(self, description: str, unit: str):
        calls: list[tuple[int, int]] = []
        self.works.append((description, unit, calls))
        return lambda done, total: calls.append((done, total))

    def calls_of(self, prefix: str) -> list[list[tuple[int, int]]]:
        return [calls for description, _, calls in self.works if description.startswith(prefix)]


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_model_loading_reports_each_of_its_steps() -> None:
    calls: list[tuple[int, int]] = []
    load_clip(SMALL_MODEL, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(step, LOADING_STEPS) for step in range(1, LOADING_STEPS + 1)]


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_the_segmenter_reports_loading_text_encoding_and_warm_up_through_its_factory() -> None:
    recorder = _Recorder()
    config = SegmenterConfig(short_side=64, templates="short", background_words="")
    segmenter = Segmenter(SMALL_MODEL, config, progress=recorder)
    assert recorder.calls_of("loading CLIP ViT-S-32") == [[(s, LOADING_STEPS) for s in range(1, LOADING_STEPS + 1)]]
    segmenter.set_queries("cat, dog|puppy")
    (encoding,) = recorder.calls_of("encoding 2 queries")
    assert encoding[-1] == (3 * 8, 3 * 8)  # 3 phrases x the 8 short templates
    segmenter.warmup([(48, 64), (64, 64)])
    assert recorder.calls_of("warming up") == [[(1, 2), (2, 2)]]
    # An explicit callback wins over the factory.
    explicit: list[tuple[int, int]] = []
    segmenter.set_queries("cone", progress=lambda done, total: explicit.append((done, total)))
    assert explicit and not recorder.calls_of("encoding 1 queries")


def test_logged_progress_waits_then_logs_at_most_one_line_per_interval(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    progress = LoggedProgress(lines.append, "encoding 171 queries", "prompt", interval=2.0)
    for now, done in ((101.0, 1000), (102.5, 2000), (103.0, 3000), (104.6, 6000), (106.0, 13680)):
        clock[0] = now
        progress(done, 13680)
    assert lines == [
        "encoding 171 queries: 14 % (2,000 of 13,680 prompts)",
        "encoding 171 queries: 43 % (6,000 of 13,680 prompts)",
        "encoding 171 queries: done (13,680 prompts in 6.0 s)",
    ]
    # A short wait logs nothing at all.
    quiet: list[str] = []
    short = LoggedProgress(quiet.append, "warming up", "frame size", interval=2.0)
    clock[0] += 1.0
    short(1, 2)
    short(2, 2)
    assert quiet == []


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_zeroseg_segment_draws_bars_for_loading_and_text_encoding(tmp_path, monkeypatch) -> None:
    import cv2
    import numpy as np

    monkeypatch.setattr(console, "tqdm", _FakeBar)
    _FakeBar.made.clear()
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), dtype=np.uint8))
    argv = ["segment", str(image), "-q", "cat, sofa", "--out", str(tmp_path / "out"), "--random-weights"]
    argv += ["--model", "ViT-S-32", "--device", "cpu", "--templates", "short", "--short-side", "64"]
    assert zeroseg_main(argv) == 0
    bars = {bar.desc: bar for bar in _FakeBar.made}
    assert bars["loading CLIP ViT-S-32"].n == LOADING_STEPS and bars["loading CLIP ViT-S-32"].closed
    encoding = bars["encoding 2 queries"]  # the queries' and the default background words' prompts
    assert encoding.n == encoding.total >= 2 * 8 and encoding.closed
    assert all(bar.delay == pytest.approx(console.PROGRESS_DELAY_S) for bar in bars.values())
