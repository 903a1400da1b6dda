"""Records API: single and batch writes, merge semantics, limits and batch job progress."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from sandbox.testing import SandboxHandle

from .helpers import wait_batch


def test_single_append_and_upsert(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given an empty contacts object
    # When appending one record and upserting a change to it
    appended = api.post(
        "/records/contacts/append", json={"record": {"email": "john@example.com", "first_name": "John"}}
    )
    upserted = api.post(
        "/records/contacts/upsert",
        json={
            "record": {"email": "john@example.com", "last_seen": "2026-04-21T15:30:00Z"},
            "matchKey": "email",
        },
    )
    # Then the answers follow the docs and one merged record is stored
    assert appended.status_code == 200
    data = appended.json()["data"]
    assert data["operation"] == "append" and data["accepted"] is True and data["acceptedRecords"] == 1
    assert "matchKey" not in data
    assert upserted.json()["data"]["matchKey"] == "email"
    assert sandbox.admin.records("contacts") == [
        {"email": "john@example.com", "first_name": "John", "last_seen": "2026-04-21T15:30:00Z"}
    ]


def test_single_upsert_defaults_match_key_to_primary_key(api: httpx.Client) -> None:
    resp = api.post(
        "/records/orders/upsert",
        json={
            "record": {
                "order_id": "o1",
                "email": "a@example.com",
                "amount": 3.5,
                "ordered_at": "2026-01-01T00:00:00+02:00",
            }
        },
    )
    assert resp.status_code == 200
    assert resp.json()["data"]["matchKey"] == "order_id"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "record"),
        ({"record": {}}, "record"),
        ({"record": "x"}, "record"),
        ({"record": {"email": "not-an-email"}}, "record.email"),
        ({"record": {"email": "a@example.com", "age": "12"}}, "record.age"),
        (
            {"record": {"email": "a@example.com", "signed_up_at": "2026-01-01T00:00:00"}},
            "record.signed_up_at",
        ),
        ({"record": {"first_name": "No key"}}, "record.email"),
    ],
)
def test_single_write_value_errors_are_400_with_path(api: httpx.Client, body: dict, path: str) -> None:
    resp = api.post("/records/contacts/upsert", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "CDP_ETL.VALIDATION.REQUEST_INVALID"
    assert resp.json()["error"]["details"]["path"] == path


def test_fields_not_in_schema_are_422_schema_mismatch(api: httpx.Client) -> None:
    single = api.post("/records/contacts/append", json={"record": {"email": "a@example.com", "shoe_size": 9}})
    batch = api.post(
        "/records/contacts/upsert-batch", json={"records": [{"email": "a@example.com"}, {"nope": 1}]}
    )
    key = api.post(
        "/records/contacts/upsert-batch", json={"records": [{"email": "a@example.com"}], "matchKey": "x"}
    )
    assert single.status_code == 422
    assert single.json()["error"]["code"] == "CDP_ETL.VALIDATION.SCHEMA_MISMATCH"
    assert single.json()["error"]["details"]["path"] == "record.shoe_size"
    assert batch.json()["error"]["details"]["path"] == "records[1].nope"
    assert key.status_code == 422 and key.json()["error"]["details"]["path"] == "matchKey"


def test_unknown_object_is_404(api: httpx.Client) -> None:
    for path in ("/records/unicorns/append", "/records/unicorns/upsert-batch"):
        resp = api.post(path, json={"records": [{"a": 1}], "record": {"a": 1}})
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "CDP_ETL.OBJECT.NOT_FOUND"


def test_batch_limits(api: httpx.Client) -> None:
    # Given batches outside the documented limits
    empty = api.post("/records/contacts/append-batch", json={"records": []})
    too_many = api.post(
        "/records/contacts/append-batch", json={"records": [{"email": "a@example.com"}] * 10_001}
    )
    wide = api.post("/records/events/append-batch", json={"records": [{f"f{i}": 1 for i in range(501)}]})
    big = api.post(
        "/records/contacts/append-batch",
        content=json.dumps({"records": [{"first_name": "x" * 1100}] * 10_000}).encode(),
        headers={"content-type": "application/json"},
    )
    # Then each is refused with the documented status
    assert empty.status_code == 400 and empty.json()["error"]["details"]["path"] == "records"
    assert too_many.status_code == 400
    assert wide.status_code == 400 and wide.json()["error"]["details"]["path"] == "records[0]"
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "CDP_ETL.VALIDATION.PAYLOAD_TOO_LARGE"
    assert big.json()["error"]["details"]["limit"] == 10 * 1024 * 1024


def test_ten_thousand_records_are_accepted(api: httpx.Client, sandbox: SandboxHandle) -> None:
    records = [{"email": f"u{i}@example.com", "age": i} for i in range(10_000)]
    resp = api.post("/records/contacts/upsert-batch", json={"records": records})
    assert resp.status_code == 202
    job = wait_batch(api, "contacts", resp.json()["data"]["jobId"])
    assert job["metrics"]["mergedInserts"] == 10_000
    assert len(sandbox.admin.records("contacts")) == 10_000


def test_upsert_batch_merge_semantics(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given two stored contacts
    api.post("/records/contacts/upsert", json={"record": {"email": "a@example.com", "tier": "gold"}})
    api.post("/records/contacts/upsert", json={"record": {"email": "b@example.com", "tier": "silver"}})
    # When a batch repeats one unchanged, changes the other, adds one and has one bad row
    resp = api.post(
        "/records/contacts/upsert-batch",
        json={
            "records": [
                {"email": "a@example.com", "tier": "gold"},
                {"email": "b@example.com", "tier": "gold"},
                {"email": "c@example.com", "tier": "bronze"},
                {"email": "d@example.com", "age": "old"},
            ]
        },
    )
    accepted = resp.json()["data"]
    assert resp.status_code == 202
    assert (
        accepted["state"] == "queued" and accepted["matchKey"] == "email" and accepted["acceptedRecords"] == 4
    )
    assert accepted["statusPath"] == f"/public/v1/records/contacts/jobs/{accepted['jobId']}"
    job = wait_batch(api, "contacts", accepted["jobId"])
    # Then the metrics say retained/updated/inserted/invalid and the store agrees
    assert job["state"] == "completed"
    assert job["metrics"] == {
        "readRows": 4,
        "validRows": 3,
        "invalidRows": 1,
        "mergedInserts": 1,
        "mergedUpdates": 1,
        "mergedRetained": 1,
    }
    assert (job["rowsTotal"], job["rowsImported"], job["rowsRejected"]) == (4, 3, 1)
    assert job["successRate"] == 0.75
    assert job["errorSummary"] == {"VALIDATION_TYPE_MISMATCH": 1}
    assert job["errorMessage"] is None
    for key in (
        "jobId",
        "objectName",
        "stage",
        "fileName",
        "fileSize",
        "createdAt",
        "startedAt",
        "completedAt",
        "updatedAt",
    ):
        assert key in job
    stored = {r["email"]: r for r in sandbox.admin.records("contacts")}
    assert stored["b@example.com"]["tier"] == "gold"
    assert set(stored) == {"a@example.com", "b@example.com", "c@example.com"}


def test_append_batch_always_inserts_and_echoes_null_match_key(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    rows = [{"event_id": "e1", "event_type": "click", "occurred_at": "2026-01-01T00:00:00Z"}] * 2
    resp = api.post("/records/events/append-batch", json={"records": rows})
    assert resp.json()["data"]["matchKey"] is None
    job = wait_batch(api, "events", resp.json()["data"]["jobId"])
    assert job["metrics"]["mergedInserts"] == 2
    assert job["errorSummary"] is None
    assert len(sandbox.admin.records("events")) == 2


def test_batch_row_errors_use_the_documented_codes(api: httpx.Client) -> None:
    rows = [
        {"order_id": "1", "email": "bad", "amount": 1, "ordered_at": "2026-01-01T00:00:00Z"},
        {"order_id": "2", "email": "a@example.com", "ordered_at": "2026-01-01T00:00:00Z"},
        {"email": "a@example.com", "amount": 1, "ordered_at": "2026-01-01T00:00:00Z"},
        {"order_id": "4", "email": "a@example.com", "amount": "1", "ordered_at": "2026-01-01T00:00:00Z"},
    ]
    job = wait_batch(
        api,
        "orders",
        api.post("/records/orders/upsert-batch", json={"records": rows}).json()["data"]["jobId"],
    )
    assert job["errorSummary"] == {
        "INVALID_EMAIL_FORMAT": 1,
        "REQUIRED_FIELD_MISSING": 1,
        "MATCH_KEY_MISSING": 1,
        "VALIDATION_TYPE_MISMATCH": 1,
    }
    assert job["successRate"] == 0.0


def test_batch_jobs_move_queued_running_completed_over_time(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given jobs that wait 0.3 s queued and 0.3 s running
    sandbox.admin.configure(queueSeconds=0.3, batchJobSeconds=0.3)
    resp = api.post("/records/contacts/append-batch", json={"records": [{"email": "a@example.com"}]})
    job_id = resp.json()["data"]["jobId"]
    # When polling
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = api.get(f"/records/contacts/jobs/{job_id}").json()["data"]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "completed":
            break
        time.sleep(0.03)
    # Then every state was observed in order, and rows land only at completion
    assert seen == ["queued", "running", "completed"]
    assert len(sandbox.admin.records("contacts")) == 1


def test_batch_jobs_can_be_made_to_fail(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given the next batch job is told to fail
    sandbox.admin.fail_next_jobs("batch", error_message="merge worker lost")
    resp = api.post("/records/contacts/upsert-batch", json={"records": [{"email": "a@example.com"}]})
    job = wait_batch(api, "contacts", resp.json()["data"]["jobId"])
    # Then it ends failed with the message and writes nothing; the next one succeeds
    assert job["state"] == "failed" and job["errorMessage"] == "merge worker lost"
    assert sandbox.admin.records("contacts") == []
    resp = api.post("/records/contacts/upsert-batch", json={"records": [{"email": "a@example.com"}]})
    assert wait_batch(api, "contacts", resp.json()["data"]["jobId"])["state"] == "completed"


def test_admin_can_fail_a_running_batch_job(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(batchJobSeconds=5)
    job_id = api.post(
        "/records/contacts/append-batch", json={"records": [{"email": "a@example.com"}]}
    ).json()["data"]["jobId"]
    sandbox.admin.fail_job(job_id, "disk full")
    job = wait_batch(api, "contacts", job_id)
    assert job["state"] == "failed" and job["errorMessage"] == "disk full"
    assert sandbox.admin.records("contacts") == []


def test_unknown_batch_job_is_404(api: httpx.Client) -> None:
    resp = api.get("/records/contacts/jobs/job_nope")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "CDP_ETL.NOT_FOUND"
