"""The node's /diagnostics status over time (ros/diagnostics.py): stale input, missing output and rejected
frames go WARN then ERROR; lifecycle state and the enable switch are reported; the hardware is named."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diagnostic_msgs", reason="ROS message wheels not installed: run scripts/setup.sh")

from diagnostic_msgs.msg import DiagnosticStatus

from zeroseg_ros.ros.diagnostics import (
    REJECTION_ERROR_RATIO,
    REJECTION_WARN_RATIO,
    STALE_ERROR_PERIODS,
    STALE_WARN_PERIODS,
    FrameCounts,
    HealthMonitor,
    PrimaryState,
    hardware_id,
    segmentation_status,
)

PERIOD_S = 0.5


def counts(received: int, published: int, rejected: int = 0) -> FrameCounts:
    return FrameCounts(
        received=received,
        published=published,
        dropped=0,
        lost_in_transport=0,
        newly_lost=0,
        rejected=rejected,
        last_rejection="",
    )


def status_after(readings: list[FrameCounts], **kwargs: object) -> DiagnosticStatus:
    """The status after the monitor observed one reading per period, as the node's timer does."""
    health = HealthMonitor()
    for reading in readings:
        health.observe(reading, expecting_output=True)
    arguments = {"has_queries": True, "warming_up": False, "values": {}, **kwargs}
    return segmentation_status(
        name="/front/zeroseg: zero-shot segmentation",
        hardware_id="cpu",
        counts=readings[-1],
        health=health,
        period_s=PERIOD_S,
        **arguments,  # type: ignore[arg-type]
    )


def flowing(periods: int, per_period: int = 10) -> list[FrameCounts]:
    return [counts(i * per_period, i * per_period) for i in range(periods + 1)]


def test_frames_in_and_out_are_ok() -> None:
    status = status_after(flowing(20))
    assert (status.level, status.message) == (DiagnosticStatus.OK, "segmenting")


@pytest.mark.parametrize(
    ("quiet_periods", "level"),
    [
        (STALE_WARN_PERIODS - 1, DiagnosticStatus.OK),
        (STALE_WARN_PERIODS, DiagnosticStatus.WARN),
        (STALE_ERROR_PERIODS - 1, DiagnosticStatus.WARN),
        (STALE_ERROR_PERIODS, DiagnosticStatus.ERROR),
    ],
)
def test_stale_input_goes_warn_then_error(quiet_periods: int, level: bytes) -> None:
    readings = flowing(5)
    readings += [readings[-1]] * quiet_periods  # the camera stopped: the counts stand still
    status = status_after(readings)
    assert status.level == level
    if level != DiagnosticStatus.OK:
        assert status.message == f"no camera frame for {quiet_periods * PERIOD_S:.0f} s"


def test_input_that_resumes_is_ok_again() -> None:
    readings = flowing(5)
    readings += [readings[-1]] * STALE_ERROR_PERIODS
    last = readings[-1]
    readings += [counts(last.received + 10 * i, last.published + 10 * i) for i in range(1, 12)]
    assert status_after(readings).level == DiagnosticStatus.OK


@pytest.mark.parametrize(
    ("periods", "level"),
    [(STALE_WARN_PERIODS, DiagnosticStatus.WARN), (STALE_ERROR_PERIODS, DiagnosticStatus.ERROR)],
)
def test_frames_arriving_without_output_go_warn_then_error(periods: int, level: bytes) -> None:
    readings = flowing(3)
    last = readings[-1]
    # Frames keep arriving, none is published (e.g. the inference thread is stuck), none is rejected.
    readings += [counts(last.received + 10 * i, last.published) for i in range(1, periods + 1)]
    status = status_after(readings)
    assert status.level == level
    assert f"frames arrive but no output for {periods * PERIOD_S:.0f} s" in status.message


def test_no_output_is_not_blamed_while_warming_up() -> None:
    health = HealthMonitor()
    for i in range(STALE_ERROR_PERIODS + 2):
        health.observe(counts(10 * i, 0), expecting_output=False)
    assert health.periods_without_output == 0


@pytest.mark.parametrize(
    ("ratio", "level"),
    [
        (REJECTION_WARN_RATIO / 2, DiagnosticStatus.OK),
        (REJECTION_WARN_RATIO, DiagnosticStatus.WARN),
        (REJECTION_ERROR_RATIO, DiagnosticStatus.ERROR),
        (1.0, DiagnosticStatus.ERROR),
    ],
)
def test_a_high_rejection_ratio_goes_warn_then_error(ratio: float, level: bytes) -> None:
    per_period = 20
    rejected_per_period = round(per_period * ratio)
    readings = [
        counts(i * per_period, i * (per_period - rejected_per_period), i * rejected_per_period) for i in range(6)
    ]
    status = status_after(readings)
    assert status.level == level
    if level != DiagnosticStatus.OK:
        assert f"{ratio:.0%} of {5 * per_period} frames rejected" in status.message


def test_the_worst_problem_sets_the_level_and_all_are_named() -> None:
    readings = [counts(i * 10, 0, i * 10) for i in range(STALE_ERROR_PERIODS + 2)]  # every frame rejected
    status = status_after(readings)
    assert status.level == DiagnosticStatus.ERROR
    assert "frames rejected" in status.message and "frames arrive but no output" in status.message


def test_inactive_and_disabled_nodes_report_it_instead_of_stale_input() -> None:
    stale = flowing(2) + [flowing(2)[-1]] * STALE_ERROR_PERIODS
    inactive = status_after(stale, state=PrimaryState.INACTIVE)
    assert (inactive.level, inactive.message) == (DiagnosticStatus.OK, "inactive: not segmenting (lifecycle)")
    disabled = status_after(stale, enabled=False)
    assert disabled.level == DiagnosticStatus.OK and disabled.message.startswith("disabled")
    values = {value.key: value.value for value in disabled.values}
    assert (values["lifecycle_state"], values["enabled"]) == ("active", "false")


@pytest.mark.parametrize("pending", [None, "person, cone"])
def test_a_node_without_queries_says_so_first_and_names_its_other_problems(pending: str | None) -> None:
    before_first_frame = status_after([counts(0, 0)] * 3, has_queries=False, pending_queries=pending)
    waiting = "waiting for queries" + (" (encoding the requested ones)" if pending else "")
    assert (before_first_frame.level, before_first_frame.message) == (DiagnosticStatus.WARN, waiting)
    stale = flowing(2) + [flowing(2)[-1]] * STALE_ERROR_PERIODS
    stale_camera = status_after(stale, has_queries=False, pending_queries=pending)
    assert stale_camera.level == DiagnosticStatus.ERROR  # the worst problem sets the level
    assert stale_camera.message == f"{waiting}; no camera frame for {STALE_ERROR_PERIODS * PERIOD_S:.0f} s"


def test_a_camera_that_never_sent_a_frame_stays_waiting_not_stale() -> None:
    readings = [counts(0, 0)] * (STALE_ERROR_PERIODS + 5)
    status = status_after(readings)
    assert (status.level, status.message) == (DiagnosticStatus.WARN, "no images received yet")


def test_reset_forgets_the_quiet_periods() -> None:
    health = HealthMonitor()
    health.observe(counts(0, 0), expecting_output=True)
    for _ in range(STALE_ERROR_PERIODS + 1):
        health.observe(counts(5, 5), expecting_output=True)
    assert health.periods_without_input == STALE_ERROR_PERIODS  # frames came once, then stopped
    health.reset()
    health.observe(counts(5, 5), expecting_output=True)
    assert health.periods_without_input == 0 and health.problems(PERIOD_S) == []


def test_hardware_id_names_the_cpu_model() -> None:
    name = hardware_id("cpu")
    assert name.endswith("(cpu)") and len(name) > len(" (cpu)")
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    assert name == f"{model} (cpu)"


def test_frames_lost_in_transport_are_named_next_to_stale_input() -> None:
    readings = flowing(2) + [flowing(2)[-1]] * STALE_WARN_PERIODS
    last = readings[-1]
    readings[-1] = FrameCounts(last.received, last.published, 0, 7, 7, 0, "")
    status = status_after(readings)
    assert status.level == DiagnosticStatus.WARN
    assert "no camera frame" in status.message and "7 frames lost in transport" in status.message
