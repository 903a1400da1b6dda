"""CRM destination settings, read from ``CRM_*`` environment variables.

The vendor has no schema endpoint, so each object type's attribute list is configuration
(``CRM_OBJECT_TYPES``, JSON ``{"vehicle": ["model", "brand"]}``). A record with attributes not in it is
dead-lettered whole (``CRM_UNKNOWN_ATTRIBUTES=dead_letter``, the default), or sent with the unknown
names written to a report under ``reports/crm/`` (``report``), rather than silently ignored by the vendor.

>>> s = CrmSettings.from_env({"CRM_API_KEY": "k", "CRM_OBJECT_TYPES": '{"vehicle": ["model"]}'})
>>> s.enabled, s.api_url, s.object_types
(True, 'https://api.brevo.com/v3', {'vehicle': frozenset({'model'})})
>>> CrmSettings.from_env({}).enabled
False
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from experiture_ingest.client.settings import require_secure_url
from experiture_ingest.settings import load_settings

DEFAULT_API_URL = "https://api.brevo.com/v3"


class CrmSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_url: str = Field(default=DEFAULT_API_URL, alias="CRM_API_URL")
    api_key: SecretStr | None = Field(default=None, alias="CRM_API_KEY")
    # A Secrets Manager secret holding {"apiKey": "..."} (or the key as plain text). Empty: off.
    secret_arn: str | None = Field(default=None, alias="CRM_SECRET_ARN")
    object_types: dict[str, frozenset[str]] = Field(default_factory=dict, alias="CRM_OBJECT_TYPES")
    unknown_attributes: Literal["dead_letter", "report"] = Field(
        default="dead_letter", alias="CRM_UNKNOWN_ATTRIBUTES"
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, alias="CRM_CONNECT_TIMEOUT_SECONDS")
    read_timeout_seconds: float = Field(default=30.0, gt=0, alias="CRM_READ_TIMEOUT_SECONDS")
    retry_max_attempts: int = Field(default=5, ge=1, le=20, alias="CRM_RETRY_MAX_ATTEMPTS")
    retry_budget_seconds: float = Field(default=60.0, gt=0, alias="CRM_RETRY_BUDGET_SECONDS")
    secret_max_age_seconds: int = Field(default=300, ge=0, alias="CRM_SECRET_MAX_AGE_SECONDS")

    @field_validator("api_url")
    @classmethod
    def _secure(cls, url: str) -> str:
        return require_secure_url(url.rstrip("/"))

    @field_validator("secret_arn", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("object_types", mode="before")
    @classmethod
    def _types(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict) or not all(
            isinstance(names, list) and all(isinstance(n, str) for n in names) for names in value.values()
        ):
            raise ValueError('CRM_OBJECT_TYPES must be JSON like {"vehicle": ["model", "brand"]}')
        return {name: frozenset(names) for name, names in value.items()}

    @property
    def enabled(self) -> bool:
        return self.api_key is not None or self.secret_arn is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CrmSettings:
        return load_settings(cls, env)
