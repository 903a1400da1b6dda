"""A small typed client of the peer CRM's custom object records (Brevo's ``/v3`` API).

Two calls: ``POST /objects/{object_type}/batch/upsert`` (202 ``{"processId"}``) and
``GET /processes/{processId}``. The ``api-key`` header comes from configuration or a Secrets Manager
secret (read through Powertools Parameters, cached, read again once after a 401).

Retries: 429, 5xx and transport errors, with the project's :class:`RetryPolicy` (full jitter, capped,
within attempts and seconds); ``x-sib-ratelimit-reset`` is a floor. The vendor has no Idempotency-Key,
so a retried upsert may be a second process: that is safe only because every record the stream path
sends carries ``identifiers`` (an upsert by ``ext_id``/``id`` applied twice ends the same), which the
CRM destination's record check demands.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from experiture_ingest.client.retry import RetryPolicy, parse_retry_after
from experiture_ingest.crm.errors import (
    CrmError,
    CrmSettingsError,
    CrmTransientError,
    error_for,
)
from experiture_ingest.crm.settings import CrmSettings

logger = logging.getLogger(__name__)
PROCESS_DONE = frozenset({"completed", "failed", "cancelled"})


class RejectedRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int | None = None
    identifiers: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None


class ObjectRecordsReport(BaseModel):
    """``info.object_records`` of a process (absent when the vendor gives no per-record report)."""

    model_config = ConfigDict(extra="allow")

    object_type: str | None = None
    total: int | None = None
    created: int | None = None
    updated: int | None = None
    rejected: int = 0
    rejected_records: list[RejectedRecord] = Field(default_factory=list)
    error: str | None = None


class ProcessStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    name: str | None = None
    status: str
    info: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in PROCESS_DONE

    @property
    def report(self) -> ObjectRecordsReport | None:
        raw = (self.info or {}).get("object_records")
        return ObjectRecordsReport.model_validate(raw) if isinstance(raw, dict) else None


class ApiKey(httpx.Auth):
    """The ``api-key`` header: a fixed key, or one read from a secret (re-read once after a 401)."""

    def __init__(self, key: str | None = None, *, secret_arn: str | None = None, max_age: int = 300) -> None:
        self._key = key
        self._arn = secret_arn
        self._max_age = max_age
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "ApiKey(***)"

    def _read(self, *, force: bool = False) -> str:
        if self._arn is None:
            assert self._key is not None
            return self._key
        from aws_lambda_powertools.utilities import parameters

        try:
            raw = parameters.get_secret(self._arn, max_age=self._max_age, force_fetch=force)
        except parameters.exceptions.GetParameterError as exc:
            raise CrmSettingsError(f"CRM_SECRET_ARN: cannot read the secret ({type(exc).__name__})") from None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        key = text.strip()
        if key.startswith("{"):
            try:
                document = json.loads(key)
            except ValueError:
                document = None
            key = document.get("apiKey", "") if isinstance(document, dict) else ""
        if not isinstance(key, str) or not key:
            raise CrmSettingsError('CRM_SECRET_ARN: the secret must hold {"apiKey": "..."} or the key itself')
        return key

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            key = self._read()
        request.headers["api-key"] = key
        response = yield request
        if response.status_code == 401 and self._arn is not None:
            with self._lock:
                fresh = self._read(force=True)
            if fresh != key:  # rotated: one replay with the new key
                request.headers["api-key"] = fresh
                yield request


class CrmClient:
    """Build once, reuse across calls (one pooled ``httpx.Client``)."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_answer: Callable[[int], None] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._timeout = timeout or httpx.Timeout(30.0, connect=5.0)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            timeout=self._timeout,
            transport=transport,
            headers={"accept": "application/json"},
            event_hooks={"response": [lambda response: on_answer(response.status_code)]} if on_answer else {},
        )

    @classmethod
    def from_settings(cls, settings: CrmSettings, **kwargs: Any) -> CrmClient:
        auth = ApiKey(
            settings.api_key.get_secret_value() if settings.api_key else None,
            secret_arn=None if settings.api_key else settings.secret_arn,
            max_age=settings.secret_max_age_seconds,
        )
        return cls(
            settings.api_url,
            auth,
            policy=RetryPolicy(
                max_attempts=settings.retry_max_attempts, budget_seconds=settings.retry_budget_seconds
            ),
            timeout=httpx.Timeout(settings.read_timeout_seconds, connect=settings.connect_timeout_seconds),
            **kwargs,
        )

    @property
    def worst_call_seconds(self) -> float:
        """Its retry budget (attempts and waits), then a last attempt's connect and read."""
        return self.policy.budget_seconds + (self._timeout.connect or 0.0) + (self._timeout.read or 0.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CrmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upsert_batch(self, object_type: str, body: bytes) -> int:
        """Post one batch (the exact bytes); the process id."""
        answer = self._call("POST", f"/objects/{object_type}/batch/upsert", body=body)
        process_id = answer.get("processId") if isinstance(answer, dict) else None
        if isinstance(process_id, bool) or not isinstance(process_id, int | str) or process_id == "":
            raise CrmTransientError("the 202 answer holds no processId")
        return int(process_id)

    def get_process(self, process_id: int | str) -> ProcessStatus:
        answer = self._call("GET", f"/processes/{process_id}", on_process=True)
        return ProcessStatus.model_validate(answer)

    def _call(self, method: str, path: str, *, body: bytes | None = None, on_process: bool = False) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                error = self._once(method, path, body, on_process)
                if not isinstance(error, CrmError):
                    return error
            except httpx.TransportError as exc:
                error = CrmTransientError(f"no answer from the CRM ({type(exc).__name__})")
            delay = self._next_delay(error, attempt, time.monotonic() - started)
            if delay is None:
                raise error
            logger.warning("CRM %s %s failed (%s); retry %d in %.2fs", method, path, error, attempt, delay)
            self._sleep(delay)

    def _once(self, method: str, path: str, body: bytes | None, on_process: bool) -> Any:
        headers = {"content-type": "application/json"} if body is not None else None
        response = self._http.request(method, path, content=body, headers=headers)
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = None
        if response.status_code < 300:
            if parsed is None:
                return CrmTransientError(f"the CRM answered {response.status_code} without JSON")
            return parsed
        reset = parse_retry_after(response.headers.get("x-sib-ratelimit-reset")) or parse_retry_after(
            response.headers.get("retry-after")
        )
        return error_for(response.status_code, parsed, retry_after=reset, on_process=on_process)

    def _next_delay(self, error: CrmError, attempt: int, elapsed: float) -> float | None:
        """The project's retry rule (RetryPolicy) for this client's errors."""
        if not error.retryable or attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff(attempt)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return None if elapsed + delay > self.policy.budget_seconds else delay
