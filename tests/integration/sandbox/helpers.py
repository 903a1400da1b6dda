"""Helpers for the sandbox tests: polling and a whole import in one call."""

from __future__ import annotations

import gzip
import time
from typing import Any

import httpx


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
