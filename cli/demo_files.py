"""The file intake, locally: drop files in an in-process (moto) bucket and watch them become import
jobs in the sandbox. ``run(sandbox_handle, workdir)`` is called by ``experiture-ingest demo``."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws

from sandbox.testing import SandboxHandle

SAMPLE_CSV = Path(__file__).parent / "samples" / "contacts.csv"
BUCKET = "demo-ingest"
PASS_MACHINE = json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Pass", "End": True}}})


def run(sandbox_handle: SandboxHandle, workdir: Path) -> None:
    """Drop three files (a CSV with a unicode name, a gzip with metadata overrides, a .txt) and report."""
    del workdir  # nothing touches disk: the bucket lives in memory, uploads stream to the sandbox
    env = {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "EXPERITURE_API_URL": sandbox_handle.base_url,
        "EXPERITURE_API_TOKEN": sandbox_handle.token,
    }
    with mock.patch.dict(os.environ, env), mock_aws():
        from experiture_ingest.client import BearerToken, ExperitureClient
        from experiture_ingest.files.intake import DroppedFile, Intake, IntakeSettings

        s3 = boto3.client("s3")
        sfn = boto3.client("stepfunctions")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        arn = sfn.create_state_machine(
            name="ImportStateMachine", definition=PASS_MACHINE, roleArn="arn:aws:iam::123456789012:role/demo"
        )["stateMachineArn"]
        s3.put_object(
            Bucket=BUCKET,
            Key="config/contacts.json",
            Body=json.dumps({"createList": True, "listName": "Demo import"}).encode(),
        )
        data = SAMPLE_CSV.read_bytes()
        drops: list[tuple[str, bytes, dict[str, str]]] = [
            ("incoming/contacts/2026/spring sale über.csv", data, {}),
            (
                "incoming/contacts/archive.csv.gz",
                gzip.compress(data),
                {"experiture-list-name": "From metadata"},
            ),
            ("incoming/contacts/notes.txt", b"not a data file\n", {}),
        ]
        with ExperitureClient(sandbox_handle.base_url, BearerToken(sandbox_handle.token)) as client:
            intake = Intake(
                s3=s3,
                sfn=sfn,
                client=client,
                settings=IntakeSettings.model_validate({"IMPORT_STATE_MACHINE_ARN": arn}),
            )
            print("Files: dropping into s3://demo-ingest/ (config/contacts.json creates a list)")
            for key, body, metadata in drops:
                put = s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata)
                outcome = intake.handle(DroppedFile(BUCKET, key, put.get("VersionId"), put["ETag"]))
                _show(key, outcome.summary, sandbox_handle)
            again = intake.handle(DroppedFile(BUCKET, drops[0][0]))
            print(f"  same event again            -> {again.outcome} (no second job)")


def _show(key: str, summary: dict[str, Any], sandbox_handle: SandboxHandle) -> None:
    if summary["outcome"] != "uploaded":
        print(f"  {key:<45} -> {summary['outcome']}: {summary['reason']['message']}")
        return
    job = sandbox_handle.admin.job(summary["jobId"])
    print(
        f"  {key:<45} -> job {summary['jobId']}: {summary['bytesUploaded']} bytes in "
        f"{summary['uploadSeconds']:.2f} s, list {job.get('listName')!r}, summary at results/{key}.json"
    )
