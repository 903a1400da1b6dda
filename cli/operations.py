"""Operator commands against a deployed stack (boto3 and the stack's outputs), or the local stack.

    experiture-ingest smoke --stack NAME [--region R] [--object contacts] [--timeout 900]
    experiture-ingest smoke --local          # the same checks on the local stack and sandbox, no AWS
    experiture-ingest redrive-intake --stack NAME [--region R]

``smoke`` drops a two-row file under ``incoming/<object>/smoke/`` and sends three records to the
record queue, then waits for the file's summary in ``results/`` and for the records' batch job (found
through the message ledger) to complete in the CDP; it prints a pass/fail table and exits 1 on any
failure. It first checks that the API accepts the stack's own credentials (the secret's), so a refused
token fails at once with that reason instead of after a long wait.

``redrive-intake`` reads every message in the intake's failure queue (the on-failure destination
records Lambda writes after an S3 event's three deliveries failed), invokes the intake function again
with the original S3 event, and deletes the messages whose event now succeeds; the others stay, with
the reason printed.

Both take a :class:`Stack`: :class:`DeployedStack` here, :class:`cli.local_stack.LocalStack` in tests.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from experiture_ingest.client import (
    AuthenticationError,
    ClientSettings,
    ExperitureClient,
    ExperitureError,
    ForbiddenError,
)
from experiture_ingest.client.auth import auth_from_secret
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.ledger import ledger_key
from experiture_ingest.streams.producer import message_bodies

# An intake invocation may upload a 5 GiB file: its 900 s timeout, plus margin.
INTAKE_READ_TIMEOUT_SECONDS = 960
REQUIRED_OUTPUTS = (
    "IngestBucketName",
    "IntakeDeadLetterQueueUrl",
    "IntakeFunctionName",
    "RecordQueueUrl",
    "StreamMessageLedgerName",
)


class OperationError(Exception):
    """The command cannot run (stack not found, an output missing, no AWS credentials)."""


@dataclass(frozen=True)
class Invoked:
    """One synchronous intake invocation: whether it succeeded, and the error it reported if not."""

    ok: bool
    error: str | None = None


class Stack(Protocol):
    """What the commands need of a stack: its outputs, AWS clients, an API client, the intake."""

    @property
    def outputs(self) -> Mapping[str, str]: ...

    @property
    def s3(self) -> Any: ...

    @property
    def sqs(self) -> Any: ...

    @property
    def dynamodb(self) -> Any: ...

    def api_client(self) -> ExperitureClient: ...

    def invoke_intake(self, event: Mapping[str, Any]) -> Invoked: ...

    def advance(self) -> None:
        """Let the stack work for a moment (a deployed stack runs by itself: just wait)."""


@dataclass
class DeployedStack:
    """A stack deployed with ``sam deploy``: outputs and parameters from CloudFormation."""

    name: str
    outputs: Mapping[str, str]
    parameters: Mapping[str, str]
    session: Any
    poll_seconds: float = 5.0

    @classmethod
    def connect(cls, name: str, region: str | None = None) -> DeployedStack:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        session = boto3.session.Session(region_name=region)
        try:
            found = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as exc:
            raise OperationError(f"stack {name!r}: {exc.response['Error'].get('Message')}") from None
        except BotoCoreError as exc:
            raise OperationError(f"cannot reach CloudFormation: {exc}") from None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
        missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
        if missing:
            raise OperationError(
                f"stack {name!r} has no output {', '.join(missing)}: deploy this version first"
            )
        parameters = {
            p["ParameterKey"]: p.get("ResolvedValue") or p.get("ParameterValue", "")
            for p in found.get("Parameters", [])
        }
        return cls(name, outputs, parameters, session)

    @functools.cached_property
    def s3(self) -> Any:
        return self.session.client("s3")

    @functools.cached_property
    def sqs(self) -> Any:
        return self.session.client("sqs")

    @functools.cached_property
    def dynamodb(self) -> Any:
        return self.session.client("dynamodb")

    def api_client(self) -> ExperitureClient:
        """A client with the stack's own credentials: its API URL and the secret it reads."""
        settings = ClientSettings.from_env(
            {
                "EXPERITURE_API_URL": self.parameters["ExperitureApiUrl"],
                "EXPERITURE_SECRET_ARN": self.parameters["ExperitureSecretArn"],
            }
        )
        raw = self.session.client("secretsmanager").get_secret_value(SecretId=settings.secret_arn)
        auth = auth_from_secret(
            json.loads(raw["SecretString"]), default_token_url=settings.resolved_token_url
        )
        return ExperitureClient(settings.api_url, auth)

    def invoke_intake(self, event: Mapping[str, Any]) -> Invoked:
        from botocore.config import Config

        client = self.session.client(
            "lambda", config=Config(read_timeout=INTAKE_READ_TIMEOUT_SECONDS, retries={"max_attempts": 1})
        )
        answer = client.invoke(
            FunctionName=self.outputs["IntakeFunctionName"],
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        if answer.get("FunctionError"):
            payload = json.loads(answer["Payload"].read() or b"{}")
            return Invoked(False, f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        return Invoked(True)

    def advance(self) -> None:
        time.sleep(self.poll_seconds)


# redrive-intake -----------------------------------------------------------------------------------


@dataclass
class Redriven:
    """What ``redrive_intake`` did: events that now succeeded (deleted), those kept, and why."""

    succeeded: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)


def _failed_events(sqs: Any, queue_url: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every message in the queue once (body, receipt); each stays hidden until handled."""
    seen: set[str] = set()
    while True:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=INTAKE_READ_TIMEOUT_SECONDS + 60,  # longer than one invocation takes
        )
        messages = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            return
        for message in messages:
            seen.add(message["MessageId"])
            try:
                body = json.loads(message["Body"])
            except ValueError:
                body = {}
            yield (body if isinstance(body, dict) else {}), message["ReceiptHandle"]


def _keys(event: Mapping[str, Any]) -> str:
    records = event.get("Records") or []
    return ", ".join(str(((r.get("s3") or {}).get("object") or {}).get("key")) for r in records) or "?"


def redrive_intake(stack: Stack, say: Callable[[str], None] = print) -> Redriven:
    """Invoke the intake again with each failed S3 event; delete the messages whose event succeeds."""
    sqs, url = stack.sqs, stack.outputs["IntakeDeadLetterQueueUrl"]
    done = Redriven()
    kept_receipts: list[str] = []
    for record, receipt in _failed_events(sqs, url):
        event = record.get("requestPayload")
        if not isinstance(event, dict) or not event.get("Records"):
            done.kept.append(("?", "not an on-failure record of an S3 event; left in the queue"))
            kept_receipts.append(receipt)
            continue
        keys = _keys(event)
        result = stack.invoke_intake(event)
        if result.ok:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
            done.succeeded.append(keys)
            say(f"imported again: {keys}")
        else:
            done.kept.append((keys, result.error or "failed"))
            kept_receipts.append(receipt)
            say(f"still failing, kept: {keys}: {result.error}")
    for receipt in kept_receipts:  # visible again for the next run
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
    return done


# smoke --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    passed: bool | None = None  # None: not run (an earlier check failed)
    detail: str = ""


@dataclass
class SmokeReport:
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
        for c in self.checks:
            result = "PASS" if c.passed else ("FAIL" if c.passed is False else "skip")
            lines.append(f"{c.name.ljust(width)}  {result:<6}  {c.detail}")
        lines.append(f"smoke test {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def _wait(stack: Stack, deadline: float, probe: Callable[[], Any]) -> Any:
    """``probe()`` until it answers something other than None, letting the stack work in between."""
    while True:
        found = probe()
        if found is not None or time.monotonic() > deadline:
            return found
        stack.advance()


def _credentials(stack: Stack, object_name: str) -> Check:
    check = Check("API accepts the stack's credentials")
    try:
        with stack.api_client() as client:
            client.get_object_schema(object_name)
    except (AuthenticationError, ForbiddenError) as exc:
        check.passed = False
        check.detail = (
            f"the API refused the credentials (HTTP {exc.status} {exc.code or ''}): fix the token or "
            "client id/secret in the stack's secret (ExperitureSecretArn)"
        ).replace("  ", " ")
    except ExperitureError as exc:
        check.passed = False
        check.detail = f"the API did not answer as expected: {exc}"
    else:
        check.passed = True
        check.detail = f"read the {object_name} schema"
    return check


def _file(stack: Stack, object_name: str, run_id: str, deadline: float) -> Check:
    check = Check("file imported (summary in results/)")
    bucket = stack.outputs["IngestBucketName"]
    key = f"incoming/{object_name}/smoke/{run_id}.csv"
    rows = [f"smoke-{run_id}-f{i}@example.com" for i in range(2)]
    body = ("email,first_name\n" + "".join(f"{email},Smoke\n" for email in rows)).encode()
    stack.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def summary() -> dict[str, Any] | None:
        try:
            raw = stack.s3.get_object(Bucket=bucket, Key=f"results/{key}.json")["Body"].read()
        except stack.s3.exceptions.NoSuchKey:
            return None
        doc = json.loads(raw)
        # The intake writes an interim summary ("uploaded"); the state machine the final one.
        return doc if doc.get("outcome") not in ("uploaded", None) else None

    found = _wait(stack, deadline, summary)
    if found is None:
        check.passed, check.detail = False, f"no final summary at s3://{bucket}/results/{key}.json in time"
        return check
    imported = (found.get("metrics") or {}).get("rowsImported")
    check.passed = found["outcome"] == "completed" and imported == len(rows)
    check.detail = f"{found['outcome']}: {found.get('message') or (found.get('reason') or {}).get('message')}"
    return check


def _records(stack: Stack, object_name: str, run_id: str, deadline: float) -> Check:
    check = Check("records written (batch job completed)")
    records = [{"email": f"smoke-{run_id}-r{i}@example.com", "first_name": "Smoke"} for i in range(3)]
    target = Target(object=object_name, operation="upsert", match_key="email")
    [body] = list(message_bodies(target, records))
    sent = stack.sqs.send_message(QueueUrl=stack.outputs["RecordQueueUrl"], MessageBody=body)
    key = ledger_key(sent["MessageId"], hashlib.sha256(body.encode()).hexdigest())
    table = stack.outputs["StreamMessageLedgerName"]

    def job_id() -> str | None:
        item = stack.dynamodb.get_item(TableName=table, Key={"pk": {"S": key}}).get("Item")
        return item["jobId"]["S"] if item else None

    found = _wait(stack, deadline, job_id)
    if found is None:
        check.passed = False
        check.detail = "the records are in no accepted batch job in time (see RecordDeadLetterQueueUrl)"
        return check
    with stack.api_client() as client:

        def settled() -> Any:
            status = client.get_batch_job(object_name, found)
            return status if status.is_terminal else None

        status = _wait(stack, deadline, settled)
    if status is None:
        check.passed, check.detail = False, f"batch job {found} still running"
        return check
    valid = status.metrics.valid_rows
    check.passed = status.state == "completed" and valid == len(records)
    check.detail = f"batch job {found} {status.state}: {valid} of {len(records)} rows valid"
    return check


def smoke(stack: Stack, *, object_name: str = "contacts", timeout: float = 900.0) -> SmokeReport:
    """Credentials first; then a tiny file and three records, each waited for up to ``timeout``."""
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    checks = [_credentials(stack, object_name)]
    if not checks[0].passed:
        checks += [
            Check("file imported (summary in results/)"),
            Check("records written (batch job completed)"),
        ]
        return SmokeReport(checks)
    deadline = time.monotonic() + timeout
    checks.append(_file(stack, object_name, run_id, deadline))
    checks.append(_records(stack, object_name, run_id, deadline))
    return SmokeReport(checks)


# The commands -------------------------------------------------------------------------------------


def add_command(subparsers: Any) -> None:
    smoke_cmd = subparsers.add_parser(
        "smoke",
        help="check a deployed stack end to end: a tiny file and three records into the CDP",
        description=(
            "Drop a two-row file and send three records, wait for the file's summary and the records' "
            "batch job, print a pass/fail table (exit 1 on a failure)."
        ),
    )
    where = smoke_cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="the CloudFormation stack name")
    where.add_argument(
        "--local", action="store_true", help="run against the local stack (moto) and a local sandbox instead"
    )
    smoke_cmd.add_argument("--region", default=None, help="its region (default: your AWS config)")
    smoke_cmd.add_argument("--object", default="contacts", help="the CDP object to write (default contacts)")
    smoke_cmd.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (default 900)")
    smoke_cmd.set_defaults(run=_run_smoke)

    redrive = subparsers.add_parser(
        "redrive-intake",
        help="re-run the S3 events in the intake's failure queue; remove those that now succeed",
        description=(
            "After fixing what made files fail (the API down, a refused token): invoke the intake again "
            "with every S3 event in its failure queue and delete the ones that now succeed."
        ),
    )
    redrive.add_argument("--stack", required=True, help="the CloudFormation stack name")
    redrive.add_argument("--region", default=None, help="its region (default: your AWS config)")
    redrive.set_defaults(run=_run_redrive)


def _connect(args: argparse.Namespace, err: IO[str]) -> DeployedStack | None:
    try:
        return DeployedStack.connect(args.stack, args.region)
    except OperationError as exc:
        print(f"error: {exc}", file=err)
        return None


def _smoke_locally(args: argparse.Namespace) -> SmokeReport:
    """The local stack (moto, the real handlers and state machine) against a sandbox in this process."""
    from cli.local_stack import LocalStack
    from sandbox.testing import running_sandbox

    with running_sandbox(speed="instant") as sandbox:
        env = {
            "EXPERITURE_API_URL": sandbox.base_url,
            "EXPERITURE_API_TOKEN": sandbox.token,
            "IMPORT_POLL_INITIAL_SECONDS": "1",
            "IMPORT_POLL_MAX_SECONDS": "1",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        with LocalStack(env) as stack:
            return smoke(stack, object_name=args.object, timeout=args.timeout)


def _run_smoke(args: argparse.Namespace) -> int:
    if args.local:
        report = _smoke_locally(args)
    else:
        stack = _connect(args, sys.stderr)
        if stack is None:
            return 2
        report = smoke(stack, object_name=args.object, timeout=args.timeout)
    print(report.table())
    return 0 if report.passed else 1


def _run_redrive(args: argparse.Namespace) -> int:
    stack = _connect(args, sys.stderr)
    if stack is None:
        return 2
    done = redrive_intake(stack)
    print(f"{len(done.succeeded)} event(s) imported again and removed; {len(done.kept)} kept in the queue")
    return 0 if not done.kept else 1
