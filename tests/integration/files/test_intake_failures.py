"""Failures a user relies on being handled: replayed expired slots, bad credentials, secret URLs."""

from __future__ import annotations

import json
import logging
import time

import pytest

import functions.intake.app as app
from experiture_ingest.client import client_from_env
from experiture_ingest.files.intake import idempotency_key

CSV = b"email_address,FirstName\na@example.com,Ann\n"


@pytest.mark.slow
def test_a_replayed_init_whose_slot_expired_moves_on_to_a_fresh_job_without_uploading(env, invoke):
    # Given a first delivery that created the job (generation 1) but never uploaded, and its slot expired
    env.sandbox.admin.configure(uploadUrlTtlSeconds=1)
    key = "incoming/contacts/retried.csv"
    event = env.drop(key, CSV)
    version = event["Records"][0]["s3"]["object"]["versionId"]
    with env.sandbox.api() as api:
        first = api.post(
            "/import-jobs",
            json={"objectName": "contacts", "fileName": "retried.csv", "fileSize": len(CSV)},
            headers={"Idempotency-Key": idempotency_key(env.bucket, key, version, None)},
        ).json()["data"]["jobId"]
    time.sleep(2.1)
    env.sandbox.admin.configure(uploadUrlTtlSeconds=3600)
    # When the event is delivered again (Lambda's retry)
    invoke(event)
    # Then the replayed job is abandoned without an upload attempt and a fresh job holds the bytes
    summary = env.summary(key)
    assert summary["abandonedJobIds"] == [first] and summary["jobId"] != first
    assert env.sandbox.admin.upload_bytes(summary["jobId"]) == CSV
    assert [r["path"].split("?")[0] for r in env.sandbox.admin.requests(method="PUT")] == [
        f"/uploads/{summary['jobId']}"
    ]


def test_bad_credentials_fail_the_invocation_so_lambda_retries_and_dead_letters(env, invoke, monkeypatch):
    # Given a token the API does not accept
    monkeypatch.setenv("EXPERITURE_API_TOKEN", "wrong-token")
    app.intake.cache_clear()
    client_from_env.cache_clear()
    key = "incoming/contacts/a.csv"
    # When a file is dropped, then the handler raises (Lambda retries, then the on-failure queue)
    with pytest.raises(app.IntakeFailedError, match="incoming/contacts/a.csv"):
        invoke(env.drop(key, CSV))
    # And the user sees why in the summary, and no job exists
    summary = env.summary(key)
    assert summary["outcome"] == "failed" and summary["willRetry"] is True
    assert summary["reason"]["status"] == 401
    assert env.sandbox.admin.import_jobs() == []


def test_a_missing_setting_fails_with_one_line_naming_the_variable(env, invoke, monkeypatch):
    # Given a deployment without the state machine ARN
    monkeypatch.delenv("IMPORT_STATE_MACHINE_ARN")
    app.intake.cache_clear()
    # When invoked, then the error names the variable
    with pytest.raises(Exception, match="IMPORT_STATE_MACHINE_ARN: missing"):
        invoke(env.drop("incoming/contacts/a.csv", CSV))


def test_upload_urls_never_reach_the_logs(env, invoke, caplog):
    # Given an upload that fails once (so retries are logged)
    env.sandbox.admin.add_faults(
        {"rules": [{"method": "PUT", "path": "/uploads/*", "status": 503, "times": 1}]}
    )
    caplog.set_level(logging.DEBUG)
    # When a file is handled
    invoke(env.drop("incoming/contacts/logged.csv", CSV))
    # Then no log line carries a pre-signed query string
    assert env.summary("incoming/contacts/logged.csv")["uploadAttempts"] == 2
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "signature=" not in text and "expires=" not in text


def test_an_s3_read_that_breaks_mid_stream_is_retried_from_byte_zero(env, invoke, monkeypatch):
    # Given a 3 MiB file whose first S3 read stream breaks after its first chunk
    from botocore.exceptions import ResponseStreamingError
    from botocore.response import StreamingBody

    body = b"email\n" + b"someone@example.com\n" * (3 * 1024 * 1024 // 20)
    key = "incoming/contacts/flaky-read.csv"
    event = env.drop(key, body)
    original_read = StreamingBody.read
    reads = {"n": 0}

    def flaky_read(self, amt=None):
        reads["n"] += 1
        if reads["n"] == 2:
            raise ResponseStreamingError(error=ConnectionResetError("connection reset by peer"))
        return original_read(self, amt)

    monkeypatch.setattr(StreamingBody, "read", flaky_read)
    # When the intake handles it
    invoke(event)
    # Then the upload started again from byte 0 with a fresh read, and the slot holds the exact bytes
    summary = env.summary(key)
    assert summary["outcome"] == "uploaded", summary
    assert summary["uploadAttempts"] == 2
    assert env.sandbox.admin.upload_bytes(summary["jobId"]) == body


def test_step_functions_unreachable_is_a_retried_failure_with_a_summary(env, invoke, monkeypatch):
    # Given Step Functions cannot be reached
    from botocore.exceptions import EndpointConnectionError

    def unreachable(**kwargs):
        raise EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com")

    monkeypatch.setattr(app.intake().sfn, "describe_execution", unreachable)
    key = "incoming/contacts/no-sfn.csv"
    # When a file is dropped, then the invocation fails (Lambda retries it, then dead-letters it)
    with pytest.raises(app.IntakeFailedError):
        invoke(env.drop(key, CSV))
    # And the summary says why, without a stack trace, and no import job was created
    summary = env.summary(key)
    assert summary["outcome"] == "failed" and summary["willRetry"] is True
    assert summary["reason"]["code"] == "EndpointConnectionError"
    assert "Traceback" not in json.dumps(summary)
    assert env.sandbox.admin.import_jobs() == []


def test_a_signature_refusal_fails_the_file_naming_the_code_without_a_new_job(env, invoke):
    # Given a storage that refuses every upload with 403 SignatureDoesNotMatch
    env.sandbox.admin.add_faults(
        {"rules": [{"method": "PUT", "path": "/uploads/*", "status": 403, "code": "SignatureDoesNotMatch"}]}
    )
    key = "incoming/contacts/signed.csv"
    event = env.drop(key, CSV)
    # When the intake handles the drop, and Lambda retries it
    for _ in range(2):
        with pytest.raises(app.IntakeFailedError):
            invoke(event)
    # Then the file failed with the storage's code in the reason, and only one job was ever opened
    (job,) = env.sandbox.admin.import_jobs()
    summary = env.summary(key)
    assert summary["outcome"] == "failed" and summary["reason"]["code"] == "SignatureDoesNotMatch"
    assert summary["reason"]["type"] == "UploadRefusedError" and summary["reason"]["status"] == 403
    assert summary["jobId"] == job["jobId"] and summary["abandonedJobIds"] == []
    assert len(env.sandbox.admin.requests(method="PUT", path="/uploads/")) == 2  # one per delivery
    assert "signature=" not in json.dumps(summary)
    assert env.executions() == []


def test_an_expired_slot_403_opens_a_fresh_job(env, invoke):
    # Given a storage whose first answer is S3's for an expired pre-signed URL
    env.sandbox.admin.add_faults(
        {
            "rules": [
                {
                    "method": "PUT",
                    "path": "/uploads/*",
                    "status": 403,
                    "code": "AccessDenied",
                    "message": "Request has expired",
                    "times": 1,
                }
            ]
        }
    )
    key = "incoming/contacts/expired.csv"
    # When the intake handles the drop
    invoke(env.drop(key, CSV))
    # Then the first job is abandoned and a second one holds the bytes
    first, second = sorted(env.sandbox.admin.import_jobs(), key=lambda j: j["createdAt"])
    summary = env.summary(key)
    assert summary["outcome"] == "uploaded" and summary["jobId"] == second["jobId"]
    assert summary["abandonedJobIds"] == [first["jobId"]]
    assert env.sandbox.admin.upload_bytes(second["jobId"]) == CSV


def test_lower_case_slot_headers_upload_with_one_content_type(env, invoke):
    # Given a slot whose headers name content-type in lower case (the docs' own style)
    env.sandbox.admin.configure(uploadHeaders={"content-type": "text/csv", "x-ms-blob-type": "BlockBlob"})
    key = "incoming/contacts/lower.csv"
    # When the intake handles a drop
    invoke(env.drop(key, CSV))
    # Then one job received the file with exactly one Content-Type, the slot's
    (job,) = env.sandbox.admin.import_jobs()
    info = env.sandbox.admin.upload_info(job["jobId"])
    assert info["complete"] and info["contentTypes"] == ["text/csv"]
    assert env.summary(key)["outcome"] == "uploaded"
