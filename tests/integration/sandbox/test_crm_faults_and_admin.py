"""CRM emulator: the shared fault plan on its routes, its admin routes, reset, options and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.testing import SandboxHandle, running_sandbox

from .helpers import crm_upsert, crm_wait

ROOT = Path(__file__).resolve().parents[3]
UPSERT = "/objects/vehicle/batch/upsert"
RECORDS = [{"identifiers": {"ext_id": f"v{i}"}, "attributes": {"model": "A"}} for i in range(3)]


def test_a_429_carries_the_vendors_rate_limit_headers_and_stores_nothing(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given "the next upsert answers 429, retry in 3 s"
    sandbox.admin.set_faults(
        {"rules": [{"path": "/crm/v3/objects/*", "status": 429, "retryAfter": 3, "times": 1}]}
    )
    # When the batch is sent, then sent again
    limited = crm.post(UPSERT, json={"records": RECORDS})
    accepted = crm.post(UPSERT, json={"records": RECORDS})
    # Then the first is a 429 in the vendor's shape with x-sib-ratelimit-reset (no Retry-After), the
    # second lands, and each record is stored once
    assert limited.status_code == 429
    assert limited.headers["x-sib-ratelimit-reset"] == "3" and "retry-after" not in limited.headers
    assert limited.json()["code"] == "too_many_requests"
    crm_wait(crm, accepted.json()["processId"])
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == ["v0", "v1", "v2"]
    # (matched by correlation id: a previous test's last log line may be written after the reset)
    faults = {r["correlationId"]: r["fault"] for r in sandbox.admin.requests(method="POST", path="/crm/")}
    assert faults[limited.headers["x-correlation-id"]] == "status:429"
    assert faults[accepted.headers["x-correlation-id"]] is None


def test_500s_then_success_store_each_record_once(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults(
        {"rules": [{"method": "POST", "path": "/crm/v3/objects/*", "status": 500, "times": 2}]}
    )
    statuses = [crm.post(UPSERT, json={"records": RECORDS}).status_code for _ in range(3)]
    assert statuses == [500, 500, 202]
    assert len(sandbox.admin.crm_processes()) == 1
    crm_wait(crm, sandbox.admin.crm_processes()[0]["id"])
    assert len(sandbox.admin.crm_records("vehicle")) == 3


def test_a_lost_answer_replayed_is_a_second_upsert_with_the_same_effect_by_ext_id(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given the answer to the next upsert is lost after the work is done (the vendor has no Idempotency-Key)
    sandbox.admin.set_faults(
        {"rules": [{"method": "POST", "path": "/crm/v3/objects/*", "drop": "after_processing", "times": 1}]}
    )
    # When the client sees a connection error and sends the same batch again
    with pytest.raises(httpx.TransportError):
        crm.post(UPSERT, json={"records": RECORDS})
    replay = crm.post(UPSERT, json={"records": RECORDS})
    crm_wait(crm, replay.json()["processId"])
    # Then there were two processes, but records keyed by ext_id are stored once (the second updates)
    processes = [crm_wait(crm, p["id"]) for p in sandbox.admin.crm_processes()]
    counts = [
        (p["info"]["object_records"]["created"], p["info"]["object_records"]["updated"]) for p in processes
    ]
    assert counts == [(3, 0), (0, 3)]
    assert len(sandbox.admin.crm_records("vehicle")) == 3


def test_a_connection_dropped_on_request_stores_nothing_and_latency_delays(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    sandbox.admin.set_faults(
        {
            "rules": [
                {"path": "/crm/v3/processes*", "latencyMs": 300, "times": 1},
                {"method": "POST", "path": "/crm/v3/objects/*", "drop": "on_request", "times": 1},
            ]
        }
    )
    with pytest.raises(httpx.TransportError):
        crm.post(UPSERT, json={"records": RECORDS})
    assert sandbox.admin.crm_processes() == []
    began = time.perf_counter()
    assert crm.get("/processes").status_code == 200
    assert time.perf_counter() - began >= 0.3


def test_experiture_faults_do_not_touch_the_crm_routes(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.set_faults({"rules": [{"path": "/public/v1/*", "status": 500}]})
    assert crm.post(UPSERT, json={"records": RECORDS}).status_code == 202


def test_an_injected_process_failure_writes_nothing(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given the next vehicle process fails
    sandbox.admin.fail_next_jobs("crm", object_name="vehicle", error_message="worker lost")
    # When two batches are upserted
    failed = crm_wait(crm, crm.post(UPSERT, json={"records": RECORDS}).json()["processId"])
    done = crm_upsert(crm, "vehicle", RECORDS[:1])
    # Then the first failed whole, the second landed
    assert failed["status"] == "failed" and failed["info"]["object_records"]["error"] == "worker lost"
    assert done["status"] == "completed"
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v0"]


def test_reset_forgets_records_and_processes_and_restores_object_types_and_config(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given records, a new object type, a changed switch
    first = crm_upsert(crm, "vehicle", RECORDS)
    sandbox.admin.crm_set_object_type("owner", ["name"], ["vehicle"])
    sandbox.admin.crm_configure(customObjectsEnabled=False)
    # When the sandbox is reset
    sandbox.admin.reset()
    # Then the CRM side is back to its start, and process ids keep growing
    assert sandbox.admin.crm_records("vehicle") == [] and sandbox.admin.crm_processes() == []
    assert [t["name"] for t in sandbox.admin.crm_object_types()] == ["vehicle", "garage"]
    assert sandbox.admin.crm_config()["customObjectsEnabled"] is True
    assert crm_upsert(crm, "vehicle", RECORDS[:1])["id"] > first["id"]


def test_admin_refuses_bad_object_types_and_config(sandbox: SandboxHandle) -> None:
    for name, body in [("Bad-Name", {"attributes": []}), ("contact", {}), ("ok", {"attributes": "x"})]:
        resp = sandbox.admin.http.put(f"/crm/object-types/{name}", json=body)
        assert resp.status_code == 400, name
    assert sandbox.admin.http.post("/crm/config", json={"unknownObjectTypeStatus": 418}).status_code == 400
    assert sandbox.admin.http.post("/crm/config", json={"typo": 1}).status_code == 400
    sandbox.admin.crm_delete_object_type("garage")
    assert [t["name"] for t in sandbox.admin.crm_object_types()] == ["vehicle"]


def test_options_set_the_key_object_types_and_switches_of_a_private_sandbox() -> None:
    types = {"pet": {"attributes": ["name", "legs"], "associations": []}}
    with running_sandbox(
        crm_api_key="k3y", crm_object_types=types, crm_config={"unknownObjectTypeStatus": 404}
    ) as sb:
        with sb.crm_api() as crm:
            assert crm.headers["api-key"] == "k3y"
            process = crm_upsert(
                crm, "pet", [{"identifiers": {"ext_id": "rex"}, "attributes": {"name": "Rex"}}]
            )
            assert process["status"] == "completed"
            assert crm.post(UPSERT, json={"records": RECORDS}).status_code == 404  # vehicle replaced
        assert sb.admin.crm_records("pet")[0]["attributes"] == {"name": "Rex"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_console_script_serves_the_crm_emulator_too(tmp_path: Path) -> None:
    # Given `experiture-ingest sandbox` started with a CRM key and an object types file
    types_file = tmp_path / "types.json"
    types_file.write_text(json.dumps({"objectTypes": {"pet": {"attributes": ["name"]}}}))
    port = _free_port()
    args = ["sandbox", "--port", str(port), "--speed", "instant", "--crm-api-key", "k3y"]
    args += ["--crm-object-types", str(types_file)]
    uv = ROOT / ".tools" / "bin" / "uv"
    cmd = [str(uv), "run", "--frozen", "--no-sync", "experiture-ingest", *args]
    if not uv.exists():
        cmd = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner = "".join(proc.stdout.readline() for _ in range(8))  # type: ignore[union-attr]
        # Then the banner names the CRM base URL and key, and both object types answer
        assert f"http://127.0.0.1:{port}/crm/v3" in banner and "k3y" in banner
        base = f"http://127.0.0.1:{port}/crm/v3"
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.post(
                    f"{base}/objects/pet/batch/upsert",
                    headers={"api-key": "k3y"},
                    json={"records": [{"attributes": {"name": "Rex"}}]},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert resp.status_code == 202, resp.text
        vehicle = httpx.post(
            f"{base}/objects/vehicle/batch/upsert", headers={"api-key": "k3y"}, json={"records": [{}]}
        )
        assert vehicle.status_code == 202  # the file extends the defaults
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_processing_latency_delays_the_answer_after_the_process_is_queued(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given "the next upsert takes 300 ms after it is queued"
    sandbox.admin.set_faults(
        {"rules": [{"path": "/crm/v3/objects/*", "latencyMs": 300, "phase": "processing", "times": 1}]}
    )
    # When a batch is upserted
    began = time.perf_counter()
    resp = crm.post(UPSERT, json={"records": RECORDS})
    # Then the 202 came late, and the process already existed while the client waited
    assert resp.status_code == 202 and time.perf_counter() - began >= 0.3
    assert crm_wait(crm, resp.json()["processId"])["status"] == "completed"
