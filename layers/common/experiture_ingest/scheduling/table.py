"""The queue's DynamoDB table (one on-demand table, partition key ``pk``, sort key ``sk``).

==========================  ================================================================
item (``pk`` / ``sk``)      what it holds
==========================  ================================================================
``queue`` / ``<job id>``    one file waiting for or holding a start slot: status (``registered``
                            by the intake | ``waiting`` | ``running``), the waiting execution's
                            task token and ARN, object,
                            group, source key, S3 event time and sequencer, queuedAt, grantedAt,
                            startAttempts, slot; a part's ``turn`` (its holder's id) and ``part``
``queue`` / ``turn:<name>``  a split file's turn (status ``holding``, by the intake): its split
                            execution's ARN, object, group, source, event time, sequencer
``slot`` / ``<0000..>``     a held start slot: ``holder`` = job id (at most capacity of them)
``lock`` / ``<group>``      the object (or key) whose job runs: ``holder`` = job id
``pause`` / ``all``         ``pausedUntil``: no grants before (set by a capacity refusal)
``version`` / ``<b>/<k>``   the newest version seen for one S3 key: padded sequencer, version id
==========================  ================================================================

A grant is one transaction (entry ``waiting`` -> ``running``, slot item created, group lock created,
each conditional), so concurrent dispatchers can never over-grant or run two jobs of one group; a
release deletes the three in one transaction. Reads of the queue are strongly consistent queries of
one partition (``pk = queue``), never scans.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from experiture_ingest.scheduling.policy import Entry, Status, padded_sequencer

logger = logging.getLogger(__name__)

QUEUE, SLOT, LOCK, PAUSE, VERSION = "queue", "slot", "lock", "pause", "version"
VERSION_TTL_SECONDS = 90 * 24 * 3600  # as long as Step Functions keeps execution names
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class SchedulingError(Exception):
    """Base of the scheduler's errors."""


class QueueUnavailableError(SchedulingError):
    """DynamoDB throttled or failed after botocore's retries: the state machine tries again."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _s(value: str) -> dict[str, str]:
    return {"S": value}


@dataclass(frozen=True)
class QueueEntry:
    """One file in the queue, as stored."""

    job_id: str
    object_name: str
    group: str
    bucket: str
    key: str
    event_time: datetime
    sequencer: str | None
    queued_at: datetime
    status: Status
    task_token: str | None = None
    execution_arn: str | None = None
    start_attempts: int = 0
    granted_at: datetime | None = None
    slot: int | None = None
    notified: bool = False
    turn: str | None = None
    part: int | None = None

    @property
    def source(self) -> str:
        return f"{self.bucket}/{self.key}"

    def policy_entry(self) -> Entry:
        return Entry(
            self.job_id,
            self.group,
            self.source,
            self.event_time,
            self.sequencer,
            self.queued_at,
            self.status,
            self.turn,
            self.part,
        )

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _s(QUEUE),
            "sk": _s(self.job_id),
            "objectName": _s(self.object_name),
            "group": _s(self.group),
            "bucket": _s(self.bucket),
            "key": _s(self.key),
            "eventTime": _s(_iso(self.event_time)),
            "queuedAt": _s(_iso(self.queued_at)),
            "status": _s(self.status),
            "startAttempts": {"N": str(self.start_attempts)},
            "notified": {"BOOL": self.notified},
        }
        optional = {
            "sequencer": self.sequencer,
            "taskToken": self.task_token,
            "executionArn": self.execution_arn,
            "grantedAt": _iso(self.granted_at) if self.granted_at else None,
            "turn": self.turn,
        }
        item.update({name: _s(value) for name, value in optional.items() if value})
        if self.slot is not None:
            item["slot"] = {"N": str(self.slot)}
        if self.part is not None:
            item["part"] = {"N": str(self.part)}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> QueueEntry:
        def text(name: str) -> str | None:
            return item[name]["S"] if name in item else None

        return cls(
            job_id=item["sk"]["S"],
            object_name=item["objectName"]["S"],
            group=item["group"]["S"],
            bucket=item["bucket"]["S"],
            key=item["key"]["S"],
            event_time=_parse(text("eventTime")) or datetime.now(UTC),
            sequencer=text("sequencer"),
            queued_at=_parse(text("queuedAt")) or datetime.now(UTC),
            status=_status(text("status")),
            task_token=text("taskToken"),
            execution_arn=text("executionArn"),
            start_attempts=int(item.get("startAttempts", {}).get("N", "0")),
            granted_at=_parse(text("grantedAt")),
            slot=int(item["slot"]["N"]) if "slot" in item else None,
            notified=bool(item.get("notified", {}).get("BOOL", False)),
            turn=text("turn"),
            part=int(item["part"]["N"]) if "part" in item else None,
        )


_STATUSES: dict[str, Status] = {"running": "running", "registered": "registered", "holding": "holding"}


def _status(text: str | None) -> Status:
    return _STATUSES.get(text or "", "waiting")


class QueueTable:
    """The table's operations; ``dynamodb`` is a boto3 DynamoDB client (typed ``Any``: no stubs)."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self.table = table
        self._clock = clock
        self.requests = 0  # DynamoDB requests made (benchmarks, docs: what a file costs)

    # Reads -------------------------------------------------------------------------------------

    def entries(self) -> list[QueueEntry]:
        """Every entry (waiting and running), one consistent query of the queue partition."""
        return [QueueEntry.from_item(item) for item in self._query(QUEUE)]

    def entry(self, job_id: str) -> QueueEntry | None:
        item = self._call("get_item", TableName=self.table, Key=self._key(QUEUE, job_id), ConsistentRead=True)
        return QueueEntry.from_item(item["Item"]) if "Item" in item else None

    def paused_until(self) -> datetime | None:
        item = self._call("get_item", TableName=self.table, Key=self._key(PAUSE, "all"), ConsistentRead=True)
        return _parse(item.get("Item", {}).get("pausedUntil", {}).get("S"))

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(pk)},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **kwargs)
            yield from page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Writes ------------------------------------------------------------------------------------

    def add(self, entry: QueueEntry) -> bool:
        """Put a new waiting entry; False if the job already has one (a retried task)."""
        return self._conditional(
            "put_item",
            TableName=self.table,
            Item=entry.item(),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def wait_again(self, job_id: str, token: str, execution_arn: str) -> bool:
        """A registered entry's execution now waits, or a waiting entry's new task token (a retried
        task, a continuation)."""
        return self._conditional(
            "update_item",
            TableName=self.table,
            Key=self._key(QUEUE, job_id),
            UpdateExpression="SET #s = :waiting, taskToken = :t, executionArn = :e",
            ConditionExpression="#s = :waiting OR #s = :registered",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":t": _s(token),
                ":e": _s(execution_arn),
                ":waiting": _s("waiting"),
                ":registered": _s("registered"),
            },
        )

    def requeue(
        self, entry: QueueEntry, token: str, execution_arn: str, paused_until: datetime | None
    ) -> bool:
        """A refused start: back to waiting (same place), slot and lock freed, grants paused."""
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._key(QUEUE, entry.job_id),
                    "UpdateExpression": (
                        "SET #s = :waiting, taskToken = :t, executionArn = :e, notified = :f "
                        "REMOVE grantedAt, slot"
                    ),
                    "ConditionExpression": "#s = :running",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":waiting": _s("waiting"),
                        ":running": _s("running"),
                        ":t": _s(token),
                        ":e": _s(execution_arn),
                        ":f": {"BOOL": False},
                    },
                }
            },
            *self._holder_deletes(entry),
        ]
        if paused_until is not None:
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {**self._key(PAUSE, "all"), "pausedUntil": _s(_iso(paused_until))},
                    }
                }
            )
        return self._transact(items)

    def grant(self, entry: QueueEntry, slot: int, now: datetime) -> bool:
        """Waiting -> running with slot ``slot`` and the group's lock; False if anything changed."""
        job = _s(entry.job_id)
        return self._transact(
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": self._key(QUEUE, entry.job_id),
                        "UpdateExpression": (
                            "SET #s = :running, grantedAt = :now, slot = :slot, "
                            "startAttempts = startAttempts + :one"
                        ),
                        "ConditionExpression": "#s = :waiting AND taskToken = :t",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":running": _s("running"),
                            ":waiting": _s("waiting"),
                            ":now": _s(_iso(now)),
                            ":slot": {"N": str(slot)},
                            ":one": {"N": "1"},
                            ":t": _s(entry.task_token or ""),
                        },
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {**self._key(SLOT, f"{slot:04d}"), "holder": job},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {**self._key(LOCK, entry.group), "holder": job},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    def mark_notified(self, job_id: str) -> None:
        self._conditional(
            "update_item",
            TableName=self.table,
            Key=self._key(QUEUE, job_id),
            UpdateExpression="SET notified = :t",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    def remove(self, entry: QueueEntry) -> bool:
        """Take the entry out of the queue, freeing its slot and lock if it held them."""
        condition = {
            "ConditionExpression": "#s = :status",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":status": _s(entry.status)},
        }
        delete = {"Delete": {"TableName": self.table, "Key": self._key(QUEUE, entry.job_id), **condition}}
        if entry.status != "running":
            return self._transact([delete])
        return self._transact([delete, *self._holder_deletes(entry)])

    def _holder_deletes(self, entry: QueueEntry) -> list[dict[str, Any]]:
        """Delete the entry's slot and lock items, only if this job holds them (or they are gone)."""
        condition = {
            "ConditionExpression": "attribute_not_exists(pk) OR holder = :job",
            "ExpressionAttributeValues": {":job": _s(entry.job_id)},
        }
        deletes = [{"Delete": {"TableName": self.table, "Key": self._key(LOCK, entry.group), **condition}}]
        if entry.slot is not None:
            deletes.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": self._key(SLOT, f"{entry.slot:04d}"),
                        **condition,
                    }
                }
            )
        return deletes

    # Versions of one key -----------------------------------------------------------------------

    def claim_version(self, bucket: str, key: str, sequencer: str, version: str) -> str | None:
        """Record ``version`` as the newest of the key unless a newer one is known.

        None when this version is the newest (or the same); otherwise the newer version's id.
        """
        padded = padded_sequencer(sequencer)
        ok = self._conditional(
            "update_item",
            TableName=self.table,
            Key=self._key(VERSION, f"{bucket}/{key}"),
            UpdateExpression="SET newestSequencer = :seq, newestVersion = :v, expiresAt = :ttl",
            ConditionExpression="attribute_not_exists(newestSequencer) OR newestSequencer <= :seq",
            ExpressionAttributeValues={
                ":seq": _s(padded),
                ":v": _s(version),
                ":ttl": {"N": str(int(self._clock() + VERSION_TTL_SECONDS))},
            },
        )
        if ok:
            return None
        newest = self.newest_version(bucket, key)
        return newest[1] if newest else "unknown"

    def newest_version(self, bucket: str, key: str) -> tuple[str, str] | None:
        """(padded sequencer, version id) of the newest version seen for the key, if any."""
        item = self._call(
            "get_item", TableName=self.table, Key=self._key(VERSION, f"{bucket}/{key}"), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return item["newestSequencer"]["S"], item["newestVersion"]["S"]

    # Plumbing ----------------------------------------------------------------------------------

    @staticmethod
    def _key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": _s(pk), "sk": _s(sk)}

    def _call(self, operation: str, **kwargs: Any) -> Any:
        self.requests += 1
        try:
            return getattr(self._db, operation)(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _THROTTLED:
                raise QueueUnavailableError(f"DynamoDB {operation}: {exc}") from exc
            raise
        except BotoCoreError as exc:
            raise QueueUnavailableError(f"DynamoDB {operation}: {exc}") from exc

    def _conditional(self, operation: str, **kwargs: Any) -> bool:
        try:
            self._call(operation, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        try:
            self._call("transact_write_items", TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                logger.info("queue transaction not applied (%s)", reasons)
                return False
            raise
        return True
