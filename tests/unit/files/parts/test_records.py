"""Record boundaries and row counts as the API numbers rows, whatever the chunking."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from experiture_ingest.files.parts.errors import SplitRefusedError
from experiture_ingest.files.parts.records import RecordScanner


def _api_rows_csv(data: bytes) -> int:
    """How the API (sandbox) counts data rows: csv.reader, header excluded, blank lines skipped."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True)
    next(reader)
    return sum(1 for cells in reader if cells and not (len(cells) == 1 and cells[0] == ""))


def _random_csv(rng: random.Random, rows: int) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(["email", "note", "age"])
    for i in range(rows):
        note = rng.choice(["plain", 'say "hi"', "two\nlines", "three\r\nmore\nlines", "", "a,b", '"'])
        writer.writerow([f"u{i}@example.com", note, str(i)])
        if rng.random() < 0.05:
            out.write(rng.choice(["\n", "\r\n"]))  # a blank line
    return out.getvalue().encode()


def _scan(data: bytes, fmt: str, sizes: list[int]) -> RecordScanner:
    scan = RecordScanner(fmt)  # type: ignore[arg-type]
    pos = 0
    for size in sizes:
        scan.feed(data[pos : pos + size])
        pos += size
    scan.feed(data[pos:])
    scan.finish()
    return scan


@pytest.mark.parametrize("seed", range(8))
def test_csv_records_match_a_direct_parse_for_any_chunking(seed: int) -> None:
    # Given a CSV with quoted multi-line fields, escaped quotes and blank lines
    rng = random.Random(seed)
    data = _random_csv(rng, 300)
    # When it is scanned in chunks of random sizes (cutting anywhere, even inside "\r\n" or quotes)
    scan = _scan(data, "csv", [rng.randint(1, 200) for _ in range(len(data) // 50)])
    # Then the data rows are those the API counts, and the header ends at the first boundary
    assert scan.records - 1 == _api_rows_csv(data)
    assert data[: scan.first_boundary].decode().rstrip("\r\n") == "email,note,age"


def test_every_boundary_the_scanner_reports_is_a_record_boundary() -> None:
    # Given a CSV with multi-line records, scanned one byte more at a time
    data = _random_csv(random.Random(42), 60)
    expected_rows = _api_rows_csv(data)
    scan = RecordScanner("csv")
    for i in range(len(data)):
        scan.feed(data[i : i + 1])
        # Then the bytes before the last boundary parse to exactly the rows counted before it
        head = data[: scan.last_boundary]
        if scan.last_boundary > (scan.first_boundary or 0):
            assert _api_rows_csv(head) == scan.records_at_last_boundary - 1
    scan.finish()
    assert scan.records - 1 == expected_rows


def test_jsonl_counts_non_blank_lines() -> None:
    lines = [json.dumps({"i": i, "text": "a\nb"}) for i in range(50)]
    data = ("\n".join(lines[:20]) + "\n\n  \n" + "\n".join(lines[20:])).encode()  # no final newline
    scan = _scan(data, "jsonl", [7] * 100)
    assert scan.records == 50


def test_a_csv_ending_inside_quotes_is_refused() -> None:
    scan = RecordScanner("csv")
    scan.feed(b'a,b\n1,"open\n2,3\n')
    with pytest.raises(SplitRefusedError) as caught:
        scan.finish()
    assert caught.value.code == "CSV_UNBALANCED_QUOTES"
