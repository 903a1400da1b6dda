"""The intake against moto S3 + moto Step Functions (in-process) and the sandbox over real HTTP.

``drop(key, body, **put_kwargs)`` puts an object in the versioned ingest bucket and returns the S3
event that notification would deliver (key URL-encoded the way S3 encodes it); ``invoke(event)`` runs
the real Lambda handler on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from moto import mock_aws

from cli.lambda_context import LambdaContext
from experiture_ingest.client import client_from_env
from experiture_ingest.files.layout import result_key
from sandbox.testing import SandboxHandle

BUCKET = "ingest-test"
REGION = "us-east-1"
PASS_MACHINE = json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Pass", "End": True}}})


def s3_event(bucket: str, key: str, size: int, etag: str, version_id: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag, "sequencer": "01"}
    if version_id:
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-04-21T15:30:00.000Z",
                "eventName": "ObjectCreated:Put",
                "responseElements": {"x-amz-request-id": "REQ123", "x-amz-id-2": "id2"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "IncomingFile",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": obj,
                },
            }
        ]
    }


@dataclass
class Env:
    s3: Any
    sfn: Any
    state_machine_arn: str
    sandbox: SandboxHandle
    bucket: str = BUCKET

    def drop(self, key: str, body: bytes, **put: Any) -> dict[str, Any]:
        response = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **put)
        return s3_event(self.bucket, key, len(body), response["ETag"].strip('"'), response.get("VersionId"))

    def summary(self, key: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.bucket, Key=result_key(key))["Body"].read()
        return json.loads(body)  # type: ignore[no-any-return]

    def tags(self, key: str) -> dict[str, str]:
        return {
            t["Key"]: t["Value"] for t in self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        }

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]  # type: ignore[no-any-return]

    def execution_input(self, execution_arn: str) -> dict[str, Any]:
        return json.loads(self.sfn.describe_execution(executionArn=execution_arn)["input"])  # type: ignore[no-any-return]

    def put_config(self, folder: str, document: Any) -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.s3.put_object(Bucket=self.bucket, Key=f"config/{folder}.json", Body=body)


@pytest.fixture
def env(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "EXPERITURE_API_URL": sandbox.base_url,
        "EXPERITURE_API_TOKEN": sandbox.token,
        "EXPERITURE_RETRY_BUDGET_SECONDS": "20",
        "POWERTOOLS_METRICS_NAMESPACE": "ExperitureIngestTest",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EXPERITURE_SECRET_ARN", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="ImportStateMachine",
            definition=PASS_MACHINE,
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        monkeypatch.setenv("IMPORT_STATE_MACHINE_ARN", arn)
        _clear_caches()
        yield Env(s3, sfn, arn, sandbox)
        _clear_caches()


def _clear_caches() -> None:
    import functions.intake.app as app

    app.intake.cache_clear()
    client_from_env.cache_clear()


@pytest.fixture
def invoke(env: Env) -> Callable[[dict[str, Any]], dict[str, Any]]:
    import functions.intake.app as app

    def run(event: dict[str, Any]) -> dict[str, Any]:
        return app.handler(event, LambdaContext.for_function("intake"))  # type: ignore[no-any-return]

    return run
