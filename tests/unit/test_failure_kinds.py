"""A failed import pages only when the pipeline broke: files whose data the CDP rejected are counted
apart (FilesRejected), never as ImportPipelineFailures (the alarm's metric)."""

from __future__ import annotations

import pytest

from functions.import_job.app import rejected_by_cdp


@pytest.mark.parametrize(
    ("summary", "rejected"),
    [
        # the CDP's verdict on the user's file or mapping
        ({"outcome": "failed", "error": {"type": "SchemaMismatchError", "status": 422}}, True),
        ({"outcome": "failed", "error": {"type": "ValidationError", "status": 400}}, True),
        ({"outcome": "failed", "error": {"type": "ApiError", "status": 422}}, True),
        ({"outcome": "failed", "errorMessage": "row 3: not a CSV"}, True),
        # the pipeline's (credentials, throttling, outages, our own bugs, timeouts)
        ({"outcome": "failed", "error": {"type": "AuthenticationError", "status": 401}}, False),
        ({"outcome": "failed", "error": {"type": "RateLimitedError", "status": 429}}, False),
        ({"outcome": "failed", "error": {"type": "ServerError", "status": 503}}, False),
        ({"outcome": "failed", "error": {"type": "KeyError", "message": "'run'"}}, False),
        ({"outcome": "failed"}, False),
        ({"outcome": "timed_out"}, False),
        ({"outcome": "completed_report_incomplete", "error": {"type": "ServerError"}}, False),
    ],
)
def test_failures_are_told_apart(summary, rejected):
    assert rejected_by_cdp(summary) is rejected
