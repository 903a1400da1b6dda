"""The Experiture API client: settings, auth, retries, typed models and one exception tree.

>>> from experiture_ingest.client import ExperitureClient, ClientSettings
>>> settings = ClientSettings.from_env({"EXPERITURE_API_URL": "http://127.0.0.1:8787/public/v1",
...                                     "EXPERITURE_API_TOKEN": "dev-token"})
>>> with ExperitureClient.from_settings(settings) as client:
...     client.base_url
'http://127.0.0.1:8787/public/v1'
"""

from __future__ import annotations

import functools

from experiture_ingest.client.auth import BearerToken, ClientCredentials, SecretAuth, auth_from_secret
from experiture_ingest.client.client import (
    ExperitureClient,
    RetryEvent,
    UploadResult,
    encode_json,
    redact_url,
)
from experiture_ingest.client.errors import (
    ApiError,
    AuthenticationError,
    ConcurrencyLimitError,
    ConflictError,
    ErrorFileExpiredError,
    ExperitureError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    SchemaMismatchError,
    ServerError,
    SettingsError,
    TransportError,
    UploadError,
    UploadRefusedError,
    UploadServerError,
    UploadSlotExpiredError,
    ValidationError,
    WriteConflictError,
    error_from_response,
)
from experiture_ingest.client.idempotency import derived_key
from experiture_ingest.client.models import (
    BatchAccepted,
    BatchJobStatus,
    ErrorRow,
    FieldSchema,
    ImportErrorsLocation,
    ImportJobInit,
    ImportJobStatus,
    ImportMapping,
    ImportStarted,
    JobMetrics,
    ObjectSchema,
    RecordWriteResult,
    UploadSlot,
)
from experiture_ingest.client.retry import RetryPolicy, parse_retry_after
from experiture_ingest.client.settings import ClientSettings


@functools.cache
def client_from_env() -> ExperitureClient:
    """The process's one client, built on first use from the environment and reused while warm."""
    return ExperitureClient.from_settings(ClientSettings.from_env())


__all__ = [
    "ApiError",
    "AuthenticationError",
    "BatchAccepted",
    "BatchJobStatus",
    "BearerToken",
    "ClientCredentials",
    "ClientSettings",
    "ConcurrencyLimitError",
    "ConflictError",
    "ErrorFileExpiredError",
    "ErrorRow",
    "ExperitureClient",
    "ExperitureError",
    "FieldSchema",
    "ForbiddenError",
    "IdempotencyKeyReusedError",
    "ImportErrorsLocation",
    "ImportJobInit",
    "ImportJobStatus",
    "ImportMapping",
    "ImportStarted",
    "JobMetrics",
    "NotFoundError",
    "ObjectSchema",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RecordWriteResult",
    "RetryEvent",
    "RetryPolicy",
    "SchemaMismatchError",
    "SecretAuth",
    "ServerError",
    "SettingsError",
    "TransportError",
    "UploadError",
    "UploadRefusedError",
    "UploadResult",
    "UploadServerError",
    "UploadSlot",
    "UploadSlotExpiredError",
    "ValidationError",
    "WriteConflictError",
    "auth_from_secret",
    "client_from_env",
    "derived_key",
    "encode_json",
    "error_from_response",
    "parse_retry_after",
    "redact_url",
]
