"""The Experiture Records API as a :class:`~experiture_ingest.streams.destination.Destination`.

Everything the stream path knows about Experiture lives here: the batch endpoints, the request
body (``{"records": [...], "matchKey": ...}``), the schema checks (:mod:`~.schema`), and how the
client's exceptions read as destination errors (retryable or not, about records or the request).

>>> from experiture_ingest.client import ValidationError
>>> err = as_destination_error(ValidationError("bad", code="X", details={"path": "records[7].age"}))
>>> err.code, err.record_level, err.record_index, err.retryable
('X', True, 7, False)
"""

from __future__ import annotations

import re

from experiture_ingest.client import (
    AuthenticationError,
    ExperitureClient,
    ExperitureError,
    IdempotencyKeyReusedError,
    NotFoundError,
    PayloadTooLargeError,
    SchemaMismatchError,
    SettingsError,
    ValidationError,
    encode_json,
)
from experiture_ingest.limits import BATCH_MAX_BYTES, BATCH_MAX_RECORDS, RECORD_MAX_FIELDS
from experiture_ingest.streams.contract import OPERATIONS, Target
from experiture_ingest.streams.destination import (
    Accepted,
    DestinationError,
    JobState,
    RecordCheck,
    RequestLimits,
)
from experiture_ingest.streams.schema import UNKNOWN_FIELD, SchemaCache, compile_check

_RECORD_PATH = re.compile(r"records\[(\d+)\]")


def as_destination_error(exc: ExperitureError | SettingsError) -> DestinationError:
    """The client's exception as the writer reads it. 401 counts as transient (credentials rotate), and
    so does a secret that cannot be read: records must not be dead-lettered for the stack's own trouble."""
    if isinstance(exc, SettingsError):
        return DestinationError("STREAM.SETTINGS", str(exc), retryable=True)
    record_level = isinstance(exc, ValidationError | SchemaMismatchError | PayloadTooLargeError) and not (
        isinstance(exc, IdempotencyKeyReusedError)
    )
    index = None
    if record_level:
        for text in (exc.details.get("path"), exc.message):
            if isinstance(text, str) and (found := _RECORD_PATH.search(text)):
                index = int(found.group(1))
                break
    return DestinationError(
        exc.code or (f"HTTP_{exc.status}" if exc.status else type(exc).__name__),
        str(exc),
        retryable=exc.retryable or isinstance(exc, AuthenticationError),
        record_level=record_level,
        record_index=index,
        correlation_id=exc.correlation_id,
    )


class ExperitureRecordsApi:
    """``POST /records/{object}/append-batch|upsert-batch`` and ``GET /records/{object}/jobs/{id}``."""

    name = "experiture"
    limits = RequestLimits(BATCH_MAX_RECORDS, BATCH_MAX_BYTES, RECORD_MAX_FIELDS)
    operations = frozenset(OPERATIONS)

    def __init__(self, client: ExperitureClient, schema_ttl_seconds: float = 300.0) -> None:
        self._client = client
        self._schemas = SchemaCache(client, schema_ttl_seconds)

    @property
    def call_seconds(self) -> float:
        return self._client.worst_call_seconds

    def frame(self, target: Target) -> tuple[bytes, bytes]:
        suffix = b"]}"
        if target.operation == "upsert" and target.match_key:
            suffix = b'],"matchKey":' + encode_json(target.match_key) + b"}"
        return b'{"records":[', suffix

    def checker(self, target: Target, *, fresh: bool = False) -> RecordCheck:
        if fresh:
            self._schemas.forget(target.object)
        try:
            schema = self._schemas.get(target.object)
        except (ExperitureError, SettingsError) as exc:
            raise as_destination_error(exc) from exc
        if target.match_key and schema.field(target.match_key) is None:
            raise DestinationError(
                UNKNOWN_FIELD, f"matchKey {target.match_key!r} is not a field of {target.object}"
            )

        return compile_check(schema, target.operation, target.match_key)

    def send_batch(self, target: Target, body: bytes, idempotency_key: str) -> Accepted:
        try:
            if target.operation == "upsert":
                answer = self._client.upsert_batch(target.object, body=body, idempotency_key=idempotency_key)
            else:
                answer = self._client.append_batch(target.object, body=body, idempotency_key=idempotency_key)
        except (ExperitureError, SettingsError) as exc:
            raise as_destination_error(exc) from exc
        return Accepted(answer.job_id, answer.correlation_id)

    def job_state(self, object_name: str, job_id: str) -> JobState:
        try:
            status = self._client.get_batch_job(object_name, job_id)
        except NotFoundError as exc:
            # The API no longer knows the job: treat it as failed rather than lose the payload.
            return JobState(job_id, "failed", finished=True, failed=True, error_message=str(exc))
        except (ExperitureError, SettingsError) as exc:
            raise as_destination_error(exc) from exc
        return JobState(
            job_id,
            status.state,
            finished=status.is_terminal,
            failed=status.is_terminal and status.state != "completed",
            invalid_rows=status.metrics.invalid_rows,
            error_message=status.error_message,
            error_summary=dict(status.error_summary) if status.error_summary else None,
            metrics=status.metrics.model_dump(by_alias=True),
            correlation_id=status.correlation_id,
        )
