"""The file path of ``make demo``: drop files in (local) S3 and watch them land in the CDP.

Local S3 and Step Functions are moto; the intake function and the REAL import state machine run
in-process (see :mod:`cli.local_aws`); the CDP is the sandbox. Two bundled samples are dropped under
``incoming/contacts/``: a CSV with a few bad rows and a JSONL file, neither with a configured
mapping, so the mapping is inferred from their headers; ``config/contacts.json`` asks for a list.
A ``.txt`` file shows a refusal (no API call) and a re-delivered event shows a duplicate absorbed
(the intake part, first written for issue 5, kept here). The summaries and the errors file are
printed and copied into ``workdir/results/``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.local_aws import LocalAws, s3_event
from cli.status import render, status_rows
from experiture_ingest.files.layout import result_key
from sandbox.testing import SandboxHandle

SAMPLES = Path(__file__).parent / "samples"
DROPS = (
    ("incoming/contacts/2026/spring.csv", SAMPLES / "contacts-spring.csv"),
    ("incoming/contacts/2026/app-signups.jsonl", SAMPLES / "contacts-app.jsonl"),
)
BUCKET = "experiture-ingest-demo"


def _say(text: str) -> None:
    print(text, flush=True)


def run(sandbox_handle: SandboxHandle, workdir: Path) -> None:
    """Drop the samples, follow each execution to its end, show what the user finds in the bucket."""
    env = {
        "EXPERITURE_API_URL": sandbox_handle.base_url,
        "EXPERITURE_API_TOKEN": sandbox_handle.token,
        "IMPORT_POLL_INITIAL_SECONDS": "1",  # the docs' 5 s -> 60 s cadence, shortened for a demo
        "IMPORT_POLL_MAX_SECONDS": "2",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    with LocalAws(env=env) as aws:
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        _say(
            f"Files: local bucket s3://{BUCKET} (moto), state machine {aws.state_machine_arn.rsplit(':', 1)[-1]}"
        )
        aws.s3.put_object(
            Bucket=BUCKET,
            Key="config/contacts.json",
            Body=json.dumps({"createList": True, "listName": "Demo import"}).encode(),
        )
        _say(
            "  config/contacts.json: {createList: true, listName: 'Demo import'} (mapping left to inference)"
        )
        for key, sample in DROPS:
            answer = aws.drop(BUCKET, key, sample.read_bytes())
            outcome = (answer.get("files") or [{}])[0]
            _say(f"  dropped {key} -> intake: {outcome.get('outcome')} (job {outcome.get('jobId')})")
        refused = aws.drop(BUCKET, "incoming/contacts/notes.txt", b"not a data file\n")
        _say(f"  dropped incoming/contacts/notes.txt -> intake: {refused['files'][0]['outcome']}")
        _show_refusal(aws, "incoming/contacts/notes.txt")
        head = aws.s3.head_object(Bucket=BUCKET, Key=DROPS[0][0])
        again = aws.invoke(
            "IntakeFunction",
            s3_event(
                BUCKET, DROPS[0][0], head["ContentLength"], head["ETag"].strip('"'), head.get("VersionId")
            ),
        )
        _say(f"  same S3 event delivered again -> intake: {again['files'][0]['outcome']} (no second job)")
        _say("  import queue right after the drops (experiture-ingest status):")
        for line in render(status_rows(aws.queue(), datetime.now(UTC))):
            _say(f"    {line}")
        _follow(aws)
        lists = sandbox_handle.admin.lists()
        if lists:
            _say(
                "  lists created in the CDP: "
                + ", ".join(
                    f"'{item.get('name')}' ({len(item.get('recordIds', []))} members)" for item in lists
                )
            )
        for key, _ in DROPS:
            _show(aws, key, workdir)


def _follow(aws: LocalAws, timeout: float = 120.0) -> None:
    """Print each execution's progress (its current state) until all have ended."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        running = 0
        for execution in aws.executions():
            arn = execution["executionArn"]
            status = aws.describe(arn).status
            where = status
            if status == "RUNNING":
                running += 1
                entered = [e for e in aws.history(arn) if e["type"].endswith("StateEntered")]
                if entered:
                    where = f"at {entered[-1]['stateEnteredEventDetails']['name']}"
            if seen.get(arn) != where:
                seen[arn] = where
                _say(f"  execution {arn.rsplit(':', 1)[-1][:40]}: {where}")
        if not running:
            return
        if time.monotonic() > deadline:
            _say("  (still running; giving up waiting)")
            return
        time.sleep(0.3)


def _show_refusal(aws: LocalAws, key: str) -> None:
    try:
        summary = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=result_key(key))["Body"].read())
    except aws.s3.exceptions.NoSuchKey:
        return
    reason = summary.get("reason") or {}
    _say(f"    {result_key(key)}: {reason.get('message') or summary.get('outcome')}")


def _show(aws: LocalAws, key: str, workdir: Path) -> None:
    summary_key = result_key(key)
    try:
        body = aws.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read()
    except aws.s3.exceptions.NoSuchKey:
        _say(f"\n{key}: no summary yet")
        return
    summary: dict[str, Any] = json.loads(body)
    local = workdir / summary_key
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(body)
    metrics = summary.get("metrics") or {}
    mapping = summary.get("mapping") or {}
    _say(f"\n{key}")
    _say(f"  summary      s3://{BUCKET}/{summary_key}  (copy: {local})")
    _say(f"  outcome      {summary['outcome']}: {summary['message']}")
    _say(
        "  rows         read {readRows}, imported {rowsImported}, rejected {rowsRejected}, "
        "success rate {successRate}".format(
            **{k: metrics.get(k) for k in ("readRows", "rowsImported", "rowsRejected", "successRate")}
        )
    )
    _say(f"  mapping      {mapping.get('origin')}: {mapping.get('fieldMap')}")
    if summary.get("unmappedColumns"):
        _say(f"  not mapped   {', '.join(summary['unmappedColumns'])}")
    if summary.get("errorSummary"):
        _say(f"  errors       {summary['errorSummary']}")
    errors_file = summary.get("errorsFile")
    if errors_file:
        lines = aws.s3.get_object(Bucket=BUCKET, Key=errors_file["key"])["Body"].read()
        (workdir / errors_file["key"]).write_bytes(lines)
        _say(f"  errors file  s3://{BUCKET}/{errors_file['key']} ({errors_file['rows']} rows):")
        for line in lines.splitlines()[:5]:
            row = json.loads(line)
            _say(f"    row {row.get('rowNumber')}: {row.get('error')}  {json.dumps(row.get('sourceRow'))}")
