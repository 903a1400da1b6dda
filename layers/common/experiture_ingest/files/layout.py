"""The ingest bucket's layout: where users drop files and configs, and where results appear.

>>> object_name_from_key("incoming/contacts/2026/11/spring.csv")
'contacts'
>>> result_key("incoming/contacts/2026/11/spring.csv")
'results/incoming/contacts/2026/11/spring.csv.json'
>>> version_result_key("incoming/contacts/spring.csv", "v1")
'results/incoming/contacts/spring.csv.versions/v1.json'
>>> errors_key("incoming/contacts/spring.csv")
'results/incoming/contacts/spring.csv.errors.jsonl'
"""

from __future__ import annotations

import hashlib

INCOMING_PREFIX = "incoming/"
CONFIG_PREFIX = "config/"
RESULTS_PREFIX = "results/"
S3_KEY_MAX_BYTES = 1024
# The longest suffix a results key gets: a part's errors file (``.parts/<5 digits>.errors.jsonl``).
_LONGEST_SUFFIX = ".parts/00000.errors.jsonl"
_ERRORS_SUFFIX = ".errors.jsonl"


def object_name_from_key(key: str) -> str | None:
    """The target object a key names by convention (``incoming/<object>/...``), or None."""
    if not key.startswith(INCOMING_PREFIX):
        return None
    parts = key[len(INCOMING_PREFIX) :].split("/")
    return parts[0] if len(parts) >= 2 and parts[0] and parts[-1] else None


def config_key(object_name: str) -> str:
    return f"{CONFIG_PREFIX}{object_name}.json"


def results_stem(source_key: str) -> str:
    """Where one source file's results live, before their suffix: ``results/<original key>``.

    S3 keys are at most 1,024 bytes (UTF-8), and a source key may use them all. When the longest
    results key (``.errors.jsonl``) would not fit, the stem is the key's first bytes (cut on a
    character boundary) plus ``~`` and 16 hex digits of the SHA-256 of the whole key, so both results
    files (and a split file's part results) fit and keep their place in a listing; the summary's ``key`` field holds the full source key.

    >>> results_stem("incoming/contacts/a.csv")
    'results/incoming/contacts/a.csv'
    >>> long = "incoming/contacts/" + "é" * 600 + ".csv"
    >>> stem = results_stem(long)
    >>> len((stem + ".errors.jsonl").encode()) <= S3_KEY_MAX_BYTES, stem[-17:-16], long.startswith(stem[8:-17])
    (True, '~', True)
    """
    stem = f"{RESULTS_PREFIX}{source_key}"
    if len(f"{stem}{_LONGEST_SUFFIX}".encode()) <= S3_KEY_MAX_BYTES:
        return stem
    tail = f"~{hashlib.sha256(source_key.encode()).hexdigest()[:16]}"
    budget = S3_KEY_MAX_BYTES - len(RESULTS_PREFIX) - len(tail) - len(_LONGEST_SUFFIX)
    head = source_key.encode()[:budget].decode("utf-8", "ignore")
    return f"{RESULTS_PREFIX}{head}{tail}"


def result_key(source_key: str) -> str:
    """The summary of one source file: ``results/<original key>.json`` (see :func:`results_stem`)."""
    return f"{results_stem(source_key)}.json"


def version_result_key(source_key: str, version: str) -> str:
    """The summary of one version that is not the key's newest (superseded, or overtaken by a newer one).

    ``results/<key>.json`` always describes the newest version; older ones are kept beside it.
    """
    return f"{RESULTS_PREFIX}{source_key}.versions/{version}.json"


def errors_key(source_key: str) -> str:
    """The rejected rows of one source file: ``results/<original key>.errors.jsonl``."""
    return f"{results_stem(source_key)}{_ERRORS_SUFFIX}"


def parts_prefix(source_key: str) -> str:
    """Where a split file's plan and parts' own results live: ``results/<key>.parts/``.

    >>> parts_prefix("incoming/contacts/big.csv")
    'results/incoming/contacts/big.csv.parts/'
    >>> part_result_key("incoming/contacts/big.csv", 2), part_errors_key("incoming/contacts/big.csv", 2)[-25:]
    ('results/incoming/contacts/big.csv.parts/00002.json', '.parts/00002.errors.jsonl')
    """
    return f"{results_stem(source_key)}.parts/"


def plan_key(source_key: str) -> str:
    """The split plan: every part's byte ranges, size and rows."""
    return f"{parts_prefix(source_key)}plan.json"


def part_items_key(source_key: str) -> str:
    """The parts' indexes as a JSON array: what the state machine's Map states read."""
    return f"{parts_prefix(source_key)}items.json"


def part_result_key(source_key: str, index: int) -> str:
    """One part's own summary (its import job), combined into ``results/<key>.json`` at the end."""
    return f"{parts_prefix(source_key)}{index:05d}.json"


def part_upload_key(source_key: str, index: int) -> str:
    """What a part's worker uploaded: its job id, bytes and timings."""
    return f"{parts_prefix(source_key)}{index:05d}.upload.json"


def part_errors_key(source_key: str, index: int) -> str:
    """One part's rejected rows (its job's numbering), renumbered into the file's errors file."""
    return f"{parts_prefix(source_key)}{index:05d}{_ERRORS_SUFFIX}"
