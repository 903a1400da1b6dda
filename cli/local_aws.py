"""Run the REAL import state machine locally: moto's Step Functions interpreter, handlers in-process.

What runs is ``statemachine/import_job.asl.json`` with ``template.yaml``'s DefinitionSubstitutions
resolved: each ``!GetAtt <Function>.Arn``, or alias (``!Ref <Function>.Alias``, SAM's reference to the
``AutoPublishAlias``, or ``!Ref <Function>Alias<name>``, the alias resource SAM generates) becomes a
local Lambda ARN (qualified with the alias name) routed to that function's own handler (its
``CodeUri`` and ``Handler`` in the template). Nothing in the definition is edited; waits
are shortened through the execution input (``poll`` settings).

The shim (moto 5.2.x, pinned in pyproject.toml) is two small patches, active only inside
:class:`LocalAws`:

1. ``lambda_eval_utils._invoke_lambda_function``: moto's interpreter invokes Lambda through its
   Lambda backend, which runs no code without Docker. We call the handler in-process and answer as
   Lambda does: the return value as Payload, or ``FunctionError: Unhandled`` with
   ``{"errorType": <exception class name>, "errorMessage": str(exc)}``.
2. ``StateTaskServiceSfn._normalise_parameters`` / ``_normalise_response``: moto passes
   ``arn:aws:states:::states:startExecution`` parameters to boto3 in the ASL's PascalCase
   (``StateMachineArn``) where boto3 wants ``stateMachineArn``, and returns the answer in boto3's
   casing; we translate both ways, as Step Functions does.
3. ``Execution.stop``: moto marks a stopped execution, but one waiting on a task token keeps waiting
   (until its timeout, days) and stays RUNNING; Step Functions aborts it at once. We wake its
   pending callbacks so it ends ABORTED.
4. ``BotocoreStubber.process_request`` under one lock: an AWS service applies each request
   atomically (a DynamoDB transaction, a conditional write), moto's in-process backends do not lock;
   executions run in threads, so requests are serialised as a service would.

The ``.waitForTaskToken`` Enqueue task runs on moto's own callback support (task tokens,
``SendTaskSuccess``, ``TimeoutSecondsPath``). The import queue's table is created from its definition
in template.yaml, and the EventBridge schedule of ``ImportDispatchFunction`` is a background thread
(every ``schedule_seconds``). moto emits no EventBridge events: the execution-status rule's handler
is called by tests with the event's real shape (:func:`execution_status_event`).

Usage::

    with LocalAws(env={"EXPERITURE_API_URL": sb.base_url, "EXPERITURE_API_TOKEN": sb.token}) as aws:
        aws.s3.create_bucket(Bucket="ingest")
        arn = aws.start(run_document, name="job-1")
        result = aws.wait(arn)          # Execution(status="SUCCEEDED", output={...}, ...)
"""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

import boto3
import yaml  # type: ignore[import-untyped]

from cli.lambda_context import LambdaContext

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
STATE_MACHINE_ID = "ImportStateMachine"
REGION = "us-east-1"
ACCOUNT = "123456789012"
STATE_MACHINE_NAME = "experiture-ingest-import-job"
QUEUE_TABLE_ID = "ImportQueueTable"
QUEUE_TABLE_NAME = "experiture-ingest-import-queue"
DISPATCH_FUNCTION_ID = "ImportDispatchFunction"
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

Handler = Callable[[dict[str, Any], Any], Any]


class LocalAwsError(RuntimeError):
    """The template or definition cannot be run locally; the message says what is wrong."""


# Template --------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation short tags (``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """``template.yaml`` as a dict, short tags expanded to their long form."""
    doc: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
    return doc


def definition_placeholders(definition_text: str) -> set[str]:
    """Every ``${Name}`` the definition uses."""
    return set(_SUBSTITUTION.findall(definition_text))


@dataclass(frozen=True)
class ResolvedMachine:
    """The definition ready for moto, and the handler behind each local Lambda ARN."""

    definition: str
    routes: dict[str, tuple[str, Handler]]


def function_arn(logical_id: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"
    return f"{arn}:{qualifier}" if qualifier else arn


def _function_target(template: dict[str, Any], value: Any) -> tuple[str, str | None] | None:
    """(function logical id, alias name or None) a substitution value points at, if it is a function."""
    if not isinstance(value, dict):
        return None
    target = value.get("Fn::GetAtt")
    if isinstance(target, list) and len(target) == 2 and target[1] == "Arn":
        return str(target[0]), None
    ref = value.get("Ref")
    if not isinstance(ref, str):
        return None
    resources = template["Resources"]
    if ref.endswith(".Alias"):  # SAM's property reference to the function's AutoPublishAlias
        logical_id = ref.removesuffix(".Alias")
        alias = (resources.get(logical_id) or {}).get("Properties", {}).get("AutoPublishAlias")
        if not alias:
            raise LocalAwsError(f"{ref}: {logical_id} has no AutoPublishAlias")
        return logical_id, str(alias)
    for logical_id, resource in resources.items():  # the alias resource SAM generates: <Fn>Alias<name>
        alias = (resource.get("Properties") or {}).get("AutoPublishAlias")
        if alias and ref == f"{logical_id}Alias{alias}":
            return logical_id, str(alias)
    return None


def _handler_for(template: dict[str, Any], logical_id: str) -> Handler:
    resource = template["Resources"].get(logical_id)
    if not resource or resource.get("Type") != "AWS::Serverless::Function":
        raise LocalAwsError(f"{logical_id} is not an AWS::Serverless::Function in template.yaml")
    props = resource["Properties"]
    code_uri = str(props["CodeUri"]).strip("/")
    module_name, _, attr = str(props["Handler"]).rpartition(".")
    package = ".".join(Path(code_uri).parts)  # functions/import_job -> functions.import_job
    module = importlib.import_module(f"{package}.{module_name}")
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise LocalAwsError(f"{logical_id}: {package}.{module_name} has no handler {attr!r}")
    return handler


def resolve_machine(template: dict[str, Any] | None = None, root: Path = ROOT) -> ResolvedMachine:
    """The state machine's definition with its DefinitionSubstitutions resolved to local ARNs."""
    template = template or load_template(root / "template.yaml")
    machine = template["Resources"].get(STATE_MACHINE_ID)
    if machine is None:
        raise LocalAwsError(f"template.yaml has no {STATE_MACHINE_ID}")
    props = machine["Properties"]
    text = (root / props["DefinitionUri"]).read_text(encoding="utf-8")
    values: dict[str, str] = {}
    routes: dict[str, tuple[str, Handler]] = {}
    for name, value in (props.get("DefinitionSubstitutions") or {}).items():
        target = _function_target(template, value)
        if target is not None:
            arn = function_arn(*target)
            routes[arn] = (target[0], _handler_for(template, target[0]))
            values[name] = arn
        elif isinstance(value, str):
            values[name] = value
        else:
            raise LocalAwsError(
                f"substitution {name}: only !GetAtt <Function>.Arn, a function's alias "
                "(!Ref <Function>.Alias) or a string can run locally"
            )
    missing = definition_placeholders(text) - set(values)
    if missing:
        raise LocalAwsError(f"the definition uses {sorted(missing)} without a DefinitionSubstitution")
    return ResolvedMachine(_SUBSTITUTION.sub(lambda m: values[m.group(1)], text), routes)


# The shim ----------------------------------------------------------------------------------------


def _lambda_invoker(routes: Mapping[str, tuple[str, Handler]]) -> Callable[..., dict[str, Any]]:
    def invoke(parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        arn = str(parameters["FunctionName"])
        if arn not in routes:
            raise LocalAwsError(f"no local handler for {arn}")
        name, handler = routes[arn]
        raw = parameters.get("Payload") or b"{}"
        event = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            result = handler(event, LambdaContext(name, arn))
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_tb(exc.__traceback__)[-3:],
                },
            }
        return {"StatusCode": 200, "Payload": json.loads(json.dumps(result, default=str))}

    return invoke


def _lower_first(key: str) -> str:
    return key[:1].lower() + key[1:]


def _upper_first(key: str) -> str:
    return key[:1].upper() + key[1:]


def _sfn_parameter_patches() -> list[Any]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    original = StateTaskServiceSfn._normalise_parameters

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original(self, parameters, *args, **kwargs)
        for key in list(parameters):
            parameters[_lower_first(key)] = parameters.pop(key)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(response, dict):
            for key in list(response):
                value = response.pop(key)
                response[_upper_first(key)] = value.isoformat() if isinstance(value, datetime) else value

    return [
        mock.patch.object(StateTaskServiceSfn, "_normalise_parameters", normalise_parameters),
        mock.patch.object(StateTaskServiceSfn, "_normalise_response", normalise_response),
    ]


def _environment_before_start() -> list[Any]:
    """Give each execution its environment before its thread starts.

    moto builds it inside the thread, so a SendTaskSuccess, SendTaskFailure or StopExecution that
    arrives in between meets ``env is None`` on a RUNNING execution and fails
    (``'NoneType' object has no attribute 'callback_pool_manager'``); AWS has no such window.
    """
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original_start = ExecutionWorker.start
    original_environment = ExecutionWorker._get_evaluation_environment

    def start(self: Any) -> None:
        self.env = original_environment(self)
        original_start(self)

    def evaluation_environment(self: Any) -> Any:
        return self.env if self.env is not None else original_environment(self)

    return [
        mock.patch.object(ExecutionWorker, "start", start),
        mock.patch.object(ExecutionWorker, "_get_evaluation_environment", evaluation_environment),
    ]


def _metrics_one_thread_at_a_time() -> list[Any]:
    """Serialise Powertools' metric set between the in-process handlers.

    Its metric set is shared by every ``Metrics`` instance; in Lambda one invocation runs per process,
    here executions run handlers on parallel threads, and one's flush could empty the set between
    another's "is it empty?" and its serialisation ("Must contain at least one metric").
    """
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider as Provider,
    )

    lock = threading.RLock()

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call

    names = ("add_metric", "add_dimension", "add_metadata", "flush_metrics", "clear_metrics")
    return [mock.patch.object(Provider, name, locked(getattr(Provider, name))) for name in names]


def _stop_aborts_waiting_tasks() -> list[Any]:
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication
    from moto.stepfunctions.parser.backend.execution import Execution as MotoExecution

    original_stop = MotoExecution.stop
    original_reflect = BaseExecutionWorkerCommunication._reflect_execution_status

    def stop(self: Any, *args: Any, **kwargs: Any) -> None:
        self.local_stopped = True
        original_stop(self, *args, **kwargs)
        worker = self.exec_worker
        pool = getattr(getattr(getattr(worker, "env", None), "callback_pool_manager", None), "_pool", {})
        for endpoint in list(pool.values()):
            endpoint.interrupt_all()

    def reflect(self: Any) -> None:
        original_reflect(self)
        if getattr(self.execution, "local_stopped", False):  # woken by stop: ABORTED, as in AWS
            self.execution.exec_status = ExecutionStatus.ABORTED
            self.execution.error = self.execution.cause = None

    return [
        mock.patch.object(MotoExecution, "stop", stop),
        mock.patch.object(BaseExecutionWorkerCommunication, "_reflect_execution_status", reflect),
    ]


def _serialised_requests() -> Any:
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.process_request
    lock = threading.RLock()

    def process_request(self: Any, request: Any) -> Any:
        with lock:
            return original(self, request)

    return mock.patch.object(BotocoreStubber, "process_request", process_request)


def create_table(dynamodb: Any, template: dict[str, Any], logical_id: str, name: str) -> None:
    """Create a DynamoDB table from its definition in template.yaml (keys, billing mode)."""
    props = template["Resources"][logical_id]["Properties"]
    dynamodb.create_table(
        TableName=name,
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
    )


def reset_warm_caches(modules: list[ModuleType]) -> None:
    """Forget clients cached by warm handlers (``functools.cache``), so they see this run's env."""
    from experiture_ingest.client import client_from_env

    client_from_env.cache_clear()
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, functools._lru_cache_wrapper):
                value.cache_clear()


# The runner ------------------------------------------------------------------------------------


_SEQUENCER = itertools.count(int(time.time() * 1000) << 8)


def next_sequencer() -> str:
    """An S3-like sequencer: hex, growing with every object written in this process."""
    return f"{next(_SEQUENCER):016X}"


def s3_event(
    bucket: str,
    key: str,
    size: int,
    etag: str,
    version_id: str | None,
    *,
    sequencer: str | None = None,
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """The ``ObjectCreated:Put`` notification S3 sends for one object (key URL-encoded as S3 does)."""
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": etag,
        "sequencer": sequencer or next_sequencer(),
    }
    if version_id:
        obj["versionId"] = version_id
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": (event_time or datetime.now(UTC))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "eventName": "ObjectCreated:Put",
        "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper()},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "IncomingFile",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
    return {"Records": [record]}


def execution_status_event(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """The EventBridge event Step Functions sends when an execution ends ("Execution Status Change")."""
    doc = sfn.describe_execution(executionArn=execution_arn)
    stop = doc.get("stopDate")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": ACCOUNT,
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "region": REGION,
        "resources": [execution_arn],
        "detail": {
            "executionArn": execution_arn,
            "stateMachineArn": doc["stateMachineArn"],
            "name": doc["name"],
            "status": doc["status"],
            "startDate": int(doc["startDate"].timestamp() * 1000),
            "stopDate": int(stop.timestamp() * 1000) if stop else None,
            "input": doc.get("input"),
            "output": doc.get("output"),
            "inputDetails": {"included": True},
            "outputDetails": {"included": True},
            "error": doc.get("error"),
            "cause": doc.get("cause"),
        },
    }


@dataclass(frozen=True)
class Execution:
    arn: str
    status: str
    output: Any = None
    error: str | None = None
    cause: str | None = None


class LocalAws:
    """moto (S3, Step Functions that execute) + the real state machine + handlers in-process."""

    def __init__(
        self, env: Mapping[str, str] | None = None, *, root: Path = ROOT, schedule_seconds: float | None = 1.0
    ) -> None:
        self.root = root
        self.env = dict(env or {})
        self._stack = ExitStack()
        self.state_machine_arn = ""
        self.schedule_seconds = schedule_seconds
        self._stop = threading.Event()

    def __enter__(self) -> LocalAws:
        from moto import mock_aws
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        env = {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto's documented dummy
            "POWERTOOLS_SERVICE_NAME": "experiture-ingest",
            "POWERTOOLS_METRICS_NAMESPACE": "ExperitureIngest",
            "IMPORT_QUEUE_TABLE": QUEUE_TABLE_NAME,
            "IMPORT_QUEUE_RENOTIFY_SECONDS": "2",  # a lost grant is sent again at the next scheduled run
            **self.env,
        }
        self._stack.enter_context(mock.patch.dict(os.environ, env))
        machine = resolve_machine(root=self.root)
        self.routes = machine.routes
        self._stack.enter_context(
            mock_aws(
                config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
            )
        )
        self._stack.enter_context(
            mock.patch.object(lambda_eval_utils, "_invoke_lambda_function", _lambda_invoker(machine.routes))
        )
        for patch in _sfn_parameter_patches():
            self._stack.enter_context(patch)
        self._stack.enter_context(_serialised_requests())
        for patch in [
            *_environment_before_start(),
            *_stop_aborts_waiting_tasks(),
            *_metrics_one_thread_at_a_time(),
        ]:
            self._stack.enter_context(patch)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.state_machine_arn = self.sfn.create_state_machine(
            name=STATE_MACHINE_NAME,
            definition=machine.definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/local-import-job",
            type="STANDARD",
        )["stateMachineArn"]
        os.environ["IMPORT_STATE_MACHINE_ARN"] = self.state_machine_arn
        self.template = load_template(self.root / "template.yaml")
        self.queue_table = os.environ["IMPORT_QUEUE_TABLE"]
        create_table(self.dynamodb, self.template, QUEUE_TABLE_ID, self.queue_table)
        self.functions = {
            name: _handler_for(self.template, name)
            for name, resource in self.template["Resources"].items()
            if resource.get("Type") == "AWS::Serverless::Function"
            and str(resource["Properties"].get("CodeUri", "")).startswith("functions/")
        }
        modules = {sys.modules[handler.__module__] for handler in self.functions.values()}
        reset_warm_caches(list(modules))
        self._stack.callback(reset_warm_caches, list(modules))
        if self.schedule_seconds:
            schedule = threading.Thread(target=self._schedule, name="local-dispatch-schedule", daemon=True)
            schedule.start()
            self._stack.callback(schedule.join, 10)
            self._stack.callback(self._stop.set)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _schedule(self) -> None:
        """The EventBridge schedule of the dispatch function (rate(1 minute) in AWS, faster here)."""
        assert self.schedule_seconds
        while not self._stop.wait(self.schedule_seconds):
            try:
                self.invoke(DISPATCH_FUNCTION_ID, {"source": "aws.events", "detail-type": "Scheduled Event"})
            except Exception:  # keep ticking, as the schedule would; the next tick tries again
                logging.getLogger(__name__).exception("scheduled dispatch failed")

    def queue(self) -> list[Any]:
        """The import queue's entries (waiting and running), as the scheduler stores them."""
        from experiture_ingest.scheduling import QueueTable

        return QueueTable(self.dynamodb, self.queue_table).entries()

    def invoke(self, logical_id: str, event: Mapping[str, Any]) -> Any:
        """Run a function of template.yaml in-process, as Lambda would (its handler, a context)."""
        handler = self.functions[logical_id]
        return handler(dict(event), LambdaContext(logical_id, function_arn(logical_id)))

    def drop(self, bucket: str, key: str, body: bytes, intake: str = "IntakeFunction") -> Any:
        """Put ``body`` at ``s3://bucket/key`` and hand the ObjectCreated event to the intake function."""
        return self.deliver(self.put(bucket, key, body), intake)

    def put(self, bucket: str, key: str, body: bytes) -> dict[str, Any]:
        """Put ``body`` at ``s3://bucket/key``; the S3 event for it (not delivered yet)."""
        put = self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return s3_event(bucket, key, len(body), put["ETag"].strip('"'), put.get("VersionId"))

    def deliver(self, event: Mapping[str, Any], intake: str = "IntakeFunction") -> Any:
        """Hand an S3 event to the intake function (in any order: S3 does not order its events)."""
        return self.invoke(intake, event)

    def start(self, run: Mapping[str, Any], name: str | None = None) -> str:
        """Start an execution with ``run`` (an ImportRun document) as its input; its ARN."""
        return self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=name or f"local-{uuid.uuid4().hex[:12]}",
            input=json.dumps(run, default=str),
        )["executionArn"]

    def executions(self) -> list[Any]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]

    def describe(self, arn: str) -> Execution:
        doc = self.sfn.describe_execution(executionArn=arn)
        output = json.loads(doc["output"]) if doc.get("output") else None
        return Execution(arn, doc["status"], output, doc.get("error"), doc.get("cause"))

    def wait(self, arn: str, timeout: float = 60.0, *, follow: bool = True) -> Execution:
        """Wait for an execution to end; with ``follow``, through its continuations to the last one."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.describe(arn)
            if result.status != "RUNNING":
                following = (
                    (result.output or {}).get("continuedAs")
                    if follow and isinstance(result.output, dict)
                    else None
                )
                if following and following.get("executionArn"):
                    arn = following["executionArn"]
                    continue
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {arn} still running after {timeout} s")
            time.sleep(0.05)

    def history(self, arn: str) -> Iterator[Any]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = self.sfn.get_execution_history(**kwargs)
            yield from page["events"]
            token = page.get("nextToken")
            if not token:
                return
