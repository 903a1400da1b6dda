"""The import queue against today's retry loop: makespan, state transitions and Lambda invocations per file.

A discrete-event simulation in simulated time: 200 files dropped at once over 20 objects, job
durations drawn from the guide's "30 min - 4 hrs", a workspace that runs at most 10 jobs, polling at
the docs' cadence (5 s growing to 60 s). Three ways, rotated between rounds (each round its own
seed, fresh state), medians reported:

- ``queue`` (this stack): the REAL :class:`~experiture_ingest.scheduling.Scheduler` over its REAL
  table (moto DynamoDB) with a simulated clock; a stand-in for Step Functions keeps executions waiting
  on task tokens. Once with one job per object (the default), once with ``parallelJobs`` everywhere.
- ``retry-loop`` (before): every execution starts its job at once; a refused start waits 5 s growing
  to 60 s (jittered) and tries again, up to 6 h, then the file fails. No per-object order.
- ``ideal``: the same rules (capacity, arrival order, one job per object when on) with zero latency:
  a slot is taken the instant it frees. The makespan target is within 10 % of it.

Costs per file follow the state machine's path (statemachine/import_job.asl.json): a state entered
is a transition, a Task on a function is an invocation. The queue's shared costs (release and
scheduled dispatch invocations, DynamoDB requests) are counted and divided by the files.

    .tools/bin/uv run --frozen --no-sync python -m bench.import_queue [--files 200] [--capacity 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import ClientError
from moto import mock_aws

from cli.local_aws import QUEUE_TABLE_ID, create_table, load_template
from experiture_ingest.files.handoff import PollSettings
from experiture_ingest.files.import_tasks import poll_wait
from experiture_ingest.scheduling import Enqueue, QueueSettings, QueueTable, Scheduler, group_of, plan_grants
from experiture_ingest.scheduling.policy import Entry, refusal_backoff

T0 = datetime(2026, 4, 1, tzinfo=UTC)
POLL = PollSettings()
SCHEDULE_SECONDS = 60.0  # the dispatch function's EventBridge schedule
TASK_SECONDS = 1.0  # a task function's run (start, collect, release), in simulated seconds
START_RETRY_SECONDS = 6 * 3600  # today's limit on refused starts
# The fixed path of one file, from the definition: transitions (states entered) and invocations.
# Prepare, Resume, PlanMapping, SetMapping, Enqueue, StartJob, AfterStart, ..., Collect, Release, Imported
QUEUE_TRANSITIONS, QUEUE_INVOCATIONS = 10, 7  # invocations: the 4 before + Enqueue, Collect, Release
# Prepare, Resume, PlanMapping, SetMapping, StartJob, AfterStart, ..., Collect, Imported
RETRY_TRANSITIONS, RETRY_INVOCATIONS = 8, 5
PER_POLL = (3, 1)  # WaitToPoll, PollJob, AfterPoll; one invocation
PER_REFUSAL_RETRY = (3, 1)  # WaitToStart, StartJob, AfterStart; Start invoked


@dataclass(frozen=True)
class File:
    index: int
    object_name: str
    arrival: float
    duration: float


@dataclass
class Outcome:
    makespan: float
    completed: int
    failed: int
    transitions: float
    invocations: float
    dynamodb: float = 0.0
    waits: list[tuple[float, float]] = field(default_factory=list)  # (waited s, transitions while waiting)


def workload(files: int, objects: int, seed: int) -> list[File]:
    """Files dropped at once (a second apart), round-robin over objects, 30 min - 4 h jobs."""
    rng = random.Random(seed)
    return [File(i, f"object{i % objects:02d}", float(i), rng.uniform(1800, 4 * 3600)) for i in range(files)]


def polls_until(duration: float) -> tuple[int, float]:
    """Polls (docs cadence) until the job is seen completed, and how long after its start that is."""
    elapsed, n = 0.0, 0
    while elapsed < duration:
        elapsed += poll_wait(POLL, n)
        n += 1
    return n, elapsed


# Today's retry loop -------------------------------------------------------------------------------


def retry_loop(files: list[File], capacity: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = [
        (f.arrival + 3 * TASK_SECONDS, f.index, "try", 0) for f in files
    ]
    heapq.heapify(events)
    running_until: list[float] = []  # the CDP's own view: a slot frees when the job completes
    transitions = invocations = 0.0
    completed = failed = 0
    end = 0.0
    waits = []
    refusals_of: dict[int, int] = {}
    while events:
        now, index, _kind, attempt = heapq.heappop(events)
        running_until = [t for t in running_until if t > now]
        file = files[index]
        if len(running_until) < capacity:
            running_until.append(now + file.duration)
            polls, seen = polls_until(file.duration)
            transitions += RETRY_TRANSITIONS + PER_POLL[0] * polls
            invocations += RETRY_INVOCATIONS + PER_POLL[1] * polls
            completed += 1
            end = max(end, now + seen + TASK_SECONDS)
            refused = refusals_of.get(index, 0)
            waits.append((now - file.arrival, PER_REFUSAL_RETRY[0] * refused))
            continue
        refusals_of[index] = attempt + 1
        transitions += PER_REFUSAL_RETRY[0]
        invocations += PER_REFUSAL_RETRY[1]
        wait = refusal_backoff(
            attempt + 1,
            initial_seconds=POLL.initial_seconds,
            max_seconds=POLL.max_seconds,
            retry_after=None,
            rng=rng.random,
        )
        if now + wait - file.arrival > START_RETRY_SECONDS:
            failed += 1
            waits.append((now - file.arrival, PER_REFUSAL_RETRY[0] * (attempt + 1)))
            transitions += RETRY_TRANSITIONS
            invocations += RETRY_INVOCATIONS
            continue
        heapq.heappush(events, (now + wait, index, "try", attempt + 1))
    n = len(files)
    return Outcome(end, completed, failed, transitions / n, invocations / n, 0.0, waits)


# The ideal: same rules, zero latency --------------------------------------------------------------


def ideal(files: list[File], capacity: int, serial: bool) -> float:
    """Makespan of the arrival-order list schedule with the same rules and no latency at all."""
    waiting = [_entry(f, serial) for f in files]
    by_id = {f"j{f.index}": f for f in files}
    running: dict[str, float] = {}  # job -> end
    now, end = 0.0, 0.0
    while waiting or running:
        arrived = [e for e in waiting if by_id[e.job_id].arrival <= now]
        ends = [_entry(by_id[j], serial) for j in running]
        for grant in plan_grants(arrived, ends, capacity=capacity, now=T0 + timedelta(seconds=now)):
            running[grant.job_id] = now + by_id[grant.job_id].duration
            waiting.remove(grant)
        upcoming = [t for t in running.values()] + [
            by_id[e.job_id].arrival for e in waiting if by_id[e.job_id].arrival > now
        ]
        if not upcoming:
            break
        now = min(upcoming)
        for job in [j for j, t in running.items() if t <= now]:
            end = max(end, running.pop(job))
    return end


def lower_bound(files: list[File], capacity: int, serial: bool) -> float:
    """No schedule can beat this: the work spread over the capacity, the longest job or object."""
    per_object: dict[str, float] = {}
    for f in files:
        per_object[f.object_name] = per_object.get(f.object_name, 0.0) + f.duration
    longest = max(per_object.values()) if serial else max(f.duration for f in files)
    return max(sum(f.duration for f in files) / capacity, longest)


def _entry(file: File, serial: bool) -> Entry:
    key = f"incoming/{file.object_name}/f{file.index:03d}.csv"
    at = T0 + timedelta(seconds=file.arrival)
    return Entry(
        f"j{file.index}",
        group_of(file.object_name, "b", key, parallel=not serial),
        f"b/{key}",
        at,
        f"{file.index:04X}",
        at,
    )


# The queue: the dispatch policy in simulated time, its DynamoDB cost measured on the real table ----


def queue(files: list[File], capacity: int, serial: bool) -> Outcome:
    """Enqueue on arrival, dispatch on every enqueue and release (the real :func:`plan_grants`)."""
    events: list[tuple[float, int, str, str]] = []
    sequence = iter(range(10**9))
    by_job = {f"j{f.index}": f for f in files}
    waiting: dict[str, Entry] = {}
    running: dict[str, Entry] = {}
    for f in files:  # the execution reaches Enqueue after Prepare, PlanMapping, SetMapping
        heapq.heappush(events, (f.arrival + 3 * TASK_SECONDS, next(sequence), "enqueue", f"j{f.index}"))
    transitions = invocations = 0.0
    end = 0.0
    waits = []

    def dispatch(now: float) -> None:
        for grant in plan_grants(
            list(waiting.values()), list(running.values()), capacity=capacity, now=T0 + timedelta(seconds=now)
        ):
            running[grant.job_id] = waiting.pop(grant.job_id)
            # SendTaskSuccess -> StartJob runs; the job runs, polled until seen completed
            file = by_job[grant.job_id]
            _polls, seen = polls_until(file.duration)
            waits.append((now - (file.arrival + 3 * TASK_SECONDS), 0.0))  # no transition while it waited
            heapq.heappush(
                events,
                (now + TASK_SECONDS + seen + 2 * TASK_SECONDS, next(sequence), "release", grant.job_id),
            )

    while events:
        now, _, kind, job = heapq.heappop(events)
        if kind == "enqueue":
            waiting[job] = _entry(by_job[job], serial)
        else:  # Collect, then the release step
            del running[job]
            polls, _ = polls_until(by_job[job].duration)
            transitions += QUEUE_TRANSITIONS + PER_POLL[0] * polls
            invocations += QUEUE_INVOCATIONS + PER_POLL[1] * polls
            end = max(end, now)
        dispatch(now)
    n = len(files)
    schedules = end / SCHEDULE_SECONDS  # the dispatch function's schedule, shared by every file
    return Outcome(
        end,
        n - len(waiting) - len(running),
        len(waiting) + len(running),
        transitions / n,
        (invocations + schedules) / n,
        0.0,
        waits,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


class WaitingExecutions:
    """Step Functions for the scheduler: executions wait on tokens; SendTaskSuccess resumes one."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.granted: list[str] = []

    def send_task_success(self, taskToken: str, output: str) -> None:
        job = self.tokens.pop(taskToken, None)
        if job is None:
            raise ClientError({"Error": {"Code": "InvalidToken", "Message": "gone"}}, "SendTaskSuccess")
        self.granted.append(job)

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {"status": "RUNNING"}


@dataclass
class DynamoCost:
    per_file: float  # enqueue, grant, release of one file (its dispatches included)
    per_sweep: float  # one scheduled run (sweep + dispatch) with a full queue
    items_read_per_file: float  # items returned by the queue reads a file's dispatches make


def dynamodb_cost(
    files: list[File], capacity: int, serial: bool, dynamodb: Any, table_name: str
) -> DynamoCost:
    """Requests the REAL scheduler makes on its REAL table (moto), files enqueued then released in order."""
    clock = Clock()
    table = QueueTable(dynamodb, table_name)
    sfn = WaitingExecutions()
    scheduler = Scheduler(
        table,
        sfn,
        QueueSettings(IMPORT_QUEUE_TABLE=table_name, IMPORT_MAX_RUNNING_JOBS=capacity),
        clock=clock,
    )
    items = 0
    original = table.entries

    def counted() -> list[Any]:
        nonlocal items
        found = original()
        items += len(found)
        return found

    table.entries = counted  # type: ignore[method-assign]
    for f in files:
        key = f"incoming/{f.object_name}/f{f.index:03d}.csv"
        sfn.tokens[f"token-j{f.index}"] = f"j{f.index}"
        scheduler.enqueue(
            Enqueue(
                f"j{f.index}",
                f.object_name,
                group_of(f.object_name, "b", key, parallel=not serial),
                "b",
                key,
                T0 + timedelta(seconds=f.arrival),
                f"{f.index:04X}",
                f"token-j{f.index}",
                f"arn:j{f.index}",
            )
        )
    before = table.requests
    scheduler.sweep()
    per_sweep = table.requests - before
    released = 0
    while sfn.granted[released:]:
        job = sfn.granted[released]
        released += 1
        clock.now += 60
        scheduler.release(job)
    assert released == len(files), f"{released} of {len(files)} files were granted"
    return DynamoCost((table.requests - per_sweep) / len(files), per_sweep, items / len(files))


# The run --------------------------------------------------------------------------------------------


def hours(seconds: float) -> str:
    return f"{seconds / 3600:6.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--capacity", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dynamodb-files",
        type=int,
        default=20,
        help="files queued at once for the DynamoDB count (moto is slow)",
    )
    args = parser.parse_args()
    ways = ["queue/serial", "queue/parallel", "retry-loop"]
    results: dict[str, list[Outcome]] = {w: [] for w in ways}
    ideals: dict[str, list[float]] = {"serial": [], "parallel": []}
    bounds: dict[str, list[float]] = {"serial": [], "parallel": []}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        files = workload(args.files, args.objects, seed=round_)
        ideals["serial"].append(ideal(files, args.capacity, serial=True))
        ideals["parallel"].append(ideal(files, args.capacity, serial=False))
        for mode in ("serial", "parallel"):
            bounds[mode].append(lower_bound(files, args.capacity, serial=mode == "serial"))
        order = ways[round_ % len(ways) :] + ways[: round_ % len(ways)]  # rotate the ways; nothing shared
        for way in order:
            if way == "retry-loop":
                results[way].append(retry_loop(files, args.capacity, seed=round_))
            else:
                results[way].append(queue(files, args.capacity, way.endswith("serial")))
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        template = load_template()
        costs = {}
        for serial in (True, False):
            table = f"bench-{'serial' if serial else 'parallel'}"
            create_table(dynamodb, template, QUEUE_TABLE_ID, table)
            sample = workload(args.dynamodb_files, args.objects, seed=0)
            costs[serial] = dynamodb_cost(sample, args.capacity, serial, dynamodb, table)
    print(
        f"import queue: {args.files} files over {args.objects} objects dropped at once, jobs 30 min - 4 h, "
        f"capacity {args.capacity}, medians of {args.rounds} rounds (simulated time; {time.perf_counter() - started:.0f} s wall)"
    )
    print(
        f"  lower bound (work / capacity, longest object or job): serial {hours(statistics.median(bounds['serial']))}, "
        f"parallel {hours(statistics.median(bounds['parallel']))}"
    )
    print(
        f"  ideal makespan (same rules, zero latency): serial {hours(statistics.median(ideals['serial']))}, "
        f"parallel {hours(statistics.median(ideals['parallel']))}"
    )
    header = f"  {'way':16} {'makespan':>9} {'vs ideal':>9} {'completed':>9} {'failed':>6} {'transitions/file':>17} {'invocations/file':>17} {'DynamoDB req/file':>18} {'transitions while waiting':>26}"
    print(header)
    for way in ways:
        runs = results[way]
        mode = "serial" if way.endswith("serial") else "parallel"
        makespan = statistics.median(r.makespan for r in runs)
        reference = statistics.median(ideals[mode])
        waiting = [t for r in runs for _, t in r.waits]
        waited = [w for r in runs for w, _ in r.waits]
        print(
            f"  {way:16} {hours(makespan):>9} {makespan / reference - 1:+8.1%} "
            f"{statistics.median(r.completed for r in runs):>9.0f} {statistics.median(r.failed for r in runs):>6.0f} "
            f"{statistics.median(r.transitions for r in runs):>17.1f} {statistics.median(r.invocations for r in runs):>17.1f} "
            f"{_dynamo(way, costs):>18} "
            f"{_waiting_cost(waited, waiting):>26}"
        )
    print(
        "  transitions while waiting: per file, by how long it waited (median wait < 1 h | >= 1 h);"
        " the queue's is 0 whatever the wait, the retry loop's grows with it"
    )
    for serial, cost in costs.items():
        print(
            f"  DynamoDB ({'serial' if serial else 'parallel'}, real scheduler on moto, {args.dynamodb_files} files queued "
            f"at once): {cost.per_file:.1f} requests per file (enqueue, grant, release and their dispatches), "
            f"{cost.items_read_per_file:.0f} queue items read per file; a scheduled run: {cost.per_sweep:.0f} requests"
        )


def _dynamo(way: str, costs: dict[bool, DynamoCost]) -> str:
    if way == "retry-loop":
        return "0"
    return f"{costs[way.endswith('serial')].per_file:.1f}"


def _waiting_cost(waited: list[float], transitions: list[float]) -> str:
    short = [t for w, t in zip(waited, transitions, strict=True) if w < 3600]
    long = [t for w, t in zip(waited, transitions, strict=True) if w >= 3600]

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.0f}" if values else "-"

    return f"{med(short)} | {med(long)}"


if __name__ == "__main__":
    main()
