"""Start a sandbox for a test and inspect it.

Usage::

    from sandbox.testing import running_sandbox

    with running_sandbox() as sb:            # free loopback port, background thread, temp data dir
        client = httpx.Client(base_url=sb.base_url, headers={"Authorization": f"Bearer {sb.token}"})
        client.post("/records/contacts/upsert", json={"record": {"email": "a@example.com"}})
        assert sb.admin.records("contacts") == [{"email": "a@example.com"}]

``running_sandbox(**options)`` takes the fields of :class:`sandbox.config.SandboxOptions`
(``token``, ``speed`` = "instant" | "realistic" | factor, ``data_dir``, ``schemas_file``, ``faults``
(a plan dict), ``faults_file``, ``clients`` (list of OAuthClient), ``config`` (RuntimeConfig keys such
as ``{"maxRunningImports": 2, "uploadHeaders": {"x-ms-blob-type": "BlockBlob"}}``)).

The handle (:class:`SandboxHandle`) has ``base_url`` (".../public/v1"), ``root_url``, ``token_url``,
``token``, ``admin_token``, ``data_dir``, ``db_path``, ``client_id``/``client_secret`` (the default OAuth client),
``api()`` (an httpx.Client with the bearer token and base_url) and ``admin`` (:class:`Admin`):

- ``records(obj)`` -> list of stored record dicts; ``record_rows(obj)`` -> rows with id/timestamps/source
- ``jobs()`` -> {"batchJobs": [...], "importJobs": [...]}; ``job(job_id)``; ``import_jobs()``;
  ``batch_jobs()``
- ``wait_job(job_id, timeout=10)`` -> the job once completed/failed
- ``requests(method=None, path=None)`` -> requests received (method, path, status, idempotencyKey,
  replayed, correlationId, clientId, fault, durationMs), oldest first; ``path`` is a prefix
- ``upload_info(job_id)`` -> {complete, bytes, sha256, uploadedAt, contentTypes (every Content-Type
  value the last complete upload carried), path, exists}; ``upload_bytes(job_id)``
- ``import_timeline()`` -> one entry per import job that started, in start order: {jobId, objectName,
  fileName, state, startedAt, finishedAt (None while running), startSeq, finishSeq}; the ``*Seq``
  numbers order every start and finish in one sequence (in commit order, finer than timestamps)
- ``set_faults(plan)`` (replace), ``add_faults(plan)``, ``clear_faults()``, ``faults()``;
  plan = {"rules": [...], "jobFailures": [...]} (see sandbox.faults)
- ``fail_next_jobs(kind, times=1, object_name=None, error_message=...)``: kind "batch" | "import"
- ``fail_job(job_id, error_message=...)``: a non-terminal job ends failed now
- ``configure(**changes)`` -> RuntimeConfig (queueSeconds, batchJobSeconds, importJobSeconds,
  maxRunningImports, uploadUrlTtlSeconds, errorFileUrlTtlSeconds, singlePutLimitBytes, uploadHeaders,
  concurrencyRefusal ("429" | "429-rate" | "409"), cacheRefusals (bool), ...)
- ``add_token(token, scopes, expires_in=None, client_id=None)``; ``add_client(client_id, secret, scopes=None,
  token_ttl=None)``
- ``set_schema(obj, {"primaryKey": ..., "fields": [...]})``; ``lists()``; ``audiences()``; ``templates()``
- ``reset()``: forget all state and restore the startup config, tokens and faults

Timeline checks (plain functions over ``admin.import_timeline()``):

- ``peak_running(timeline, object_name=None)`` -> the most import jobs running at once (on one object)
- ``peak_running_per_object(timeline)`` -> {objectName: the most jobs running at once on it}
- ``start_order(timeline, object_name=None, field="fileName")`` -> that field of each job, in start order

The CRM emulator (docs/sandbox.md, "CRM emulator"): ``running_sandbox`` also takes ``crm_api_key``,
``crm_object_types`` ({name: {"attributes": [...], "associations": [...]}}, replacing the defaults),
``crm_object_types_file`` and ``crm_config``; the handle has ``crm_base_url`` (".../crm/v3"),
``crm_api_key`` and ``crm_api()`` (an httpx.Client with the ``api-key`` header), and ``admin`` has:

- ``crm_records(object_type)`` -> stored records {id, ext_id, attributes, associations, createdAt, updatedAt}
- ``crm_object_types()``; ``crm_set_object_type(name, attributes, associations=())``;
  ``crm_delete_object_type(name)``
- ``crm_processes()``, ``crm_process(id)`` (with ``ignoredAttributes`` and timestamps);
  ``wait_crm_process(id, timeout=10)`` -> the process once completed/failed
- ``crm_configure(**changes)`` -> the CRM config (customObjectsEnabled, unknownObjectTypeStatus,
  bodyTooLargeStatus, maxBodyBytes, associationLimitScope, associationCheck, reportRejections,
  queueSeconds, processSeconds); ``crm_config()``
- ``fail_next_jobs("crm", object_name=object_type)``: the next process ends ``failed``, writing nothing
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandbox.admin import ADMIN_TOKEN_HEADER
from sandbox.config import SandboxOptions
from sandbox.server import API_PREFIX, CRM_PREFIX, BackgroundServer, start_in_thread


class Admin:
    """A small client for ``/_sandbox/`` on one sandbox (sends its admin token)."""

    def __init__(self, root_url: str, admin_token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{root_url}/_sandbox", timeout=30, headers={ADMIN_TOKEN_HEADER: admin_token}
        )

    def close(self) -> None:
        self.http.close()

    def _get(self, url: str, **params: Any) -> Any:
        resp = self.http.get(url, params={k: v for k, v in params.items() if v is not None})
        resp.raise_for_status()
        return resp.json()

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.http.request(method, path, json=body)
        resp.raise_for_status()
        return resp.json()

    def health(self) -> dict[str, Any]:
        return self._get("/health")

    def reset(self) -> None:
        self._send("POST", "/reset")

    def records(self, obj: str) -> list[dict[str, Any]]:
        return [row["data"] for row in self.record_rows(obj)]

    def record_rows(self, obj: str) -> list[dict[str, Any]]:
        return self._get(f"/objects/{obj}/records")["records"]

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        return self._get("/jobs")

    def batch_jobs(self) -> list[dict[str, Any]]:
        return self.jobs()["batchJobs"]

    def import_jobs(self) -> list[dict[str, Any]]:
        return self.jobs()["importJobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}")

    def wait_job(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.job(job_id)
            if doc["state"] in ("completed", "failed"):
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {doc['state']} after {timeout} s")
            time.sleep(0.02)

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        return self._get("/requests", method=method, path=path)["requests"]

    def import_timeline(self) -> list[dict[str, Any]]:
        return self._get("/import-timeline")["timeline"]

    def upload_info(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/import-jobs/{job_id}/upload-info")

    def upload_bytes(self, job_id: str) -> bytes:
        resp = self.http.get(f"/import-jobs/{job_id}/upload")
        resp.raise_for_status()
        return resp.content

    def faults(self) -> dict[str, Any]:
        return self._get("/faults")

    def set_faults(self, plan: dict[str, Any]) -> dict[str, Any]:
        return self._send("PUT", "/faults", plan)

    def add_faults(self, plan: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/faults", plan)

    def clear_faults(self) -> None:
        self._send("DELETE", "/faults")

    def fail_next_jobs(
        self, kind: str, times: int = 1, object_name: str | None = None, error_message: str | None = None
    ) -> None:
        failure: dict[str, Any] = {"kind": kind, "times": times, "objectName": object_name}
        if error_message:
            failure["errorMessage"] = error_message
        self.add_faults({"jobFailures": [failure]})

    def fail_job(self, job_id: str, error_message: str = "failed by the sandbox admin") -> None:
        self._send("POST", f"/jobs/{job_id}/fail", {"errorMessage": error_message})

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._send("POST", "/config", changes)

    def config(self) -> dict[str, Any]:
        return self._get("/config")

    def add_token(
        self, token: str, scopes: list[str], expires_in: float | None = None, client_id: str | None = None
    ) -> None:
        self._send(
            "POST",
            "/tokens",
            {"token": token, "scopes": scopes, "expiresIn": expires_in, "clientId": client_id},
        )

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        scopes: list[str] | None = None,
        token_ttl: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"clientId": client_id, "clientSecret": client_secret, "tokenTtl": token_ttl}
        if scopes is not None:
            body["scopes"] = scopes
        self._send("POST", "/clients", body)

    def set_schema(self, obj: str, schema: dict[str, Any]) -> dict[str, Any]:
        return self._send("PUT", f"/objects/{obj}", schema)

    def lists(self) -> list[dict[str, Any]]:
        return self._get("/lists")["lists"]

    def audiences(self) -> list[dict[str, Any]]:
        return self._get("/audiences")["audiences"]

    def templates(self) -> list[dict[str, Any]]:
        return self._get("/templates")["templates"]

    # --- the CRM emulator ----------------------------------------------------------------------
    def crm_records(self, object_type: str) -> list[dict[str, Any]]:
        return self._get(f"/crm/object-types/{object_type}/records")["records"]

    def crm_object_types(self) -> list[dict[str, Any]]:
        return self._get("/crm/object-types")["objectTypes"]

    def crm_set_object_type(
        self, name: str, attributes: list[str], associations: list[str] | tuple[str, ...] = ()
    ) -> dict[str, Any]:
        body = {"attributes": list(attributes), "associations": list(associations)}
        return self._send("PUT", f"/crm/object-types/{name}", body)

    def crm_delete_object_type(self, name: str) -> None:
        self._send("DELETE", f"/crm/object-types/{name}")

    def crm_processes(self) -> list[dict[str, Any]]:
        return self._get("/crm/processes")["processes"]

    def crm_process(self, process_id: int) -> dict[str, Any]:
        return self._get(f"/crm/processes/{process_id}")

    def wait_crm_process(self, process_id: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.crm_process(process_id)
            if doc["status"] in ("completed", "failed"):
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRM process {process_id} still {doc['status']} after {timeout} s")
            time.sleep(0.02)

    def crm_configure(self, **changes: Any) -> dict[str, Any]:
        return self._send("POST", "/crm/config", changes)

    def crm_config(self) -> dict[str, Any]:
        return self._get("/crm/config")


def peak_running(timeline: list[dict[str, Any]], object_name: str | None = None) -> int:
    """The most jobs of ``timeline`` (optionally: on ``object_name``) that were running at once.

    A job runs from its start to its finish (or until now, if it has not finished); the shared
    sequence numbers say whether one job finished before another started.
    """
    events: list[tuple[int, int]] = []
    for entry in timeline:
        if object_name is not None and entry["objectName"] != object_name:
            continue
        events.append((entry["startSeq"], 1))
        if entry["finishSeq"] is not None:
            events.append((entry["finishSeq"], -1))
    running = peak = 0
    for _, change in sorted(events):
        running += change
        peak = max(peak, running)
    return peak


def peak_running_per_object(timeline: list[dict[str, Any]]) -> dict[str, int]:
    """For each object in ``timeline``, the most jobs that ran on it at once."""
    return {name: peak_running(timeline, name) for name in sorted({e["objectName"] for e in timeline})}


def start_order(
    timeline: list[dict[str, Any]], object_name: str | None = None, field: str = "fileName"
) -> list[Any]:
    """``field`` of each started job (optionally: on ``object_name``), in the order the jobs started."""
    return [e[field] for e in timeline if object_name is None or e["objectName"] == object_name]


@dataclass
class SandboxHandle:
    server: BackgroundServer
    admin: Admin
    token: str
    client_id: str
    client_secret: str
    crm_api_key: str = "dev-crm-key"

    @property
    def admin_token(self) -> str:
        return self.server.sandbox.options.admin_token

    @property
    def root_url(self) -> str:
        return self.server.root_url

    @property
    def base_url(self) -> str:
        return self.server.root_url + API_PREFIX

    @property
    def crm_base_url(self) -> str:
        return self.server.root_url + CRM_PREFIX

    @property
    def token_url(self) -> str:
        return self.server.root_url + "/oauth/token"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def data_dir(self) -> Path:
        return self.server.sandbox.data_dir

    @property
    def db_path(self) -> Path:
        return self.server.sandbox.store.path

    def api(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx.Client on base_url with the bearer token (caller closes it)."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def crm_api(self, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx.Client on crm_base_url with the ``api-key`` header (caller closes it)."""
        headers = {"api-key": api_key if api_key is not None else self.crm_api_key}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(
            base_url=self.crm_base_url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )


@contextmanager
def running_sandbox(**options: Any) -> Iterator[SandboxHandle]:
    """Serve a sandbox on a free loopback port in a background thread for the ``with`` block."""
    opts = SandboxOptions(**options)
    server = start_in_thread(opts)
    admin = Admin(server.root_url, opts.admin_token)
    client = opts.clients[0] if opts.clients else None
    try:
        yield SandboxHandle(
            server,
            admin,
            opts.token,
            client.client_id if client else "",
            client.client_secret if client else "",
            opts.crm_api_key,
        )
    finally:
        admin.close()
        server.stop()
