"""An S3 drop becomes exactly one import job whose uploaded bytes are the object's, byte for byte."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from typing import Any

import pytest

from tests.integration.files.conftest import Env, s3_event

CSV = b"email_address,FirstName,age\na@example.com,Ann,31\nb@example.com,Bob,42\n"
JSONL = b'{"email_address": "a@example.com", "FirstName": "Ann"}\n{"email_address": "b@example.com"}\n'


def _import_jobs(env: Env) -> list[dict[str, Any]]:
    return env.sandbox.admin.import_jobs()


@pytest.mark.parametrize(
    ("key", "body", "fmt", "compression"),
    [
        ("incoming/contacts/2026/04/spring.csv", CSV, "csv", None),
        ("incoming/contacts/spring.jsonl", JSONL, "jsonl", None),
        ("incoming/contacts/spring.csv.gz", gzip.compress(CSV * 50), "csv", "gzip"),
    ],
)
def test_a_dropped_file_becomes_one_import_job_with_identical_bytes(env, invoke, key, body, fmt, compression):
    # Given a supported file dropped under incoming/contacts/ (a versioned bucket: put_object's VersionId)
    event = env.drop(key, body)
    put_version = event["Records"][0]["s3"]["object"]["versionId"]
    assert put_version
    # When the intake handles its ObjectCreated event
    answer = invoke(event)
    # Then the sandbox holds one import job for contacts whose upload is the object, byte for byte
    (job,) = _import_jobs(env)
    assert job["objectName"] == "contacts"
    assert job["fileName"] == key.rsplit("/", 1)[-1]
    assert job["fileSize"] == len(body)
    assert env.sandbox.admin.upload_bytes(job["jobId"]) == body
    assert env.sandbox.admin.upload_info(job["jobId"])["sha256"] == hashlib.sha256(body).hexdigest()
    # And one execution carries the hand-off, the summary and tags say so
    (execution,) = env.executions()
    run = env.execution_input(execution["executionArn"])
    assert run["jobId"] == job["jobId"] and run["objectName"] == "contacts"
    assert run["source"] == {
        "bucket": env.bucket,
        "key": key,
        "versionId": put_version,
        "etag": hashlib.md5(body).hexdigest(),  # S3's ETag of a single-part object
        "size": len(body),
        "format": fmt,
        "compression": compression,
        "sequencer": "01",  # from the S3 event: the queue's order
        "eventTime": "2026-04-21T15:30:00Z",
    }
    summary = env.summary(key)
    assert summary["outcome"] == "uploaded" and summary["jobId"] == job["jobId"]
    assert summary["bytesUploaded"] == len(body) and summary["executionArn"] == execution["executionArn"]
    assert run["intake"]["executionArn"] == execution["executionArn"]  # for the final summary
    assert env.tags(key) == {"experiture-status": "uploaded", "experiture-job-id": job["jobId"]}
    assert answer == {"files": [{"key": key, "outcome": "uploaded", "jobId": job["jobId"]}]}


def test_a_key_with_spaces_and_unicode_is_decoded(env, invoke):
    # Given a key with spaces and non-ASCII characters (the event carries it URL-encoded)
    key = "incoming/contacts/spring sale über 東京.csv"
    event = env.drop(key, CSV)
    assert "+" in event["Records"][0]["s3"]["object"]["key"]
    # When handled
    invoke(event)
    # Then the job names the decoded file and its summary sits at results/<decoded key>.json
    (job,) = _import_jobs(env)
    assert job["fileName"] == "spring sale über 東京.csv"
    assert env.sandbox.admin.upload_bytes(job["jobId"]) == CSV
    assert env.summary(key)["jobId"] == job["jobId"]


def test_the_same_event_twice_makes_one_job_and_one_execution(env, invoke):
    # Given one drop whose event S3 delivers twice
    event = env.drop("incoming/contacts/twice.csv", CSV)
    # When both deliveries are handled one after the other
    first = invoke(event)
    second = invoke(event)
    # Then there is one job, one execution, and the second delivery is reported as a duplicate
    assert len(_import_jobs(env)) == 1
    assert len(env.executions()) == 1
    assert second["files"][0]["outcome"] == "duplicate"
    assert env.summary("incoming/contacts/twice.csv")["jobId"] == first["files"][0]["jobId"]


def test_two_concurrent_identical_events_make_one_job_and_one_execution(env, invoke):
    # Given one drop whose event arrives twice at the same moment
    event = env.drop("incoming/contacts/race.csv", CSV * 2000)
    # (each init answers after 300 ms, so neither delivery can finish before the other has begun)
    env.sandbox.admin.set_faults(
        {"rules": [{"method": "POST", "path": "/public/v1/import-jobs", "latencyMs": 300}]}
    )
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(invoke(event)["files"][0]["outcome"])

    # When two threads handle it concurrently
    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then exactly one import job and one execution exist; one delivery imported, the other was absorbed
    assert len(_import_jobs(env)) == 1
    assert len(env.executions()) == 1
    assert sorted(outcomes) == ["duplicate", "uploaded"]
    (job,) = _import_jobs(env)
    assert env.sandbox.admin.upload_bytes(job["jobId"]) == CSV * 2000
    # And both deliveries really raced through the init: POSTs from both (a 409 IN_PROGRESS answered
    # to one is retried) carrying one Idempotency-Key
    inits = [r for r in env.sandbox.admin.requests(method="POST") if r["path"] == "/public/v1/import-jobs"]
    assert len(inits) >= 2
    assert len({r["idempotencyKey"] for r in inits}) == 1 and inits[0]["idempotencyKey"]


def test_a_new_version_of_the_same_key_is_a_new_import(env, invoke):
    # Given a key imported once, then overwritten with new content (a new version)
    key = "incoming/contacts/daily.csv"
    invoke(env.drop(key, CSV))
    newer = CSV + b"c@example.com,Cy,50\n"
    # When the new version's event arrives
    invoke(env.drop(key, newer))
    # Then a second job carries the new bytes
    jobs = _import_jobs(env)
    assert len(jobs) == 2 and len(env.executions()) == 2
    assert {env.sandbox.admin.upload_bytes(j["jobId"]) for j in jobs} == {CSV, newer}


def test_config_and_metadata_options_reach_the_init(env, invoke):
    # Given a folder config creating a list and a per-file metadata override of the list name
    env.put_config("leads", {"objectName": "contacts", "createList": True, "listName": "Leads"})
    key = "incoming/leads/april.csv"
    event = env.drop(key, CSV, Metadata={"experiture-list-name": "April leads"})
    # When handled
    invoke(event)
    # Then the job targets the configured object with the overridden list name
    (job,) = _import_jobs(env)
    assert (job["objectName"], job["createList"], job["listName"]) == ("contacts", True, "April leads")
    run = env.execution_input(env.executions()[0]["executionArn"])
    assert run["options"]["listName"] == "April leads"


def test_the_folder_config_applies_when_metadata_names_another_object(env, invoke):
    # Given configs for the folder and for the object a file's metadata redirects it to
    env.put_config("leads", {"listName": "From the folder", "createList": True})
    env.put_config("contacts", {"listName": "From the object", "createList": True})
    event = env.drop("incoming/leads/may.csv", CSV, Metadata={"experiture-object-name": "contacts"})
    # When handled
    invoke(event)
    # Then the job goes to the metadata's object with the folder's config (config/<folder>.json)
    (job,) = _import_jobs(env)
    assert (job["objectName"], job["listName"]) == ("contacts", "From the folder")


@pytest.mark.slow
def test_an_expired_upload_slot_is_reinitialized_and_the_abandoned_job_recorded(env, invoke):
    # Given upload slots that live 2 s and a first upload that is held up for 3 s
    env.sandbox.admin.configure(uploadUrlTtlSeconds=2)
    env.sandbox.admin.add_faults(
        {"rules": [{"method": "PUT", "path": "/uploads/*", "latencyMs": 3000, "times": 1}]}
    )
    key = "incoming/contacts/slow.csv"
    # When the intake handles the drop
    invoke(env.drop(key, CSV))
    # Then the first job is abandoned, a fresh one holds the bytes, and the summary names both
    first, second = sorted(_import_jobs(env), key=lambda j: j["createdAt"])
    assert not env.sandbox.admin.upload_info(first["jobId"])["complete"]
    assert env.sandbox.admin.upload_bytes(second["jobId"]) == CSV
    summary = env.summary(key)
    assert summary["jobId"] == second["jobId"] and summary["abandonedJobIds"] == [first["jobId"]]
    run = env.execution_input(summary["executionArn"])
    assert run["intake"]["abandonedJobIds"] == [first["jobId"]]


def test_a_connection_dropped_mid_upload_is_retried_from_byte_zero(env, invoke):
    # Given a slot whose first upload loses its connection after 64 KiB
    env.sandbox.admin.add_faults(
        {
            "rules": [
                {"method": "PUT", "path": "/uploads/*", "drop": "mid_body", "afterBytes": 65536, "times": 1}
            ]
        }
    )
    body = CSV * 20000  # ~1.4 MB: several chunks
    key = "incoming/contacts/dropped.csv"
    # When handled
    invoke(env.drop(key, body))
    # Then the same job received the whole object on a second attempt
    (job,) = _import_jobs(env)
    assert env.sandbox.admin.upload_bytes(job["jobId"]) == body
    summary = env.summary(key)
    assert summary["uploadAttempts"] == 2 and summary["abandonedJobIds"] == []
    puts = env.sandbox.admin.requests(method="PUT", path="/uploads/")
    assert len(puts) == 2 and puts[0]["fault"] is not None and puts[1]["fault"] is None


def test_an_unknown_object_is_rejected_by_the_api_and_reported(env, invoke):
    # Given a folder naming an object the workspace does not have
    key = "incoming/no_such_object/a.csv"
    # When handled
    answer = invoke(env.drop(key, CSV))
    # Then the API's refusal is in the summary (no retry, no execution)
    summary = env.summary(key)
    assert summary["outcome"] == "rejected" and summary["reason"]["status"] == 404
    assert answer["files"][0]["outcome"] == "rejected" and env.executions() == []
    assert env.tags(key)["experiture-status"] == "rejected"


def test_summary_json_is_readable(env, invoke):
    # Given a handled drop, when its summary is read, then it is JSON with the documented fields
    key = "incoming/contacts/fields.ndjson"
    invoke(env.drop(key, JSONL))
    summary = env.summary(key)
    assert {"outcome", "jobId", "objectName", "size", "receivedAt", "uploadedAt", "correlationIds"} <= set(
        summary
    )
    assert json.loads(json.dumps(summary)) == summary


def test_an_unversioned_bucket_is_imported_by_etag(env, invoke):
    # Given a bucket without versioning (events carry no versionId)
    env.s3.create_bucket(Bucket="plain-bucket")
    put = env.s3.put_object(Bucket="plain-bucket", Key="incoming/contacts/plain.csv", Body=CSV)
    event = s3_event("plain-bucket", "incoming/contacts/plain.csv", len(CSV), put["ETag"].strip('"'), None)
    # When the event is delivered twice
    invoke(event)
    second = invoke(event)
    # Then one job holds the bytes and the duplicate is recognised by the ETag identity
    jobs = [j for j in _import_jobs(env) if j["fileName"] == "plain.csv"]
    assert len(jobs) == 1 and env.sandbox.admin.upload_bytes(jobs[0]["jobId"]) == CSV
    assert second["files"][0]["outcome"] == "duplicate"
    summary = json.loads(
        env.s3.get_object(Bucket="plain-bucket", Key="results/incoming/contacts/plain.csv.json")[
            "Body"
        ].read()
    )
    assert summary["versionId"] is None and summary["etag"] == put["ETag"].strip('"')
