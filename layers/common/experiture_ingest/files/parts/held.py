"""Held files of a warehouse export, once their load ended: each one's summary says how.

A file dropped in a ``waitFor`` folder is held (``outcome: "waiting"``, ``waitingFor``). When the load
of its manifest (or ``_SUCCESS`` marker) ends, however it ends, its ``results/<key>.json`` is
rewritten with the load's outcome and ``load``: the manifest's key, the load summary's key and the
job(s) that held its rows. S3 events come unordered and at least once, so both sides check first:

- the load writes a summary that says ``waitingFor``, or, for a file in the load's own folder (held
  by the same config), one where there is none yet or only an intake failure to be retried (its
  event is still to come); any other summary is left alone (a file the manifest names elsewhere was
  imported on its own);
- the intake holds a file (:func:`hold_unless_loaded`) unless its summary already has ``load`` for
  that very version (a late or re-delivered event), and writes no refusal or failure over such one.

Both write conditionally (If-Match the ETag read, or If-None-Match when there was none): when one
writes between the other's read and write, the loser reads again and decides again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from experiture_ingest.files.collect import StorageUnavailableError, storage_errors
from experiture_ingest.files.layout import object_name_from_key, result_key
from experiture_ingest.files.parts.plan import ByteRange, ParquetPiece, PartPlan
from experiture_ingest.files.results import (
    Stored,
    SummaryChangedError,
    read_stored,
    summary_tags,
    tag_source,
    write_summary,
)
from experiture_ingest.files.summary import HeldLoad, Outcome, Summary

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# Reads and conditional writes of one summary before giving up (each loss means the other side wrote).
_ATTEMPTS = 5

_ENDED = {
    "completed": "was imported",
    "completed_with_errors": "was imported, with rejected rows",
    "partially_failed": "was partly imported",
    "failed": "failed",
    "refused": "was refused",
}


@dataclass(frozen=True)
class LoadedFile:
    """A part file of a load: the job(s) its rows went to and the version the load read
    (``planned`` False: the load ended before its plan, so which version is not known)."""

    job_ids: list[str] = field(default_factory=list)
    version_id: str | None = None
    etag: str | None = None
    planned: bool = False


def files_of(plan: PartPlan, job_ids: Mapping[int, str | None]) -> dict[str, LoadedFile]:
    """Each part file of a load, its version and the job(s) its rows went to (a cut file spans two),
    in plan order."""
    files: dict[str, LoadedFile] = {}
    for spec in plan.parts:
        job = job_ids.get(spec.index)
        # a job's CSV header is its first file's: not a reason to list that job for the file
        pieces: list[ByteRange | ParquetPiece] = [r for r in spec.ranges if not r.header]
        for piece in [*pieces, *(spec.parquet or [])]:
            etag = (piece.etag or "").strip('"') or None
            loaded = files.setdefault(
                piece.key, LoadedFile(version_id=piece.version_id, etag=etag, planned=True)
            )
            if job and job not in loaded.job_ids:
                loaded.job_ids.append(job)
    return files


def report_held_files(
    s3: S3Client,
    bucket: str,
    load_key: str,
    outcome: Outcome,
    held: Mapping[str, LoadedFile] | Iterable[str],
    *,
    finished_at: datetime,
) -> int:
    """Write each held file's summary with its load's ending; returns how many were written."""
    files: Mapping[str, LoadedFile] = (
        held if isinstance(held, Mapping) else {key: LoadedFile() for key in held}
    )
    load = _Load(load_key, outcome, finished_at)
    written = 0
    for key, loaded in files.items():
        for _ in range(_ATTEMPTS):
            try:
                summary = load.tell(s3, bucket, key, loaded)
                break
            except SummaryChangedError:  # the file's own event was handled meanwhile: read it again
                continue
        else:
            raise StorageUnavailableError(f"the summary of {key} kept changing while its load was told")
        if summary is None:
            continue
        written += 1
        try:
            tag_source(s3, bucket, key, summary.version_id, summary_tags(summary))
        except (ClientError, BotoCoreError) as exc:  # the summary is what matters; a tag is a convenience
            logger.warning("could not tag a held file: %s", exc, extra={"key": key})
    return written


@dataclass(frozen=True)
class _Load:
    """How a load ended, as each of its held files' summaries tells it."""

    key: str
    outcome: Outcome
    finished_at: datetime

    def tell(self, s3: S3Client, bucket: str, key: str, loaded: LoadedFile) -> Summary | None:
        """Write one file's summary (conditionally); None when it is not a held file's to write."""
        try:
            with storage_errors("reading a held file's summary"):
                stored = read_stored(s3, bucket, result_key(key))
        except ValueError as exc:  # not JSON
            logger.warning(
                "a held file's summary is not readable, left as it is: %s", exc, extra={"key": key}
            )
            return None
        summary = _summary_of(stored.doc, key) if stored.doc is not None else None
        if summary is not None and summary.waiting_for:
            if loaded.planned:  # the version whose rows the load read
                summary.set(version_id=loaded.version_id, etag=loaded.etag)
        elif stored.doc is None or (summary is not None and summary.will_retry):
            # its event not handled yet, or handled by an intake that failed and will try again
            summary = self._unseen(s3, bucket, key, loaded)
        else:
            return None  # imported on its own, or not a summary
        if summary is None:
            return None
        in_jobs = (
            f" Its rows were in job(s) {', '.join(loaded.job_ids)}."
            if loaded.job_ids
            else " No job was opened."
        )
        summary.set(
            outcome=self.outcome,
            message=(
                f"Held until its export's {'_SUCCESS marker' if self._marker else 'manifest'} "
                f"{self.key} landed; that load {_ENDED.get(self.outcome, self.outcome)} "
                f"(see {result_key(self.key)})." + in_jobs
            ),
            load=HeldLoad(
                key=self.key,
                summary_key=result_key(self.key),
                job_ids=list(loaded.job_ids),
                finished_at=self.finished_at.isoformat(),
            ),
        )
        with storage_errors("writing a held file's summary"):
            write_summary(s3, bucket, key, summary, replacing=stored)
        return summary

    @property
    def _marker(self) -> bool:
        return self.key.endswith("_SUCCESS")

    def _unseen(self, s3: S3Client, bucket: str, key: str, loaded: LoadedFile) -> Summary | None:
        """A summary for a file whose own event is still to come, if its folder holds it (the load's)."""
        folder = object_name_from_key(self.key)
        if folder is None or object_name_from_key(key) != folder:
            return None  # another folder: such a file is imported on its own
        version = (loaded.version_id, loaded.etag) if loaded.planned else _current_version(s3, bucket, key)
        if version is None:
            return None  # not there (a missing part): nothing to tell
        version_id, etag = version
        return Summary(
            outcome=self.outcome,
            key=key,
            bucket=bucket,
            version_id=version_id,
            etag=etag,
            file_name=key.rsplit("/", 1)[-1],
            waiting_for="_SUCCESS" if self._marker else "manifest",
        )


def _current_version(s3: S3Client, bucket: str, key: str) -> tuple[str | None, str | None] | None:
    """The object's current version id and ETag, or None if there is no such object."""
    try:
        with storage_errors("reading a held file"):
            head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise
    version_id = head.get("VersionId")
    return (None if version_id in (None, "null") else version_id), head.get("ETag", "").strip('"') or None


def _summary_of(doc: Any, key: str) -> Summary | None:
    """The file's summary, or None when the document is not one (it is then left as it is)."""
    try:
        return Summary.model_validate(doc)
    except ValueError as exc:  # not a summary
        logger.warning("a held file's summary is not readable, left as it is: %s", exc, extra={"key": key})
        return None


def loaded_summary(stored: Stored, version_id: str | None, etag: str | None) -> Summary | None:
    """The summary in ``stored`` if its load already ended for this very object version, else None."""
    if stored.doc is None:
        return None
    try:
        summary = Summary.model_validate(stored.doc)
    except ValueError:
        return None  # not a summary: the hold writes over it
    if summary.load is None:
        return None
    if version_id:
        return summary if summary.version_id == version_id else None
    same = etag is not None and (summary.etag or "").strip('"') == etag.strip('"')
    return summary if same and not summary.version_id else None


def hold_unless_loaded(s3: S3Client, bucket: str, key: str, held: Summary) -> Summary | None:
    """Write a held file's ``waiting`` summary unless its load already ended for this version.

    Returns the load's summary when it had (nothing written), else None. The source's tag is set
    before the summary, so the load that reads this summary tags after it. A read or write that
    fails raises (``ClientError``, ``BotoCoreError``); losing the conditional write ``_ATTEMPTS``
    times raises the last ``ClientError``.
    """
    lost: SummaryChangedError | None = None
    for _ in range(_ATTEMPTS):
        try:
            stored: Stored | None = read_stored(s3, bucket, result_key(key))
        except ValueError:  # not JSON: not a load's summary, written over as it always was
            stored = None
        done = loaded_summary(stored, held.version_id, held.etag) if stored else None
        summary = done or held
        try:
            tag_source(s3, bucket, key, summary.version_id, summary_tags(summary))
        except ClientError as exc:  # the summary is what matters; a tag is a convenience
            logger.warning("could not tag the source object: %s", exc.response.get("Error", {}).get("Code"))
        if done is not None:
            return done
        try:
            write_summary(s3, bucket, key, held, replacing=stored)
        except SummaryChangedError as exc:  # the load wrote meanwhile: read it again
            lost = exc
            continue
        return None
    assert lost is not None
    raise lost.error
