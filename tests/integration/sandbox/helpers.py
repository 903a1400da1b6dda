"""Helpers for the sandbox tests: polling, a whole import in one call, the sandbox started as a user
would (``experiture-ingest sandbox`` in its own process)."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``experiture-ingest <args>`` through the console script (uv), else ``cli.main`` in a Python."""
    uv = ROOT / ".tools" / "bin" / "uv"
    cmd = [str(uv), "run", "--frozen", "--no-sync", "experiture-ingest", *args]
    if not uv.exists():
        cmd = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def first_answer(
    proc: subprocess.Popen[str], call: Callable[[], httpx.Response], timeout: float = 20.0
) -> httpx.Response:
    """``call``'s answer once the process listens (it must not exit meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)


def wait_import(api: httpx.Client, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    return _wait_terminal(api, f"/import-jobs/{job_id}", timeout)


def wait_batch(api: httpx.Client, obj: str, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    return _wait_terminal(api, f"/records/{obj}/jobs/{job_id}", timeout)


def _wait_terminal(api: httpx.Client, path: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = api.get(path).json()["data"]
        if data["state"] in ("completed", "failed"):
            return data
        assert time.monotonic() < deadline, f"{path} still {data['state']}"
        time.sleep(0.02)


def init_job(
    api: httpx.Client, file_name: str, content: bytes, obj: str = "contacts", **extra: Any
) -> dict[str, Any]:
    resp = api.post(
        "/import-jobs", json={"objectName": obj, "fileName": file_name, "fileSize": len(content), **extra}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


def upload(slot: dict[str, Any], content: bytes, **headers: str) -> httpx.Response:
    return httpx.put(slot["uploadUrl"], content=content, headers={**slot["headers"], **headers})


CONTACT_FIELDS = {"email_address": "string", "FirstName": "string", "age": "integer", "signup_ts": "datetime"}
CONTACT_MAP = {"email_address": "email", "FirstName": "first_name", "age": "age", "signup_ts": "signed_up_at"}


def run_import(
    api: httpx.Client,
    file_name: str,
    content: bytes,
    *,
    obj: str = "contacts",
    source_fields: dict[str, str] | None = None,
    field_map: dict[str, str] | None = None,
    mode: str | None = None,
    init_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """init -> upload -> mapping -> start -> wait; returns the final status data (plus jobId)."""
    slot = init_job(api, file_name, content, obj, **(init_extra or {}))
    assert upload(slot, content).status_code == 200
    body: dict[str, Any] = {
        "sourceFields": source_fields or CONTACT_FIELDS,
        "fieldMap": field_map or CONTACT_MAP,
    }
    if mode:
        body["importMode"] = mode
    resp = api.post(f"/import-jobs/{slot['jobId']}/mapping", json=body)
    assert resp.status_code == 200, resp.text
    resp = api.post(f"/import-jobs/{slot['jobId']}/start", json={})
    assert resp.status_code == 200, resp.text
    result = wait_import(api, slot["jobId"])
    result["jobId"] = slot["jobId"]
    return result


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def crm_wait(crm: httpx.Client, process_id: int, timeout: float = 10.0) -> dict[str, Any]:
    """Poll GET /processes/{id} on the CRM emulator until the process is completed or failed."""
    deadline = time.monotonic() + timeout
    while True:
        resp = crm.get(f"/processes/{process_id}")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        if doc["status"] in ("completed", "failed"):
            return doc
        assert time.monotonic() < deadline, f"process {process_id} still {doc['status']}"
        time.sleep(0.02)


def crm_upsert(crm: httpx.Client, object_type: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch upsert that must be accepted; the completed process."""
    resp = crm.post(f"/objects/{object_type}/batch/upsert", json={"records": records})
    assert resp.status_code == 202, resp.text
    return crm_wait(crm, resp.json()["processId"])
