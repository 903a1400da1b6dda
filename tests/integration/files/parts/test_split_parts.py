"""Planning parts of a file in S3 and uploading each part with ranged GETs: every part a valid file
on its own (CSV header in front, record boundaries; Parquet read back by pyarrow), every row once."""

from __future__ import annotations

import csv
import io
import json
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiture_ingest.client import BearerToken, ExperitureClient, ImportJobInit
from experiture_ingest.files.formats import detect_format
from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.parts.errors import SplitRefusedError
from experiture_ingest.files.parts.plan import PartPlan, plan_split
from experiture_ingest.files.parts.upload import PartBody, part_identity, upload_part
from sandbox.testing import SandboxHandle
from tests.integration.files.parts.conftest import BUCKET


def _put(s3: Any, key: str, body: bytes) -> SourceObject:
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    fmt = detect_format(key)
    assert fmt is not None
    return SourceObject(
        bucket=BUCKET,
        key=key,
        version_id=put.get("VersionId"),
        etag=put["ETag"].strip('"'),
        size=len(body),
        format=fmt.format,
        compression=fmt.compression,
    )


def _part_bytes(s3: Any, plan: PartPlan) -> list[bytes]:
    out = []
    for spec in plan.parts:
        body = PartBody.prepare(s3, spec, chunk_bytes=64 * 1024, read_ahead_bytes=256 * 1024)
        data = b"".join(body.open())
        assert len(data) == spec.bytes <= plan.part_max_bytes
        out.append(data)
    return out


def _csv_file(rows: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["email", "note", "age"])
    for i in range(rows):
        writer.writerow([f"u{i}@example.com", rng.choice(["x", 'a "quoted"\nsecond line', "y" * 200]), i])
    return out.getvalue().encode()


def _rows(data: bytes) -> list[list[str]]:
    return [r for r in csv.reader(io.StringIO(data.decode(), newline="")) if r]


def test_csv_parts_each_start_with_the_header_end_on_a_record_and_hold_every_row_once(s3: Any) -> None:
    # Given a CSV with quoted multi-line fields, ~10 times the part size
    data = _csv_file(2000)
    source = _put(s3, "incoming/contacts/big.csv", data)
    part_max = len(data) // 10
    # When it is planned and every part streamed from its ranges
    plan = plan_split(s3, source, part_max, chunk_bytes=10_000)
    parts = _part_bytes(s3, plan)
    # Then each part is a CSV with the header, whose rows are the original rows in order, once
    assert len(parts) >= 10
    original = _rows(data)
    joined: list[list[str]] = []
    for spec, part in zip(plan.parts, parts, strict=True):
        rows = _rows(part)
        assert rows[0] == ["email", "note", "age"]
        assert part.endswith(b"\r\n")
        assert rows[1:] == original[spec.first_row_number : spec.first_row_number + spec.rows]
        joined += rows[1:]
    assert joined == original[1:]
    assert plan.total_rows == 2000 and sum(p.rows or 0 for p in plan.parts) == 2000


def test_jsonl_parts_end_on_lines(s3: Any) -> None:
    lines = [json.dumps({"email": f"u{i}@example.com", "n": i, "pad": "z" * (i % 97)}) for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    source = _put(s3, "incoming/contacts/big.jsonl", data)
    plan = plan_split(s3, source, len(data) // 7, chunk_bytes=4096)
    parts = _part_bytes(s3, plan)
    assert len(parts) >= 7
    assert [json.loads(line) for part in parts for line in part.splitlines()] == [
        json.loads(x) for x in lines
    ]
    assert [p.first_row_number for p in plan.parts][:2] == [1, 1 + (plan.parts[0].rows or 0)]


def _parquet(rows: int, group_rows: int, **kwargs: Any) -> tuple[pa.Table, bytes]:
    table = pa.table(
        {
            "email": [f"u{i}@example.com" for i in range(rows)],
            "age": list(range(rows)),
            "city": [["Paris", "Oslo", "Lima"][i % 3] for i in range(rows)],  # dictionary-encoded
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=group_rows, **kwargs)
    return table, buf.getvalue()


@pytest.mark.parametrize(
    "options", [{}, {"compression": "zstd", "write_page_index": True, "write_statistics": True}]
)
def test_parquet_parts_are_whole_row_groups_that_pyarrow_reads_back(s3: Any, options: dict[str, Any]) -> None:
    # Given a Parquet file of 20 row groups (with page indexes in one variant: their offsets are dropped)
    table, data = _parquet(20_000, 1_000, **options)
    source = _put(s3, "incoming/contacts/big.parquet", data)
    # When it is split into parts of about a quarter
    plan = plan_split(s3, source, len(data) // 4)
    parts = _part_bytes(s3, plan)
    # Then every part is a Parquet file pyarrow reads, with the right rows in order
    assert len(parts) >= 4
    read = [pq.read_table(io.BytesIO(part)) for part in parts]
    for spec, part_table in zip(plan.parts, read, strict=True):
        assert part_table.num_rows == spec.rows
        assert part_table.equals(table.slice((spec.first_row_number or 1) - 1, spec.rows))
    assert pa.concat_tables(read).equals(table)


def test_a_parquet_row_group_larger_than_a_part_is_refused_saying_so(s3: Any) -> None:
    _, data = _parquet(20_000, 20_000)
    source = _put(s3, "incoming/contacts/one-group.parquet", data)
    with pytest.raises(SplitRefusedError) as caught:
        plan_split(s3, source, len(data) // 2)
    assert caught.value.code == "ROW_GROUP_TOO_LARGE"
    assert "row group 0 holds" in caught.value.message and "smaller row groups" in caught.value.message


def test_gzip_over_the_part_size_is_refused_naming_size_and_fix(s3: Any) -> None:
    source = _put(s3, "incoming/contacts/big.csv.gz", b"\x1f\x8b" + b"0" * 5000)
    with pytest.raises(SplitRefusedError) as caught:
        plan_split(s3, source, 1000)
    assert caught.value.code == "GZIP_TOO_LARGE"
    assert "5002 bytes" in caught.value.message and "before compressing" in caught.value.message


def test_a_csv_record_longer_than_a_part_is_refused(s3: Any) -> None:
    data = b"email,note\n" + b"a@b.c,short\n" * 10 + b'a@b.c,"' + b"x\n" * 500 + b'"\n' + b"a@b.c,s\n"
    source = _put(s3, "incoming/contacts/long-record.csv", data)
    with pytest.raises(SplitRefusedError) as caught:
        plan_split(s3, source, 400)
    assert caught.value.code == "RECORD_TOO_LARGE"


def test_a_part_upload_lands_in_its_own_job_and_a_rerun_replays_that_job(
    s3: Any, sandbox: SandboxHandle
) -> None:
    # Given a planned CSV
    data = _csv_file(300)
    source = _put(s3, "incoming/contacts/up.csv", data)
    plan = plan_split(s3, source, len(data) // 3)
    spec = plan.parts[1]
    request = ImportJobInit(
        object_name="contacts", file_name="up.part-0002-of-0003.csv", file_size=spec.bytes
    )
    identity = part_identity(source, plan.part_max_bytes, spec.index)
    with ExperitureClient(sandbox.base_url, BearerToken(sandbox.token)) as client:
        # When the part is uploaded, and the same part again (a retried worker)
        body = PartBody.prepare(s3, spec, chunk_bytes=64 * 1024)
        first = upload_part(client, body, request, identity, "text/csv")
        again = upload_part(client, body, request, identity, "text/csv")
    # Then one job holds exactly the part's bytes: the header and its rows
    assert first.job_id == again.job_id
    assert first.bytes == spec.bytes
    uploaded = sandbox.admin.upload_bytes(first.job_id)
    assert uploaded.startswith(b"email,note,age\r\n") and len(uploaded) == spec.bytes
    assert _rows(uploaded)[1:] == _rows(data)[spec.first_row_number : spec.first_row_number + spec.rows]
    assert len(sandbox.admin.import_jobs()) == 1


def test_a_record_straddling_a_cut_and_longer_than_a_later_part_is_refused(s3: Any) -> None:
    # Given a first part that ends inside a record longer than what later parts can hold (part size
    # less the header)
    header = b"email,note," + b"h" * 300 + b"\n"
    data = header + b"a@b.c,x,y\n" + b'a@b.c,"' + b"z" * 700 + b'",y\n' + b"a@b.c,x,y\n" * 50
    source = _put(s3, "incoming/contacts/straddle.csv", data)
    with pytest.raises(SplitRefusedError) as caught:
        plan_split(s3, source, 900, chunk_bytes=64)
    assert caught.value.code == "RECORD_TOO_LARGE"
