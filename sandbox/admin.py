"""Admin endpoints under ``/_sandbox/``: they plant tokens, fail jobs and reset state, so each request
must carry the admin token (``X-Sandbox-Admin-Token``) and come to, and from, loopback only.

The Host check stops DNS rebinding (a page on evil.example resolving to 127.0.0.1); the Origin check
and the custom header stop a cross-site page from POSTing ``text/plain`` (a "simple" request no
browser preflights). Answers are plain JSON, not the API envelope. See docs/sandbox.md for the list.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from sandbox.config import OAuthClient
from sandbox.core import Sandbox
from sandbox.crm import admin as crm_admin
from sandbox.faults import FaultPlanError, parse_plan
from sandbox.records import fail_job, public_job
from sandbox.schemas import SchemaError, normalise_object


def _sb(request: Request) -> Sandbox:
    return request.app.state.sandbox


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> Any:
    body = await request.body()
    return json.loads(body) if body.strip() else {}


async def health(request: Request) -> Response:
    sb = _sb(request)
    return JSONResponse({"ok": True, "dataDir": str(sb.data_dir), "database": str(sb.store.path)})


async def reset(request: Request) -> Response:
    await run_in_threadpool(_sb(request).reset)
    return JSONResponse({"ok": True})


async def config(request: Request) -> Response:
    sb = _sb(request)
    if request.method == "POST":
        try:
            sb.config.update(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
    return JSONResponse(sb.config.to_dict())


async def objects(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_sb(request).store.objects))


async def put_object(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        schema = normalise_object(name, await _json(request))
    except (SchemaError, ValueError) as exc:
        return _bad(str(exc))
    await run_in_threadpool(_sb(request).store.put_objects, {name: schema})
    return JSONResponse(schema)


async def records(request: Request) -> Response:
    sb = _sb(request)
    name = request.path_params["name"]
    limit = int(request.query_params.get("limit", "100000"))
    offset = int(request.query_params.get("offset", "0"))
    rows = await run_in_threadpool(sb.store.list_records, name, limit, offset)
    total = await run_in_threadpool(sb.store.count_records, name)
    return JSONResponse({"objectName": name, "total": total, "records": rows})


async def jobs(request: Request) -> Response:
    sb = _sb(request)
    batch = await run_in_threadpool(sb.store.list_jobs, "batch_jobs")
    imports = await run_in_threadpool(sb.store.list_jobs, "import_jobs")
    return JSONResponse(
        {"batchJobs": [_admin_job(d) for d in batch], "importJobs": [_admin_job(d) for d in imports]}
    )


def _admin_job(doc: dict[str, Any]) -> dict[str, Any]:
    out = public_job(doc)
    out["kind"] = "import" if doc["jobId"].startswith("imp_") else "batch"
    return out


def _find_job(sb: Sandbox, job_id: str) -> tuple[str, dict[str, Any]] | None:
    for table in ("batch_jobs", "import_jobs"):
        doc = sb.store.get_job(table, job_id)
        if doc is not None:
            return table, doc
    return None


async def job(request: Request) -> Response:
    found = await run_in_threadpool(_find_job, _sb(request), request.path_params["job_id"])
    if found is None:
        return _bad("no such job", 404)
    return JSONResponse(_admin_job(found[1]))


async def fail(request: Request) -> Response:
    """Force a queued/running job to end failed (a pending/ready import job too)."""
    sb = _sb(request)
    job_id = request.path_params["job_id"]
    body = await _json(request)
    found = await run_in_threadpool(_find_job, sb, job_id)
    if found is None:
        return _bad("no such job", 404)
    table, _ = found
    message = str(body.get("errorMessage") or "failed by the sandbox admin")
    code = body.get("errorCode") or ("CDP_ETL.IMPORT.PROCESSING_FAILED" if table == "import_jobs" else None)
    changed = await run_in_threadpool(fail_job, sb, table, job_id, message, code)
    if not changed:
        return _bad("the job is already terminal", 409)
    return JSONResponse({"ok": True})


async def requests_log(request: Request) -> Response:
    sb = _sb(request)
    rows = await run_in_threadpool(
        sb.store.list_requests, request.query_params.get("method"), request.query_params.get("path")
    )
    return JSONResponse({"requests": rows})


async def import_timeline(request: Request) -> Response:
    """Each started import job's start and finish, in start order (``startSeq``/``finishSeq`` order
    every start and finish in one sequence, for overlap checks finer than timestamps)."""
    rows = await run_in_threadpool(_sb(request).store.import_timeline)
    return JSONResponse({"timeline": rows})


async def upload_info(request: Request) -> Response:
    sb = _sb(request)
    job_id = request.path_params["job_id"]
    doc = await run_in_threadpool(sb.store.get_job, "import_jobs", job_id)
    if doc is None:
        return _bad("no such import job", 404)
    path = sb.upload_path(job_id)
    info = dict(doc["upload"])
    info["path"] = str(path)
    info["exists"] = path.exists()
    return JSONResponse(info)


async def upload_bytes(request: Request) -> Response:
    sb = _sb(request)
    path = sb.upload_path(request.path_params["job_id"])
    if not path.exists():
        return _bad("nothing uploaded", 404)
    return FileResponse(path, media_type="application/octet-stream")


async def faults(request: Request) -> Response:
    sb = _sb(request)
    if request.method == "DELETE":
        sb.faults.clear()
    elif request.method in ("PUT", "POST"):
        try:
            plan = parse_plan(await _json(request))
        except (FaultPlanError, ValueError, TypeError) as exc:
            return _bad(str(exc))
        if request.method == "PUT":
            sb.faults.replace(plan)
        else:
            sb.faults.extend(plan)
    return JSONResponse(sb.faults.snapshot())


async def tokens(request: Request) -> Response:
    """Add a static token: {"token", "scopes": [...], "clientId"?, "expiresIn"? (seconds)}."""
    body = await _json(request)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return _bad("token is required")
    scopes = body.get("scopes", [])
    if not isinstance(scopes, list):
        return _bad("scopes must be a list")
    client_id = str(body.get("clientId") or "static-" + hashlib.sha256(token.encode()).hexdigest()[:8])
    _sb(request).tokens.add_token(token, scopes, client_id=client_id, ttl=body.get("expiresIn"))
    return JSONResponse({"ok": True, "clientId": client_id})


async def clients(request: Request) -> Response:
    """Add an OAuth client: {"clientId", "clientSecret", "scopes"?, "tokenTtl"? (seconds)}."""
    body = await _json(request)
    if not body.get("clientId") or not body.get("clientSecret"):
        return _bad("clientId and clientSecret are required")
    client = OAuthClient(str(body["clientId"]), str(body["clientSecret"]))
    if "scopes" in body:
        client.scopes = tuple(body["scopes"])
    if body.get("tokenTtl") is not None:
        client.token_ttl = int(body["tokenTtl"])
    _sb(request).tokens.add_client(client)
    return JSONResponse({"ok": True})


async def docs_table(request: Request) -> Response:
    sb = _sb(request)
    table = request.path_params["table"]
    if table not in ("templates", "lists", "audiences"):
        return _bad("unknown collection", 404)
    items = await run_in_threadpool(sb.store.list_docs, table)
    if table == "lists":
        for item in items:
            rows = await run_in_threadpool(
                sb.store.query,
                "SELECT record_id FROM list_members WHERE list_id = ? ORDER BY record_id",
                (item["listId"],),
            )
            item["recordIds"] = [r["record_id"] for r in rows]
    return JSONResponse({table: items})


ADMIN_TOKEN_HEADER = "x-sandbox-admin-token"  # noqa: S105 (a header name)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(headers: dict[str, str], admin_token: str) -> tuple[int, str] | None:
    """Why an admin request is refused (status, message), or None when it may proceed.

    ``headers`` are the request's, names lower-case. Host must name a loopback address; an Origin, if
    sent, must be a loopback http(s) origin; the admin token must match (compared in constant time).
    """
    host = urlsplit(f"//{headers.get('host', '')}").hostname or ""
    if not is_loopback_host(host):
        return 403, "admin requests must be addressed to a loopback host (Host header)"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not is_loopback_host(parts.hostname or ""):
            return 403, "admin requests from another origin are refused (Origin header)"
    given = headers.get(ADMIN_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), admin_token.encode()):
        return 401, f"admin requests need the admin token in {ADMIN_TOKEN_HEADER} (printed at start)"
    return None


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/reset", reset, methods=["POST"]),
    Route("/config", config, methods=["GET", "POST"]),
    Route("/objects", objects, methods=["GET"]),
    Route("/objects/{name}", put_object, methods=["PUT"]),
    Route("/objects/{name}/records", records, methods=["GET"]),
    Route("/jobs", jobs, methods=["GET"]),
    Route("/jobs/{job_id}", job, methods=["GET"]),
    Route("/jobs/{job_id}/fail", fail, methods=["POST"]),
    Route("/requests", requests_log, methods=["GET"]),
    Route("/import-timeline", import_timeline, methods=["GET"]),
    Route("/import-jobs/{job_id}/upload", upload_bytes, methods=["GET"]),
    Route("/import-jobs/{job_id}/upload-info", upload_info, methods=["GET"]),
    Route("/faults", faults, methods=["GET", "PUT", "POST", "DELETE"]),
    Route("/tokens", tokens, methods=["POST"]),
    Route("/clients", clients, methods=["POST"]),
    Mount("/crm", routes=crm_admin.routes),
    Route("/{table}", docs_table, methods=["GET"]),
]
