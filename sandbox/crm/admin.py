"""Admin endpoints under ``/_sandbox/crm/`` (plain JSON, no auth, never faulted)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.crm.config import ObjectTypeError, normalise_object_type
from sandbox.crm.state import CrmState


def _state(request: Request) -> CrmState:
    state: CrmState = request.app.state.crm
    return state


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> Any:
    body = await request.body()
    return json.loads(body) if body.strip() else {}


async def config(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        try:
            changes = await _json(request)
            if not isinstance(changes, dict):
                raise ValueError("give a JSON object of changes")
            state.config.update(changes)
        except ValueError as exc:
            return _bad(str(exc))
    return JSONResponse(state.config.to_dict())


async def object_types(request: Request) -> Response:
    return JSONResponse({"objectTypes": _state(request).list_types()})


async def object_type(request: Request) -> Response:
    """PUT {"attributes": [...], "associations": [...]} creates or replaces; DELETE removes it and its records."""
    state = _state(request)
    name = request.path_params["name"]
    if request.method == "DELETE":
        return JSONResponse({"ok": state.delete_type(name)})
    try:
        definition = normalise_object_type(name, await _json(request))
    except (ObjectTypeError, ValueError) as exc:
        return _bad(str(exc))
    state.put_type(definition)
    return JSONResponse(definition.to_dict())


async def records(request: Request) -> Response:
    name = request.path_params["name"]
    rows = _state(request).list_records(name)
    return JSONResponse({"objectType": name, "total": len(rows), "records": rows})


async def processes(request: Request) -> Response:
    return JSONResponse({"processes": [p.admin() for p in _state(request).list_processes()]})


async def process(request: Request) -> Response:
    raw = request.path_params["process_id"]
    found = _state(request).process(int(raw)) if raw.isdigit() else None
    if found is None:
        return _bad("no such process", 404)
    return JSONResponse(found.admin())


routes = [
    Route("/config", config, methods=["GET", "POST"]),
    Route("/object-types", object_types, methods=["GET"]),
    Route("/object-types/{name}", object_type, methods=["PUT", "DELETE"]),
    Route("/object-types/{name}/records", records, methods=["GET"]),
    Route("/processes", processes, methods=["GET"]),
    Route("/processes/{process_id}", process, methods=["GET"]),
]
