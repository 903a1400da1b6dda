"""The emulated vendor routes, mounted under ``/crm`` (so the base URL is ``.../crm/v3``).

Every answer is the vendor's plain JSON (no envelope); errors are ``{"code", "message"}``. Order of
checks on the upsert: ``api-key`` (401), body size (413/400), account and object type (403, 400/404),
then the body (400). Faults, latency and drops come from ``sandbox.app.Outer`` like everywhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.crm.errors import CrmError, error_response, invalid, json_response
from sandbox.crm.state import CrmState

CLIENT_ID = "crm-api-key"  # how CRM calls appear in the shared request log
log = logging.getLogger("sandbox.crm")
Endpoint = Callable[[Request], Awaitable[Response]]


def _state(request: Request) -> CrmState:
    state: CrmState = request.app.state.crm
    return state


def _authenticate(request: Request) -> None:
    given = request.headers.get("api-key")
    if not given or not hmac.compare_digest(given.encode(), _state(request).api_key.encode()):
        raise CrmError(401, "unauthorized", "Key not found")
    request.scope.setdefault("state", {})["client_id"] = CLIENT_ID


def endpoint(handler: Endpoint) -> Endpoint:
    """Authenticate, then answer CrmError in the vendor's shape and anything else as an honest 500."""

    async def wrapped(request: Request) -> Response:
        try:
            _authenticate(request)
            return await handler(request)
        except CrmError as err:
            return error_response(err)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:
            log.exception("CRM handler failed")
            return error_response(CrmError(500, "internal_error", f"internal error: {type(exc).__name__}"))

    return wrapped


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` (read to the end anyway, so the client gets the answer)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    return None if size > limit else b"".join(chunks)


async def upsert(request: Request) -> Response:
    """POST /v3/objects/{object_type}/batch/upsert -> 202 {"message", "processId"}."""
    state = _state(request)
    limit, status = state.config.maxBodyBytes, state.config.bodyTooLargeStatus
    body = await _read_body(request, limit)
    if body is None:
        raise CrmError(
            status,
            "invalid_parameter",
            f"request body exceeds the {limit} bytes allowed per request; send fewer records",
        )
    object_type = request.path_params["object_type"]
    state.check_type(object_type)
    process_id = await run_in_threadpool(state.accept, object_type, body)
    delay = float(request.scope.get("state", {}).get("processing_latency_ms") or 0)
    if delay:
        await asyncio.sleep(delay / 1000)
    return json_response({"message": "Batch upsert of object records accepted", "processId": process_id}, 202)


def _int_param(request: Request, name: str, *, default: int | None, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise CrmError(400, "missing_parameter", f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise CrmError(400, "out_of_range", f"{name} must be between {low} and {high or 'any'}")
    return value


def _sort(request: Request) -> bool:
    """True for descending (the vendor's default)."""
    sort = request.query_params.get("sort", "desc")
    if sort not in ("asc", "desc"):
        raise invalid("sort must be 'asc' or 'desc'")
    return sort == "desc"


async def list_records(request: Request) -> Response:
    """GET /v3/objects/{object_type}/records?limit=&page_num=&sort=&association= (the vendor's getrecords)."""
    state = _state(request)
    object_type = request.path_params["object_type"]
    state.check_type(object_type)
    limit = _int_param(request, "limit", default=None, low=1, high=1000)
    page = _int_param(request, "page_num", default=None, low=1)
    descending = _sort(request)
    with_links = request.query_params.get("association", "false")
    if with_links not in ("true", "false"):
        raise invalid("association must be 'true' or 'false'")
    rows = state.list_records(object_type)
    if descending:
        rows.reverse()
    out: list[dict[str, Any]] = []
    for row in rows[(page - 1) * limit : page * limit]:
        identifiers: dict[str, Any] = {"id": row["id"]}
        if row["ext_id"] is not None:
            identifiers["ext_id"] = row["ext_id"]
        item: dict[str, Any] = {
            "identifiers": identifiers,
            "attributes": row["attributes"],
            "createdAt": row["createdAt"],
            "updatedAt": row["updatedAt"],
        }
        if with_links == "true":
            item["associations"] = [
                {"object_type": t, "records": [{"identifiers": {"id": i}} for i in ids[:5]]}
                for t, ids in row["associations"].items()
            ]
        out.append(item)
    return json_response({"count": len(rows), "records": out})


def _process_id(request: Request) -> int:
    raw = request.path_params["process_id"]
    if not raw.isdigit():
        raise invalid("processId must be an integer")
    return int(raw)


async def get_process(request: Request) -> Response:
    """GET /v3/processes/{processId}."""
    state = _state(request)
    process = state.process(_process_id(request))
    if process is None:
        raise CrmError(404, "document_not_found", "Process ID not found")
    return json_response(process.public(state.config.reportRejections))


async def list_processes(request: Request) -> Response:
    """GET /v3/processes?limit=&offset=&sort= (limit at most 50, newest first by default)."""
    state = _state(request)
    limit = _int_param(request, "limit", default=10, low=1, high=50)
    offset = _int_param(request, "offset", default=0, low=0)
    processes = state.list_processes()
    if _sort(request):
        processes.reverse()
    page = [p.public(state.config.reportRejections) for p in processes[offset : offset + limit]]
    return json_response({"count": len(processes), "processes": page})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = CrmError(405, "method_not_allowed", f"method {request.method} is not allowed here")
        err.headers = dict(exc.headers or {})
        return error_response(err)
    if exc.status_code == 404:
        return error_response(CrmError(404, "not_found", f"no route for {request.method} {request.url.path}"))
    return error_response(CrmError(exc.status_code, "bad_request", str(exc.detail)))


def create_crm_app(state: CrmState) -> Starlette:
    """The ASGI app to mount at ``/crm``."""
    app = Starlette(
        routes=[
            Route("/v3/objects/{object_type}/batch/upsert", endpoint(upsert), methods=["POST"]),
            Route("/v3/objects/{object_type}/records", endpoint(list_records), methods=["GET"]),
            Route("/v3/processes", endpoint(list_processes), methods=["GET"]),
            Route("/v3/processes/{process_id}", endpoint(get_process), methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.crm = state
    return app
