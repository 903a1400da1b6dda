"""The intake in a folder whose config waits for a manifest or _SUCCESS: parts held, the marker
handed off as one load, and what cannot be loaded refused with a summary (no API call); a part's
event handled after its load ended (late, or delivered again) leaves the load's summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from experiture_ingest.files.handoff import SplitRun
from experiture_ingest.files.layout import plan_key, result_key
from experiture_ingest.files.parts.held import files_of, report_held_files
from experiture_ingest.files.parts.plan import PartPlan
from experiture_ingest.files.parts.tasks import PartsDeps, plan_parts
from experiture_ingest.files.summary import Summary

CSV = b"email\na@example.com\n"


def test_a_data_file_in_a_waiting_folder_is_held_with_what_it_waits_for(env, invoke):
    env.put_config("contacts", {"waitFor": "manifest"})
    key = "incoming/contacts/unload/0000_part_00.csv"
    answer = invoke(env.drop(key, CSV))
    assert answer["files"][0]["outcome"] == "waiting"
    summary = env.summary(key)
    assert (
        summary["waitingFor"] == "manifest" and "imported with the rest of its export" in summary["message"]
    )
    assert env.tags(key) == {"experiture-status": "waiting"}
    assert env.sandbox.admin.import_jobs() == [] and env.executions() == []


def test_a_manifest_is_handed_off_as_one_load(env, invoke):
    env.put_config("contacts", {"waitFor": "manifest"})
    parts = [f"incoming/contacts/unload/000{n}_part_00.csv" for n in range(3)]
    for part in parts:
        invoke(env.drop(part, CSV))
    manifest = {"entries": [{"url": f"s3://{env.bucket}/{p}", "mandatory": True} for p in parts]}
    key = "incoming/contacts/unload/manifest"
    answer = invoke(env.drop(key, json.dumps(manifest).encode()))
    assert answer["files"][0]["outcome"] == "splitting"
    (execution,) = env.executions()
    handed = env.execution_input(execution["executionArn"])["split"]
    assert handed["manifest"] == "manifest" and handed["source"]["key"] == key
    assert handed["source"]["format"] == "csv" and env.summary(key)["manifestEntries"] == 3
    assert env.sandbox.admin.import_jobs() == []


def test_a_success_marker_in_a_manifest_folder_is_not_a_load(env, invoke):
    env.put_config("contacts", {"waitFor": "manifest"})
    key = "incoming/contacts/spark/_SUCCESS"
    invoke(env.drop(key, b""))
    summary = env.summary(key)
    assert summary["outcome"] == "refused" and "waits for 'manifest'" in summary["reason"]["message"]
    assert env.executions() == []


def test_a_malformed_manifest_is_refused_at_intake(env, invoke):
    env.put_config("contacts", {"waitFor": "manifest"})
    key = "incoming/contacts/unload/run.manifest.json"
    invoke(env.drop(key, b'{"files": []}'))
    summary = env.summary(key)
    assert summary["reason"]["code"] == "MANIFEST_INVALID" and '"entries"' in summary["reason"]["message"]
    assert env.executions() == []


def test_a_manifest_without_a_waiting_config_is_an_unsupported_file(env, invoke):
    key = "incoming/contacts/unload/manifest"
    invoke(env.drop(key, b'{"entries": []}'))
    assert env.summary(key)["reason"]["code"] == "UNSUPPORTED_FORMAT"
    assert result_key(key).endswith("manifest.json")


MANIFEST = "incoming/contacts/unload/manifest"


def _manifest(env, parts):
    return json.dumps(
        {"entries": [{"url": f"s3://{env.bucket}/{p}", "mandatory": True} for p in parts]}
    ).encode()


def _load_ends(env, outcome="completed"):
    """The handed-off load is planned and ends (as CombineParts would), its one job being imp_9."""
    (execution,) = env.executions()
    run = SplitRun.model_validate(env.execution_input(execution["executionArn"])["split"])
    deps = PartsDeps(s3=env.s3, now=lambda: datetime(2026, 4, 1, tzinfo=UTC))
    planned = plan_parts(run, deps, state_machine_arn="arn:sm", execution_name=execution["name"])
    assert planned["refused"] is False
    plan = PartPlan.model_validate(
        json.loads(env.s3.get_object(Bucket=env.bucket, Key=plan_key(MANIFEST))["Body"].read())
    )
    held = files_of(plan, {spec.index: "imp_9" for spec in plan.parts})
    report_held_files(
        env.s3, env.bucket, MANIFEST, outcome, held, finished_at=datetime(2026, 4, 1, tzinfo=UTC)
    )


def test_a_part_whose_event_comes_after_its_load_ended_keeps_the_loads_summary(env, invoke):
    # Given a folder waiting for manifests, a part file whose S3 event is not handled yet, and a held one
    env.put_config("contacts", {"waitFor": "manifest"})
    late, held = "incoming/contacts/unload/0000_part_00.csv", "incoming/contacts/unload/0001_part_00.csv"
    late_event = env.drop(late, CSV)
    assert invoke(env.drop(held, CSV))["files"][0]["outcome"] == "waiting"
    # And the manifest's load ended before the late part's event
    assert invoke(env.drop(MANIFEST, _manifest(env, [late, held])))["files"][0]["outcome"] == "splitting"
    _load_ends(env)
    # When the late part's event is handled
    answer = invoke(late_event)
    # Then it is recognised as loaded with its export: its summary stays the load's, not "waiting"
    assert answer["files"][0]["outcome"] == "already_loaded"
    for key in (late, held):
        summary = env.summary(key)
        Summary.model_validate(summary)
        assert summary["outcome"] == "completed" and summary["waitingFor"] == "manifest"
        assert summary["load"]["key"] == MANIFEST and summary["load"]["jobIds"] == ["imp_9"]
        assert env.tags(key) == {"experiture-status": "completed"}
    assert env.summary(late)["versionId"] == late_event["Records"][0]["s3"]["object"]["versionId"]
    assert env.sandbox.admin.import_jobs() == [] and len(env.executions()) == 1


def test_a_held_event_delivered_again_after_its_load_ended_keeps_the_loads_summary(env, invoke):
    # Given a held part file whose load ended
    env.put_config("contacts", {"waitFor": "manifest"})
    key = "incoming/contacts/unload/0000_part_00.csv"
    event = env.drop(key, CSV)
    assert invoke(event)["files"][0]["outcome"] == "waiting"
    invoke(env.drop(MANIFEST, _manifest(env, [key])))
    _load_ends(env, "completed_with_errors")
    # When S3 delivers the part's event again
    answer = invoke(event)
    # Then the summary and the tag still say how its load ended
    assert answer["files"][0]["outcome"] == "already_loaded"
    summary = env.summary(key)
    assert summary["outcome"] == "completed_with_errors" and summary["load"]["jobIds"] == ["imp_9"]
    assert env.tags(key) == {"experiture-status": "completed_with_errors"}
    # And a new version of the part, which that load did not read, is held again
    assert invoke(env.drop(key, CSV + b"b@example.com\n"))["files"][0]["outcome"] == "waiting"
    summary = env.summary(key)
    assert summary["outcome"] == "waiting" and "load" not in summary


def test_a_late_event_for_a_part_deleted_after_its_load_does_not_replace_the_loads_summary(env, invoke):
    # Given a held part file whose load ended, and which the user then deleted (that exact version)
    env.put_config("contacts", {"waitFor": "manifest"})
    key = "incoming/contacts/unload/0000_part_00.csv"
    event = env.drop(key, CSV)
    invoke(event)
    invoke(env.drop(MANIFEST, _manifest(env, [key])))
    _load_ends(env)
    env.s3.delete_object(
        Bucket=env.bucket, Key=key, VersionId=event["Records"][0]["s3"]["object"]["versionId"]
    )
    # When S3 delivers the part's event again
    answer = invoke(event)
    # Then the intake refuses it (the object is gone) without writing over how its load ended
    assert answer["files"][0]["outcome"] == "refused"
    summary = env.summary(key)
    assert (
        summary["outcome"] == "completed" and summary["load"]["key"] == MANIFEST and "reason" not in summary
    )
