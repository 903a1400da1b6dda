"""Client settings, read from ``EXPERITURE_*`` environment variables.

>>> s = ClientSettings.from_env({"EXPERITURE_API_URL": "http://127.0.0.1:8787/public/v1",
...                              "EXPERITURE_API_TOKEN": "dev-token"})
>>> s.api_url, s.resolved_token_url
('http://127.0.0.1:8787/public/v1', 'http://127.0.0.1:8787/oauth/token')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from experiture_ingest.settings import load_settings

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str) -> str:
    """``url`` if it is HTTPS, or plain HTTP to a loopback host (the local sandbox); ValueError otherwise."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in {"https", "http"}:
        raise ValueError("must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("must use HTTPS (plain HTTP is allowed only to a loopback host)")
    return url


class ClientSettings(BaseModel):
    """Where the API is, how to authenticate, and how patient to be."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_url: str = Field(alias="EXPERITURE_API_URL", description="Base URL including /public/v1")
    api_token: SecretStr | None = Field(default=None, alias="EXPERITURE_API_TOKEN")
    secret_arn: str | None = Field(default=None, alias="EXPERITURE_SECRET_ARN")
    token_url: str | None = Field(default=None, alias="EXPERITURE_TOKEN_URL")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, alias="EXPERITURE_CONNECT_TIMEOUT_SECONDS")
    read_timeout_seconds: float = Field(default=30.0, gt=0, alias="EXPERITURE_READ_TIMEOUT_SECONDS")
    retry_max_attempts: int = Field(default=5, ge=1, le=20, alias="EXPERITURE_RETRY_MAX_ATTEMPTS")
    retry_budget_seconds: float = Field(default=60.0, gt=0, alias="EXPERITURE_RETRY_BUDGET_SECONDS")
    secret_max_age_seconds: int = Field(default=300, ge=0, alias="EXPERITURE_SECRET_MAX_AGE_SECONDS")

    @field_validator("api_url", "token_url")
    @classmethod
    def _secure(cls, url: str | None) -> str | None:
        return None if url is None else require_secure_url(url.rstrip("/"))

    @model_validator(mode="after")
    def _one_credential(self) -> ClientSettings:
        if self.api_token is None and self.secret_arn is None:
            raise ValueError("set EXPERITURE_API_TOKEN (local runs) or EXPERITURE_SECRET_ARN (deployed)")
        return self

    @property
    def resolved_token_url(self) -> str:
        """The OAuth2 token endpoint: as configured, else ``/oauth/token`` on the API's host."""
        if self.token_url:
            return self.token_url
        parts = urlsplit(self.api_url)
        return f"{parts.scheme}://{parts.netloc}/oauth/token"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        return load_settings(cls, env)
