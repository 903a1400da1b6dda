"""The response envelope and the API error type."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


class ApiError(Exception):
    """An error answered in the documented error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        path: str | None = None,
        details: dict[str, Any] | None = None,
        remediation: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        if path is not None:
            self.details["path"] = path
        self.remediation = remediation
        self.headers = headers or {}


def correlation_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("correlation_id", ""))


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope(
    request: Request, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = {"success": True, "data": data, "correlationId": correlation_id(request)}
    return Response(json_bytes(body), status_code=status, headers=headers, media_type="application/json")


def error_body(cid: str, err: ApiError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.details:
        error["details"] = err.details
    if err.remediation:
        error["remediation"] = err.remediation
    return {"success": False, "correlationId": cid, "error": error}


def error_response(request: Request, err: ApiError) -> Response:
    return Response(
        json_bytes(error_body(correlation_id(request), err)),
        status_code=err.status,
        headers=err.headers,
        media_type="application/json",
    )


def invalid(message: str, path: str | None = None, **details: Any) -> ApiError:
    return ApiError(400, "CDP_ETL.VALIDATION.REQUEST_INVALID", message, path=path, details=details or None)
