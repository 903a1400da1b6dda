"""template.yaml as an operator relies on it: alarms reach someone, nothing unbounded, nothing lost.

Each test reads the template (short tags expanded) and checks a property over *every* resource of a
kind, so a resource added later without it fails here rather than in production.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli.local_aws import ROOT, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Queues something sends its failures to: redrive targets and on-failure destinations."""
    found: set[str] = set()
    for resource in template["Resources"].values():
        props = resource.get("Properties") or {}
        target = (props.get("RedrivePolicy") or {}).get("deadLetterTargetArn")
        on_failure = ((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure")
        for ref in (target, (on_failure or {}).get("Destination")):
            if isinstance(ref, dict) and "Fn::GetAtt" in ref:
                found.add(ref["Fn::GetAtt"][0])
    return found


def _alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm watches: its own, or those of its metric-math expression."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [{"MetricName": props["MetricName"], "Dimensions": props.get("Dimensions", [])}]
    return [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]


def test_every_alarm_notifies_the_alarm_topic_when_it_fires_and_when_it_clears(template):
    alarms = _of_type(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 10
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props.get("AlarmActions") == [{"Ref": "AlarmTopic"}], name
        assert props.get("OKActions") == [{"Ref": "AlarmTopic"}], name
        assert props.get("AlarmDescription"), name
    assert template["Resources"]["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}


def test_an_alarm_email_is_subscribed_only_when_given(template):
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


def test_every_dead_letter_queue_is_retained_and_alarmed(template):
    dlqs = _dead_letter_queues(template)
    # The intake's on-failure destination included
    assert {"IntakeDeadLetterQueue", "RecordDeadLetterQueue", "SettleDeadLetterQueue"} <= dlqs
    alarmed = {
        d["Value"]["Fn::GetAtt"][0]
        for alarm in _of_type(template, "AWS::CloudWatch::Alarm").values()
        for m in _alarm_metrics(alarm)
        if m["MetricName"] == "ApproximateNumberOfMessagesVisible"
        for d in m["Dimensions"]
        if d["Name"] == "QueueName"
    }
    for name in dlqs:
        queue = template["Resources"][name]
        assert queue.get("DeletionPolicy") == "Retain", name
        assert queue.get("UpdateReplacePolicy") == "Retain", name
        assert queue["Properties"]["MessageRetentionPeriod"] == 1209600, name  # SQS's maximum, 14 days
        assert name in alarmed, f"{name} has no alarm on its depth"


def test_every_queue_refuses_requests_without_tls(template):
    protected: dict[str, dict[str, Any]] = {}
    for policy in _of_type(template, "AWS::SQS::QueuePolicy").values():
        for queue in policy["Properties"]["Queues"]:
            protected[queue["Ref"]] = policy["Properties"]["PolicyDocument"]
    for name in _of_type(template, "AWS::SQS::Queue"):
        assert name in protected, f"{name} has no queue policy"
        deny = [s for s in protected[name]["Statement"] if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, name
        assert deny[0]["Resource"] == {"Fn::GetAtt": [name, "Arn"]}, name


def test_every_sqs_trigger_has_a_maximum_concurrency_from_a_parameter_with_a_default(template):
    triggers = [
        (name, event)
        for name, fn in _of_type(template, "AWS::Serverless::Function").items()
        for event in (fn["Properties"].get("Events") or {}).values()
        if event["Type"] == "SQS"
    ]
    assert len(triggers) >= 2
    for name, event in triggers:
        maximum = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
        parameter = template["Parameters"][maximum["Ref"]]
        assert 2 <= parameter["Default"] <= 1000, name  # Lambda's allowed range
        assert "size" in parameter["Description"].lower(), f"{name}: say how to size it"


def test_the_intake_is_capped_by_a_parameter_that_can_lift_the_cap(template):
    props = template["Resources"]["IntakeFunction"]["Properties"]
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["CapsIntake", {"Ref": "IntakeReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    parameter = template["Parameters"]["IntakeReservedConcurrency"]
    assert parameter["Default"] >= 1 and "size" in parameter["Description"].lower()


def test_every_function_and_the_state_machine_log_to_a_group_with_retention(template):
    groups = _of_type(template, "AWS::Logs::LogGroup")
    for name, fn in _of_type(template, "AWS::Serverless::Function").items():
        group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    machine = template["Resources"]["ImportStateMachine"]["Properties"]
    for destination in machine["Logging"]["Destinations"]:
        group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    names = [g["Properties"]["LogGroupName"]["Fn::Sub"] for g in groups.values()]
    assert len(names) == len(set(names))


def test_every_function_is_in_an_errors_alarm_and_a_throttles_alarm(template):
    watched: dict[str, set[str]] = {"Errors": set(), "Throttles": set()}
    for alarm in _of_type(template, "AWS::CloudWatch::Alarm").values():
        for metric in _alarm_metrics(alarm):
            if metric["MetricName"] in watched:
                watched[metric["MetricName"]] |= {
                    d["Value"]["Ref"] for d in metric["Dimensions"] if d["Name"] == "FunctionName"
                }
    functions = set(_of_type(template, "AWS::Serverless::Function"))
    assert watched["Errors"] == functions
    assert watched["Throttles"] == functions


def test_queues_age_is_alarmed_and_rejected_files_do_not_page(template):
    alarms = _of_type(template, "AWS::CloudWatch::Alarm").values()
    ages = {
        d["Value"]["Fn::GetAtt"][0]
        for a in alarms
        for m in _alarm_metrics(a)
        if m["MetricName"] == "ApproximateAgeOfOldestMessage"
        for d in m["Dimensions"]
    }
    assert {"RecordQueue", "SettleQueue"} <= ages
    metrics = {m["MetricName"] for a in alarms for m in _alarm_metrics(a)}
    assert {"AsyncEventAge", "DestinationDeliveryFailures", "ImportPipelineFailures"} <= metrics
    assert not metrics & {"FilesRejected", "RowsRejected", "ExecutionsFailed"}


def test_results_and_stream_objects_expire_after_parameterised_days(template):
    def rules(bucket: str) -> dict[str, dict[str, Any]]:
        props = template["Resources"][bucket]["Properties"]
        return {r.get("Prefix", ""): r for r in props["LifecycleConfiguration"]["Rules"] if r.get("Prefix")}

    assert rules("IngestBucket")["results/"]["ExpirationInDays"] == {"Ref": "ResultsRetentionDays"}
    stream = rules("StreamPayloadBucket")
    for prefix in ("payloads/", "reports/", "dead-letters/"):
        expiry = stream[prefix]["ExpirationInDays"]
        assert isinstance(expiry, dict) and expiry["Ref"] in template["Parameters"], prefix


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([A-Za-z0-9:.]+)\}", body))
    resources, parameters = set(template["Resources"]), {"AWS::Region", "AWS::StackName"}
    for name in names:  # every ${...} is a pseudo parameter or a resource (or its attribute)
        assert name in parameters or name.split(".")[0] in resources, name
    return json.loads(re.sub(r"\$\{[^}]+\}", "x", body))  # type: ignore[no-any-return]


def _emitted_metric_names() -> set[str]:
    code = "\n".join(
        p.read_text(encoding="utf-8")
        for folder in ("functions", "layers/common/experiture_ingest")
        for p in Path(ROOT, folder).rglob("*.py")
    )
    return set(re.findall(r"""["']([A-Z][A-Za-z0-9]+)["']""", code))


def test_the_dashboard_shows_what_the_issue_lists_with_metrics_the_code_emits(template):
    dashboard = _dashboard(template)
    widgets = [w["properties"] for w in dashboard["widgets"] if w["type"] == "metric"]
    titles = " | ".join(w["title"].lower() for w in widgets)
    for topic in (
        "files",
        "rows",
        "import queue",
        "records written and dead-lettered",
        "api answers by status",
        "upload throughput",
        "lambda errors",
        "lambda throttles",
        "lambda duration",
    ):
        assert topic in titles, topic
    custom = {
        m[1] for w in widgets for m in w["metrics"] if isinstance(m[0], str) and m[0] == "ExperitureIngest"
    }
    missing = custom - _emitted_metric_names()
    assert not missing, f"the dashboard shows metrics no code emits: {sorted(missing)}"
    assert {"FilesReceived", "FilesRejected", "RowsImported", "ApiAnswers429", "BytesUploaded"} <= custom
    assert {"ImportJobsWaiting", "ImportJobsRunning"} <= custom  # the import queue's depth and load


def test_samconfig_names_a_region_and_only_parameters_the_template_has(template):
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))["default"]
    assert config["global"]["parameters"]["region"]
    overrides = config["deploy"]["parameters"]["parameter_overrides"]
    names = {item.split("=", 1)[0] for item in overrides}
    assert "ExperitureSecretArn" in names
    assert names <= set(template["Parameters"]), names - set(template["Parameters"])
