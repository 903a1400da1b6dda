"""Admin inspection, reset, schema files, data-dir persistence and the console script."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sandbox.testing import SandboxHandle, running_sandbox

from .helpers import first_answer, free_port, start_cli, wait_batch


def test_admin_lists_records_jobs_and_requests_then_reset_clears(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    key = str(uuid.uuid4())
    api.post(
        "/records/contacts/upsert",
        json={"record": {"email": "a@example.com"}},
        headers={"Idempotency-Key": key},
    )
    job_id = api.post(
        "/records/contacts/append-batch", json={"records": [{"email": "b@example.com"}]}
    ).json()["data"]["jobId"]
    wait_batch(api, "contacts", job_id)
    rows = sandbox.admin.record_rows("contacts")
    assert [r["data"]["email"] for r in rows] == ["a@example.com", "b@example.com"]
    assert rows[1]["source"] == f"job:{job_id}"
    assert [j["jobId"] for j in sandbox.admin.batch_jobs()] == [job_id]
    reqs = sandbox.admin.requests(method="POST")
    assert reqs[0]["idempotencyKey"] == key and reqs[0]["clientId"] == "static-token"
    assert all(r["correlationId"] for r in reqs)
    # And the records are in a SQLite file any tool can open
    with sqlite3.connect(sandbox.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM records WHERE object = 'contacts'").fetchone()[0] == 2
    sandbox.admin.reset()
    assert sandbox.admin.records("contacts") == []
    assert sandbox.admin.jobs() == {"batchJobs": [], "importJobs": []}
    assert sandbox.admin.requests() == []


def test_custom_object_schema_via_admin(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_schema(
        "stores",
        {
            "primaryKey": "store_id",
            "fields": [
                {"name": "store_id", "type": "integer"},
                {"name": "open", "type": "boolean", "required": True},
            ],
        },
    )
    meta = api.get("/metadata/objects/stores").json()["data"]
    assert meta["primaryKey"] == "store_id" and meta["fields"][0]["required"] is True
    assert (
        api.post("/records/stores/upsert", json={"record": {"store_id": 1, "open": True}}).status_code == 200
    )
    assert api.post("/records/stores/upsert", json={"record": {"store_id": 2}}).status_code == 400


def test_schema_file_and_data_dir_persist_across_restarts(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas.json"
    schemas.write_text(
        json.dumps(
            {
                "objects": {
                    "pets": {
                        "primaryKey": "name",
                        "fields": [{"name": "name", "type": "string"}, {"name": "legs", "type": "integer"}],
                    }
                }
            }
        )
    )
    data_dir = tmp_path / "state"
    with running_sandbox(schemas_file=str(schemas), data_dir=str(data_dir)) as sb, sb.api() as api:
        assert (
            api.post("/records/pets/upsert", json={"record": {"name": "Rex", "legs": 4}}).status_code == 200
        )
        assert api.get("/metadata/objects/contacts").status_code == 200  # defaults still there
    with running_sandbox(schemas_file=str(schemas), data_dir=str(data_dir)) as sb:
        assert sb.admin.records("pets") == [{"name": "Rex", "legs": 4}]
    assert (data_dir / "sandbox.sqlite3").exists()


def test_realistic_speed_takes_time(tmp_path: Path) -> None:
    with running_sandbox(speed=10) as sb, sb.api() as api:  # ten times faster than realistic
        cfg = sb.admin.config()
        assert cfg["queueSeconds"] == pytest.approx(0.1) and cfg["batchJobSeconds"] == pytest.approx(0.2)
        began = time.monotonic()
        job_id = api.post(
            "/records/contacts/append-batch", json={"records": [{"email": "a@example.com"}]}
        ).json()["data"]["jobId"]
        assert wait_batch(api, "contacts", job_id)["state"] == "completed"
        assert time.monotonic() - began >= 0.3


@pytest.mark.slow
def test_console_script_serves_the_sandbox(tmp_path: Path) -> None:
    # Given `experiture-ingest sandbox` started as a user would
    port = free_port()
    proc = start_cli(
        "sandbox", "--port", str(port), "--token", "t0ken", "--speed", "instant", "--data-dir", str(tmp_path)
    )
    try:
        banner = proc.stdout.readline() + proc.stdout.readline()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/public/v1" in banner
        assert "t0ken" in banner
        resp = first_answer(
            proc,
            lambda: httpx.get(
                f"http://127.0.0.1:{port}/public/v1/metadata/objects/contacts",
                headers={"Authorization": "Bearer t0ken"},
            ),
        )
        # Then it answers with the envelope and keeps state in the data dir
        assert resp.status_code == 200 and resp.json()["data"]["objectName"] == "contacts"
        assert (tmp_path / "sandbox.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
