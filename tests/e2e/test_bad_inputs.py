"""Bad inputs through the real state machine: each ends in a summary the user can find."""

from __future__ import annotations

from experiture_ingest.files.layout import RESULTS_PREFIX, S3_KEY_MAX_BYTES, errors_key, result_key
from tests.e2e.conftest import BUCKET, Imports


def test_a_key_using_all_1024_bytes_still_gets_its_summary_and_errors_file(imports: Imports):
    # Given a file with a bad row whose key uses all 1,024 bytes S3 allows
    key = "incoming/contacts/" + "k" * (S3_KEY_MAX_BYTES - len("incoming/contacts/") - len(".csv")) + ".csv"
    assert len(key.encode()) == S3_KEY_MAX_BYTES
    body = b"email,first_name\nann@example.com,Ann\nnot-an-email,Bob\n"
    submitted = imports.submit(key, body)
    # When the state machine runs it to its end
    done = imports.finish(submitted)
    # Then the run succeeds, and its summary and errors file sit at keys S3 accepts, side by side
    assert done.execution.status == "SUCCEEDED", done.execution
    assert done.summary["outcome"] == "completed_with_errors" and done.summary["source"]["key"] == key
    listed = imports.aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=RESULTS_PREFIX)["Contents"]
    written = sorted(item["Key"] for item in listed)
    assert written == sorted([result_key(key), errors_key(key)])
    assert all(len(k.encode()) <= S3_KEY_MAX_BYTES for k in written)
    assert result_key(key).removesuffix(".json") == errors_key(key).removesuffix(".errors.jsonl")
    assert done.summary["errorsFile"]["key"] == errors_key(key)
    assert [line["rowNumber"] for line in done.errors_lines or []] == [2]
    assert [r["email"] for r in imports.sandbox.admin.records("contacts")] == ["ann@example.com"]
