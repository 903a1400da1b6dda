"""One exception tree for everything the Experiture API, an upload slot or the network can do.

Every error carries what a user needs to act on it: HTTP status, the documented code, message,
details, remediation and the correlation id to quote to support. ``str()`` reads as one line and
never contains a token, a client secret or a pre-signed URL's query string.

>>> err = error_from_response(404, {"code": "CDP_ETL.OBJECT.NOT_FOUND", "message": "no such object"}, "c-1")
>>> type(err).__name__, err.retryable
('NotFoundError', False)
>>> str(err)
'404 CDP_ETL.OBJECT.NOT_FOUND: no such object (correlation id c-1)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from experiture_ingest.settings import SettingsError as SettingsError  # part of the tree users catch


class ExperitureError(Exception):
    """Base of every error this package raises about the Experiture API."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        remediation: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.remediation = remediation
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        text = f"{head}: {self.message}" if head else self.message
        if self.details.get("path"):
            text += f" [at {self.details['path']}]"
        if self.remediation:
            text += f" Remediation: {self.remediation}"
        if self.correlation_id:
            text += f" (correlation id {self.correlation_id})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, for summaries and dead-letter attributes."""
        return {
            "type": type(self).__name__,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "remediation": self.remediation,
            "correlationId": self.correlation_id,
        }


class ApiError(ExperitureError):
    """The API answered with an error envelope (or an HTTP error without one)."""


class ValidationError(ApiError):
    """400: the request is malformed or a field fails validation. Fix the request."""


class PayloadTooLargeError(ValidationError):
    """413: the request body is over the documented size limit."""


class IdempotencyKeyReusedError(ValidationError):
    """422: the Idempotency-Key was already used with a different body."""


class AuthenticationError(ApiError):
    """401: missing, invalid or expired credentials."""


class ForbiddenError(ApiError):
    """403: the token lacks the scope for this object or operation."""


class NotFoundError(ApiError):
    """404: the object, job or route does not exist."""


class ConflictError(ApiError):
    """409: the operation is not allowed in the resource's current state."""


class WriteConflictError(ConflictError):
    """409 that the API documents as transient (concurrent write, request in progress)."""

    retryable = True


class SchemaMismatchError(ApiError):
    """422: fields do not match the object's schema (or the mapping names an unknown field)."""


class RateLimitedError(ApiError):
    """429: too many requests; ``retry_after`` says how long to wait."""

    retryable = True


class ConcurrencyLimitError(RateLimitedError):
    """429: the workspace already runs its maximum number of import jobs; start again later."""


class ServerError(ApiError):
    """5xx: the API failed; retrying with backoff is safe because writes are idempotent."""

    retryable = True


class TransportError(ExperitureError):
    """No HTTP answer: connection refused or reset, timeout, protocol error."""

    retryable = True


class UploadError(ExperitureError):
    """The storage behind a pre-signed upload URL refused the upload."""


class UploadSlotExpiredError(UploadError):
    """The upload slot's URL has expired (the storage says so, see ``upload``). Initialise a new job."""


class UploadRefusedError(UploadError):
    """The storage refused the upload for good: a signature or access refusal (``code`` names it,
    e.g. ``SignatureDoesNotMatch``, ``AccessDenied``) or a malformed request. A new upload slot would
    be refused the same way, so none is opened."""


class UploadServerError(UploadError):
    """5xx from the upload slot: retry the upload from byte 0."""

    retryable = True


class ErrorFileExpiredError(ExperitureError):
    """403 on an errors file URL: fetch a fresh location from ``GET /import-jobs/{id}/errors``."""


_BY_CODE: dict[str, type[ApiError]] = {
    "CDP_ETL.VALIDATION.REQUEST_INVALID": ValidationError,
    "CDP_ETL.VALIDATION.PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "CDP_ETL.IDEMPOTENCY.KEY_REUSED": IdempotencyKeyReusedError,
    "CDP_ETL.IDEMPOTENCY.IN_PROGRESS": WriteConflictError,
    "CDP_ETL.AUTH.UNAUTHORIZED": AuthenticationError,
    "CDP_ETL.AUTH.FORBIDDEN": ForbiddenError,
    "CDP_ETL.OBJECT.NOT_FOUND": NotFoundError,
    "CDP_ETL.NOT_FOUND": NotFoundError,
    "CDP_ETL.WRITE.CONFLICT": WriteConflictError,
    "CDP_ETL.VALIDATION.SCHEMA_MISMATCH": SchemaMismatchError,
    "CDP_ETL.VALIDATION.REQUEST_SCHEMA": SchemaMismatchError,
    "CDP_ETL.RATE.LIMITED": RateLimitedError,
    "CDP_ETL.IMPORT.CONCURRENCY_LIMIT": ConcurrencyLimitError,
    "CDP_ETL.INTERNAL_ERROR": ServerError,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    405: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: SchemaMismatchError,
    429: RateLimitedError,
}


def error_class_for(status: int, code: str | None) -> type[ApiError]:
    """The exception class for an HTTP status and documented code: the code wins when known."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ApiError)


def error_from_response(
    status: int,
    error: Mapping[str, Any] | None,
    correlation_id: str | None,
    *,
    retry_after: float | None = None,
) -> ApiError:
    """Build the exception for one error answer: the ``error`` object of the envelope, if any."""
    error = error or {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    details = error.get("details") if isinstance(error.get("details"), Mapping) else None
    remediation = error.get("remediation") if isinstance(error.get("remediation"), str) else None
    cls = error_class_for(status, code)
    return cls(
        message or f"HTTP {status} without an error description",
        status=status,
        code=code,
        details=details,
        remediation=remediation,
        correlation_id=correlation_id,
        retry_after=retry_after,
    )
