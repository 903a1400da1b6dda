"""The CRM client's one exception tree and its one status -> exception mapping.

The vendor answers errors as ``{"code": "...", "message": "..."}``. A 429 carries
``x-sib-ratelimit-reset`` (seconds) and no documented ``Retry-After``; both are read.

>>> err = error_for(400, {"code": "invalid_parameter", "message": "invalid object type"})
>>> type(err).__name__, err.retryable, str(err)
('CrmRequestError', False, 'HTTP 400 invalid_parameter: invalid object type')
>>> error_for(503, None).retryable
True
"""

from __future__ import annotations

import re
from typing import Any

_RECORD_PATH = re.compile(r"records\[(\d+)\]")


class CrmError(Exception):
    """A CRM call that did not succeed; ``str()`` is one line (never the api-key)."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        head = " ".join(p for p in (f"HTTP {status}" if status else None, code) if p)
        super().__init__(f"{head}: {message}" if head else message)

    @property
    def record_index(self) -> int | None:
        """The record a refusal names (``records[3]...``), if any."""
        found = _RECORD_PATH.search(self.message)
        return int(found.group(1)) if found else None


class CrmSettingsError(CrmError):
    """The api-key cannot be read (no secret, unreadable secret): the stack's trouble, not the records'."""


class CrmDisabledError(CrmError):
    """No api-key is configured: the CRM destination is off."""


class CrmAuthError(CrmError):
    """401 (a rotated key) or 403 (custom objects not on this account)."""


class CrmRequestError(CrmError):
    """400/404: the request (or one record of it) is refused as sent."""


class CrmTooLargeError(CrmRequestError):
    """413 (or a 400 naming the body size): fewer records per request."""


class CrmNotFoundError(CrmError):
    """404 on a process: the vendor no longer knows it."""


class CrmTransientError(CrmError):
    """429, 5xx or no answer: worth another try."""

    retryable = True


def error_for(
    status: int, body: Any, *, retry_after: float | None = None, on_process: bool = False
) -> CrmError:
    """The exception for one error answer."""
    code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), str) else None
    message = body.get("message") if isinstance(body, dict) and isinstance(body.get("message"), str) else None
    message = message or f"the CRM answered {status}"
    if status == 429 or status >= 500:
        return CrmTransientError(message, status=status, code=code, retry_after=retry_after)
    if status in (401, 403):
        return CrmAuthError(message, status=status, code=code)
    if status == 404 and on_process:
        return CrmNotFoundError(message, status=status, code=code)
    if status == 413 or (status == 400 and "exceeds" in message and "bytes" in message):
        return CrmTooLargeError(message, status=status, code=code)
    return CrmRequestError(message, status=status, code=code)
