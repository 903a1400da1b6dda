"""Planning a warehouse export's load: parts packed into as few jobs as fit, each job a valid file
(one CSV header, JSONL lines, gzip members, Parquet row groups behind one merged footer)."""

from __future__ import annotations

import gzip
import io
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.parts.errors import ManifestError
from experiture_ingest.files.parts.manifest import (
    ManifestEntry,
    common_format,
    parse_manifest,
    plan_manifest,
    resolve_entries,
)
from experiture_ingest.files.parts.plan import PartPlan
from experiture_ingest.files.parts.upload import PartBody
from tests.integration.files.parts.conftest import BUCKET


def _plan(s3: Any, parts: dict[str, bytes], part_max: int) -> tuple[PartPlan, list[bytes]]:
    for key, body in parts.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    files, skipped = resolve_entries(s3, BUCKET, [ManifestEntry(BUCKET, key) for key in parts])
    assert skipped == []
    fmt = common_format(files)
    manifest = SourceObject(
        bucket=BUCKET, key="incoming/x/manifest", size=1, format=fmt.format, compression=fmt.compression
    )
    plan = plan_manifest(s3, manifest, files, fmt, part_max)
    jobs = [b"".join(PartBody.prepare(s3, spec, chunk_bytes=65536).open()) for spec in plan.parts]
    for spec, job in zip(plan.parts, jobs, strict=True):
        assert len(job) == spec.bytes <= part_max
    return plan, jobs


def test_csv_parts_share_one_header_per_job_and_keep_every_record_once(s3: Any) -> None:
    parts = {
        f"incoming/x/0000_part_{n:02d}.csv": (
            "email,note\r\n" + "".join(f'p{n}-{i}@x.com,"two\nlines {i}"\r\n' for i in range(300))
        ).encode()
        for n in range(12)
    }
    total = sum(len(b) for b in parts.values())
    part_max = total // 4
    _, jobs = _plan(s3, parts, part_max)
    assert len(jobs) <= math.ceil(total / part_max)
    rows = []
    for job in jobs:
        assert job.startswith(b"email,note\r\n") and job.count(b"email,note") == 1
        rows += job.decode().split("\r\n")[1:-1]
    expected = [line for body in parts.values() for line in body.decode().split("\r\n")[1:-1]]
    assert rows == expected


def test_parts_with_other_headers_are_refused(s3: Any) -> None:
    parts = {"incoming/x/a.csv": b"email,name\na@x.com,A\n", "incoming/x/b.csv": b"email,nom\nb@x.com,B\n"}
    with pytest.raises(ManifestError) as caught:
        _plan(s3, parts, 1024 * 1024)
    assert caught.value.code == "HEADER_MISMATCH" and "incoming/x/b.csv" in caught.value.message


def test_jsonl_parts_without_a_final_newline_get_one(s3: Any) -> None:
    parts = {f"incoming/x/p{n}.jsonl": f'{{"n": {n}}}\n{{"n": {n + 100}}}'.encode() for n in range(5)}
    _, jobs = _plan(s3, parts, 1024 * 1024)
    (job,) = jobs
    assert [json.loads(line)["n"] for line in job.splitlines()] == [v for n in range(5) for v in (n, n + 100)]


def test_gzip_jsonl_parts_are_gzip_members_and_gzip_csv_parts_stay_alone(s3: Any) -> None:
    jsonl = {f"incoming/x/p{n}.jsonl.gz": gzip.compress(f'{{"n": {n}}}\n'.encode()) for n in range(4)}
    _, jobs = _plan(s3, jsonl, 1024 * 1024)
    (job,) = jobs
    assert gzip.decompress(job).splitlines() == [f'{{"n": {n}}}'.encode() for n in range(4)]
    csvs = {f"incoming/y/p{n}.csv.gz": gzip.compress(f"email\np{n}@x.com\n".encode()) for n in range(3)}
    _, jobs = _plan(s3, csvs, 1024 * 1024)
    assert [gzip.decompress(j) for j in jobs] == [f"email\np{n}@x.com\n".encode() for n in range(3)]


def test_parquet_parts_merge_row_groups_behind_one_footer(s3: Any) -> None:
    tables, parts = [], {}
    for n in range(6):
        table = pa.table({"email": [f"p{n}-{i}@x.com" for i in range(3000)], "n": [n] * 3000})
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=1000)
        tables.append(table)
        parts[f"incoming/x/part-{n}.parquet"] = buf.getvalue()
    total = sum(len(b) for b in parts.values())
    plan, jobs = _plan(s3, parts, total // 2)
    assert 2 <= len(jobs) < 6
    read = [pq.read_table(io.BytesIO(job)) for job in jobs]
    assert pa.concat_tables(read).equals(pa.concat_tables(tables))
    assert [t.num_rows for t in read] == [spec.rows for spec in plan.parts]


def test_parquet_parts_with_another_schema_are_refused(s3: Any) -> None:
    parts = {}
    for n, table in enumerate([pa.table({"email": ["a@x.com"]}), pa.table({"mail": ["b@x.com"]})]):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        parts[f"incoming/x/{n}.parquet"] = buf.getvalue()
    with pytest.raises(ManifestError, match="another Parquet schema"):
        _plan(s3, parts, 1024 * 1024)


def test_a_missing_mandatory_entry_names_every_missing_key(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="incoming/x/a.csv", Body=b"email\na@x.com\n")
    entries = parse_manifest(
        json.dumps(
            {
                "entries": [
                    {"url": f"s3://{BUCKET}/incoming/x/a.csv", "mandatory": True},
                    {"url": f"s3://{BUCKET}/incoming/x/b.csv", "mandatory": True},
                    {"url": f"s3://{BUCKET}/incoming/x/c.csv", "mandatory": True},
                    {"url": f"s3://{BUCKET}/incoming/x/d.csv", "mandatory": False},
                ]
            }
        ).encode()
    )
    with pytest.raises(ManifestError) as caught:
        resolve_entries(s3, BUCKET, entries)
    assert caught.value.code == "MANIFEST_PART_MISSING"
    assert (
        "incoming/x/b.csv, incoming/x/c.csv" in caught.value.message and "d.csv" not in caught.value.message
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"files": []}', 'no "entries"'),
        (b'{"entries": [{"url": "https://x/y"}]}', "s3://bucket/key"),
    ],
)
def test_a_malformed_manifest_says_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_entries_in_another_bucket_are_refused(s3: Any) -> None:
    with pytest.raises(ManifestError, match="outside the ingest bucket"):
        resolve_entries(s3, BUCKET, [ManifestEntry("elsewhere", "k.csv")])
