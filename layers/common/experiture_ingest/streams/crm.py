"""The peer CRM's custom object records as a :class:`~experiture_ingest.streams.destination.Destination`.

A message for it names ``"destination": "crm"`` and an object type as ``object``; operation
``upsert`` only (the vendor has no append). Each record is the vendor's own shape::

    {"identifiers": {"ext_id": "v-1"}, "attributes": {"model": "Clio"},
     "associations": [{"object_type": "garage", "records": [{"identifiers": {"ext_id": "g-1"}}]}]}

Checked here, before anything is sent, so a record that cannot land is dead-lettered alone:

- ``identifiers`` (``ext_id`` or ``id``) are required: the vendor has no Idempotency-Key, so a request
  retried after a lost answer is a second upsert, harmless only for records it can find again;
- at most 500 attributes and 10 associated records (the stricter reading of the vendor's limit);
- every attribute must be in the object type's list (``CRM_OBJECT_TYPES``; the vendor has no schema
  endpoint and silently drops attributes it does not define). With ``CRM_UNKNOWN_ATTRIBUTES=report``
  such a record is sent instead, and the names it loses go to
  ``reports/crm/<object type>/<day>/<process id>-unknown-attributes.json`` once the request is accepted.

Requests hold at most 1,000 records and 10^6 bytes (the stricter reading of "1 MB"). Settling polls
``GET /processes/{id}``; records the process rejects in the background (an ``id`` matching nothing)
come back as invalid rows, so the settler reports them under ``reports/crm/<object type>/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from experiture_ingest.crm import (
    CrmAuthError,
    CrmClient,
    CrmError,
    CrmNotFoundError,
    CrmSettings,
    CrmSettingsError,
    CrmTooLargeError,
)
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.destination import (
    Accepted,
    DestinationError,
    JobState,
    RecordCheck,
    RequestLimits,
)

CRM_MAX_RECORDS = 1000
CRM_MAX_BYTES = 1_000_000
CRM_MAX_ATTRIBUTES = 500
CRM_MAX_ASSOCIATIONS = 10

DISABLED = "CRM.DISABLED"
RECORD_INVALID = "CRM.RECORD_INVALID"
IDENTIFIERS_MISSING = "CRM.IDENTIFIERS_MISSING"
TOO_MANY_ATTRIBUTES = "CRM.TOO_MANY_ATTRIBUTES"
TOO_MANY_ASSOCIATIONS = "CRM.TOO_MANY_ASSOCIATIONS"
UNKNOWN_ATTRIBUTES = "CRM.UNKNOWN_ATTRIBUTES"
OBJECT_TYPE_UNCONFIGURED = "CRM.OBJECT_TYPE_NOT_CONFIGURED"
_RECORD_KEYS = frozenset({"identifiers", "attributes", "associations"})
# Writes one report document at a key of the payload bucket (PayloadStore.write_report).
ReportWriter = Callable[[str, dict[str, Any]], None]


def as_destination_error(exc: CrmError) -> DestinationError:
    """The client's exception as the writer reads it (401 and an unreadable secret are transient)."""
    if isinstance(exc, CrmSettingsError):
        return DestinationError("STREAM.SETTINGS", str(exc), retryable=True)
    code = f"CRM.{(exc.code or (f'HTTP_{exc.status}' if exc.status else type(exc).__name__)).upper()}"
    index = exc.record_index
    record_level = isinstance(exc, CrmTooLargeError) or (exc.status == 400 and index is not None)
    return DestinationError(
        code,
        str(exc),
        retryable=exc.retryable or (isinstance(exc, CrmAuthError) and exc.status == 401),
        record_level=record_level,
        record_index=index if record_level else None,
    )


def _identifiers_problem(raw: Any) -> str | None:
    if not isinstance(raw, Mapping) or not raw.keys() <= {"id", "ext_id"}:
        return "identifiers must be an object with ext_id (your id) or id (the CRM's)"
    rid, ext = raw.get("id"), raw.get("ext_id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int) or rid < 1):
        return "identifiers.id must be a positive integer"
    if ext is not None and (not isinstance(ext, str) or not ext.strip()):
        return "identifiers.ext_id must be a non-empty string"
    if rid is None and ext is None:
        return "identifiers must hold ext_id or id"
    return None


def _associations_problem(raw: Any) -> tuple[str, str] | None:
    if not isinstance(raw, list):
        return RECORD_INVALID, "associations must be a list"
    count = 0
    for j, entry in enumerate(raw):
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("object_type"), str)
            or not isinstance(entry.get("records"), list)
            or not entry["records"]
            or entry.get("action", "link") not in ("link", "unlink")
        ):
            return RECORD_INVALID, (
                f"associations[{j}] must be {{object_type, action: link|unlink, records: [{{identifiers}}]}}"
            )
        for k, item in enumerate(entry["records"]):
            problem = _identifiers_problem(item.get("identifiers") if isinstance(item, Mapping) else None)
            if problem:
                return RECORD_INVALID, f"associations[{j}].records[{k}]: {problem}"
        count += len(entry["records"])
    if count > CRM_MAX_ASSOCIATIONS:
        return TOO_MANY_ASSOCIATIONS, (
            f"a record links at most {CRM_MAX_ASSOCIATIONS} associated records, this one {count}"
        )
    return None


def compile_check(known: frozenset[str] | None) -> RecordCheck:
    """The record check for one object type (``known``: its attributes; None: not checked)."""

    def check(record: Mapping[str, Any]) -> tuple[str, str] | None:
        extra = record.keys() - _RECORD_KEYS
        if extra:
            return RECORD_INVALID, (
                f"a CRM record holds identifiers, attributes and associations only, not {sorted(extra)}"
            )
        if "identifiers" not in record:
            return IDENTIFIERS_MISSING, (
                "give identifiers.ext_id (or id): without one a retried request would create the record twice"
            )
        problem = _identifiers_problem(record["identifiers"])
        if problem:
            return RECORD_INVALID, problem
        attributes = record.get("attributes", {})
        if not isinstance(attributes, Mapping):
            return RECORD_INVALID, "attributes must be an object"
        if len(attributes) > CRM_MAX_ATTRIBUTES:
            return TOO_MANY_ATTRIBUTES, (
                f"a record has at most {CRM_MAX_ATTRIBUTES} attributes, this one has {len(attributes)}"
            )
        if known is not None:
            unknown = [name for name in attributes if name not in known]
            if unknown:
                shown = ", ".join(repr(n) for n in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                return UNKNOWN_ATTRIBUTES, (
                    f"{len(unknown)} attribute(s) the object type does not define ({shown}); the CRM would "
                    "drop them without a word (add them to CRM_OBJECT_TYPES once they exist there)"
                )
        if "associations" in record:
            return _associations_problem(record["associations"])
        return None

    return check


class CrmObjectRecords:
    """``POST /objects/{object_type}/batch/upsert`` and ``GET /processes/{id}``; off without a client."""

    name = "crm"
    limits = RequestLimits(CRM_MAX_RECORDS, CRM_MAX_BYTES, CRM_MAX_ATTRIBUTES)
    operations = frozenset({"upsert"})

    def __init__(
        self, client: CrmClient | None, settings: CrmSettings, reports: ReportWriter | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._reports = reports

    def with_reports(self, reports: ReportWriter) -> CrmObjectRecords:
        """The same destination, writing unknown-attribute reports with ``reports`` (report mode)."""
        return CrmObjectRecords(self._client, self._settings, reports)

    @property
    def reporting(self) -> bool:
        return self._settings.unknown_attributes == "report"

    @classmethod
    def from_settings(cls, settings: CrmSettings, **client_options: Any) -> CrmObjectRecords:
        client = CrmClient.from_settings(settings, **client_options) if settings.enabled else None
        return cls(client, settings)

    @property
    def call_seconds(self) -> float:
        return self._client.worst_call_seconds if self._client else 0.0

    def _on(self) -> CrmClient:
        if self._client is None:
            raise DestinationError(
                DISABLED,
                "the CRM destination is off: no api-key is configured (deploy with the CrmSecretArn "
                "parameter, or set CRM_SECRET_ARN / CRM_API_KEY)",
            )
        return self._client

    def frame(self, target: Target) -> tuple[bytes, bytes]:
        return b'{"records":[', b"]}"

    def checker(self, target: Target, *, fresh: bool = False) -> RecordCheck:
        self._on()
        if target.match_key:
            raise DestinationError(
                RECORD_INVALID, "the CRM matches records by their identifiers; matchKey does not apply"
            )
        known = self._settings.object_types.get(target.object)
        if known is None:
            raise DestinationError(
                OBJECT_TYPE_UNCONFIGURED,
                f"CRM_OBJECT_TYPES has no attribute list for {target.object!r}: the CRM has no schema "
                "endpoint and drops unknown attributes without a word, so its records cannot be checked",
            )
        return compile_check(None if self.reporting else known)

    def send_batch(self, target: Target, body: bytes, idempotency_key: str) -> Accepted:
        """``idempotency_key`` is not sent (the vendor has none); it names the kept request only."""
        client = self._on()
        try:
            process_id = client.upsert_batch(target.object, body)
        except CrmError as exc:
            raise as_destination_error(exc) from exc
        if self.reporting:
            # After the 202: a failure here sends the messages back, and their second upsert (by
            # identifiers) ends the same, so the report is written at the latest then.
            self._report_unknown(target, body, str(process_id))
        return Accepted(str(process_id))

    def _report_unknown(self, target: Target, body: bytes, process_id: str) -> None:
        known = self._settings.object_types.get(target.object, frozenset())
        lost = [
            {
                "index": i,
                "identifiers": r.get("identifiers"),
                "attributes": sorted(set(r["attributes"]) - known),
            }
            for i, r in enumerate(json.loads(body)["records"])
            if isinstance(r.get("attributes"), Mapping) and not r["attributes"].keys() <= known
        ]
        if not lost:
            return
        if self._reports is None:
            raise RuntimeError("CRM_UNKNOWN_ATTRIBUTES=report needs a report writer (wiring.destinations)")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        self._reports(
            f"reports/crm/{target.object}/{day}/{process_id}-unknown-attributes.json",
            {
                "destination": "crm",
                "objectType": target.object,
                "processId": process_id,
                "outcome": "sent; the CRM ignores these attributes (not in CRM_OBJECT_TYPES), so they were not stored",
                "records": lost,
            },
        )

    def job_state(self, object_name: str, job_id: str) -> JobState:
        if self._client is None:  # switched off after sending: wait until it is back
            raise DestinationError(
                DISABLED, "the CRM destination is off; cannot check a process", retryable=True
            )
        try:
            status = self._client.get_process(job_id)
        except CrmNotFoundError as exc:
            return JobState(job_id, "failed", finished=True, failed=True, error_message=str(exc))
        except CrmError as exc:
            raise as_destination_error(exc) from exc
        report = status.report
        failed = status.status in ("failed", "cancelled")
        if not status.finished or report is None:
            return JobState(
                job_id,
                status.status,
                finished=status.finished,
                failed=failed,
                error_message=f"process {status.status}" if failed else None,
                unverified=status.finished and not failed,
            )
        rejected = [r.model_dump(exclude_none=True) for r in report.rejected_records]
        return JobState(
            job_id,
            status.status,
            finished=True,
            failed=failed,
            invalid_rows=0 if failed else max(report.rejected, len(rejected)),
            error_message=report.error or (f"process {status.status}" if failed else None),
            error_summary={"rejectedRecords": rejected} if rejected else None,
            metrics={
                "total": report.total,
                "created": report.created,
                "updated": report.updated,
                "rejected": report.rejected,
            },
        )
