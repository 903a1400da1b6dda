"""Sandbox settings: what is fixed at start and what the admin endpoint may change at run time."""

from __future__ import annotations

import copy
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

ALL_SCOPES = (
    "cdp:records:write",
    "cdp:records:read",
    "cdp:imports:write",
    "cdp:imports:read",
    "cdp:metadata:read",
)

GIB = 1024**3

# How a start beyond the running-jobs limit is refused (``concurrencyRefusal``): the docs allow each.
CONCURRENCY_REFUSALS = ("429", "429-rate", "409")

# Durations of a "realistic" job, divided by a numeric --speed factor.
REALISTIC = {"queueSeconds": 1.0, "batchJobSeconds": 2.0, "importJobSeconds": 8.0}


def speed_timings(speed: str | float) -> dict[str, float]:
    """Map ``--speed`` (instant | realistic | a factor N, N times faster than realistic) to durations."""
    if isinstance(speed, str):
        text = speed.strip().lower()
        if text == "instant":
            return dict.fromkeys(REALISTIC, 0.0)
        if text == "realistic":
            return dict(REALISTIC)
        try:
            factor = float(text)
        except ValueError as exc:
            raise ValueError("speed must be 'instant', 'realistic' or a positive number") from exc
    else:
        factor = float(speed)
    if factor <= 0:
        raise ValueError("speed must be 'instant', 'realistic' or a positive number")
    return {k: v / factor for k, v in REALISTIC.items()}


@dataclass
class RuntimeConfig:
    """Knobs that tests change through ``POST /_sandbox/config`` (camelCase names there)."""

    queueSeconds: float = 0.0
    batchJobSeconds: float = 0.0
    importJobSeconds: float = 0.0
    maxRunningImports: int = 10
    uploadUrlTtlSeconds: float = 3600.0
    errorFileUrlTtlSeconds: float = 900.0
    singlePutLimitBytes: int = 5 * GIB
    maxImportFileBytes: int = 50 * GIB
    uploadHeaders: dict[str, str] = field(default_factory=dict)
    concurrencyRetryAfterSeconds: int = 30
    # "429": 429 CDP_ETL.IMPORT.CONCURRENCY_LIMIT; "429-rate": 429 CDP_ETL.RATE.LIMITED; "409": 409
    # CDP_ETL.IMPORT.INVALID_STATE while the job stays ready (docs 001: "not allowed in the current state").
    concurrencyRefusal: str = "429"
    # Store 429 answers under their Idempotency-Key and replay them for 24 h like other 4xx (docs 002
    # allow that reading); off: 429 and 5xx are not stored, so a retry with the same key runs again.
    cacheRefusals: bool = False
    tokenTtlSeconds: int = 3600

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply known keys with type checks; unknown keys are an error so typos surface."""
        known = {f.name: f for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(known))}")
            current = getattr(self, key)
            if key == "concurrencyRefusal":
                if value not in CONCURRENCY_REFUSALS:
                    raise ValueError(f"{key} must be one of {', '.join(CONCURRENCY_REFUSALS)}")
                setattr(self, key, value)
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                setattr(self, key, value)
            elif isinstance(current, dict):
                if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError(f"{key} must be an object of strings")
                setattr(self, key, dict(value))
            elif isinstance(current, int) and not isinstance(current, bool):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                if value < 0:
                    raise ValueError(f"{key} must not be negative")
                setattr(self, key, int(value))
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                setattr(self, key, float(value))

    def copy(self) -> RuntimeConfig:
        return copy.deepcopy(self)


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ALL_SCOPES
    token_ttl: int | None = None  # None: RuntimeConfig.tokenTtlSeconds


@dataclass
class SandboxOptions:
    """Everything a sandbox is started with (CLI flags and ``running_sandbox(**options)``)."""

    data_dir: str | None = None
    token: str = "dev-token"  # noqa: S105 (a loopback dev token, documented)
    token_scopes: tuple[str, ...] = ALL_SCOPES
    speed: str | float = "instant"
    schemas_file: str | None = None
    faults_file: str | None = None
    faults: dict[str, Any] | None = None
    clients: list[OAuthClient] = field(default_factory=lambda: [OAuthClient("dev-client", "dev-secret")])
    config: dict[str, Any] = field(default_factory=dict)
    signing_secret: str | None = None
    workspace: str = "ws_sandbox"
    # The CRM emulator (sandbox/crm): its api-key, its object types ({name: {"attributes": [...],
    # "associations": [...]}}, replacing the defaults) or a file extending them, and its switches.
    crm_api_key: str = "dev-crm-key"
    crm_object_types: dict[str, Any] | None = None
    crm_object_types_file: str | None = None
    crm_config: dict[str, Any] = field(default_factory=dict)
    # Sent as X-Sandbox-Admin-Token on /_sandbox/ requests; random unless given (the CLI prints it).
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
