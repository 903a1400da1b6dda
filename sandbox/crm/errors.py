"""The vendor's error body ``{"code": ..., "message": ...}`` and the exception carrying it."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


class CrmError(Exception):
    """An error answered in the vendor's shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(err: CrmError) -> Response:
    return json_response({"code": err.code, "message": err.message}, err.status, err.headers)


def invalid(message: str) -> CrmError:
    return CrmError(400, "invalid_parameter", message)


# Codes for injected faults: the vendor documents no body for 429/5xx, so these are ours.
FAULT_CODES = {429: "too_many_requests", 500: "internal_error", 503: "service_unavailable"}


def fault_response(status: int, retry_after: int | None) -> Response:
    """An injected fault on a CRM route. 429 carries the vendor's rate-limit headers, not Retry-After."""
    headers: dict[str, str] = {}
    if status == 429:
        headers = {
            "x-sib-ratelimit-limit": "10",
            "x-sib-ratelimit-remaining": "0",
            "x-sib-ratelimit-reset": str(retry_after if retry_after is not None else 1),
        }
    elif status == 503:
        headers = {"Retry-After": str(retry_after if retry_after is not None else 1)}
    err = CrmError(status, FAULT_CODES.get(status, "injected_fault"), "injected fault (sandbox fault plan)")
    err.headers = headers
    return error_response(err)
