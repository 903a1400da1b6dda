"""Settings of the writer and settle functions, read from the environment.

>>> s = StreamSettings.from_env({"DEAD_LETTER_QUEUE_URL": "https://sqs/dlq", "SETTLE_QUEUE_URL": "https://sqs/s",
...                              "PAYLOAD_BUCKET": "kept", "STREAM_DEFAULT_TARGET": "contacts:upsert"})
>>> str(s.default_target), s.cadence
('contacts:upsert', (2.0, 1.5, 30.0))
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experiture_ingest.limits import BATCH_JOB_POLL
from experiture_ingest.settings import load_settings
from experiture_ingest.streams.contract import Target


class StreamSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    dead_letter_queue_url: str = Field(alias="DEAD_LETTER_QUEUE_URL", min_length=1)
    settle_queue_url: str = Field(alias="SETTLE_QUEUE_URL", min_length=1)
    payload_bucket: str = Field(alias="PAYLOAD_BUCKET", min_length=3)
    default_target: Target | None = Field(default=None, alias="STREAM_DEFAULT_TARGET")
    schema_ttl_seconds: float = Field(default=300.0, ge=0, alias="SCHEMA_TTL_SECONDS")
    # No new request with less than this left of the invocation (the client may retry a call ~60 s).
    time_margin_seconds: float = Field(default=30.0, ge=0, alias="WRITER_TIME_MARGIN_SECONDS")
    # DynamoDB table of messages already written (see streams.ledger); unset: no ledger.
    ledger_table: str | None = Field(default=None, min_length=3, alias="LEDGER_TABLE")
    max_redrives: int = Field(default=2, ge=0, le=10, alias="SETTLE_MAX_REDRIVES")
    # A job still running this long after it was accepted is reported and dead-lettered (STREAM.JOB_STUCK).
    max_age_seconds: float = Field(default=6 * 3600, ge=60, alias="SETTLE_MAX_AGE_SECONDS")
    poll_first_seconds: float = Field(default=BATCH_JOB_POLL[0], ge=0, alias="SETTLE_POLL_FIRST_SECONDS")
    poll_factor: float = Field(default=BATCH_JOB_POLL[1], ge=1, alias="SETTLE_POLL_FACTOR")
    poll_cap_seconds: float = Field(default=BATCH_JOB_POLL[2], ge=0, le=900, alias="SETTLE_POLL_CAP_SECONDS")

    @field_validator("default_target", mode="before")
    @classmethod
    def _target(cls, value: object) -> object:
        return Target.parse(value) if isinstance(value, str) else value

    @property
    def cadence(self) -> tuple[float, float, float]:
        return (self.poll_first_seconds, self.poll_factor, self.poll_cap_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamSettings:
        return load_settings(cls, env)
