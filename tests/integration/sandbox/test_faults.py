"""Fault injection: schedules and rates of 429/500, latency, dropped connections (also mid-upload)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from sandbox.testing import SandboxHandle, running_sandbox

from .helpers import init_job, upload


def test_exact_schedule_of_500s(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given "the next 2 requests to POST /import-jobs answer 500"
    sandbox.admin.set_faults(
        {"rules": [{"method": "POST", "path": "/public/v1/import-jobs", "status": 500, "times": 2}]}
    )
    body = {"objectName": "contacts", "fileName": "a.csv", "fileSize": 1}
    # When posting three times (and a GET in between, which does not match)
    statuses = [api.post("/import-jobs", json=body).status_code for _ in range(2)]
    assert api.get("/metadata/objects/contacts").status_code == 200
    statuses.append(api.post("/import-jobs", json=body).status_code)
    # Then exactly the first two fail, in the envelope, and nothing was created by them
    assert statuses == [500, 500, 201]
    assert len(sandbox.admin.import_jobs()) == 1
    logged = [r["fault"] for r in sandbox.admin.requests(method="POST")]
    assert logged == ["status:500", "status:500", None]


def test_429_with_retry_after(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(
        {"rules": [{"path": "/public/v1/records/*", "status": 429, "retryAfter": 7, "times": 1}]}
    )
    resp = api.post("/records/contacts/append", json={"record": {"email": "a@example.com"}})
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "7"
    assert resp.json()["error"]["code"] == "CDP_ETL.RATE.LIMITED"
    assert resp.json()["correlationId"] == resp.headers["x-correlation-id"]


def test_skip_then_fault(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(
        {"rules": [{"path": "/public/v1/metadata/*", "status": 503, "skip": 1, "times": 1}]}
    )
    assert [api.get("/metadata/objects/contacts").status_code for _ in range(3)] == [200, 503, 200]


def test_rate_is_seeded_and_proportional(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(
        {"seed": 1, "rules": [{"path": "/public/v1/metadata/*", "status": 500, "rate": 0.5}]}
    )
    statuses = [api.get("/metadata/objects/contacts").status_code for _ in range(40)]
    assert 8 <= statuses.count(500) <= 32
    sandbox.admin.set_faults({"rules": [{"path": "/public/v1/metadata/*", "status": 500, "rate": 0}]})
    assert all(api.get("/metadata/objects/contacts").status_code == 200 for _ in range(5))


def test_added_latency(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(
        {"rules": [{"path": "/public/v1/metadata/objects/*", "latencyMs": 300, "times": 1}]}
    )
    began = time.perf_counter()
    assert api.get("/metadata/objects/contacts").status_code == 200
    assert time.perf_counter() - began >= 0.3


def test_dropped_connection_is_a_transport_error_not_a_response(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    sandbox.admin.set_faults({"rules": [{"path": "/public/v1/metadata/*", "drop": "on_request", "times": 1}]})
    with pytest.raises(httpx.TransportError):
        api.get("/metadata/objects/contacts")
    assert api.get("/metadata/objects/contacts").status_code == 200


def test_connection_dropped_mid_upload(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given a 4 MB upload and a rule that reads 256 KB of it then drops the connection
    content = b"x" * (4 * 1024 * 1024)
    slot = init_job(api, "a.csv", content)
    sandbox.admin.set_faults(
        {
            "rules": [
                {"method": "PUT", "path": "/uploads/*", "drop": "mid_body", "afterBytes": 262144, "times": 1}
            ]
        }
    )
    # When uploading
    with pytest.raises(httpx.TransportError):
        upload(slot, content)
    # Then nothing was stored, and a retry of the upload succeeds
    assert sandbox.admin.upload_info(slot["jobId"])["complete"] is False
    assert upload(slot, content).status_code == 200
    assert sandbox.admin.upload_info(slot["jobId"])["bytes"] == len(content)


def test_storage_routes_fault_in_storage_style(api: httpx.Client, sandbox: SandboxHandle) -> None:
    slot = init_job(api, "a.csv", b"abc")
    sandbox.admin.set_faults({"rules": [{"method": "PUT", "path": "/uploads/*", "status": 503, "times": 1}]})
    resp = upload(slot, b"abc")
    assert resp.status_code == 503 and b"SlowDown" in resp.content and resp.headers["Retry-After"] == "1"


def test_admin_routes_are_never_faulted(sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults({"rules": [{"path": "*", "status": 500}]})
    assert sandbox.admin.health()["ok"] is True
    assert sandbox.admin.faults()["rules"][0]["status"] == 500


def test_bad_fault_plans_are_refused(sandbox: SandboxHandle) -> None:
    resp = sandbox.admin.http.put("/faults", json={"rules": [{"path": "*", "status": 200}]})
    assert resp.status_code == 400
    resp = sandbox.admin.http.put(
        "/faults", json={"rules": [{"path": "*", "status": 500, "drop": "on_request"}]}
    )
    assert resp.status_code == 400


def test_fault_plan_file_at_start_survives_reset(tmp_path: Path) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"rules": [{"path": "/public/v1/metadata/*", "status": 500, "times": 1}]}))
    with running_sandbox(faults_file=str(plan)) as sb, sb.api() as api:
        assert api.get("/metadata/objects/contacts").status_code == 500
        assert api.get("/metadata/objects/contacts").status_code == 200
        sb.admin.reset()  # restores the startup plan
        assert api.get("/metadata/objects/contacts").status_code == 500
