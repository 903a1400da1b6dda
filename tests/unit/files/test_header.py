"""Reading a file's columns from S3 with bounded ranged GETs: CSV, JSONL, Parquet, gzip."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from experiture_ingest.files.handoff import SourceObject
from experiture_ingest.files.header import HEADER_MAX_BYTES, HeaderError, SourceColumn, read_columns


class RecordingS3:
    """The moto client, remembering each GetObject's Range (to prove reads are bounded)."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.ranges: list[str] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.ranges.append(kwargs.get("Range", "whole object"))
        return self.s3.get_object(**kwargs)


@pytest.fixture
def s3() -> Iterator[RecordingS3]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="hdr-bucket")
        yield RecordingS3(client)


def put(s3: RecordingS3, key: str, body: bytes, fmt: str, compression: str | None = None) -> SourceObject:
    s3.s3.put_object(Bucket="hdr-bucket", Key=key, Body=body)
    return SourceObject(bucket="hdr-bucket", key=key, size=len(body), format=fmt, compression=compression)  # type: ignore[arg-type]


def test_csv_header_of_a_large_file_is_read_with_one_bounded_range(s3):
    # Given a CSV much larger than the header bound
    body = b"\xef\xbb\xbfEmail,First Name\n" + b"a@b.c,Ann\n" * 300_000
    source = put(s3, "incoming/c/big.csv", body, "csv")
    # When the columns are read
    columns = read_columns(s3, source)  # type: ignore[arg-type]
    # Then the BOM is dropped and only a bounded range was requested
    assert columns == [SourceColumn("Email"), SourceColumn("First Name")]
    assert s3.ranges == [f"bytes=0-{HEADER_MAX_BYTES - 1}"]


def test_gzip_csv_header(s3):
    source = put(
        s3, "incoming/c/a.csv.gz", gzip.compress(b"EMail,last-name\nx@y.z,Lee\n" * 1000), "csv", "gzip"
    )
    assert [c.name for c in read_columns(s3, source)] == ["EMail", "last-name"]  # type: ignore[arg-type]


def test_jsonl_first_record_with_value_types(s3):
    lines = [{"email": "a@b.c", "age": 3, "ltv": 2.5, "vip": True, "tags": ["x"]}, {"other": 1}]
    body = gzip.compress(("\n" + "\n".join(json.dumps(x) for x in lines)).encode())
    source = put(s3, "incoming/c/a.jsonl.gz", body, "jsonl", "gzip")
    assert read_columns(s3, source) == [  # type: ignore[arg-type]
        SourceColumn("email", "string"),
        SourceColumn("age", "integer"),
        SourceColumn("ltv", "number"),
        SourceColumn("vip", "boolean"),
        SourceColumn("tags", None),
    ]


def test_parquet_schema_from_the_footer_written_by_pyarrow(s3):
    # Given a Parquet file written by pyarrow with flat and nested columns
    table = pa.table(
        {
            "Email": ["a@b.c"] * 3,
            "Age": pa.array([1, 2, 3], pa.int32()),
            "LTV": [1.0, 2.0, 3.0],
            "OptedIn": [True, False, True],
            "SignedUpAt": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 3),
            "Tags": pa.array([["x"], [], ["y"]]),
            "City": ["Oslo", "Rome", "Lima"],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    source = put(s3, "incoming/c/a.parquet", buffer.getvalue(), "parquet")
    # When read
    columns = read_columns(s3, source)  # type: ignore[arg-type]
    # Then names and API types come from the footer, with one ranged GET from the end
    assert columns == [
        SourceColumn("Email", "string"),
        SourceColumn("Age", "integer"),
        SourceColumn("LTV", "number"),
        SourceColumn("OptedIn", "boolean"),
        SourceColumn("SignedUpAt", "datetime"),
        SourceColumn("Tags", None),
        SourceColumn("City", "string"),
    ]
    assert s3.ranges == [f"bytes=-{len(buffer.getvalue())}"]


def test_parquet_footer_larger_than_the_first_guess_takes_a_second_exact_range(s3):
    # Given a wide Parquet file whose footer exceeds 64 KiB
    table = pa.table({f"column_{i:04d}_with_a_long_name": [i] for i in range(1500)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    source = put(s3, "incoming/c/wide.parquet", buffer.getvalue(), "parquet")
    columns = read_columns(s3, source)  # type: ignore[arg-type]
    assert len(columns) == 1500 and columns[-1] == SourceColumn("column_1499_with_a_long_name", "integer")
    assert len(s3.ranges) == 2 and s3.ranges[0] == "bytes=-65536"


@pytest.mark.parametrize(
    ("body", "fmt", "message"),
    [
        (b"", "csv", "no header row"),
        (b"\n\n", "jsonl", "no records"),
        (b"[1, 2]\n", "jsonl", "not a JSON object"),
        (b"{oops\n", "jsonl", "not valid JSON"),
        (b"not parquet at all", "parquet", "magic bytes"),
        (b"x" * (HEADER_MAX_BYTES + 10), "csv", "longer than"),
    ],
)
def test_unreadable_headers_say_what_to_fix(s3, body, fmt, message):
    # Given a file whose beginning cannot name columns (an empty CSV is stored as one newline)
    source = put(s3, "incoming/c/x", body or b"\n", fmt)
    with pytest.raises(HeaderError, match=message):
        read_columns(s3, source)  # type: ignore[arg-type]
