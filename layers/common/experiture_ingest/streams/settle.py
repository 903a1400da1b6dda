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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from experiture_ingest.client import (
    BatchAccepted,
    BatchJobStatus,
    ExperitureClient,
    ExperitureError,
    NotFoundError,
    encode_json,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.limits import BATCH_JOB_POLL
from experiture_ingest.streams.contract import Target, envelope
from experiture_ingest.streams.deadletters import DeadLetter, DeadLetterQueue
from experiture_ingest.streams.sqs import is_fifo

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


@dataclass(frozen=True)
class ManifestEntry:
    message_id: str
    records: int
    group_id: str | None = None


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
        self, key: str, target: Target, idempotency_key: str, manifest: list[ManifestEntry], body: bytes
    ) -> None:
        """Keep ``body`` (the exact request) with the manifest of messages it carries."""
        head = encode_json(
            {
                "target": target.model_dump(),
                "idempotencyKey": idempotency_key,
                "messages": [
                    {"messageId": m.message_id, "records": m.records, "groupId": m.group_id} for m in manifest
                ],
            }
        )
        # Splice the request bytes in rather than parse and re-serialize them.
        document = head[:-1] + b',"request":' + body + b"}"
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


@dataclass(frozen=True)
class Settled:
    """What one check did: ``outcome`` is pending, completed, reported, redriven, dead-lettered or stuck."""

    outcome: str
    job_id: str
    report_key: str | None = None
    dead_lettered: int = 0
    next_job_id: str | None = None


class Settler:
    """Checks one job per ticket and moves it towards an end a user can see."""

    def __init__(
        self,
        client: ExperitureClient,
        payloads: PayloadStore,
        tickets: SettleQueue,
        dead_letters: DeadLetterQueue,
        *,
        max_redrives: int = 2,
        max_age_seconds: float = SETTLE_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._payloads = payloads
        self._tickets = tickets
        self._dead_letters = dead_letters
        self._max_redrives = max_redrives
        self._max_age = max_age_seconds
        self._clock = clock

    def settle(self, ticket: SettleTicket) -> Settled:
        """Check the job once; raise on a transient error (the ticket is retried by SQS)."""
        try:
            status = self._client.get_batch_job(ticket.object, ticket.job_id)
        except NotFoundError as exc:
            # The API no longer knows the job: treat it as failed rather than lose the payload.
            status = BatchJobStatus(job_id=ticket.job_id, state="failed", error_message=str(exc))
        if not status.is_terminal:
            now = self._clock()
            accepted_at = now if ticket.accepted_at is None else ticket.accepted_at
            if now - accepted_at >= self._max_age:
                return self._stuck(ticket, status, now - accepted_at)
            self._tickets.send(
                ticket.model_copy(update={"checks": ticket.checks + 1, "accepted_at": accepted_at})
            )
            return Settled("pending", ticket.job_id)
        if status.state == "completed":
            if status.metrics.invalid_rows > 0:
                key = self._report(ticket, status, "completed with invalid rows")
                self._payloads.mark_settled(ticket.payload_key, "invalid-rows")
                return Settled("reported", ticket.job_id, report_key=key)
            self._payloads.delete(ticket.payload_key)
            return Settled("completed", ticket.job_id)
        return self._failed(ticket, status)

    def _failed(self, ticket: SettleTicket, status: BatchJobStatus) -> Settled:
        payload = self._payloads.get(ticket.payload_key)
        target = Target.model_validate(payload["target"])
        if ticket.redrives < self._max_redrives:
            attempt = ticket.redrives + 1
            try:
                accepted = self._resend(
                    target, payload["request"], redrive_key(ticket.idempotency_key, attempt)
                )
            except ExperitureError as exc:
                if exc.retryable:
                    raise
                return self._dead_letter(
                    ticket, payload, target, f"re-drive refused: {exc}", exc.correlation_id
                )
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
            return Settled("redriven", ticket.job_id, next_job_id=accepted.job_id)
        reason = (
            f"batch job {ticket.job_id} failed after {ticket.redrives} re-drive(s): "
            f"{status.error_message or 'no error message'}"
        )
        return self._dead_letter(ticket, payload, target, reason, status.correlation_id, status=status)

    def _stuck(self, ticket: SettleTicket, status: BatchJobStatus, age: float) -> Settled:
        """Stop checking a job that never settles: report it and dead-letter what it held."""
        payload = self._payloads.get(ticket.payload_key)
        target = Target.model_validate(payload["target"])
        reason = (
            f"batch job {ticket.job_id} is still {status.state} {age / 3600:.1f} h after it was accepted "
            f"(limit {self._max_age / 3600:.1f} h, SETTLE_MAX_AGE_SECONDS); checks stopped. The API may "
            "still finish it: check the job before replaying"
        )
        settled = self._dead_letter(
            ticket, payload, target, reason, status.correlation_id, status=status, code=JOB_STUCK
        )
        return Settled(
            "stuck", ticket.job_id, report_key=settled.report_key, dead_lettered=settled.dead_lettered
        )

    def _resend(self, target: Target, request: dict[str, Any], key: str) -> BatchAccepted:
        body = encode_json(request)
        if target.operation == "upsert":
            return self._client.upsert_batch(target.object, body=body, idempotency_key=key)
        return self._client.append_batch(target.object, body=body, idempotency_key=key)

    def _dead_letter(
        self,
        ticket: SettleTicket,
        payload: dict[str, Any],
        target: Target,
        reason: str,
        correlation_id: str | None,
        *,
        status: BatchJobStatus | None = None,
        code: str = JOB_FAILED,
    ) -> Settled:
        records: list[dict[str, Any]] = payload["request"]["records"]
        letters = []
        offset = 0
        for entry in payload["messages"]:
            count = int(entry["records"])
            letters.append(
                DeadLetter(
                    json.dumps(envelope(target, records[offset : offset + count]), ensure_ascii=False),
                    code,
                    reason,
                    correlation_id=correlation_id,
                    source_message_id=entry["messageId"],
                    job_id=ticket.job_id,
                    group_id=entry.get("groupId"),
                )
            )
            offset += count
        self._dead_letters.send(letters)
        key = self._report(ticket, status, reason)
        self._payloads.mark_settled(ticket.payload_key, "dead-lettered")
        return Settled("dead-lettered", ticket.job_id, report_key=key, dead_lettered=len(letters))

    def _report(self, ticket: SettleTicket, status: BatchJobStatus | None, outcome: str) -> str:
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
                "metrics": status.metrics.model_dump(by_alias=True) if status else None,
                "records": ticket.records,
                "redrives": ticket.redrives,
                "payload": f"s3://{self._payloads.bucket}/{ticket.payload_key}",
                "correlationId": (status.correlation_id if status else None) or ticket.correlation_id,
            },
        )
        logger.warning("batch job %s: %s; report at %s", ticket.job_id, outcome, key)
        return key
