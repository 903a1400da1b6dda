"""Settling accepted batch jobs: nothing is done until the job says so.

An accepted request (202) is only a promise. The writer keeps the request's payload in S3
(``payloads/<object>/<idempotency key>.json``) and sends a *settle ticket* to the settle queue with a
delay. The settle function checks the job; while it runs the ticket goes back with a longer delay
(2 s growing by 1.5x to 30 s, the documented cadence, via ``DelaySeconds``). Then:

- ``completed`` with no invalid rows: the payload is deleted.
- ``completed`` with ``invalidRows > 0``: a report (job id, errorSummary, metrics, payload location)
  goes to ``reports/<object>/<date>/<job id>.json`` and the payload is kept (tagged settled, expired by
  the bucket's lifecycle rule) so the refused rows can be found.
- ``failed``: the kept payload is sent again (bounded re-drives, each with its own deterministic
  Idempotency-Key); when the re-drives are spent, every message it held is dead-lettered with the
  job's error message, and a report is written.
- still running ``max_age_seconds`` (default 6 h) after it was accepted: the checks stop; a report is
  written and every message it held is dead-lettered as ``STREAM.JOB_STUCK`` (nothing is lost, but
  the API may yet finish the job: check it before replaying an append).

>>> [cadence_delay(n) for n in range(9)]
[2, 3, 5, 7, 11, 16, 23, 30, 30]
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from experiture_ingest.client import encode_json
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.limits import BATCH_JOB_POLL
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.deadletters import DeadLetterQueue, dead_letter
from experiture_ingest.streams.destination import Accepted, Destination, DestinationError, JobState
from experiture_ingest.streams.sqs import is_fifo
from experiture_ingest.streams.timing import Budget

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

PAYLOAD_PREFIX = "payloads/"
REPORT_PREFIX = "reports/"
SETTLED_TAG = "experiture-settled"
# A payload is kept before its request is posted; until its job settles it carries this tag value, so
# one whose request was then refused (or re-packed after a retry) expires by the lifecycle rule.
UNSETTLED = "pending"
JOB_FAILED = "STREAM.JOB_FAILED"
JOB_STUCK = "STREAM.JOB_STUCK"
SETTLE_MAX_AGE_SECONDS = 6 * 3600
_SQS_MAX_DELAY = 900


def cadence_delay(
    check: int,
    first: float = BATCH_JOB_POLL[0],
    factor: float = BATCH_JOB_POLL[1],
    cap: float = BATCH_JOB_POLL[2],
) -> int:
    """Whole seconds to wait before check number ``check`` (0-based): ``first * factor**check``, capped."""
    return min(_SQS_MAX_DELAY, math.ceil(min(cap, first * factor**check)))


def payload_key(object_name: str, idempotency_key: str) -> str:
    return f"{PAYLOAD_PREFIX}{object_name}/{idempotency_key}.json"


def report_key(object_name: str, job_id: str, when: datetime | None = None) -> str:
    day = (when or datetime.now(UTC)).strftime("%Y-%m-%d")
    return f"{REPORT_PREFIX}{object_name}/{day}/{job_id}.json"


def redrive_key(idempotency_key: str, attempt: int) -> str:
    """The Idempotency-Key of re-drive number ``attempt``: a duplicated ticket re-sends the same key."""
    return derived_key("redrive", idempotency_key, str(attempt))


class OutOfTimeError(Exception):
    """Too little of the invocation is left to start the next step; the ticket goes back to SQS."""


@dataclass(frozen=True)
class ManifestEntry:
    """One message of a kept request: how many of its records it holds, and its ledger key."""

    message_id: str
    records: int
    group_id: str | None = None
    ledger_key: str | None = None


@dataclass(frozen=True)
class KeptRequest:
    """A request as it was kept before posting: enough to send it again byte for byte."""

    target: Target
    idempotency_key: str
    manifest: list[ManifestEntry]
    records: list[Any]
    frame: tuple[bytes, bytes]

    def body(self) -> bytes:
        prefix, suffix = self.frame
        return prefix + b",".join(encode_json(r) for r in self.records) + suffix

    def by_message(self) -> Iterator[tuple[ManifestEntry, list[Any]]]:
        offset = 0
        for entry in self.manifest:
            yield entry, self.records[offset : offset + entry.records]
            offset += entry.records


class SettleTicket(BaseModel):
    """What the settle function needs to check one job (small: the payload stays in S3)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    object: str
    payload_key: str
    idempotency_key: str
    records: int = Field(ge=0)
    redrives: int = Field(default=0, ge=0)
    checks: int = Field(default=0, ge=0)
    correlation_id: str | None = None
    # When the job was accepted (epoch seconds); a ticket from before this field gets it at its next check.
    accepted_at: float | None = None


class PayloadStore:
    """The accepted request bodies kept in S3 until their jobs settle, and the reports."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def put(
        self,
        key: str,
        target: Target,
        idempotency_key: str,
        manifest: list[ManifestEntry],
        *,
        frame: tuple[bytes, bytes],
        encoded_records: list[bytes],
    ) -> None:
        """Keep the request: its records (the exact bytes sent), frame and the messages it carries."""
        head = encode_json(
            {
                "target": target.model_dump(),
                "idempotencyKey": idempotency_key,
                "frame": [frame[0].decode(), frame[1].decode()],
                "messages": [
                    {
                        "messageId": m.message_id,
                        "records": m.records,
                        "groupId": m.group_id,
                        "ledgerKey": m.ledger_key,
                    }
                    for m in manifest
                ],
            }
        )
        # Splice the record bytes in rather than parse and re-serialize them.
        document = head[:-1] + b',"records":[' + b",".join(encoded_records) + b"]}"
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=document,
            ContentType="application/json",
            Tagging=f"{SETTLED_TAG}={UNSETTLED}",
        )

    def get(self, key: str) -> dict[str, Any]:
        answer = self._s3.get_object(Bucket=self.bucket, Key=key)
        document: dict[str, Any] = json.loads(answer["Body"].read())
        return document

    def load(self, key: str) -> KeptRequest:
        """The kept request at ``key`` (also in the layout before frames were kept: a "request" body)."""
        document = self.get(key)
        target = Target.model_validate(document["target"])
        if "request" in document:  # kept by an earlier version: {"records": [...], "matchKey": ...}
            request = document["request"]
            records = request["records"]
            suffix = (
                b"]}"
                if "matchKey" not in request
                else b'],"matchKey":' + encode_json(request["matchKey"]) + b"}"
            )
            frame = (b'{"records":[', suffix)
        else:
            records = document["records"]
            frame = (document["frame"][0].encode(), document["frame"][1].encode())
        manifest = [
            ManifestEntry(m["messageId"], int(m["records"]), m.get("groupId"), m.get("ledgerKey"))
            for m in document["messages"]
        ]
        return KeptRequest(target, document["idempotencyKey"], manifest, records, frame)

    def mark_settled(self, key: str, outcome: str) -> None:
        self._s3.put_object_tagging(
            Bucket=self.bucket, Key=key, Tagging={"TagSet": [{"Key": SETTLED_TAG, "Value": outcome}]}
        )

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def write_report(self, key: str, report: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(report, indent=2, sort_keys=True, default=str, ensure_ascii=False).encode(),
            ContentType="application/json",
        )


class SettleQueue:
    """Sends settle tickets with the delay of their next check."""

    def __init__(
        self, sqs: SQSClient, queue_url: str, cadence: tuple[float, float, float] = BATCH_JOB_POLL
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.cadence = cadence

    def send(self, ticket: SettleTicket) -> None:
        delay = cadence_delay(ticket.checks, *self.cadence)
        body = ticket.model_dump_json()
        if is_fifo(self.queue_url):  # FIFO queues have no per-message delay
            self._sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=body,
                MessageGroupId=ticket.job_id,
                MessageDeduplicationId=f"{ticket.job_id}-{ticket.checks}",
            )
        else:
            self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay)


def _need(budget: Budget, seconds: float) -> None:
    if not budget.fits(seconds):
        raise OutOfTimeError(f"less than {seconds:.0f} s left; the ticket goes back to SQS")


@dataclass(frozen=True)
class Settled:
    """What one check did: ``outcome`` is pending, completed, reported, redriven, dead-lettered or stuck."""

    outcome: str
    job_id: str
    report_key: str | None = None
    dead_lettered: int = 0
    next_job_id: str | None = None


class Settler:
    """Checks one job per ticket and moves it towards an end a user can see.

    Every step that calls out starts only if its worst case fits in the time left (``budget``);
    otherwise OutOfTimeError sends the ticket back to SQS, to be checked again from the start.
    """

    def __init__(
        self,
        destination: Destination,
        payloads: PayloadStore,
        tickets: SettleQueue,
        dead_letters: DeadLetterQueue,
        *,
        max_redrives: int = 2,
        max_age_seconds: float = SETTLE_MAX_AGE_SECONDS,
        aws_call_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._destination = destination
        self._payloads = payloads
        self._tickets = tickets
        self._dead_letters = dead_letters
        self._max_redrives = max_redrives
        self._max_age = max_age_seconds
        self._aws_seconds = aws_call_seconds
        self._clock = clock

    @property
    def ticket_seconds(self) -> float:
        """The worst case of one ticket: a check, the payload, a re-drive and the next ticket."""
        return 2 * self._destination.call_seconds + 3 * self._aws_seconds

    def settle(self, ticket: SettleTicket, budget: Budget | None = None) -> Settled:
        """Check the job once; raise on a transient error or OutOfTimeError (the ticket is retried)."""
        budget = budget or Budget(None)
        _need(budget, self.ticket_seconds)
        try:
            status = self._destination.job_state(ticket.object, ticket.job_id)
        except DestinationError as exc:
            if exc.retryable:
                raise
            # Refused for good (the object is gone, no access): treat it as failed, keep the records.
            status = JobState(ticket.job_id, "failed", finished=True, failed=True, error_message=str(exc))
        if not status.finished:
            now = self._clock()
            accepted_at = now if ticket.accepted_at is None else ticket.accepted_at
            if now - accepted_at >= self._max_age:
                return self._stuck(ticket, status, now - accepted_at, budget)
            self._tickets.send(
                ticket.model_copy(update={"checks": ticket.checks + 1, "accepted_at": accepted_at})
            )
            return Settled("pending", ticket.job_id)
        if not status.failed:
            if status.invalid_rows > 0:
                key = self._report(ticket, status, "completed with invalid rows")
                self._payloads.mark_settled(ticket.payload_key, "invalid-rows")
                return Settled("reported", ticket.job_id, report_key=key)
            self._payloads.delete(ticket.payload_key)
            return Settled("completed", ticket.job_id)
        return self._failed(ticket, status, budget)

    def _failed(self, ticket: SettleTicket, status: JobState, budget: Budget) -> Settled:
        kept = self._payloads.load(ticket.payload_key)
        if ticket.redrives < self._max_redrives:
            attempt = ticket.redrives + 1
            _need(budget, self._destination.call_seconds + self._aws_seconds)
            try:
                accepted = self._destination.send_batch(
                    kept.target, kept.body(), redrive_key(ticket.idempotency_key, attempt)
                )
            except DestinationError as exc:
                if exc.retryable:
                    raise
                return self._dead_letter(ticket, kept, f"re-drive refused: {exc}", exc.correlation_id, budget)
            self._redriven(ticket, status, accepted, attempt)
            return Settled("redriven", ticket.job_id, next_job_id=accepted.job_id)
        reason = (
            f"batch job {ticket.job_id} failed after {ticket.redrives} re-drive(s): "
            f"{status.error_message or 'no error message'}"
        )
        return self._dead_letter(ticket, kept, reason, status.correlation_id, budget, status=status)

    def _redriven(self, ticket: SettleTicket, status: JobState, accepted: Accepted, attempt: int) -> None:
        logger.warning(
            "batch job %s failed (%s); re-driven as %s (re-drive %d of %d)",
            ticket.job_id,
            status.error_message,
            accepted.job_id,
            attempt,
            self._max_redrives,
            extra={"correlation_id": accepted.correlation_id},
        )
        self._tickets.send(
            ticket.model_copy(
                update={
                    "job_id": accepted.job_id,
                    "redrives": attempt,
                    "checks": 0,
                    "correlation_id": accepted.correlation_id,
                    "accepted_at": self._clock(),
                }
            )
        )

    def _stuck(self, ticket: SettleTicket, status: JobState, age: float, budget: Budget) -> Settled:
        """Stop checking a job that never settles: report it and dead-letter what it held."""
        kept = self._payloads.load(ticket.payload_key)
        reason = (
            f"batch job {ticket.job_id} is still {status.state} {age / 3600:.1f} h after it was accepted "
            f"(limit {self._max_age / 3600:.1f} h, SETTLE_MAX_AGE_SECONDS); checks stopped. The API may "
            "still finish it: check the job before replaying"
        )
        settled = self._dead_letter(
            ticket, kept, reason, status.correlation_id, budget, status=status, code=JOB_STUCK
        )
        return Settled(
            "stuck", ticket.job_id, report_key=settled.report_key, dead_lettered=settled.dead_lettered
        )

    def _dead_letter(
        self,
        ticket: SettleTicket,
        kept: KeptRequest,
        reason: str,
        correlation_id: str | None,
        budget: Budget,
        *,
        status: JobState | None = None,
        code: str = JOB_FAILED,
    ) -> Settled:
        letters = [
            dead_letter(
                code,
                reason,
                target=kept.target,
                records=records,
                message_id=entry.message_id,
                group_id=entry.group_id,
                correlation_id=correlation_id,
                job_id=ticket.job_id,
            )
            for entry, records in kept.by_message()
        ]
        unsent = self._dead_letters.send(letters, can_start=lambda: budget.fits(self._aws_seconds))
        if unsent:
            # Sent letters may be sent again when the ticket comes back: duplicates, never losses.
            raise OutOfTimeError(f"{len(unsent)} of {len(letters)} dead letters not sent in time")
        _need(budget, 2 * self._aws_seconds)
        key = self._report(ticket, status, reason)
        self._payloads.mark_settled(ticket.payload_key, "dead-lettered")
        return Settled("dead-lettered", ticket.job_id, report_key=key, dead_lettered=len(letters))

    def _report(self, ticket: SettleTicket, status: JobState | None, outcome: str) -> str:
        key = report_key(ticket.object, ticket.job_id)
        self._payloads.write_report(
            key,
            {
                "jobId": ticket.job_id,
                "objectName": ticket.object,
                "outcome": outcome,
                "state": status.state if status else "refused",
                "errorMessage": status.error_message if status else None,
                "errorSummary": status.error_summary if status else None,
                "metrics": status.metrics if status else None,
                "records": ticket.records,
                "redrives": ticket.redrives,
                "payload": f"s3://{self._payloads.bucket}/{ticket.payload_key}",
                "correlationId": (status.correlation_id if status else None) or ticket.correlation_id,
            },
        )
        logger.warning("batch job %s: %s; report at %s", ticket.job_id, outcome, key)
        return key
