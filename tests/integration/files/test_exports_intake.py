"""The intake in a folder whose config waits for a manifest or _SUCCESS: parts held, the marker
handed off as one load, and what cannot be loaded refused with a summary (no API call)."""

from __future__ import annotations

import json

from experiture_ingest.files.layout import result_key

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
