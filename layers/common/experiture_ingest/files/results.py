"""Telling the user what happened, in their bucket: JSON summaries under ``results/`` and tags on the
source object (which is never rewritten or deleted).

>>> from experiture_ingest.files.summary import Summary
>>> summary_tags(Summary(outcome="completed", job_id="imp_1"))
{'experiture-status': 'completed', 'experiture-job-id': 'imp_1'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from experiture_ingest.files.layout import result_key
from experiture_ingest.files.summary import Summary

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import TaggingTypeDef

TAG_PREFIX = "experiture-"
_MAX_TAGS = 10  # S3's limit per object
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


# S3's answers to a conditional write that lost: changed (412), written concurrently (409), gone.
_CHANGED_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})


@dataclass(frozen=True)
class Stored:
    """A JSON document as read (None: there was none) and its ETag, for a conditional write."""

    doc: Any
    etag: str | None = None


class SummaryChangedError(Exception):
    """A conditional summary write lost: the summary changed (or appeared) since it was read."""

    def __init__(self, key: str, error: ClientError) -> None:
        super().__init__(f"{key} changed since it was read ({error.response.get('Error', {}).get('Code')})")
        self.error = error


def write_summary(
    s3: S3Client,
    bucket: str,
    source_key: str,
    summary: Summary,
    *,
    key: str | None = None,
    replacing: Stored | None = None,
) -> str:
    """Write ``results/<source key>.json`` (or ``key``) and return its key.

    The one writer of every summary document (intake, import run, part, split file, load, held file).
    ``replacing``: write only if the document is still the one read (an S3 conditional write,
    If-Match its ETag, or If-None-Match ``*`` when there was none), else :class:`SummaryChangedError`.
    """
    if "outcome" not in summary.model_fields_set:
        raise ValueError("a summary is written with its outcome")
    key = key or result_key(source_key)
    condition: dict[str, str] = {}
    if replacing is not None:
        condition = {"IfMatch": replacing.etag} if replacing.etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(summary.wire(), indent=2, sort_keys=True).encode(),
            ContentType="application/json",
            **condition,  # type: ignore[arg-type]
        )
    except ClientError as exc:
        if condition and exc.response.get("Error", {}).get("Code") in _CHANGED_CODES:
            raise SummaryChangedError(key, exc) from exc
        raise
    return key


def read_json(s3: S3Client, bucket: str, key: str) -> Any:
    """The JSON document at ``key`` (a summary, a plan, an upload record), or None if there is none.

    An unreadable document raises ``ValueError`` (``json.JSONDecodeError``).
    """
    return read_stored(s3, bucket, key).doc


def read_stored(s3: S3Client, bucket: str, key: str) -> Stored:
    """:func:`read_json` with the document's ETag (what a conditional :func:`write_summary` compares)."""
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return Stored(None)
        raise
    body = answer["Body"]
    try:
        return Stored(json.loads(body.read()), answer.get("ETag"))
    finally:
        body.close()


def summary_tags(summary: Summary) -> dict[str, str]:
    """The tags a summary puts on its source object: status and job id."""
    tags: dict[str, str] = {f"{TAG_PREFIX}status": summary.outcome}
    if summary.job_id:
        tags[f"{TAG_PREFIX}job-id"] = summary.job_id
    return tags


def tag_source(s3: S3Client, bucket: str, key: str, version_id: str | None, tags: Mapping[str, str]) -> None:
    """Merge ``tags`` into the source object's tags (S3 replaces the whole set, so read first).

    S3 allows 10 tags: the user's own tags are never dropped; ours are added while room remains.
    """
    if version_id:
        current = s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=version_id)["TagSet"]
    else:
        current = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    merged = {t["Key"]: t["Value"] for t in current if not t["Key"].startswith(TAG_PREFIX)}
    for name, value in tags.items():
        if len(merged) < _MAX_TAGS:
            merged[name] = _TAG_UNSAFE.sub("_", value)[:256]
    tag_set: TaggingTypeDef = {"TagSet": [{"Key": k, "Value": v} for k, v in merged.items()]}
    if version_id:
        s3.put_object_tagging(Bucket=bucket, Key=key, VersionId=version_id, Tagging=tag_set)
    else:
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging=tag_set)
