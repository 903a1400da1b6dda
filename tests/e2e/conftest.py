"""End to end: the REAL state machine definition on moto's interpreter, handlers in-process, the
sandbox over real HTTP.

``imports`` (an :class:`Imports`) creates an import job and uploads a file with the client (what the
intake does), puts the same bytes in the moto bucket, and starts the state machine with the
``ImportRun`` hand-off; ``finish`` waits for the run (through continuations) and reads the summary.
Waits are shortened through the input's poll settings, never by editing the definition.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from cli.local_aws import Execution, LocalAws
from experiture_ingest.client import BearerToken, ExperitureClient, ImportJobInit
from experiture_ingest.files.layout import errors_key, result_key
from sandbox.testing import SandboxHandle

BUCKET = "ingest-e2e"
# Poll every second: e2e runs wait for the sandbox, not for production's backoff. FAST_POLL goes in
# an execution's input (``poll``), FAST_POLL_ENV in the functions' environment (the intake's default).
FAST_POLL = {"initialSeconds": 1, "factor": 1.0, "maxSeconds": 1}
FAST_POLL_ENV = {
    "IMPORT_POLL_INITIAL_SECONDS": "1",
    "IMPORT_POLL_FACTOR": "1",
    "IMPORT_POLL_MAX_SECONDS": "1",
}


@dataclass
class Submitted:
    job_id: str
    key: str
    execution_arn: str


@dataclass
class Finished:
    execution: Execution
    summary: dict[str, Any]
    errors_lines: list[dict[str, Any]] | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Imports:
    aws: LocalAws
    sandbox: SandboxHandle
    client: ExperitureClient

    def submit(
        self,
        key: str,
        body: bytes,
        *,
        object_name: str = "contacts",
        fmt: str = "csv",
        compression: str | None = None,
        options: dict[str, Any] | None = None,
        poll: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Submitted:
        # What the intake does: init + upload, then the hand-off to the state machine.
        slot = self.client.init_import(
            ImportJobInit(object_name=object_name, file_name=key.rsplit("/", 1)[-1], file_size=len(body))
        )
        self.client.upload(slot, lambda: io.BytesIO(body), len(body))
        put = self.aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        run = {
            "jobId": slot.job_id,
            "objectName": object_name,
            "source": {
                "bucket": BUCKET,
                "key": key,
                "versionId": put.get("VersionId"),
                "size": len(body),
                "format": fmt,
                "compression": compression,
            },
            "options": options or {},
            "poll": {**FAST_POLL, **(poll or {})},
        }
        arn = self.aws.start(run, name or f"e2e-{slot.job_id}")
        return Submitted(slot.job_id, key, arn)

    def finish(self, submitted: Submitted, timeout: float = 60.0) -> Finished:
        execution = self.aws.wait(submitted.execution_arn, timeout)
        summary = json.loads(
            self.aws.s3.get_object(Bucket=BUCKET, Key=result_key(submitted.key))["Body"].read()
        )
        try:
            raw = self.aws.s3.get_object(Bucket=BUCKET, Key=errors_key(submitted.key))["Body"].read()
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except self.aws.s3.exceptions.NoSuchKey:
            lines = None
        tags = self.aws.s3.get_object_tagging(Bucket=BUCKET, Key=submitted.key)["TagSet"]
        return Finished(execution, summary, lines, {t["Key"]: t["Value"] for t in tags})


@contextmanager
def local_stack(
    sandbox: SandboxHandle,
    bucket: str,
    env: Mapping[str, str] | None = None,
    *,
    schedule_seconds: float | None = 1.0,
) -> Iterator[LocalAws]:
    """A local stack talking to ``sandbox``, with a versioned ingest ``bucket``; ``env`` is added."""
    full = {"EXPERITURE_API_URL": sandbox.base_url, "EXPERITURE_API_TOKEN": sandbox.token, **(env or {})}
    with LocalAws(env=full, schedule_seconds=schedule_seconds) as local:
        local.s3.create_bucket(Bucket=bucket)
        local.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield local


@pytest.fixture
def aws(sandbox: SandboxHandle) -> Iterator[LocalAws]:
    with local_stack(sandbox, BUCKET) as local:
        yield local


@pytest.fixture
def imports(aws: LocalAws, sandbox: SandboxHandle) -> Iterator[Imports]:
    with ExperitureClient(sandbox.base_url, BearerToken(sandbox.token)) as client:
        yield Imports(aws, sandbox, client)
