"""Settings of the writer and settle functions, read from the environment.

>>> s = StreamSettings.from_env({"DEAD_LETTER_QUEUE_URL": "https://sqs/dlq", "SETTLE_QUEUE_URL": "https://sqs/s",
...                              "PAYLOAD_BUCKET": "kept", "STREAM_DEFAULT_TARGET": "contacts:upsert"})
>>> str(s.default_target), s.cadence
('contacts:upsert', (2.0, 1.5, 30.0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experiture_ingest.limits import BATCH_JOB_POLL
from experiture_ingest.settings import load_settings
from experiture_ingest.streams.contract import Target

if TYPE_CHECKING:
    from botocore.config import Config

# The stream functions' AWS calls (S3, SQS, DynamoDB) are bounded so time budgets can be computed:
# 2 attempts of at most 2 s connect + 5 s read, and a backoff under 1 s between them.
AWS_CONNECT_SECONDS = 2.0
AWS_READ_SECONDS = 5.0
AWS_ATTEMPTS = 2
AWS_CALL_SECONDS = AWS_ATTEMPTS * (AWS_CONNECT_SECONDS + AWS_READ_SECONDS) + 1.0


def aws_client_config() -> Config:
    """The botocore config of the stream functions' clients (see AWS_CALL_SECONDS)."""
    from botocore.config import Config

    return Config(
        connect_timeout=AWS_CONNECT_SECONDS,
        read_timeout=AWS_READ_SECONDS,
        retries={"total_max_attempts": AWS_ATTEMPTS, "mode": "standard"},
    )


class StreamSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    dead_letter_queue_url: str = Field(alias="DEAD_LETTER_QUEUE_URL", min_length=1)
    settle_queue_url: str = Field(alias="SETTLE_QUEUE_URL", min_length=1)
    payload_bucket: str = Field(alias="PAYLOAD_BUCKET", min_length=3)
    default_target: Target | None = Field(default=None, alias="STREAM_DEFAULT_TARGET")
    schema_ttl_seconds: float = Field(default=300.0, ge=0, alias="SCHEMA_TTL_SECONDS")
    # Requests (independent targets) one writer invocation sends at once.
    send_concurrency: int = Field(default=6, ge=1, le=32, alias="STREAM_SEND_CONCURRENCY")
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
