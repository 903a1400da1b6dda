"""The sandbox's shared state and the wrapper every API endpoint goes through.

The wrapper does, in order: bearer auth + scope, body read with the 10 MB cap, Idempotency-Key
handling (docs/api-choices.md), then the handler in a worker thread so SQLite never blocks the loop.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import queue
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sandbox import schemas as schema_mod
from sandbox.auth import Principal, TokenBook, authenticate
from sandbox.config import RuntimeConfig, SandboxOptions, speed_timings
from sandbox.crm.config import (
    DEFAULT_OBJECT_TYPES,
    CrmConfig,
    load_object_types_file,
    parse_object_types,
)
from sandbox.crm.state import CrmState
from sandbox.errors import ApiError, correlation_id, error_body, error_response, json_bytes
from sandbox.faults import FaultPlan, Faults, parse_plan
from sandbox.store import Store

MAX_BODY_BYTES = 10 * 1024 * 1024
IDEMPOTENCY_TTL = 24 * 3600.0
STATIC_CLIENT_ID = "static-token"


def new_id(prefix: str) -> str:
    """Sortable unique id: milliseconds then randomness (ULID-like, lowercase hex)."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class Sandbox:
    """Everything one running sandbox owns."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self._own_tmp = options.data_dir is None
        self.data_dir = Path(options.data_dir or tempfile.mkdtemp(prefix="experiture-sandbox-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir)
        self.signing_key = (options.signing_secret or secrets.token_hex(32)).encode()
        self.tokens = TokenBook(self.signing_key)
        self.faults = Faults()
        self._startup_config = RuntimeConfig()
        for key, value in speed_timings(options.speed).items():
            setattr(self._startup_config, key, value)
        self._startup_config.update(options.config)
        self.config = self._startup_config.copy()
        self._startup_plan: dict[str, Any] | None = options.faults
        if options.faults_file:
            self._startup_plan = json.loads(Path(options.faults_file).read_text(encoding="utf-8"))
        self._startup_objects = (
            schema_mod.load_schema_file(options.schemas_file)
            if options.schemas_file
            else schema_mod.default_schemas()
        )
        if not self.store.objects():
            self.store.put_objects(self._startup_objects)
        self.generation = 0
        self.stopping = threading.Event()
        self.batch_queue: queue.Queue[str] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.import_threads: dict[str, threading.Thread] = {}
        self.crm = _crm_state(options, self.faults)
        self._reset_auth_and_faults()

    # --- lifecycle -------------------------------------------------------------------------------
    def _reset_auth_and_faults(self) -> None:
        self.tokens.clear()
        self.tokens.add_token(self.options.token, self.options.token_scopes, client_id=STATIC_CLIENT_ID)
        for client in self.options.clients:
            self.tokens.add_client(client)
        self.faults.replace(parse_plan(self._startup_plan) if self._startup_plan else FaultPlan())

    def start_workers(self) -> None:
        from sandbox import imports, records  # local: these modules import this one

        self.crm.start()

        for i in range(2):
            t = threading.Thread(
                target=records.batch_worker, args=(self,), name=f"sandbox-batch-{i}", daemon=True
            )
            t.start()
            self.threads.append(t)
        # Jobs left queued or running by a previous process with the same data dir carry on.
        for doc in self.store.list_jobs("batch_jobs"):
            if doc["state"] in ("queued", "running"):
                self.batch_queue.put(doc["jobId"])
        for doc in self.store.list_jobs("import_jobs", "running"):
            imports.launch(self, doc["jobId"])

    def stop(self) -> None:
        self.stopping.set()
        self.crm.stop()
        for t in [*self.threads, *self.import_threads.values()]:
            t.join(timeout=5)
        self.store.close()
        if self._own_tmp and self.options.data_dir is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def reset(self) -> None:
        """Forget all records, jobs, requests and files; restore the startup config, tokens and faults."""
        self.generation += 1
        for t in list(self.import_threads.values()):
            t.join(timeout=5)
        self.import_threads.clear()
        while not self.batch_queue.empty():
            try:
                self.batch_queue.get_nowait()
            except queue.Empty:
                break
        self.store.reset()
        self.store.put_objects(self._startup_objects, replace_all=True)
        for sub in ("uploads", "errors"):
            shutil.rmtree(self.data_dir / sub, ignore_errors=True)
        self.config = self._startup_config.copy()
        self.crm.reset()
        self._reset_auth_and_faults()

    def alive(self, generation: int) -> bool:
        return generation == self.generation and not self.stopping.is_set()

    def sleep(self, seconds: float, generation: int) -> bool:
        """Sleep unless reset or shut down meanwhile; False means abandon the work."""
        deadline = time.monotonic() + seconds
        while True:
            if not self.alive(generation):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.stopping.wait(min(left, 0.05))

    # --- signed URLs ---------------------------------------------------------------------------
    def sign(self, kind: str, job_id: str, expires: int) -> str:
        return hmac.new(self.signing_key, f"{kind}:{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_query(self, kind: str, job_id: str, ttl: float) -> tuple[str, int]:
        expires = int(time.time() + ttl)
        return f"expires={expires}&signature={self.sign(kind, job_id, expires)}", expires

    def check_signature(self, kind: str, job_id: str, query: dict[str, str]) -> str | None:
        """None when valid; otherwise why not ('tampered' or 'expired')."""
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            return "tampered"
        given = query.get("signature", "")
        if not hmac.compare_digest(given, self.sign(kind, job_id, expires)):
            return "tampered"
        if time.time() >= expires:
            return "expired"
        return None

    def upload_path(self, job_id: str) -> Path:
        return self.data_dir / "uploads" / job_id / "file"

    def errors_path(self, job_id: str) -> Path:
        return self.data_dir / "errors" / f"{job_id}.jsonl"


def _crm_state(options: SandboxOptions, faults: Faults) -> CrmState:
    """The CRM emulator's state: its timings follow ``--speed`` (realistic: 1 s queued, 1 s in process)."""
    if options.crm_object_types is not None:
        types = parse_object_types(options.crm_object_types)
    elif options.crm_object_types_file:
        types = load_object_types_file(options.crm_object_types_file)
    else:
        types = parse_object_types(DEFAULT_OBJECT_TYPES)
    timings = speed_timings(options.speed)
    config = CrmConfig(queueSeconds=timings["queueSeconds"], processSeconds=timings["batchJobSeconds"] / 2)
    config.update(options.crm_config)
    return CrmState(
        options.crm_api_key,
        types,
        config,
        take_failure=lambda object_type: faults.take_job_failure("crm", object_type),
    )


def object_schema(sandbox: Sandbox, name: str) -> dict[str, Any]:
    schema = sandbox.store.get_object(name)
    if schema is None:
        raise ApiError(
            404,
            "CDP_ETL.OBJECT.NOT_FOUND",
            f"object {name!r} does not exist in the workspace",
            path="objectName",
            details={"value": name},
        )
    return schema


@dataclass
class Call:
    """What a handler gets: the parsed request."""

    request: Request
    principal: Principal
    path_params: dict[str, str]
    body: bytes
    json: Any = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.request.app.state.sandbox
        return sandbox


Handler = Callable[[Call], tuple[int, Any]]


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    too_large = ApiError(
        413,
        "CDP_ETL.VALIDATION.PAYLOAD_TOO_LARGE",
        f"request body exceeds {limit} bytes",
        details={"limit": limit},
        remediation="Split the batch into smaller requests.",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, *, optional: bool = False) -> Any:
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "CDP_ETL.VALIDATION.REQUEST_INVALID", "request body is required", path="")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, "CDP_ETL.VALIDATION.REQUEST_INVALID", f"body is not valid JSON: {exc}", path=""
        ) from exc
    if not isinstance(value, dict):
        raise ApiError(400, "CDP_ETL.VALIDATION.REQUEST_INVALID", "body must be a JSON object", path="")
    return value


def canonical_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def api_endpoint(
    scope: str, handler: Handler, *, optional_body: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a synchronous handler with auth, body reading, idempotency and the envelope."""

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        state = request.scope.setdefault("state", {})
        try:
            principal = authenticate(sandbox.tokens, request, scope)
            state["client_id"] = principal.client_id
            body = await read_body(request) if request.method in ("POST", "PUT", "PATCH") else b""
        except ApiError as err:
            return error_response(request, err)
        except ClientDisconnect:
            return Response(status_code=499)
        call = Call(request, principal, dict(request.path_params), body)
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key is None:
            return await run_in_threadpool(_run, call, handler, optional_body)
        state["idempotency_key"] = key
        if not _is_uuid4(key):
            return error_response(
                request,
                ApiError(
                    400,
                    "CDP_ETL.VALIDATION.REQUEST_INVALID",
                    "Idempotency-Key must be a UUID v4",
                    path="Idempotency-Key",
                ),
            )
        route = f"{request.method} {request.url.path}"
        body_hash = canonical_hash(body)
        existing = await run_in_threadpool(
            sandbox.store.idem_claim, principal.client_id, route, key, body_hash, IDEMPOTENCY_TTL
        )
        if existing is not None:
            if existing["body_hash"] != body_hash:
                return error_response(
                    request,
                    ApiError(
                        422,
                        "CDP_ETL.IDEMPOTENCY.KEY_REUSED",
                        "Idempotency-Key was already used with a different request body",
                        path="Idempotency-Key",
                        remediation="Use a new key for a different request.",
                    ),
                )
            if existing["state"] != "done":
                return error_response(
                    request,
                    ApiError(
                        409,
                        "CDP_ETL.IDEMPOTENCY.IN_PROGRESS",
                        "a request with this Idempotency-Key is still being processed",
                        headers={"Retry-After": "1"},
                    ),
                )
            state["replayed"] = True
            headers = json.loads(existing["headers"] or "{}")
            original = json.loads(existing["body"])
            state["correlation_id"] = original.get("correlationId", correlation_id(request))
            headers["Idempotent-Replayed"] = "true"
            return Response(
                existing["body"],
                status_code=existing["status"],
                headers=headers,
                media_type="application/json",
            )
        try:
            response = await run_in_threadpool(_run, call, handler, optional_body)
        except BaseException:
            await run_in_threadpool(sandbox.store.idem_release, principal.client_id, route, key)
            raise
        refused = response.status_code == 429 and not sandbox.config.cacheRefusals
        if response.status_code >= 500 or refused:
            # Not stored: the request did not run to completion, and a retry with the same key
            # (after Retry-After) must be able to succeed, as the IETF Idempotency-Key draft says.
            # With cacheRefusals a 429 is stored like any 4xx (docs 002's "cached original response").
            await run_in_threadpool(sandbox.store.idem_release, principal.client_id, route, key)
        else:
            kept = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "location")}
            await run_in_threadpool(
                functools.partial(
                    sandbox.store.idem_finish,
                    principal.client_id,
                    route,
                    key,
                    status=response.status_code,
                    headers=kept,
                    body=bytes(response.body),
                )
            )
        return response

    return endpoint


def _run(call: Call, handler: Handler, optional_body: bool) -> Response:
    request = call.request
    delay = float(request.scope.get("state", {}).get("processing_latency_ms") or 0)
    if delay:
        time.sleep(delay / 1000)  # a worker thread: the event loop keeps serving
    try:
        if request.method in ("POST", "PUT", "PATCH"):
            call.json = parse_json(call.body, optional=optional_body)
        status, data = handler(call)
    except ApiError as err:
        return error_response(request, err)
    except Exception as exc:  # an honest 500 in the envelope, never a stack trace to the client
        import logging

        logging.getLogger("sandbox").exception("handler failed")
        internal = ApiError(500, "CDP_ETL.INTERNAL_ERROR", f"internal error: {type(exc).__name__}")
        return error_response(request, internal)
    body = {"success": True, "data": data, "correlationId": correlation_id(request)}
    return Response(
        json_bytes(body), status_code=status, headers=call.extra_headers, media_type="application/json"
    )


__all__ = ["ApiError", "Call", "Sandbox", "api_endpoint", "error_body", "new_id", "object_schema"]


def _is_uuid4(key: str) -> bool:
    """The conventions page asks for a UUID v4 key; anything else is refused, so a client that
    sends another format finds out here rather than in production."""
    try:
        return uuid.UUID(key).version == 4 and len(key) == 36
    except ValueError:
        return False
