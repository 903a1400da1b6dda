"""The Starlette application: routes, the envelope for every answer, faults and the request log."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import admin, imports, records
from sandbox.auth import token_endpoint
from sandbox.config import SandboxOptions
from sandbox.core import Sandbox, api_endpoint
from sandbox.crm import errors as crm_errors
from sandbox.crm.api import create_crm_app
from sandbox.errors import ApiError, error_body, error_response, json_bytes
from sandbox.faults import Decision

log = logging.getLogger("sandbox.access")
API = "/public/v1"
CRM_MOUNT = "/crm"  # the CRM emulator: base URL <root>/crm/v3
STORAGE_PREFIXES = ("/uploads/", "/error-files/")


def metadata(call: Any) -> tuple[int, Any]:
    from sandbox.core import object_schema

    return 200, object_schema(call.sandbox, call.path_params["name"])


def api_routes() -> list[Route]:
    return [
        Route("/metadata/objects/{name}", api_endpoint("cdp:metadata:read", metadata), methods=["GET"]),
        Route(
            "/records/{object_name}/{op:str}",
            _records_dispatch(),
            methods=["POST"],
        ),
        Route(
            "/records/{object_name}/jobs/{job_id}",
            api_endpoint("cdp:records:read", records.job_status),
            methods=["GET"],
        ),
        Route("/import-jobs", api_endpoint("cdp:imports:write", imports.init), methods=["POST"]),
        Route("/import-jobs/{job_id}", api_endpoint("cdp:imports:read", imports.status), methods=["GET"]),
        Route(
            "/import-jobs/{job_id}/mapping",
            api_endpoint("cdp:imports:write", imports.mapping),
            methods=["POST"],
        ),
        Route(
            "/import-jobs/{job_id}/start",
            api_endpoint("cdp:imports:write", imports.start, optional_body=True),
            methods=["POST"],
        ),
        Route(
            "/import-jobs/{job_id}/errors", api_endpoint("cdp:imports:read", imports.errors), methods=["GET"]
        ),
    ]


def _records_dispatch() -> Any:
    single = api_endpoint("cdp:records:write", records.single)
    batch = api_endpoint("cdp:records:write", records.batch)

    async def endpoint(request: Request) -> Response:
        op = request.path_params["op"]
        if op in ("append", "upsert"):
            return await single(request)
        if op in ("append-batch", "upsert-batch"):
            return await batch(request)
        return error_response(request, _not_found(request))

    return endpoint


def _not_found(request: Request) -> ApiError:
    return ApiError(404, "CDP_ETL.NOT_FOUND", f"no route for {request.method} {request.url.path}")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(request, _not_found(request))
    if exc.status_code == 405:
        err = ApiError(
            405,
            "CDP_ETL.METHOD_NOT_ALLOWED",
            f"method {request.method} is not allowed on {request.url.path}",
            headers=dict(exc.headers or {}),
        )
        return error_response(request, err)
    return error_response(request, ApiError(exc.status_code, "CDP_ETL.REQUEST.ERROR", str(exc.detail)))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(request, ApiError(500, "CDP_ETL.INTERNAL_ERROR", "internal error"))


def _drop_connection(receive: Receive) -> bool:
    """Close the TCP connection under this request with no answer (uvicorn's transport).

    uvicorn hands the app its RequestResponseCycle.receive bound method; the cycle holds the
    asyncio transport. abort() discards buffers and closes at once, so the client sees a reset or
    an empty reply, never an HTTP response. Marking the cycle disconnected stops uvicorn from
    trying to send a 500 of its own.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    cycle.disconnected = True  # type: ignore[union-attr]
    return True


class Outer:
    """Outermost ASGI layer: correlation id, faults, access log and the request log."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["correlation_id"] = str(uuid.uuid4())
        method, path = scope["method"], scope["path"]
        is_admin = path.startswith("/_sandbox")
        started = time.perf_counter()
        result: dict[str, Any] = {"status": None, "logged": is_admin}
        decision = Decision()

        async def record() -> None:
            """Log the request once, before its answer's last byte: a client that has the answer
            finds its request in the log (tests read the log right after a call)."""
            if result["logged"]:
                return
            result["logged"] = True
            entry = {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "method": method,
                "path": path,  # never the query string: upload signatures are secrets
                "status": result["status"],
                "idempotencyKey": state.get("idempotency_key"),
                "replayed": state.get("replayed", False),
                "correlationId": state["correlation_id"],
                "clientId": state.get("client_id"),
                "fault": decision.label,
                "durationMs": round((time.perf_counter() - started) * 1000, 2),
            }
            log.info("%s %s %s %s", method, path, result["status"] or "dropped", state["correlation_id"])
            await run_in_threadpool(self.sandbox.store.log_request, entry)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-correlation-id"] = state["correlation_id"]
                result["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await record()
            await send(message)

        if is_admin:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refused = admin.refusal(headers, self.sandbox.options.admin_token)
            if refused is not None:
                status, message = refused
                log.warning("admin request refused (%s): %s %s", status, method, path)
                await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
                return
        decision = Decision() if is_admin else self.sandbox.faults.decide(method, path)
        state["processing_latency_ms"] = decision.processing_latency_ms
        try:
            if decision.latency_ms:
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.drop:
                await self._drop(decision, scope, receive)
                result["status"] = None
            elif decision.status is not None:
                await self._fault_response(decision, scope, path)(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            await record()  # a dropped connection, or an answer that never finished

    async def _drop(self, decision: Decision, scope: Scope, receive: Receive) -> None:
        if decision.drop == "mid_body":
            read = 0
            while read < decision.after_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        elif decision.drop == "after_processing":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
        if not _drop_connection(receive):
            raise RuntimeError("cannot drop the connection with this server")

    def _fault_response(self, decision: Decision, scope: Scope, path: str) -> Response:
        status = int(decision.status or 500)
        if path.startswith(CRM_MOUNT + "/"):
            return crm_errors.fault_response(status, decision.retry_after)
        headers: dict[str, str] = {}
        if status in (429, 503):
            headers["Retry-After"] = str(decision.retry_after if decision.retry_after is not None else 1)
        if path.startswith(STORAGE_PREFIXES):
            storage_code = decision.code or {
                403: "AccessDenied",
                429: "SlowDown",
                503: "SlowDown",
                500: "InternalError",
            }.get(status, "InjectedFault")
            default = "Access Denied" if storage_code == "AccessDenied" else "injected fault"
            response = imports.storage_error(status, storage_code, decision.message or default)
            response.headers.update(headers)
            return response
        code = decision.code or {
            429: "CDP_ETL.RATE.LIMITED",
            500: "CDP_ETL.INTERNAL_ERROR",
            503: "CDP_ETL.SERVICE_UNAVAILABLE",
        }.get(status, "CDP_ETL.FAULT.INJECTED")
        err = ApiError(
            status, code, decision.message or "injected fault (sandbox fault plan)", headers=headers
        )
        body_bytes = json_bytes(error_body(scope["state"]["correlation_id"], err))
        return Response(body_bytes, status_code=status, headers=headers, media_type="application/json")


def create_app(options: SandboxOptions | None = None, sandbox: Sandbox | None = None) -> Outer:
    """Build the ASGI app. Workers start with the app's lifespan and stop with it."""
    sb = sandbox or Sandbox(options or SandboxOptions())
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        sb.start_workers()
        try:
            yield
        finally:
            await run_in_threadpool(sb.stop)

    app = Starlette(
        routes=[
            Mount(API, routes=api_routes()),
            Route("/oauth/token", token_endpoint, methods=["POST"]),
            Route("/uploads/{job_id}", imports.upload, methods=["PUT"]),
            Route("/error-files/{job_id}", imports.error_file, methods=["GET"]),
            Mount(CRM_MOUNT, app=create_crm_app(sb.crm)),
            Mount("/_sandbox", routes=admin.routes),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.sandbox = sb
    app.state.crm = sb.crm  # for the CRM admin routes under /_sandbox/crm
    outer = Outer(app, sb)
    outer.sandbox = sb
    return outer
