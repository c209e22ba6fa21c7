"""The labelling job on a Ray cluster: worker actors (one model each) label time ranges of bags; the driver keeps
one writer per output bag and writes each bag's ranges in order, so its messages stay in time order.

Exactly once: a range's records reach the writer only when its task returns; a worker that dies is restarted by
Ray (``max_restarts``) and its task run again (``max_task_retries``), so a range cut short is redone whole and
nothing of it was written before. Every worker must see the bags at the same path (shared storage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.label.bags import BagError, InputBag, Record
from zeroseg_ros.tools.label.job import BagOutput, BagPlan, JobSummary
from zeroseg_ros.tools.label.labeller import Labeller, LabelSettings, RangeSummary
from zeroseg_ros.tools.label.manifest import Manifest

LOGGER = logging.getLogger("zeroseg")
RANGES_IN_FLIGHT_PER_WORKER = 2  # one running, one queued: a worker never waits for the driver


class RangeLabeller:
    """The body of a worker actor: one model, labelling a range of a bag and returning its records."""

    def __init__(self, settings: LabelSettings) -> None:
        self._labeller = Labeller(settings)

    def ready(self) -> bool:
        """Answers once the model is loaded (the actor's constructor has run)."""
        return True

    def label(self, plan: BagPlan, index: int) -> tuple[list[Record], RangeSummary] | BagError:
        records: list[Record] = []
        try:
            with InputBag(plan.source) as bag:
                summary = self._labeller.label(bag, plan.cameras, plan.ranges[index], records.append)
        except BagError as error:  # returned, not raised: Ray would retry a raised error
            return error
        return records, summary


@dataclass
class _BagState:
    plan: BagPlan
    output: BagOutput | None = None
    next_index: int = 0
    done: dict[int, tuple[list[Record], RangeSummary]] = field(default_factory=dict)
    failed: bool = False


def connect(address: str | None) -> float:
    """Joins the cluster at ``address`` ("auto": the running one), or starts a local one without; the seconds
    it took."""
    import ray

    started = time.monotonic()
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:  # no cluster there, or a wrong address
            where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
            raise ZerosegError(f"cannot connect to {where}: {str(error).splitlines()[0]}") from error
    return time.monotonic() - started


def label_on_ray(
    plans: Sequence[BagPlan],
    manifest: Manifest,
    settings: LabelSettings,
    summary: JobSummary,
    on_frames: Callable[[int], None],
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float | None = None,
) -> None:
    """Labels every range of every planned bag on ``workers`` actors; writes each bag as its ranges come in.
    ``cpus_per_worker`` (default: the cluster's CPUs shared out) also sets each worker's torch threads, as Ray
    sets OMP_NUM_THREADS to it."""
    import ray

    if workers < 1:
        raise ZerosegError(f"--workers must be at least 1, got {workers}")
    if cpus_per_worker is None:
        cpus_per_worker = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
    actor_class = ray.remote(max_restarts=-1, max_task_retries=-1)(RangeLabeller)
    options = {"num_gpus": gpus_per_worker, "num_cpus": cpus_per_worker}
    actors = [actor_class.options(**options).remote(settings) for _ in range(workers)]
    loading = time.monotonic()
    ray.get([actor.ready.remote() for actor in actors])
    LOGGER.info("%d workers loaded their model in %.1f s", workers, time.monotonic() - loading)
    started = time.monotonic()
    states = [_BagState(plan) for plan in plans]
    work = [(bag, index) for bag, state in enumerate(states) for index in range(len(state.plan.ranges))]
    in_flight: dict[ray.ObjectRef, tuple[int, int, int]] = {}  # task -> (bag, range, actor)
    load = [0] * workers
    try:
        while work or in_flight:
            while work and min(load) < RANGES_IN_FLIGHT_PER_WORKER:
                actor = load.index(min(load))
                bag, index = work.pop(0)
                if states[bag].failed:
                    continue
                in_flight[actors[actor].label.remote(states[bag].plan, index)] = (bag, index, actor)
                load[actor] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            bag, index, actor = in_flight.pop(ready[0])
            load[actor] -= 1
            _received(states[bag], index, ray.get(ready[0]), manifest, summary, on_frames)
            summary.seconds = time.monotonic() - started
    except BaseException:
        for state in states:
            if state.output is not None and not state.failed and state.next_index < len(state.plan.ranges):
                state.output.abandon()
        raise
    finally:
        for actor_handle in actors:
            ray.kill(actor_handle)


def _received(
    state: _BagState,
    index: int,
    result: tuple[list[Record], RangeSummary] | BagError,
    manifest: Manifest,
    summary: JobSummary,
    on_frames: Callable[[int], None],
) -> None:
    """Keeps a range's result, writes the bag's ranges that are now next in order, and ends the bag after its
    last range."""
    if state.failed:
        return
    if isinstance(result, BagError):
        state.failed = True
        LOGGER.error("%s", result)
        summary.failed[str(state.plan.source)] = str(result).removeprefix(f"{state.plan.source}: ")
        if state.output is not None:
            state.output.abandon()
        return
    state.done[index] = result
    on_frames(result[1].frames)
    if state.output is None:
        state.output = BagOutput(state.plan, manifest)
    while state.next_index in state.done:
        records, range_summary = state.done.pop(state.next_index)
        for record in records:
            state.output.write(record)
        state.output.summary.add(range_summary)
        state.next_index += 1
    if state.next_index == len(state.plan.ranges):
        state.output.finish()
        summary.finished.append(state.plan.name)
        summary.frames.add(state.output.summary)
