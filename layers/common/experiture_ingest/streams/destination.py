"""Where the writer and the settler send records: a small interface any batch API can implement.

The writer knows nothing of one vendor. It asks a :class:`Destination` for

- its **request limits** (records, bytes, fields per record) and the **operations** it offers;
- how a request body is **framed** around the records (``prefix + b",".join(records) + suffix``), so
  the writer can measure a request while it packs it and encode each record only once;
- a **record check** for a target (schema, types, match key), which may refuse the target as a whole;
- to **send a batch** (the exact body, with its Idempotency-Key) and to **read a job's state**.

It raises :class:`DestinationError` for everything that goes wrong, saying whether a retry may help
(``retryable``) and whether the refusal is about records (``record_level``, with ``record_index`` when
the answer names one), so the writer can dead-let what is final and split what is not.

:mod:`experiture_ingest.streams.experiture` is the first implementation (the Experiture Records API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from experiture_ingest.streams.contract import Target

# A record's first problem as (code, one-line message), or None when the destination would take it.
RecordCheck = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]


@dataclass(frozen=True)
class RequestLimits:
    """What one batch request may hold."""

    max_records: int
    max_bytes: int
    max_fields: int


@dataclass(frozen=True)
class Accepted:
    """A batch the destination took on as an asynchronous job."""

    job_id: str
    correlation_id: str | None = None


@dataclass(frozen=True)
class JobState:
    """A job as the settler sees it: still running, done (maybe with invalid rows), or failed."""

    job_id: str
    state: str
    finished: bool
    failed: bool = False
    invalid_rows: int = 0
    error_message: str | None = None
    error_summary: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None


class DestinationError(Exception):
    """A call the destination did not accept; ``str()`` is one line for logs and dead letters."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        record_level: bool = False,
        record_index: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.record_level = record_level
        self.record_index = record_index
        self.correlation_id = correlation_id


class Destination(Protocol):
    """A batch API the stream path writes to (see the module docstring)."""

    name: str
    limits: RequestLimits
    operations: frozenset[str]

    @property
    def call_seconds(self) -> float:
        """The longest one call may take, retries included (the writer's and settler's time budgets)."""
        ...

    def frame(self, target: Target) -> tuple[bytes, bytes]:
        """The bytes before and after the comma-joined records of a request body for ``target``."""
        ...

    def checker(self, target: Target, *, fresh: bool = False) -> RecordCheck:
        """The record check for ``target`` (``fresh``: re-read whatever it caches, after a refusal).

        Raises DestinationError when the target itself cannot be written (or, retryable, not now).
        """
        ...

    def send_batch(self, target: Target, body: bytes, idempotency_key: str) -> Accepted:
        """Post one batch request; the same key and body replay the first answer."""
        ...

    def job_state(self, object_name: str, job_id: str) -> JobState:
        """Where a job is (a job the destination no longer knows is reported as failed)."""
        ...
