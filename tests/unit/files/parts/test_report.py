"""The split file's one summary: parts summed and listed, outcome from the parts, failed rows named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from experiture_ingest.files.handoff import SourceObject, SplitRun
from experiture_ingest.files.parts.plan import ByteRange, PartPlan, PartSpec
from experiture_ingest.files.parts.report import combined_summary

SOURCE = SourceObject(bucket="b", key="incoming/contacts/big.csv", version_id="v1", size=300, format="csv")
RUN = SplitRun(object_name="contacts", source=SOURCE, part_max_bytes=120)


def _plan() -> PartPlan:
    parts = [
        PartSpec(
            index=i,
            ranges=[ByteRange(bucket="b", key=SOURCE.key, version_id="v1", start=(i - 1) * 100, end=i * 100)],
            bytes=100,
            first_row_number=(i - 1) * 10 + 1,
            rows=10,
        )
        for i in (1, 2, 3)
    ]
    return PartPlan(
        source=SOURCE, part_max_bytes=120, total_bytes=300, total_rows=30, header_bytes=12, parts=parts
    )


def _done(job: str, imported: int, rejected: int) -> dict[str, Any]:
    return {
        "outcome": "completed_with_errors" if rejected else "completed",
        "jobId": job,
        "metrics": {
            "readRows": imported + rejected,
            "validRows": imported,
            "invalidRows": rejected,
            "rowsImported": imported,
            "rowsRejected": rejected,
            "mergedInserts": imported,
            "mergedUpdates": 0,
        },
        "errorSummary": {"INVALID_EMAIL_FORMAT": rejected} if rejected else None,
    }


def _summary(summaries: dict[int, Any], uploads: dict[int, Any] | None = None) -> dict[str, Any]:
    uploads = uploads or {i: {"jobId": f"imp_{i}", "uploadSeconds": 1.5} for i in (1, 2, 3)}
    return combined_summary(
        RUN,
        _plan(),
        summaries,
        uploads,
        None,
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        execution_name="x",
    ).wire()


def test_all_parts_landed_sums_their_metrics_and_lists_them() -> None:
    summary = _summary({1: _done("imp_1", 10, 0), 2: _done("imp_2", 8, 2), 3: _done("imp_3", 9, 1)})
    assert summary["outcome"] == "completed_with_errors"
    assert summary["metrics"]["rowsImported"] == 27 and summary["metrics"]["rowsRejected"] == 3
    assert summary["errorSummary"] == {"INVALID_EMAIL_FORMAT": 3}
    assert [
        (p["index"], p["jobId"], p["bytes"], p["firstRowNumber"], p["rows"], p["outcome"])
        for p in summary["parts"]
    ] == [
        (1, "imp_1", 100, 1, 10, "completed"),
        (2, "imp_2", 100, 11, 10, "completed_with_errors"),
        (3, "imp_3", 100, 21, 10, "completed_with_errors"),
    ]
    assert summary["failedRowRanges"] == [] and summary["timings"]["uploadSeconds"] == 4.5


def test_a_part_that_did_not_land_makes_the_file_partially_failed_naming_its_rows() -> None:
    failed = {"outcome": "failed", "jobId": "imp_2", "message": "The CDP could not import the file: boom."}
    summary = _summary({1: _done("imp_1", 10, 0), 2: failed, 3: _done("imp_3", 10, 0)})
    assert summary["outcome"] == "partially_failed"
    (gap,) = summary["failedRowRanges"]
    assert (gap["part"], gap["firstRowNumber"], gap["lastRowNumber"]) == (2, 11, 20)
    assert gap["sourceBytes"] == {"key": SOURCE.key, "versionId": "v1", "start": 100, "end": 200}
    assert "part 2 (rows 11-20)" in summary["message"] and summary["metrics"]["rowsImported"] == 20
    assert summary["parts"][1]["message"].startswith("The CDP could not import")


def test_no_part_landed_is_failed_and_a_part_never_uploaded_says_so() -> None:
    summary = _summary(
        {1: {"outcome": "failed"}, 2: None, 3: None},
        uploads={1: {"jobId": "imp_1"}, 2: None, 3: {"jobId": "imp_3"}},
    )
    assert summary["outcome"] == "failed"
    assert [p["outcome"] for p in summary["parts"]] == ["failed", "not_uploaded", "not_imported"]
    assert len(summary["failedRowRanges"]) == 3
