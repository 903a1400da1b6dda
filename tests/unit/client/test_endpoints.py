"""Every endpoint: the request on the wire (camelCase) and the typed answer (unknown fields tolerated)."""

from __future__ import annotations

import json

import httpx
import pytest

from experiture_ingest import client as api
from tests.unit.client.scripted import Script, envelope

STATUS = {
    "jobId": "job_1",
    "objectName": "contacts",
    "state": "completed",
    "stage": "merge",
    "metrics": {
        "readRows": 2,
        "validRows": 2,
        "invalidRows": 0,
        "mergedInserts": 1,
        "mergedUpdates": 1,
        "mergedRetained": 0,
        "aFutureMetric": 7,
    },
    "rowsTotal": 2,
    "rowsImported": 2,
    "rowsRejected": 0,
    "successRate": 1.0,
    "errorSummary": None,
    "someNewField": {"nested": True},
}


def body(request: httpx.Request) -> dict:
    return json.loads(request.content)


def test_single_writes(make_client):
    ok = envelope(
        {
            "operation": "upsert",
            "objectName": "contacts",
            "accepted": True,
            "acceptedRecords": 1,
            "matchKey": "email",
        }
    )
    script = Script(httpx.Response(200, json=ok), httpx.Response(200, json=ok))
    client = make_client(script)
    client.append("contacts", {"email": "a@example.com"})
    result = client.upsert("contacts", {"email": "a@example.com"}, match_key="email")
    assert [r.url.path for r in script.requests] == [
        "/public/v1/records/contacts/append",
        "/public/v1/records/contacts/upsert",
    ]
    assert body(script.requests[0]) == {"record": {"email": "a@example.com"}}
    assert body(script.requests[1]) == {"record": {"email": "a@example.com"}, "matchKey": "email"}
    assert result.match_key == "email" and result.accepted


def test_batch_writes_and_status(make_client):
    accepted = envelope(
        {
            "operation": "upsert-batch",
            "objectName": "contacts",
            "jobId": "job_1",
            "state": "queued",
            "acceptedRecords": 2,
            "statusPath": "/public/v1/records/contacts/jobs/job_1",
            "matchKey": "email",
        }
    )
    script = Script(httpx.Response(202, json=accepted), httpx.Response(200, json=envelope(STATUS, "c-9")))
    client = make_client(script)
    batch = client.upsert_batch("contacts", [{"email": "a@x.io"}, {"email": "b@x.io"}], match_key="email")
    status = client.get_batch_job("contacts", batch.job_id)
    assert body(script.requests[0]) == {
        "records": [{"email": "a@x.io"}, {"email": "b@x.io"}],
        "matchKey": "email",
    }
    assert script.requests[1].url.path == "/public/v1/records/contacts/jobs/job_1"
    # Unknown fields at every level are tolerated; known ones are typed
    assert status.is_terminal and status.metrics.merged_updates == 1 and status.success_rate == 1.0
    assert status.correlation_id == "c-9"


def test_preserialized_batch_body_is_sent_as_is(make_client):
    accepted = envelope(
        {"operation": "append-batch", "objectName": "events", "jobId": "j", "acceptedRecords": 1}
    )
    script = Script(httpx.Response(202, json=accepted))
    raw = api.encode_json({"records": [{"name": "é"}]})
    make_client(script).append_batch("events", body=raw)
    assert script.requests[0].content == raw == '{"records":[{"name":"é"}]}'.encode()


def test_import_job_lifecycle(make_client):
    slot = {
        "jobId": "imp_1",
        "uploadUrl": "https://upload.example.test/jobs/imp_1/file?X-Amz-Signature=abc",
        "expiresAt": "2026-04-21T16:30:00Z",
        "landingPath": "jobs/imp_1/file",
        "method": "PUT",
        "headers": {"x-ms-blob-type": "BlockBlob"},
        "requestedBy": "usr_1",
    }
    script = Script(
        httpx.Response(201, json=envelope(slot)),
        httpx.Response(200, json=envelope({"ok": True})),
        httpx.Response(200, json=envelope({"status": "started", "jobId": "imp_1", "lane": "standard"})),
        httpx.Response(
            200,
            json=envelope(
                {
                    "state": "completed",
                    "readRows": 3,
                    "validRows": 2,
                    "invalidRows": 1,
                    "errorSummary": {"REQUIRED_FIELD_MISSING": 1},
                }
            ),
        ),
        httpx.Response(
            200,
            json=envelope(
                {
                    "hasErrors": True,
                    "errorFileUrl": "https://e.example.test/f?sig=1",
                    "expiresAt": "2026-04-22T15:38:41Z",
                    "errorCount": 1,
                }
            ),
        ),
    )
    client = make_client(script)
    got = client.init_import(
        api.ImportJobInit(
            object_name="profiles", file_name="s.csv", file_size=10, create_list=True, list_name="Spring"
        )
    )
    client.set_mapping(
        "imp_1",
        api.ImportMapping(
            source_fields={"Email": "string"}, field_map={"Email": "email"}, import_mode="strict"
        ),
    )
    started = client.start_import("imp_1")
    status = client.get_import("imp_1")
    errors = client.get_import_errors("imp_1")

    assert body(script.requests[0]) == {
        "objectName": "profiles",
        "fileName": "s.csv",
        "fileSize": 10,
        "createList": True,
        "listName": "Spring",
    }
    assert body(script.requests[1]) == {
        "sourceFields": {"Email": "string"},
        "fieldMap": {"Email": "email"},
        "importMode": "strict",
    }
    assert body(script.requests[2]) == {}
    assert [r.url.path for r in script.requests] == [
        "/public/v1/import-jobs",
        "/public/v1/import-jobs/imp_1/mapping",
        "/public/v1/import-jobs/imp_1/start",
        "/public/v1/import-jobs/imp_1",
        "/public/v1/import-jobs/imp_1/errors",
    ]
    assert got.headers == {"x-ms-blob-type": "BlockBlob"} and "X-Amz-Signature" not in repr(got)
    assert started.status == "started"
    assert status.is_terminal and status.error_summary == {"REQUIRED_FIELD_MISSING": 1}
    assert errors.has_errors and errors.error_count == 1 and "sig=1" not in repr(errors)


def test_metadata_schema(make_client):
    schema = {
        "objectName": "contacts",
        "fields": [
            {"name": "email", "type": "string", "format": "email", "required": True, "primaryKey": True},
            {"name": "age", "type": "integer", "description": "added later"},
        ],
    }
    script = Script(httpx.Response(200, json=envelope(schema)))
    got = make_client(script).get_object_schema("contacts")
    assert script.requests[0].url.path == "/public/v1/metadata/objects/contacts"
    assert got.key_field == "email" and got.field("age").type == "integer"  # type: ignore[union-attr]


def test_path_segments_are_escaped(make_client):
    script = Script(httpx.Response(200, json=envelope({"state": "running"})))
    make_client(script).get_import("a/b c")
    assert script.requests[0].url.raw_path == b"/public/v1/import-jobs/a%2Fb%20c"


def test_request_models_refuse_inconsistent_input():
    with pytest.raises(ValueError, match="listName is required"):
        api.ImportJobInit(object_name="p", file_name="f.csv", file_size=1, create_list=True)
    with pytest.raises(ValueError, match="templateId"):
        api.ImportMapping(source_fields={"a": "string"})
    assert api.ImportMapping(template_id="tpl_1").wire() == {"templateId": "tpl_1"}
