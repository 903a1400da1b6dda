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
- ``upload_info(job_id)`` -> {complete, bytes, sha256, uploadedAt, path, exists}; ``upload_bytes(job_id)``
- ``set_faults(plan)`` (replace), ``add_faults(plan)``, ``clear_faults()``, ``faults()``;
  plan = {"rules": [...], "jobFailures": [...]} (see sandbox.faults)
- ``fail_next_jobs(kind, times=1, object_name=None, error_message=...)``: kind "batch" | "import"
- ``fail_job(job_id, error_message=...)``: a non-terminal job ends failed now
- ``configure(**changes)`` -> RuntimeConfig (queueSeconds, batchJobSeconds, importJobSeconds,
  maxRunningImports, uploadUrlTtlSeconds, errorFileUrlTtlSeconds, singlePutLimitBytes, uploadHeaders, ...)
- ``add_token(token, scopes, expires_in=None, client_id=None)``; ``add_client(client_id, secret, scopes=None,
  token_ttl=None)``
- ``set_schema(obj, {"primaryKey": ..., "fields": [...]})``; ``lists()``; ``audiences()``; ``templates()``
- ``reset()``: forget all state and restore the startup config, tokens and faults
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
from sandbox.server import API_PREFIX, BackgroundServer, start_in_thread


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


@dataclass
class SandboxHandle:
    server: BackgroundServer
    admin: Admin
    token: str
    client_id: str
    client_secret: str

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
        )
    finally:
        admin.close()
        server.stop()
