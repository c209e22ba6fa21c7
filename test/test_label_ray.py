"""``zeroseg label --ray`` on a local Ray cluster: the bags it writes equal the local job's message for message,
also when a worker dies in the middle of a range (every frame once, in time order), and with temporal smoothing
on two workers (each bag labelled in order by one of them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bag_helpers import RAW_TOPIC, fast_settings, make_bag, save_random_checkpoint

ray = pytest.importorskip("ray", reason="ray not installed: pip install -r requirements/label.txt")

from rosbags.highlevel import AnyReader  # noqa: E402

from zeroseg_ros.tools.label.job import label_locally, prepare  # noqa: E402
from zeroseg_ros.tools.label.labeller import CRASH_ONCE_ENV, Labeller  # noqa: E402
from zeroseg_ros.tools.label.ray_job import label_on_ray  # noqa: E402

FRAMES_PER_RANGE = 4  # several ranges per bag (two cameras: two frames a step), so that their order matters


def raw_messages(path: Path) -> list[tuple[str, int, bytes]]:
    with AnyReader([path]) as reader:
        return [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]


@pytest.mark.timeout(900)
def test_ray_job_equals_the_local_one_and_survives_a_dying_worker(tmp_path, monkeypatch) -> None:
    settings = fast_settings(save_random_checkpoint(tmp_path / "vit_s16.pt"))
    bags = [make_bag(tmp_path / "drive_mcap", frames=5), make_bag(tmp_path / "drive_db3", frames=4, storage="sqlite3")]

    manifest, plans, summary = prepare(bags, tmp_path / "local", settings, False, FRAMES_PER_RANGE)
    label_locally(plans, manifest, settings, summary, lambda count: None, Labeller(settings))
    assert summary.finished == ["drive_mcap", "drive_db3"]

    crash_marker = tmp_path / "worker_crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(crash_marker))  # the workers inherit it from the cluster's start
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        manifest, plans, summary = prepare(bags, tmp_path / "ray", settings, False, FRAMES_PER_RANGE)
        assert [len(plan.ranges) for plan in plans] == [3, 2]
        frames = []
        label_on_ray(plans, manifest, settings, summary, frames.append, workers=1, gpus_per_worker=0.0)
        # With temporal smoothing a bag is one range, so one worker labels it in order: the local job's bytes.
        monkeypatch.delenv(CRASH_ONCE_ENV)
        smoothing = replace(settings, segmenter=settings.segmenter.replace(temporal_smoothing=0.8))
        smoothed = {}
        for where in ("smoothed_local", "smoothed_ray"):
            manifest, plans, smoothed[where] = prepare(bags, tmp_path / where, smoothing, False, FRAMES_PER_RANGE)
            assert [len(plan.ranges) for plan in plans] == [1, 1]
            if where == "smoothed_local":
                label_locally(plans, manifest, smoothing, smoothed[where], lambda count: None, Labeller(smoothing))
            else:
                label_on_ray(plans, manifest, smoothing, smoothed[where], lambda count: None, 2, 0.0, 1)
    finally:
        ray.shutdown()
    assert crash_marker.exists(), "the worker did not die: the test tested nothing"
    assert summary.finished == ["drive_mcap", "drive_db3"] and not summary.failed
    assert summary.frames.frames == sum(frames) == 2 * 5 + 2 * 4
    for bag in ("drive_mcap", "drive_db3"):
        local, distributed = raw_messages(tmp_path / "local" / bag), raw_messages(tmp_path / "ray" / bag)
        assert [m[:2] for m in distributed] == [m[:2] for m in local]  # every message once, in the same order
        assert distributed == local  # and the same bytes: masks, overlays, objects
        assert sum(topic == "/front/zeroseg/mask" for topic, _, _ in distributed) == sum(
            topic == RAW_TOPIC for topic, _, _ in local
        )
        assert raw_messages(tmp_path / "smoothed_ray" / bag) == raw_messages(tmp_path / "smoothed_local" / bag)
        assert raw_messages(tmp_path / "smoothed_ray" / bag) != local  # the smoothing took effect
    assert sorted(smoothed["smoothed_ray"].finished) == ["drive_db3", "drive_mcap"]  # two workers: either first
