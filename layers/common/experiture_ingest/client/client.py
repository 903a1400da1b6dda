"""The Experiture API client: every documented endpoint, one envelope parser, one retry loop.

>>> import httpx
>>> def api(request):
...     return httpx.Response(200, json={"success": True, "correlationId": "c-1",
...                                      "data": {"fields": [{"name": "email", "required": True}]}})
>>> client = ExperitureClient("https://api.example/public/v1", BearerToken("t"),
...                           transport=httpx.MockTransport(api))
>>> schema = client.get_object_schema("contacts")
>>> schema.fields[0].name, schema.correlation_id
('email', 'c-1')
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from experiture_ingest.client.auth import BearerToken, ClientCredentials, SecretAuth
from experiture_ingest.client.errors import (
    ErrorFileExpiredError,
    ExperitureError,
    ServerError,
    TransportError,
    UploadError,
    UploadRefusedError,
    UploadServerError,
    UploadSlotExpiredError,
    error_from_response,
)
from experiture_ingest.client.models import (
    BatchAccepted,
    BatchJobStatus,
    ErrorRow,
    ImportErrorsLocation,
    ImportJobInit,
    ImportJobStatus,
    ImportMapping,
    ImportStarted,
    ObjectSchema,
    RecordWriteResult,
    Response,
    UploadSlot,
)
from experiture_ingest.client.retry import RetryPolicy, parse_retry_after
from experiture_ingest.client.settings import ClientSettings, require_secure_url

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=Response)
UPLOAD_CHUNK_BYTES = 1024 * 1024
USER_AGENT = "experiture-ingest/0.1"


def encode_json(body: Any) -> bytes:
    """The exact bytes the client sends for a JSON body (compact, UTF-8): measure sizes with this."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without its query string and fragment, where pre-signed URLs keep their signature."""
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class _RedactQueryStrings(logging.Filter):
    """httpx logs every request's full URL at INFO: strip query strings (pre-signed signatures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg)
                if isinstance(arg, httpx.URL) or (isinstance(arg, str) and "://" in arg)
                else arg
                for arg in record.args
            )
        return True


def _guard_httpx_logs() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryStrings) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactQueryStrings())


@dataclass(frozen=True)
class RetryEvent:
    """What ``on_retry`` hears before each retry: for logs and metrics."""

    operation: str
    attempt: int
    delay: float
    error: ExperitureError


@dataclass(frozen=True)
class UploadResult:
    status: int
    bytes_sent: int
    attempts: int
    seconds: float


class ExperitureClient:
    """A small typed client over one pooled ``httpx.Client``; build it once, reuse it across calls.

    Writes carry an ``Idempotency-Key`` (a fresh UUID unless the caller passes a deterministic one)
    that every retry of the same call reuses, so retrying is always safe.
    """

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        upload_retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[RetryEvent], None] | None = None,
        on_answer: Callable[[int], None] | None = None,
    ) -> None:
        self.base_url = require_secure_url(base_url.rstrip("/"))
        self._auth = auth
        self._retry = retry or RetryPolicy()
        self._upload_retry = upload_retry or RetryPolicy(max_attempts=3, budget_seconds=900.0)
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        _guard_httpx_logs()
        self._timeout = timeout or httpx.Timeout(30.0, connect=5.0)
        self._http = httpx.Client(
            transport=transport,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            # Every HTTP answer's status (API, token endpoint, uploads, retries included): for metrics.
            event_hooks={"response": [lambda response: on_answer(response.status_code)]}
            if on_answer
            else None,
        )

    @classmethod
    def from_settings(cls, settings: ClientSettings, **kwargs: Any) -> ExperitureClient:
        """A client configured from :class:`ClientSettings` (static token or Secrets Manager)."""
        auth: httpx.Auth
        if settings.api_token is not None:
            auth = BearerToken(settings.api_token.get_secret_value())
        else:
            assert settings.secret_arn is not None  # guaranteed by ClientSettings
            auth = SecretAuth(
                settings.secret_arn,
                default_token_url=settings.resolved_token_url,
                max_age_seconds=settings.secret_max_age_seconds,
            )
        kwargs.setdefault(
            "timeout",
            httpx.Timeout(settings.read_timeout_seconds, connect=settings.connect_timeout_seconds),
        )
        kwargs.setdefault(
            "retry",
            RetryPolicy(
                max_attempts=settings.retry_max_attempts, budget_seconds=settings.retry_budget_seconds
            ),
        )
        return cls(settings.api_url, auth, **kwargs)

    @property
    def worst_call_seconds(self) -> float:
        """The longest one API call may take: its retry budget, then a last attempt's connect and read."""
        return self._retry.budget_seconds + (self._timeout.connect or 0.0) + (self._timeout.read or 0.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExperitureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Records -------------------------------------------------------------------------------------

    def append(
        self, object_name: str, record: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RecordWriteResult:
        """``POST /records/{object}/append``: insert one record synchronously."""
        return self._write(
            f"/records/{_seg(object_name)}/append", {"record": record}, RecordWriteResult, idempotency_key
        )

    def upsert(
        self,
        object_name: str,
        record: Mapping[str, Any],
        *,
        match_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> RecordWriteResult:
        """``POST /records/{object}/upsert``: insert or merge one record on ``match_key``."""
        body: dict[str, Any] = {"record": record}
        if match_key:
            body["matchKey"] = match_key
        return self._write(f"/records/{_seg(object_name)}/upsert", body, RecordWriteResult, idempotency_key)

    def append_batch(
        self,
        object_name: str,
        records: Sequence[Mapping[str, Any]] | None = None,
        *,
        body: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> BatchAccepted:
        """``POST /records/{object}/append-batch``: 1 to 10,000 records, processed as an async job.

        Pass ``records``, or ``body`` when the caller already serialized (and measured) it.
        """
        payload = body if body is not None else encode_json({"records": list(records or [])})
        return self._write(
            f"/records/{_seg(object_name)}/append-batch", payload, BatchAccepted, idempotency_key
        )

    def upsert_batch(
        self,
        object_name: str,
        records: Sequence[Mapping[str, Any]] | None = None,
        *,
        match_key: str | None = None,
        body: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> BatchAccepted:
        """``POST /records/{object}/upsert-batch``: like append-batch, merging on ``match_key``."""
        if body is None:
            document: dict[str, Any] = {"records": list(records or [])}
            if match_key:
                document["matchKey"] = match_key
            body = encode_json(document)
        return self._write(f"/records/{_seg(object_name)}/upsert-batch", body, BatchAccepted, idempotency_key)

    def get_batch_job(self, object_name: str, job_id: str) -> BatchJobStatus:
        """``GET /records/{object}/jobs/{job}``: state and metrics of a batch write."""
        return self._read(f"/records/{_seg(object_name)}/jobs/{_seg(job_id)}", BatchJobStatus)

    # Import jobs ---------------------------------------------------------------------------------

    def init_import(self, request: ImportJobInit, *, idempotency_key: str | None = None) -> UploadSlot:
        """``POST /import-jobs``: create a job and get its pre-signed upload slot."""
        return self._write("/import-jobs", request.wire(), UploadSlot, idempotency_key)

    def set_mapping(
        self, job_id: str, mapping: ImportMapping, *, idempotency_key: str | None = None
    ) -> Response:
        """``POST /import-jobs/{id}/mapping``: validate and store the field mapping (job becomes ready)."""
        return self._write(f"/import-jobs/{_seg(job_id)}/mapping", mapping.wire(), Response, idempotency_key)

    def start_import(self, job_id: str, *, idempotency_key: str | None = None) -> ImportStarted:
        """``POST /import-jobs/{id}/start``: begin processing the uploaded file."""
        return self._write(f"/import-jobs/{_seg(job_id)}/start", {}, ImportStarted, idempotency_key)

    def get_import(self, job_id: str) -> ImportJobStatus:
        """``GET /import-jobs/{id}``: state and row counts."""
        return self._read(f"/import-jobs/{_seg(job_id)}", ImportJobStatus)

    def get_import_errors(self, job_id: str) -> ImportErrorsLocation:
        """``GET /import-jobs/{id}/errors``: where to download the rejected rows (a fresh URL each call)."""
        return self._read(f"/import-jobs/{_seg(job_id)}/errors", ImportErrorsLocation)

    # Metadata ------------------------------------------------------------------------------------

    def get_object_schema(self, object_name: str) -> ObjectSchema:
        """``GET /metadata/objects/{name}``: the object's fields, types and keys."""
        return self._read(f"/metadata/objects/{_seg(object_name)}", ObjectSchema)

    # Files ---------------------------------------------------------------------------------------

    def upload(
        self,
        slot: UploadSlot,
        open_body: Callable[[], IO[bytes] | Iterable[bytes]],
        size: int,
        *,
        content_type: str = "application/octet-stream",
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
    ) -> UploadResult:
        """Send ``size`` bytes to the slot's pre-signed URL, streamed, with an exact Content-Length.

        ``open_body`` opens the source afresh for each attempt (a failed upload restarts at byte 0).
        The slot's ``headers`` are merged in (storage providers refuse uploads without them), see
        :func:`upload_headers`. A storage refusal raises :class:`UploadSlotExpiredError` only when
        the slot has expired, :class:`UploadRefusedError` when a new slot would be refused alike.
        """
        require_secure_url(slot.upload_url)
        headers = upload_headers(slot.headers, content_type, size)
        where = f"{slot.method} {redact_url(slot.upload_url)}"
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            body = open_body()
            try:
                response = self._http.request(
                    slot.method,
                    slot.upload_url,
                    content=_exactly(body, size, chunk_bytes),
                    headers=headers,
                    auth=None,
                )
                if response.is_success:
                    return UploadResult(response.status_code, size, attempt, self._clock() - started)
                error: ExperitureError = _upload_error(response, where, _has_expired(slot))
            except httpx.TransportError as exc:
                error = TransportError(f"{where}: {_describe(exc)}")
            except ExperitureError as exc:
                if not exc.retryable:  # e.g. a source shorter than declared: retrying cannot help
                    raise
                error = exc  # the source broke mid-read: restart from byte 0
            finally:
                close = getattr(body, "close", None)
                if callable(close):
                    close()
            self._pause_or_raise(self._upload_retry, "upload", attempt, started, error)

    def iter_error_file(self, url: str) -> Iterator[bytes]:
        """The errors file at ``url``, streamed in chunks (constant memory)."""
        require_secure_url(url)
        try:
            yield from self._stream_error_file(url)
        except (httpx.TransportError, httpx.StreamError) as exc:
            # A connection that breaks mid-download is transient: the caller starts the copy again.
            raise TransportError(f"GET {redact_url(url)}: {_describe(exc)}") from None

    def _stream_error_file(self, url: str) -> Iterator[bytes]:
        with self._http.stream("GET", url, auth=None) as response:
            if response.status_code == 403:
                raise ErrorFileExpiredError(f"errors file URL {redact_url(url)} has expired", status=403)
            if not response.is_success:
                status = response.status_code
                # Storage throttling and failures are transient: callers retry with backoff.
                error = ServerError if status >= 500 or status in {408, 429} else ExperitureError
                raise error(
                    f"GET {redact_url(url)} answered HTTP {status}",
                    status=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            yield from response.iter_bytes()

    def iter_error_rows(self, url: str) -> Iterator[ErrorRow]:
        """The errors file at ``url`` as parsed rows, one JSON line at a time."""
        for line in _lines(self.iter_error_file(url)):
            if line.strip():
                yield ErrorRow.model_validate_json(line)

    # Plumbing ------------------------------------------------------------------------------------

    def _write(self, path: str, body: Any, model: type[ResponseT], idempotency_key: str | None) -> ResponseT:
        content = body if isinstance(body, bytes) else encode_json(body)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
        }
        return self._call("POST", path, model, content=content, headers=headers)

    def _read(self, path: str, model: type[ResponseT]) -> ResponseT:
        return self._call("GET", path, model)

    def _call(
        self,
        method: str,
        path: str,
        model: type[ResponseT],
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ResponseT:
        operation = f"{method} {path}"
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    self.base_url + path,
                    content=content,
                    headers={"Accept": "application/json", **(headers or {})},
                    auth=self._auth,
                )
                return _parse(response, model)
            except httpx.TransportError as exc:
                error: ExperitureError = TransportError(f"{operation}: {_describe(exc)}")
            except ExperitureError as exc:
                error = exc
            self._pause_or_raise(self._retry, operation, attempt, started, error)

    def _pause_or_raise(
        self, policy: RetryPolicy, operation: str, attempt: int, started: float, error: ExperitureError
    ) -> None:
        delay = policy.next_delay(error, attempt, self._clock() - started)
        if delay is None:
            raise error
        logger.warning(
            "attempt %d of %d failed (%s); retrying %s in %.2fs",
            attempt,
            policy.max_attempts,
            error,
            operation,
            delay,
            extra={"correlation_id": error.correlation_id, "attempt": attempt},
        )
        if self._on_retry is not None:
            self._on_retry(RetryEvent(operation, attempt, delay, error))
        self._sleep(delay)


def _seg(value: str) -> str:
    """One path segment, percent-encoded; ``.``, ``..`` and empty names would change the path."""
    if value in {"", ".", ".."}:
        raise ExperitureError(f"{value!r} cannot be a path segment", code="CLIENT.PATH_SEGMENT_INVALID")
    return quote(value, safe="")


def _parse(response: httpx.Response, model: type[ResponseT]) -> ResponseT:
    response.read()
    correlation_id = response.headers.get("x-correlation-id")
    payload: Any
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        correlation_id = payload.get("correlationId") or correlation_id
    if response.is_success and isinstance(payload, dict) and payload.get("success") is True:
        data = payload.get("data")
        result = model.model_validate(data if isinstance(data, dict) else {})
        result.correlation_id = correlation_id
        return result
    error = payload.get("error") if isinstance(payload, dict) else None
    status = response.status_code
    if response.is_success and not isinstance(error, dict):
        # A 2xx without the envelope is the API misbehaving, not our request: treat it as a server error.
        raise ServerError(
            f"HTTP {status} without the documented envelope", status=status, correlation_id=correlation_id
        )
    raise error_from_response(
        status,
        error if isinstance(error, dict) else None,
        correlation_id,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def upload_headers(slot_headers: Mapping[str, str], content_type: str, size: int) -> dict[str, str]:
    """The upload's headers: our Content-Type, then the slot's ``headers``, then our Content-Length.

    Header names are case-insensitive (the docs' own example is lower case), so a slot header
    replaces ours whatever its case, and no name is ever sent twice; the slot's value wins, except
    for Content-Length, which must be the exact size streamed.

    >>> upload_headers({"content-type": "text/csv", "x-ms-blob-type": "BlockBlob"}, "text/plain", 3)
    {'content-type': 'text/csv', 'x-ms-blob-type': 'BlockBlob', 'Content-Length': '3'}
    """
    merged: dict[str, tuple[str, str]] = {"content-type": ("Content-Type", content_type)}
    for name, value in slot_headers.items():
        merged[name.lower()] = (name, value)
    merged["content-length"] = ("Content-Length", str(size))
    return dict(merged.values())


def _has_expired(slot: UploadSlot) -> bool:
    return slot.expires_at is not None and slot.expires_at <= datetime.now(UTC)


# Storage error codes that mean "this pre-signed URL has expired": S3 (RequestExpired, ExpiredToken
# when the signing session ended), GCS (400 ExpiredToken), R2 (ExpiredRequest).
_EXPIRED_CODES = frozenset({"RequestExpired", "ExpiredToken", "ExpiredRequest", "TokenExpired"})
# Codes whose message says whether it is about expiry: S3 answers an expired pre-signed URL with
# 403 AccessDenied "Request has expired"; Azure with 403 AuthenticationFailed, "Signature not valid
# in the specified time frame" in AuthenticationErrorDetail.
_MAYBE_EXPIRED_CODES = frozenset({"AccessDenied", "AuthenticationFailed"})
_EXPIRY_TEXT = re.compile(r"\bexpired\b|not valid in the specified time frame", re.IGNORECASE)
_STORAGE_CODE = re.compile(r"<Code>\s*([A-Za-z0-9_.-]{1,64})\s*</Code>")
_STORAGE_TEXT = re.compile(r"<(Message|Details|AuthenticationErrorDetail)>([^<]{0,2000})</\1>")


def storage_answer(body: str) -> tuple[str | None, str]:
    """The storage's error code (S3/GCS/Azure XML ``<Code>``, or a JSON ``code``) and the text that
    explains it (only to classify the error: it may echo the signed request, so never shown).

    >>> storage_answer("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    ('AccessDenied', 'Request has expired')
    >>> storage_answer("Forbidden")
    (None, 'Forbidden')
    """
    body = body[:8192]
    found = _STORAGE_CODE.search(body)
    if found:
        return found.group(1), " ".join(text for _, text in _STORAGE_TEXT.findall(body))
    try:
        document = json.loads(body)
    except ValueError:
        return None, body
    if isinstance(document, dict):
        error = document.get("error", document)
        error = error if isinstance(error, dict) else document
        code = next((error[k] for k in ("code", "Code") if isinstance(error.get(k), str)), None)
        message = next((error[k] for k in ("message", "Message") if isinstance(error.get(k), str)), "")
        if code is not None and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", code):
            return code, message
    return None, body


def _upload_error(response: httpx.Response, where: str, slot_expired: bool) -> ExperitureError:
    """One storage answer as an error. Only the storage's code reaches the message: its body may
    echo the pre-signed query string (S3's SignatureDoesNotMatch carries the string it signed)."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status >= 500 or status in {408, 429}:
        return UploadServerError(f"{where} failed (HTTP {status})", status=status, retry_after=retry_after)
    code, text = storage_answer(response.text)
    label = f"HTTP {status} {code}" if code else f"HTTP {status}"
    expired = (
        code in _EXPIRED_CODES
        or ((code is None or code in _MAYBE_EXPIRED_CODES) and bool(_EXPIRY_TEXT.search(text)))
        or (status == 403 and code is None and slot_expired)
    )
    if expired:
        return UploadSlotExpiredError(
            f"{where} refused ({label}): the upload URL has expired", status=status, code=code
        )
    if status == 403:
        why = "a signature or access refusal" if code else "no storage error code, before the slot's expiry"
        return UploadRefusedError(
            f"{where} refused ({label}): {why}; a new upload slot would be refused the same way",
            status=status,
            code=code,
        )
    return UploadRefusedError(f"{where} refused ({label})", status=status, code=code)


def _describe(exc: httpx.TransportError | httpx.StreamError) -> str:
    kind = type(exc).__name__
    # httpx messages name the host at most; never the query string, but redact defensively.
    text = str(exc).split("?", 1)[0]
    return f"{kind}: {text}" if text else kind


def _exactly(body: IO[bytes] | Iterable[bytes], size: int, chunk_bytes: int) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes of ``body`` in bounded chunks; fail if the source is shorter."""
    sent = 0
    if hasattr(body, "read"):
        reader: IO[bytes] = body  # type: ignore[assignment]
        while sent < size:
            chunk = reader.read(min(chunk_bytes, size - sent))
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
    else:
        for piece in body:
            chunk = piece[: size - sent]
            sent += len(chunk)
            if chunk:
                yield chunk
            if sent >= size:
                break
    if sent != size:
        raise UploadError(f"the source ended after {sent} of {size} bytes; nothing was completed")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


__all__ = [
    "ClientCredentials",
    "ExperitureClient",
    "RetryEvent",
    "UploadResult",
    "encode_json",
    "redact_url",
    "storage_answer",
    "upload_headers",
]
