"""The scheduler: enqueue a file, grant start slots, take them back; over the table and Step Functions.

A waiting file is an entry in the table holding the task token of its execution, which waits in a
``.waitForTaskToken`` task (no Lambda running, no state transitions while it waits). A grant is
``SendTaskSuccess`` with ``{queuedAt, grantedAt, startAttempts, waitedSeconds}``.

Dispatch (:meth:`Scheduler.dispatch`) runs on every enqueue and release and on a schedule; it asks
:func:`~experiture_ingest.scheduling.policy.plan_grants` whom to start and grants them one by one.
A token that no longer works (``TaskTimedOut``, ``InvalidToken``: the execution was aborted or timed
out while it waited) gives its slot back at once. :meth:`Scheduler.sweep` (on the schedule) is the
backstop for slots held by executions that ended without releasing them: it asks
``DescribeExecution`` about each *running* entry (at most capacity of them, whatever the queue's
length) and each split file's turn (``holding``), following continue-as-new, and re-sends a grant
whose ``SendTaskSuccess`` was lost.

A part of a split file enqueues with ``turn`` (its holder's id, see
:func:`~experiture_ingest.scheduling.policy.turn_id`): its entry takes the holder's group, and the
policy lets it through at the holder's place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from experiture_ingest.limits import IMPORT_MAX_RUNNING_JOBS
from experiture_ingest.scheduling.policy import plan_grants, seconds_between
from experiture_ingest.scheduling.table import QueueEntry, QueueTable, SchedulingError

logger = logging.getLogger(__name__)

# SendTaskSuccess answers meaning "nobody waits on this token any more".
_DEAD_TOKEN = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
_MAX_ROUNDS = 5
_FOLLOW_CONTINUATIONS = 20


class QueueSettings(BaseModel):
    """The scheduler's settings, from the environment."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    table: str = Field(alias="IMPORT_QUEUE_TABLE", min_length=3)
    max_running_jobs: int = Field(default=IMPORT_MAX_RUNNING_JOBS, ge=1, alias="IMPORT_MAX_RUNNING_JOBS")
    # A grant whose SendTaskSuccess was not confirmed this long ago is sent again by the sweeper.
    renotify_seconds: float = Field(default=60.0, ge=0, alias="IMPORT_QUEUE_RENOTIFY_SECONDS")
    # A file the intake registered whose execution never reached the queue this long after is
    # checked (its execution ended or never started: the entry goes). The intake's timeout.
    register_grace_seconds: float = Field(default=900.0, ge=0, alias="IMPORT_QUEUE_REGISTER_GRACE_SECONDS")


class QueueConflictError(SchedulingError):
    """The entry changed under us (a concurrent task or dispatcher): the state machine tries again."""


@dataclass(frozen=True)
class Enqueue:
    """What a waiting execution tells the scheduler."""

    job_id: str
    object_name: str
    group: str
    bucket: str
    key: str
    event_time: datetime
    sequencer: str | None
    task_token: str
    execution_arn: str
    pause_seconds: float | None = None  # set after a capacity refusal: no grants for that long
    turn: str | None = None  # a split file's part: the id of the entry holding the file's turn
    part: int | None = None


@dataclass
class DispatchReport:
    """What one call did, and the queue's size after it (for the metrics)."""

    granted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    waiting: int = 0
    running: int = 0


class Scheduler:
    """Enqueue, dispatch, release and sweep; ``sfn`` is a boto3 Step Functions client."""

    def __init__(
        self,
        table: QueueTable,
        sfn: Any,
        settings: QueueSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.table = table
        self.sfn = sfn
        self.settings = settings
        self._clock = clock
        self.sfn_requests = 0

    # Entry points ------------------------------------------------------------------------------

    def enqueue(self, request: Enqueue) -> DispatchReport:
        """Put the file in the queue (or back in it after a refused start), then dispatch."""
        now = self._clock()
        existing = self.table.entry(request.job_id)
        if existing is None:
            holder = self.table.entry(request.turn) if request.turn else None
            entry = QueueEntry(
                job_id=request.job_id,
                object_name=request.object_name,
                # a part runs in its file's group (a manifest's part may name another key)
                group=holder.group if holder and holder.status == "holding" else request.group,
                bucket=request.bucket,
                key=request.key,
                event_time=request.event_time,
                sequencer=request.sequencer,
                queued_at=now,
                status="waiting",
                task_token=request.task_token,
                execution_arn=request.execution_arn,
                turn=request.turn,
                part=request.part,
            )
            if not self.table.add(entry):
                existing = self.table.entry(request.job_id)
        if existing is not None:
            if existing.status == "running":
                pause = (
                    now + timedelta(seconds=request.pause_seconds)
                    if request.pause_seconds is not None
                    else None
                )
                done = self.table.requeue(existing, request.task_token, request.execution_arn, pause)
            else:
                done = self.table.wait_again(request.job_id, request.task_token, request.execution_arn)
            if not done:
                raise QueueConflictError(f"the queue entry of job {request.job_id} changed; enqueue again")
        return self.dispatch()

    def release(self, job_id: str, *, execution_arn: str | None = None) -> DispatchReport:
        """Take the job out of the queue (whatever its status), then dispatch.

        With ``execution_arn`` (a status-change event), an entry that another execution of the run
        now holds (a continuation still running) is left alone.
        """
        report = DispatchReport()
        for _ in range(_MAX_ROUNDS):
            entry = self.table.entry(job_id)
            if entry is None:
                break
            if (
                execution_arn
                and entry.execution_arn
                and entry.execution_arn != execution_arn
                and self._alive(entry.execution_arn)
            ):
                logger.info("job %s is held by %s, still running; not released", job_id, entry.execution_arn)
                break
            if self.table.remove(entry):
                report.released.append(job_id)
                break
        dispatched = self.dispatch()
        dispatched.released[:0] = report.released
        return dispatched

    def dispatch(self) -> DispatchReport:
        """Grant every slot the policy allows now, in order."""
        report = DispatchReport()
        capacity = self.settings.max_running_jobs
        for _ in range(_MAX_ROUNDS):
            now = self._clock()
            entries = self.table.entries()
            running = [e for e in entries if e.status == "running"]
            waiting = {e.job_id: e for e in entries if e.status == "waiting"}
            registered = [e for e in entries if e.status == "registered"]
            holders = [e for e in entries if e.status == "holding"]  # not jobs: never counted
            report.waiting, report.running = len(waiting) + len(registered), len(running)
            plan = plan_grants(
                [e.policy_entry() for e in [*waiting.values(), *registered, *holders]],
                [e.policy_entry() for e in running],
                capacity=capacity,
                now=now,
                paused_until=self.table.paused_until() if waiting else None,
            )
            used = {e.slot for e in running}
            slots = [i for i in range(capacity) if i not in used]
            if not plan or not slots:
                break
            changed = False
            for choice, slot in zip(plan, slots, strict=False):
                entry = waiting[choice.job_id]
                if not self.table.grant(entry, slot, now):
                    changed = True  # a concurrent dispatcher or task: look again
                    break
                granted = replace(entry, status="running", slot=slot, granted_at=now)
                if self._notify(granted, now):
                    report.granted.append(entry.job_id)
                    report.waiting, report.running = report.waiting - 1, report.running + 1
                else:
                    report.released.append(entry.job_id)
                    report.waiting -= 1
                    changed = True  # its slot is free again
            if not changed:
                break
        if report.granted:
            logger.info("granted start slots", extra={"granted": report.granted, "running": report.running})
        return report

    def sweep(self) -> DispatchReport:
        """The backstop: free slots of ended executions, re-send lost grants; then dispatch."""
        now = self._clock()
        released: list[str] = []
        for entry in self.table.entries():
            if entry.status == "holding":
                if entry.execution_arn and self._turn_over(entry, now):
                    self._drop(
                        entry,
                        released,
                        f"split file {entry.key}: its execution ended without giving its turn back",
                    )
                continue
            if entry.status == "registered":
                late = seconds_between(entry.queued_at, now) >= self.settings.register_grace_seconds
                if late and entry.execution_arn and not self._alive(entry.execution_arn):
                    self._drop(
                        entry,
                        released,
                        f"job {entry.job_id}: handed off, but its execution never reached the queue",
                    )
                continue
            if entry.status != "running":
                continue
            if entry.execution_arn and not self._alive(entry.execution_arn):
                self._drop(
                    entry, released, f"job {entry.job_id}: its execution ended without giving its slot back"
                )
                continue
            stale = (
                entry.granted_at and seconds_between(entry.granted_at, now) >= self.settings.renotify_seconds
            )
            if not entry.notified and stale and not self._notify(entry, now):
                released.append(entry.job_id)
        report = self.dispatch()
        report.released[:0] = released
        return report

    # Step Functions ----------------------------------------------------------------------------

    def _notify(self, entry: QueueEntry, now: datetime) -> bool:
        """SendTaskSuccess; False (and the slot freed) when nobody waits on the token any more."""
        output = {
            "queuedAt": entry.queued_at.isoformat(),
            "grantedAt": now.isoformat(),
            "startAttempts": entry.start_attempts + 1,
            "waitedSeconds": seconds_between(entry.queued_at, now),
        }
        try:
            self.sfn_requests += 1
            self.sfn.send_task_success(taskToken=entry.task_token or "", output=json.dumps(output))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in _DEAD_TOKEN:
                logger.warning(
                    "job %s: grant not delivered (%s); the sweeper sends it again", entry.job_id, code
                )
                return True
            logger.warning("job %s: its execution no longer waits (%s); slot given back", entry.job_id, code)
            self.table.remove(entry)
            return False
        self.table.mark_notified(entry.job_id)
        return True

    def _drop(self, entry: QueueEntry, released: list[str], why: str) -> None:
        """Remove an entry whose execution is gone (the sweep's backstop), saying why."""
        logger.warning("%s; released", why, extra={"execution_arn": entry.execution_arn})
        if self.table.remove(entry):
            released.append(entry.job_id)

    def _turn_over(self, holder: QueueEntry, now: datetime) -> bool:
        """Whether a split file's turn is over: its execution ended, or never started in the grace
        time (the intake writes the turn just before it starts the execution)."""
        state = self._execution_state(holder.execution_arn or "")
        if state == "missing":
            return seconds_between(holder.queued_at, now) >= self.settings.register_grace_seconds
        return state == "ended"

    def _alive(self, execution_arn: str) -> bool:
        """Whether the execution (or the continuation it handed the run to) is still running."""
        return self._execution_state(execution_arn) == "running"

    def _execution_state(self, execution_arn: str) -> Literal["running", "ended", "missing"]:
        """The execution's state, through the continuations it handed the run to."""
        arn = execution_arn
        for _ in range(_FOLLOW_CONTINUATIONS):
            try:
                self.sfn_requests += 1
                doc = self.sfn.describe_execution(executionArn=arn)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                    return "missing" if arn == execution_arn else "ended"
                raise
            if doc["status"] == "RUNNING":
                return "running"
            following = _continued_as(doc.get("output"))
            if doc["status"] != "SUCCEEDED" or not following:
                return "ended"
            arn = following
        return "running"  # a long chain of continuations: assume it lives, the next sweep looks again


def _continued_as(output: str | None) -> str | None:
    if not output:
        return None
    try:
        doc = json.loads(output)
    except ValueError:
        return None
    following = doc.get("continuedAs") if isinstance(doc, Mapping) else None
    arn = following.get("executionArn") if isinstance(following, Mapping) else None
    return arn if isinstance(arn, str) else None


def job_id_from_input(text: str | None) -> str | None:
    """The queue id in an execution's input: an ImportRun (``jobId``), a continuation (``run.jobId``),
    or a split file's flow (``split.turn``, the entry holding its turn).

    >>> job_id_from_input('{"run": {"jobId": "imp_2"}, "progress": {}}'), job_id_from_input('{"jobId": "imp_1"}')
    ('imp_2', 'imp_1')
    >>> job_id_from_input('{"split": {"turn": "turn:big.csv-01ab"}, "plan": {}}')
    'turn:big.csv-01ab'
    """
    try:
        doc = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(doc, Mapping):
        return None
    split = doc.get("split")
    if isinstance(split, Mapping):
        turn = split.get("turn")
        return turn if isinstance(turn, str) and turn else None
    run = doc.get("run") if isinstance(doc.get("run"), Mapping) else doc
    job = run.get("jobId") if isinstance(run, Mapping) else None
    return job if isinstance(job, str) and job else None
