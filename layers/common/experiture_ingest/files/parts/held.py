"""Held files of a warehouse export, once their load ended: each one's summary says how.

A file dropped in a ``waitFor`` folder is held (``outcome: "waiting"``, ``waitingFor``). When the load
of its manifest (or ``_SUCCESS`` marker) ends, however it ends, its ``results/<key>.json`` is
rewritten with the load's outcome and ``load``: the manifest's key, the load summary's key and the
job(s) that held its rows. Only summaries that say ``waitingFor`` are touched: a file a manifest
names outside a ``waitFor`` folder was imported on its own and keeps its own summary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from experiture_ingest.files.collect import storage_errors
from experiture_ingest.files.layout import result_key
from experiture_ingest.files.parts.plan import PartPlan
from experiture_ingest.files.results import read_json, summary_tags, tag_source, write_summary
from experiture_ingest.files.summary import HeldLoad, Outcome, Summary

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

_ENDED = {
    "completed": "was imported",
    "completed_with_errors": "was imported, with rejected rows",
    "partially_failed": "was partly imported",
    "failed": "failed",
    "refused": "was refused",
}


def jobs_by_file(plan: PartPlan, job_ids: Mapping[int, str | None]) -> dict[str, list[str]]:
    """Each part file of a load and the job(s) its rows went to (a cut file spans two), in plan order."""
    held: dict[str, list[str]] = {}
    for spec in plan.parts:
        keys = [r.key for r in spec.ranges if not r.header] + [p.key for p in spec.parquet or []]
        job = job_ids.get(spec.index)
        for key in dict.fromkeys(keys):
            jobs = held.setdefault(key, [])
            if job and job not in jobs:
                jobs.append(job)
    return held


def report_held_files(
    s3: S3Client,
    bucket: str,
    load_key: str,
    outcome: Outcome,
    held: Mapping[str, list[str]] | Iterable[str],
    *,
    finished_at: datetime,
) -> int:
    """Rewrite each held file's summary with its load's ending; returns how many were rewritten."""
    jobs: Mapping[str, list[str]] = held if isinstance(held, Mapping) else {key: [] for key in held}
    rewritten = 0
    for key, job_ids in jobs.items():
        summary = _held_summary(s3, bucket, key)
        if summary is None:
            continue
        in_jobs = f" Its rows were in job(s) {', '.join(job_ids)}." if job_ids else " No job was opened."
        summary.set(
            outcome=outcome,
            message=(
                f"Held until its export's {'_SUCCESS marker' if load_key.endswith('_SUCCESS') else 'manifest'} "
                f"{load_key} landed; that load {_ENDED.get(outcome, outcome)} (see {result_key(load_key)})."
                + in_jobs
            ),
            load=HeldLoad(
                key=load_key,
                summary_key=result_key(load_key),
                job_ids=list(job_ids),
                finished_at=finished_at.isoformat(),
            ),
        )
        with storage_errors("writing a held file's summary"):
            write_summary(s3, bucket, key, summary)
        rewritten += 1
        try:
            tag_source(s3, bucket, key, summary.version_id, summary_tags(summary))
        except (ClientError, BotoCoreError) as exc:  # the summary is what matters; a tag is a convenience
            logger.warning("could not tag a held file: %s", exc, extra={"key": key})
    return rewritten


def _held_summary(s3: S3Client, bucket: str, key: str) -> Summary | None:
    """The file's summary if it was held (it says ``waitingFor``), else None."""
    try:
        with storage_errors("reading a held file's summary"):
            doc = read_json(s3, bucket, result_key(key))
        summary = Summary.model_validate(doc) if doc is not None else None
    except ValueError as exc:  # not JSON, or not a summary
        logger.warning("a held file's summary is not readable, left as it is: %s", exc, extra={"key": key})
        return None
    return summary if summary is not None and summary.waiting_for else None
