"""Idempotency-Key as docs/api-choices.md says: replay, key reuse, in progress, 5xx not stored."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from sandbox.testing import SandboxHandle

from .helpers import wait_batch

BODY = {"records": [{"email": "a@example.com", "tier": "gold"}, {"email": "b@example.com"}]}


def test_same_key_same_body_writes_once_and_replays(api: httpx.Client, sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    # When the same batch is sent twice with one key
    first = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    second = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    # Then the original answer comes back, marked as replayed, and only one job exists
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    wait_batch(api, "contacts", first.json()["data"]["jobId"])
    assert len(sandbox.admin.batch_jobs()) == 1
    assert len(sandbox.admin.records("contacts")) == 2
    logged = sandbox.admin.requests(method="POST", path="/public/v1/records/")
    assert [(r["idempotencyKey"], r["replayed"], r["status"]) for r in logged] == [
        (key, False, 202),
        (key, True, 202),
    ]


def test_single_writes_replay_too(api: httpx.Client, sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    for _ in range(3):
        resp = api.post(
            "/records/events/append",
            headers={"Idempotency-Key": key},
            json={"record": {"event_id": "e1", "event_type": "open", "occurred_at": "2026-01-01T00:00:00Z"}},
        )
        assert resp.status_code == 200
    assert len(sandbox.admin.records("events")) == 1


def test_json_canonicalisation_makes_key_order_irrelevant(api: httpx.Client, sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    a = b'{"records": [{"email": "a@example.com", "tier": "x"}]}'
    b = b'{"records":[{"tier":"x","email":"a@example.com"}]}'
    headers = {"Idempotency-Key": key, "content-type": "application/json"}
    assert api.post("/records/contacts/append-batch", content=a, headers=headers).status_code == 202
    replay = api.post("/records/contacts/append-batch", content=b, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"


def test_same_key_different_body_is_422_key_reused(api: httpx.Client, sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    resp = api.post(
        "/records/contacts/upsert-batch",
        json={"records": [{"email": "z@example.com"}]},
        headers={"Idempotency-Key": key},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "CDP_ETL.IDEMPOTENCY.KEY_REUSED"
    assert len(sandbox.admin.batch_jobs()) == 1


def test_key_is_scoped_to_route_and_client(api: httpx.Client, sandbox: SandboxHandle) -> None:
    key = str(uuid.uuid4())
    body = {"records": [{"email": "a@example.com"}]}
    api.post("/records/contacts/upsert-batch", json=body, headers={"Idempotency-Key": key})
    other_route = api.post("/records/profiles/upsert-batch", json=body, headers={"Idempotency-Key": key})
    sandbox.admin.add_token("other-client", ["cdp:records:write"], client_id="other")
    with sandbox.api(token="other-client") as other:
        other_client = other.post(
            "/records/contacts/upsert-batch", json=body, headers={"Idempotency-Key": key}
        )
    assert other_route.status_code == 202 and "Idempotent-Replayed" not in other_route.headers
    assert other_client.status_code == 202 and "Idempotent-Replayed" not in other_client.headers
    assert len(sandbox.admin.batch_jobs()) == 3


def test_same_key_while_in_progress_is_409_with_retry_after(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a first request held for 1 s after its key is claimed
    sandbox.admin.set_faults(
        {
            "rules": [
                {
                    "method": "POST",
                    "path": "/public/v1/records/*",
                    "latencyMs": 1000,
                    "phase": "processing",
                    "times": 1,
                }
            ]
        }
    )
    key = str(uuid.uuid4())
    results: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: results.append(
            httpx.post(
                f"{sandbox.base_url}/records/contacts/upsert-batch",
                json=BODY,
                headers={"Authorization": f"Bearer {sandbox.token}", "Idempotency-Key": key},
                timeout=10,
            )
        )
    )
    first.start()
    try:
        # When the same key arrives while the first is held
        time.sleep(0.3)
        second = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    finally:
        first.join()
    # Then it is told to retry shortly, and the first completes normally
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "CDP_ETL.IDEMPOTENCY.IN_PROGRESS"
    assert second.headers["Retry-After"] == "1"
    assert results[0].status_code == 202


def test_server_errors_are_not_stored(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given the first attempt answers 500
    sandbox.admin.set_faults(
        {"rules": [{"method": "POST", "path": "/public/v1/records/*", "status": 500, "times": 1}]}
    )
    key = str(uuid.uuid4())
    failed = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    retried = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    # Then the retry is processed for real, once
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "CDP_ETL.INTERNAL_ERROR"
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert len(sandbox.admin.batch_jobs()) == 1


def test_retry_after_a_lost_answer_replays(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given the connection drops after the request was processed
    sandbox.admin.set_faults(
        {
            "rules": [
                {"method": "POST", "path": "/public/v1/import-jobs", "drop": "after_processing", "times": 1}
            ]
        }
    )
    key = str(uuid.uuid4())
    body = {"objectName": "contacts", "fileName": "a.csv", "fileSize": 10}
    with pytest.raises(httpx.TransportError):
        api.post("/import-jobs", json=body, headers={"Idempotency-Key": key})
    # When the client retries with the same key
    retried = api.post("/import-jobs", json=body, headers={"Idempotency-Key": key})
    # Then it gets the original answer and only one job exists
    assert retried.status_code == 201
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert [j["jobId"] for j in sandbox.admin.import_jobs()] == [retried.json()["data"]["jobId"]]


def test_client_errors_are_stored_and_replayed(api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    first = api.post(
        "/records/contacts/append", json={"record": {"email": "bad"}}, headers={"Idempotency-Key": key}
    )
    again = api.post(
        "/records/contacts/append", json={"record": {"email": "bad"}}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == again.status_code == 400
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["k1", "not-a-uuid", "6f1c3c52-9d0e-1c7e-9a43-0d6b8c1f2e55", "x" * 300])
def test_an_idempotency_key_that_is_not_a_uuid4_is_refused(api: httpx.Client, key: str) -> None:
    # The conventions page: "Idempotency-Key header (UUID v4)"
    resp = api.post("/records/contacts/upsert-batch", json=BODY, headers={"Idempotency-Key": key})
    assert resp.status_code == 400
    assert resp.json()["error"]["details"]["path"] == "Idempotency-Key"
