"""Which extensions the intake accepts, and the Content-Type each is uploaded with."""

from __future__ import annotations

import pytest

from experiture_ingest.files.formats import detect_format, supported_extensions


@pytest.mark.parametrize(
    ("name", "fmt", "compression", "content_type"),
    [
        ("a.csv", "csv", None, "text/csv"),
        ("A.CSV", "csv", None, "text/csv"),
        ("a.jsonl", "jsonl", None, "application/x-ndjson"),
        ("a.NDJSON", "jsonl", None, "application/x-ndjson"),
        ("a.parquet", "parquet", None, "application/vnd.apache.parquet"),
        ("a.csv.gz", "csv", "gzip", "application/gzip"),
        ("a.Jsonl.Gz", "jsonl", "gzip", "application/gzip"),
        ("a.ndjson.gz", "jsonl", "gzip", "application/gzip"),
        ("spring.2026.csv", "csv", None, "text/csv"),
    ],
)
def test_documented_formats_are_recognised_case_insensitively(name, fmt, compression, content_type):
    # Given a documented extension in any case, when detected, then format, compression and type follow
    found = detect_format(name)
    assert found is not None
    assert (found.format, found.compression, found.content_type) == (fmt, compression, content_type)


@pytest.mark.parametrize(
    "name", ["a.txt", "a.json", "a.gz", "a.parquet.gz", "a.csv.zip", "csv", ".csv", "a.csv "]
)
def test_anything_else_is_not_a_supported_format(name):
    # Given an undocumented extension (or none), when detected, then there is no format
    assert detect_format(name) is None


def test_the_supported_list_is_the_guides():
    # Given the Bulk File Import guide's formats, then exactly those extensions are accepted
    assert set(supported_extensions()) == {
        ".csv",
        ".jsonl",
        ".ndjson",
        ".parquet",
        ".csv.gz",
        ".jsonl.gz",
        ".ndjson.gz",
    }
