"""Every refusal writes its summary, tags the source when it can, and sends nothing to the API."""

from __future__ import annotations

import gzip
import os

import pytest

import functions.intake.app as app

CSV = b"email_address\na@example.com\n"


def _no_api_traffic(env) -> None:
    assert env.sandbox.admin.requests() == []
    assert env.sandbox.admin.import_jobs() == []
    assert env.executions() == []


@pytest.mark.parametrize(
    ("key", "body", "code"),
    [
        ("incoming/contacts/notes.txt", CSV, "UNSUPPORTED_FORMAT"),
        ("incoming/contacts/archive.zip", CSV, "UNSUPPORTED_FORMAT"),
        ("incoming/contacts/empty.csv", b"", "EMPTY_OBJECT"),
        ("incoming/contacts/2026/", b"", "FOLDER_MARKER"),
        ("uploads/contacts/a.csv", CSV, "OUTSIDE_INCOMING"),
        ("incoming/a.csv", CSV, "NO_OBJECT_FOLDER"),
    ],
)
def test_bad_input_is_refused_with_a_summary_and_no_api_call(env, invoke, key, body, code):
    # Given an object the intake must not import
    event = env.drop(key, body)
    # When its event is handled
    answer = invoke(event)
    # Then results/<key>.json explains the refusal, and the API heard nothing
    summary = env.summary(key)
    assert summary["outcome"] == "refused" and summary["reason"]["code"] == code
    assert summary["reason"]["message"]
    assert answer["files"][0]["outcome"] == "refused"
    _no_api_traffic(env)
    # And files under incoming/ are tagged refused (the object itself is left as it was)
    if key.startswith("incoming/"):
        assert env.tags(key) == {"experiture-status": "refused"}
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == body


def test_a_file_over_the_part_size_is_handed_off_to_be_split_without_any_job_yet(env, invoke, monkeypatch):
    # Given parts of 1 MiB
    monkeypatch.setenv("INTAKE_PART_MAX_BYTES", str(1024**2))
    app.intake.cache_clear()
    key = "incoming/contacts/big.csv"
    body = b"email\n" + b"a@example.com\n" * 80_000
    # When a larger CSV is dropped
    answer = invoke(env.drop(key, body))
    # Then the state machine gets the split hand-off, the summary says so, and no job exists yet
    assert answer["files"][0]["outcome"] == "splitting"
    (execution,) = env.executions()
    handed = env.execution_input(execution["executionArn"])
    assert handed["split"]["partMaxBytes"] == 1024**2 and handed["split"]["source"]["size"] == len(body)
    summary = env.summary(key)
    assert summary["outcome"] == "splitting" and "over the part size of 1048576 bytes" in summary["message"]
    _no_api_traffic_but_the_execution(env)


def test_a_gzip_file_over_the_part_size_is_refused_naming_its_size_and_the_fix(env, invoke, monkeypatch):
    # Given parts of 1 MiB and a gzip file a little larger (gzip cannot be cut without inflating it all)
    monkeypatch.setenv("INTAKE_PART_MAX_BYTES", str(1024**2))
    app.intake.cache_clear()
    key = "incoming/contacts/big.csv.gz"
    body = gzip.compress(b"email\n" + os.urandom(1024**2).hex().encode(), compresslevel=1)
    # When it is dropped
    invoke(env.drop(key, body))
    # Then it is refused before any job: the reason names its size, the part size and what to do
    summary = env.summary(key)
    assert summary["reason"]["code"] == "GZIP_TOO_LARGE"
    message = summary["reason"]["message"]
    assert f"{len(body)} bytes" in message and "1048576 bytes" in message
    assert "before compressing" in message and "Parquet" in message
    _no_api_traffic(env)


def _no_api_traffic_but_the_execution(env) -> None:
    assert env.sandbox.admin.requests() == []
    assert env.sandbox.admin.import_jobs() == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{not json", "config/contacts.json is not valid JSON"),
        ({"createList": True}, "listName is required when createList is true"),
        ({"importMode": "fastest"}, "importMode"),
        ({"listNmae": "typo"}, "listNmae"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_malformed_config_document_is_a_refusal_with_the_validation_message(
    env, invoke, document, expected
):
    # Given a malformed config/contacts.json
    env.put_config("contacts", document)
    key = "incoming/contacts/a.csv"
    # When a file is dropped for contacts
    invoke(env.drop(key, CSV))
    # Then the refusal carries the validation message and nothing reached the API
    summary = env.summary(key)
    assert summary["outcome"] == "refused" and summary["reason"]["code"] == "INVALID_CONFIG"
    assert expected in summary["reason"]["message"]
    _no_api_traffic(env)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"experiture-colour": "blue"}, "unknown S3 metadata key experiture-colour"),
        ({"experiture-options": "{oops"}, "experiture-options is not valid JSON"),
        ({"experiture-create-list": "maybe"}, "createList"),
    ],
)
def test_malformed_metadata_is_a_refusal(env, invoke, metadata, expected):
    # Given a file whose experiture-* metadata is malformed
    key = "incoming/contacts/meta.csv"
    # When handled
    invoke(env.drop(key, CSV, Metadata=metadata))
    # Then it is refused with the reason and nothing reached the API
    summary = env.summary(key)
    assert summary["reason"]["code"] == "INVALID_METADATA" and expected in summary["reason"]["message"]
    _no_api_traffic(env)
