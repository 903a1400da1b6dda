"""An exact fault sequence for httpx.MockTransport: each request gets the next scripted answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def envelope(data: Any, correlation_id: str = "corr-ok") -> dict[str, Any]:
    return {"success": True, "data": data, "correlationId": correlation_id}


def error_body(
    code: str, message: str = "nope", correlation_id: str = "corr-err", **extra: Any
) -> dict[str, Any]:
    return {
        "success": False,
        "correlationId": correlation_id,
        "error": {"code": code, "message": message, **extra},
    }


class Script:
    """Answers requests in order; records every request (with its body read) for assertions."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        content = request.read() if isinstance(request.stream, httpx.ByteStream) else b""
        # A snapshot: the client mutates and replays the same request object (e.g. after a 401).
        self.requests.append(
            httpx.Request(request.method, request.url, headers=request.headers, content=content)
        )
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
