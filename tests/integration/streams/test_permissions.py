"""Every S3 call the writer and the settler make is allowed by their narrow statements in template.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import yaml

from cli.streams_local import LocalStream
from experiture_ingest.streams.contract import Target
from experiture_ingest.streams.producer import send_records
from sandbox.testing import SandboxHandle
from tests.integration.streams.conftest import run_settler, run_writer

TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


class _Loader(yaml.SafeLoader):
    pass


# Keep !Sub strings (resource ARNs); other intrinsic functions do not matter here.
def _intrinsic(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if tag == "Sub" and isinstance(node, yaml.ScalarNode) else None


_Loader.add_multi_constructor("!", _intrinsic)


def _s3_grants(function: str) -> tuple[list[str], set[tuple[str, str]]]:
    """The function's SAM S3 policy templates, and its (action, key prefix) pairs on the stream bucket."""
    policies = yaml.load(TEMPLATE.read_text(), Loader=_Loader)["Resources"][function]["Properties"][
        "Policies"
    ]
    templates = [name for p in policies for name in p if name.startswith("S3")]
    grants: set[tuple[str, str]] = set()
    for policy in policies:
        for statement in policy.get("Statement", []):
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in [resources] if isinstance(resources, str) else resources:
                    prefix = resource.removeprefix("${StreamPayloadBucket.Arn}/").removesuffix("*")
                    if action.startswith("s3:") and resource.startswith("${StreamPayloadBucket.Arn}/"):
                        grants.add((action, prefix))
    return templates, grants


def _needs(calls: list[tuple[str, dict[str, Any]]]) -> set[tuple[str, str]]:
    needs = set()
    for operation, params in calls:
        key = params.get("Key", "")
        assert key, f"{operation} on a whole bucket"
        needs.add((f"s3:{operation}", key))
        if operation == "PutObject" and params.get("Tagging"):
            needs.add(("s3:PutObjectTagging", key))
    return needs


def _allowed(need: tuple[str, str], grants: set[tuple[str, str]]) -> bool:
    action, key = need
    return any(action == a and key.startswith(prefix) for a, prefix in grants)


def test_the_functions_s3_calls_are_exactly_within_their_narrow_statements(
    stream: LocalStream, sandbox: SandboxHandle
):
    # Given every S3 call is recorded, a job the sandbox fails for good and one that completes
    calls: list[tuple[str, dict[str, Any]]] = []
    boto3._get_default_session().events.register(
        "before-parameter-build.s3", lambda model, params, **_: calls.append((model.name, params))
    )
    sandbox.admin.fail_next_jobs("batch", times=3)
    send_records(stream.sqs, stream.queue_url, Target.parse("contacts:upsert"), [{"email": "a@example.com"}])
    # And a message too large to be dead-lettered beside its reason
    stream.sqs.send_message(QueueUrl=stream.queue_url, MessageBody="{not json " + "é" * 131_000)

    # When the writer runs, then the settler (re-drives, report, dead letters), then both for a good job
    made: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "RecordWriterFunction": [],
        "BatchSettlerFunction": [],
    }
    for email in ("b@example.com", None):
        if email is None:  # the good job's answer is lost twice: the redelivery re-sends the kept request
            sandbox.admin.set_faults(
                {
                    "rules": [
                        {
                            "method": "POST",
                            "path": "/public/v1/records/*",
                            "drop": "after_processing",
                            "times": 2,
                        }
                    ]
                }
            )
        calls.clear()
        run_writer(stream)
        made["RecordWriterFunction"] += calls
        calls.clear()
        run_settler(stream)
        made["BatchSettlerFunction"] += calls
        if email:
            send_records(stream.sqs, stream.queue_url, Target.parse("contacts:upsert"), [{"email": email}])
    assert len(sandbox.admin.records("contacts")) == 1
    assert any(c[1]["Key"].startswith("dead-letters/") for c in made["RecordWriterFunction"])
    assert any(c[0] == "GetObject" for c in made["RecordWriterFunction"])

    # Then no function has a broad S3 policy template, and each call is covered by its statements
    for function, its_calls in made.items():
        templates, grants = _s3_grants(function)
        assert templates == [], f"{function} still has {templates}"
        assert its_calls, f"{function} made no S3 call"
        missing = {n for n in _needs(its_calls) if not _allowed(n, grants)}
        assert missing == set(), f"{function} lacks {missing}"
