"""Import jobs: lifecycle, mapping, modes, formats, errors file, lists/audiences, concurrency."""

from __future__ import annotations

import io
import json
import time
import uuid

import httpx
import pytest

from sandbox.testing import SandboxHandle

from .helpers import CONTACT_FIELDS, CONTACT_MAP, gz, init_job, run_import, upload, wait_import

BOM_CSV = (
    "\ufeffemail_address,FirstName,age,signup_ts\r\n"
    'ann@example.com,"Ann, the ""first""",31,2026-04-21T15:30:00Z\r\n'
    'bob@example.com,"Bob\non two lines",,2026-04-21T15:30:00+02:00\r\n'
    "not-an-email,Cat,40,2026-04-21T15:30:00Z\r\n"
    "dan@example.com,Dan,forty,2026-04-21T15:30:00Z\r\n"
    "eve@example.com,Eve,22,2026-04-21 15:30:00\r\n"
).encode()


def test_csv_with_bom_and_quoted_newlines_imports_the_right_rows(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a CSV with a BOM, quoted commas/quotes/newlines and three bad rows
    # When it is imported in the default (balanced) mode
    result = run_import(api, "contacts.csv", BOM_CSV)
    # Then the good rows are stored exactly and the bad ones are counted by reason
    assert result["state"] == "completed"
    assert (result["readRows"], result["validRows"], result["invalidRows"]) == (5, 2, 3)
    assert (result["rowsTotal"], result["rowsImported"], result["rowsRejected"]) == (5, 2, 3)
    assert result["mergedInserts"] == 2 and result["mergedUpdates"] == 0
    assert result["successRate"] == 0.4
    assert result["errorSummary"] == {"INVALID_EMAIL_FORMAT": 1, "VALIDATION_TYPE_MISMATCH": 2}
    stored = {r["email"]: r for r in sandbox.admin.records("contacts")}
    assert stored == {
        "ann@example.com": {
            "email": "ann@example.com",
            "first_name": 'Ann, the "first"',
            "age": 31,
            "signed_up_at": "2026-04-21T15:30:00+00:00",
        },
        "bob@example.com": {
            "email": "bob@example.com",
            "first_name": "Bob\non two lines",
            "signed_up_at": "2026-04-21T15:30:00+02:00",
        },
    }


def test_errors_file_lists_rejected_rows_at_a_signed_url(api: httpx.Client, sandbox: SandboxHandle) -> None:
    result = run_import(api, "contacts.csv", BOM_CSV)
    meta = api.get(f"/import-jobs/{result['jobId']}/errors").json()["data"]
    assert meta["hasErrors"] is True and meta["errorCount"] == 3 and meta["expiresAt"].endswith("Z")
    lines = [json.loads(line) for line in httpx.get(meta["errorFileUrl"]).text.splitlines()]
    assert [line["rowNumber"] for line in lines] == [3, 4, 5]
    assert lines[0]["sourceRow"] == {
        "email_address": "not-an-email",
        "FirstName": "Cat",
        "age": "40",
        "signup_ts": "2026-04-21T15:30:00Z",
    }
    assert "invalid email format" in lines[0]["error"]
    assert "naive datetime" in lines[2]["error"]
    # And a tampered or expired link is refused
    assert httpx.get(meta["errorFileUrl"].replace("signature=", "signature=0")).status_code == 403
    sandbox.admin.configure(errorFileUrlTtlSeconds=0)
    expired = api.get(f"/import-jobs/{result['jobId']}/errors").json()["data"]["errorFileUrl"]
    assert httpx.get(expired).status_code == 403


def test_no_rejections_means_null_error_summary_and_no_errors(api: httpx.Client) -> None:
    content = b"email_address,FirstName,age,signup_ts\na@example.com,A,1,2026-01-01T00:00:00Z\n"
    result = run_import(api, "ok.csv", content)
    assert result["errorSummary"] is None and result["invalidRows"] == 0
    assert api.get(f"/import-jobs/{result['jobId']}/errors").json()["data"] == {"hasErrors": False}


def test_reimport_counts_updates_and_retained(api: httpx.Client) -> None:
    first = b"email_address,FirstName\na@example.com,A\nb@example.com,B\n"
    second = b"email_address,FirstName\na@example.com,A\nb@example.com,Bee\nc@example.com,C\n"
    fields, fmap = (
        {"email_address": "string", "FirstName": "string"},
        {"email_address": "email", "FirstName": "first_name"},
    )
    run_import(api, "1.csv", first, source_fields=fields, field_map=fmap)
    result = run_import(api, "2.csv", second, source_fields=fields, field_map=fmap)
    assert (result["mergedInserts"], result["mergedUpdates"], result["mergedRetained"]) == (1, 1, 1)


MODE_CSV = (
    b"email_address,FirstName,age,signup_ts,extra\n"
    b"a@example.com,A,1,2026-01-01T00:00:00Z,x\n"  # extra column value: strict rejects (UNKNOWN_FIELD)
    b"b@example.com,,2,2026-01-01T00:00:00Z,\n"  # missing optional field: strict rejects
    b"c@example.com,C, 3 ,2026-01-01T00:00:00Z,\n"  # integer needing coercion: strict rejects
    b"d@example.com,D,four,2026-01-01T00:00:00Z,\n"  # type error: balanced and strict reject
    b",E,5,2026-01-01T00:00:00Z,\n"  # missing key: every mode rejects
    b"f@example.com,F,6,2026-01-01,\n"  # naive datetime: landing_friendly assumes UTC
)


def test_strict_and_balanced_reject_different_rows_of_the_same_file(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    fields = {**CONTACT_FIELDS}
    # Given the same file imported in each mode (the 'extra' column is not declared)
    results = {}
    for mode in ("strict", "balanced", "landing_friendly"):
        sandbox.admin.reset()
        result = run_import(api, "modes.csv", MODE_CSV, source_fields=fields, mode=mode)
        lines = httpx.get(
            api.get(f"/import-jobs/{result['jobId']}/errors").json()["data"]["errorFileUrl"]
        ).text
        results[mode] = ([json.loads(x)["rowNumber"] for x in lines.splitlines()], result["errorSummary"])
    # Then each mode rejects its own set of rows
    assert results["balanced"][0] == [4, 5, 6]
    assert results["strict"][0] == [1, 2, 3, 4, 5, 6]
    assert results["strict"][1]["UNKNOWN_FIELD"] >= 1
    assert results["landing_friendly"][0] == [5]
    assert results["balanced"][1] == {"VALIDATION_TYPE_MISMATCH": 2, "REQUIRED_FIELD_MISSING": 1}


def test_landing_friendly_coerces_or_nulls(api: httpx.Client, sandbox: SandboxHandle) -> None:
    run_import(api, "modes.csv", MODE_CSV, mode="landing_friendly")
    stored = {r["email"]: r for r in sandbox.admin.records("contacts")}
    assert stored["d@example.com"]["age"] is None
    assert stored["b@example.com"]["first_name"] is None
    assert stored["f@example.com"]["signed_up_at"] == "2026-01-01T00:00:00+00:00"
    assert stored["c@example.com"]["age"] == 3


def test_source_types_booleans_numbers_and_required_fields(api: httpx.Client, sandbox: SandboxHandle) -> None:
    content = (
        b"id,mail,amt,qty,when\n"
        b"o1,a@example.com,9.5,2,2026-01-01T00:00:00Z\n"
        b"o2,a@example.com,1e2,x,2026-01-01T00:00:00Z\n"
        b"o3,a@example.com,,1,2026-01-01T00:00:00Z\n"
    )
    result = run_import(
        api,
        "orders.csv",
        content,
        obj="orders",
        source_fields={
            "id": "string",
            "mail": "string",
            "amt": "number",
            "qty": "integer",
            "when": "datetime",
        },
        field_map={
            "id": "order_id",
            "mail": "email",
            "amt": "amount",
            "qty": "quantity",
            "when": "ordered_at",
        },
    )
    assert result["errorSummary"] == {"VALIDATION_TYPE_MISMATCH": 1, "REQUIRED_FIELD_MISSING": 1}
    assert sandbox.admin.records("orders")[0]["amount"] == 9.5
    bools = b"email_address,opt\na@example.com,true\nb@example.com,maybe\n"
    result = run_import(
        api,
        "b.csv",
        bools,
        source_fields={"email_address": "string", "opt": "boolean"},
        field_map={"email_address": "email", "opt": "opted_in"},
    )
    assert result["invalidRows"] == 1
    assert sandbox.admin.records("contacts")[0]["opted_in"] is True


JSONL = (
    b'{"email_address": "a@example.com", "FirstName": "A", "age": 1, "signup_ts": "2026-01-01T00:00:00Z"}\n'
    b"\n"
    b'{"email_address": "b@example.com", "age": "x"}\n'
    b"not json\n"
)


@pytest.mark.parametrize(
    ("name", "content"),
    [("a.jsonl", JSONL), ("a.ndjson", JSONL), ("a.jsonl.gz", gz(JSONL)), ("a.ndjson.gz", gz(JSONL))],
)
def test_jsonl_and_gzip_forms(api: httpx.Client, sandbox: SandboxHandle, name: str, content: bytes) -> None:
    result = run_import(api, name, content)
    assert (result["readRows"], result["validRows"], result["invalidRows"]) == (3, 1, 2)
    assert sandbox.admin.records("contacts") == [
        {"email": "a@example.com", "first_name": "A", "age": 1, "signed_up_at": "2026-01-01T00:00:00+00:00"}
    ]


def test_gzipped_csv(api: httpx.Client, sandbox: SandboxHandle) -> None:
    result = run_import(api, "contacts.csv.gz", gz(BOM_CSV))
    assert (result["validRows"], result["invalidRows"]) == (2, 3)


def test_parquet(api: httpx.Client, sandbox: SandboxHandle) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "email_address": ["a@example.com", "bad", "c@example.com"],
            "FirstName": ["A", "B", None],
            "age": [1, 2, 3],
            "signup_ts": [datetime(2026, 1, 1, tzinfo=UTC)] * 3,
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result = run_import(api, "a.parquet", buf.getvalue())
    assert (result["readRows"], result["validRows"], result["invalidRows"]) == (3, 2, 1)
    assert {r["email"] for r in sandbox.admin.records("contacts")} == {"a@example.com", "c@example.com"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.csv.gz", b"not gzip at all"),
        ("bad.csv", b"\xff\xfe\x00bad utf8"),
        ("bad.parquet", b"PAR1nope"),
        ("empty.csv", b"\n"),
    ],
)
def test_unreadable_upload_fails_the_job(
    api: httpx.Client, sandbox: SandboxHandle, name: str, content: bytes
) -> None:
    result = run_import(api, name, content)
    assert result["state"] == "failed"
    assert result["errorCode"] == "CDP_ETL.IMPORT.SOURCE_UNREADABLE"
    assert result["errorMessage"].startswith("CDP_ETL.IMPORT.")
    assert sandbox.admin.records("contacts") == []


def test_start_without_upload_fails_with_source_missing(api: httpx.Client) -> None:
    slot = init_job(api, "a.csv", b"12345")
    api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": CONTACT_FIELDS, "fieldMap": CONTACT_MAP},
    )
    assert api.post(f"/import-jobs/{slot['jobId']}/start").status_code == 200
    result = wait_import(api, slot["jobId"])
    assert result["state"] == "failed" and result["errorCode"] == "CDP_ETL.IMPORT.SOURCE_MISSING"


def test_lifecycle_and_invalid_state_409(api: httpx.Client, sandbox: SandboxHandle) -> None:
    content = b"email_address\na@example.com\n"
    slot = init_job(api, "a.csv", content)
    job_id = slot["jobId"]
    fields, fmap = {"email_address": "string"}, {"email_address": "email"}
    # pending: start is not allowed
    assert api.get(f"/import-jobs/{job_id}").json()["data"]["state"] == "pending"
    early = api.post(f"/import-jobs/{job_id}/start")
    assert early.status_code == 409 and early.json()["error"]["code"] == "CDP_ETL.IMPORT.INVALID_STATE"
    assert api.get(f"/import-jobs/{job_id}/errors").status_code == 409
    upload(slot, content)
    assert (
        api.post(
            f"/import-jobs/{job_id}/mapping", json={"sourceFields": fields, "fieldMap": fmap}
        ).status_code
        == 200
    )
    assert api.get(f"/import-jobs/{job_id}").json()["data"]["state"] == "ready"
    # ready: mapping may be replaced
    assert (
        api.post(
            f"/import-jobs/{job_id}/mapping", json={"sourceFields": fields, "fieldMap": fmap}
        ).status_code
        == 200
    )
    started = api.post(f"/import-jobs/{job_id}/start", json={})
    assert started.json()["data"] == {
        "status": "started",
        "jobId": job_id,
        "lane": "standard",
        "message": "Job queued for processing",
    }
    assert wait_import(api, job_id)["state"] == "completed"
    # terminal: nothing may change
    again = api.post(f"/import-jobs/{job_id}/start")
    remap = api.post(f"/import-jobs/{job_id}/mapping", json={"sourceFields": fields, "fieldMap": fmap})
    assert again.status_code == remap.status_code == 409
    assert api.get("/import-jobs/imp_nope").status_code == 404
    assert api.get("/import-jobs/imp_nope").json()["error"]["code"] == "CDP_ETL.NOT_FOUND"


def test_running_state_is_observable_with_slower_jobs(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(importJobSeconds=0.6)
    content = b"email_address\n" + b"".join(f"u{i}@example.com\n".encode() for i in range(200))
    slot = init_job(api, "a.csv", content)
    upload(slot, content)
    api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": {"email_address": "string"}, "fieldMap": {"email_address": "email"}},
    )
    api.post(f"/import-jobs/{slot['jobId']}/start")
    seen = set()
    progress = []
    while True:
        data = api.get(f"/import-jobs/{slot['jobId']}").json()["data"]
        seen.add(data["state"])
        progress.append(data["readRows"])
        if data["state"] == "completed":
            break
        time.sleep(0.03)
    assert "running" in seen
    assert len(set(progress)) > 2  # rows are counted while running
    assert progress == sorted(progress)


def test_mapping_to_unknown_field_is_422_and_job_stays_pending(api: httpx.Client) -> None:
    slot = init_job(api, "a.csv", b"x")
    resp = api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={
            "sourceFields": {"email_address": "string", "shoe": "integer"},
            "fieldMap": {"email_address": "email", "shoe": "shoe_size"},
        },
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "CDP_ETL.VALIDATION.REQUEST_SCHEMA"
    assert resp.json()["error"]["details"]["path"] == "fieldMap.shoe"
    assert api.get(f"/import-jobs/{slot['jobId']}").json()["data"]["state"] == "pending"


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"fieldMap": {"a": "email"}}, 400, "sourceFields"),
        ({"sourceFields": {"a": "string"}}, 400, "fieldMap"),
        ({"sourceFields": {"a": "text"}, "fieldMap": {"a": "email"}}, 400, "sourceFields.a"),
        ({"sourceFields": {"a": "string"}, "fieldMap": {"b": "email"}}, 400, "fieldMap.b"),
        (
            {"sourceFields": {"a": "string"}, "fieldMap": {"a": "email"}, "importMode": "custom"},
            400,
            "importMode",
        ),
        (
            {"sourceFields": {"a": "string"}, "fieldMap": {"a": "email"}, "importMode": "yolo"},
            400,
            "importMode",
        ),
        ({"sourceFields": {"a": "string"}, "fieldMap": {"a": "first_name"}}, 422, "fieldMap"),
        ({"templateId": "tpl_nope"}, 400, "templateId"),
    ],
)
def test_mapping_validation(api: httpx.Client, body: dict, status: int, path: str) -> None:
    slot = init_job(api, "a.csv", b"x")
    resp = api.post(f"/import-jobs/{slot['jobId']}/mapping", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["details"]["path"] == path
    assert api.get(f"/import-jobs/{slot['jobId']}").json()["data"]["state"] == "pending"


def test_save_and_reuse_a_mapping_template(api: httpx.Client, sandbox: SandboxHandle) -> None:
    content = b"email_address,FirstName\na@example.com,A\n"
    first = init_job(api, "a.csv", content)
    saved = api.post(
        f"/import-jobs/{first['jobId']}/mapping",
        json={
            "sourceFields": {"email_address": "string", "FirstName": "string"},
            "fieldMap": {"email_address": "email", "FirstName": "first_name"},
            "importMode": "strict",
            "saveAsTemplate": {"name": "Contacts v1"},
        },
    ).json()["data"]
    assert saved["ok"] is True and saved["templateId"].startswith("tpl_")
    assert sandbox.admin.templates()[0]["name"] == "Contacts v1"
    second = init_job(api, "b.csv", content)
    upload(second, content)
    resp = api.post(f"/import-jobs/{second['jobId']}/mapping", json={"templateId": saved["templateId"]})
    assert resp.status_code == 200
    api.post(f"/import-jobs/{second['jobId']}/start")
    result = wait_import(api, second["jobId"])
    assert result["importMode"] == "strict" and result["templateId"] == saved["templateId"]
    assert sandbox.admin.records("contacts") == [{"email": "a@example.com", "first_name": "A"}]


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"createList": True}, "listName"),
        ({"listName": "x"}, "listName"),
        ({"createList": True, "listName": "x", "targetListId": "lst_1"}, "targetListId"),
        ({"createAudience": True}, "audienceName"),
        ({"audienceName": "x"}, "audienceName"),
        ({"createList": "yes", "listName": "x"}, "createList"),
        ({"fileSize": 0}, "fileSize"),
        ({"fileSize": 60 * 1024**3}, "fileSize"),
        ({"fileName": "a.xlsx"}, "fileName"),
        ({"fileName": None}, "fileName"),
    ],
)
def test_init_validation(api: httpx.Client, extra: dict, path: str) -> None:
    body = {"objectName": "contacts", "fileName": "a.csv", "fileSize": 10, **extra}
    resp = api.post("/import-jobs", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "CDP_ETL.VALIDATION.REQUEST_INVALID"
    assert resp.json()["error"]["details"]["path"] == path


def test_init_unknown_object_is_404(api: httpx.Client) -> None:
    resp = api.post("/import-jobs", json={"objectName": "unicorns", "fileName": "a.csv", "fileSize": 1})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "CDP_ETL.OBJECT.NOT_FOUND"


def test_lists_and_audiences_are_created_and_recorded(api: httpx.Client, sandbox: SandboxHandle) -> None:
    content = b"email_address\na@example.com\nbad\nb@example.com\n"
    fields, fmap = {"email_address": "string"}, {"email_address": "email"}
    made = run_import(
        api,
        "a.csv",
        content,
        source_fields=fields,
        field_map=fmap,
        init_extra={
            "createList": True,
            "listName": "Spring",
            "createAudience": True,
            "audienceName": "Prospects",
            "autoProfileAfterImport": True,
        },
    )
    added = run_import(
        api,
        "b.csv",
        content,
        source_fields=fields,
        field_map=fmap,
        init_extra={"targetListId": made["listId"]},
    )
    assert (
        made["createList"] is True and made["listName"] == "Spring" and made["autoProfileAfterImport"] is True
    )
    (lst,) = sandbox.admin.lists()
    assert lst["name"] == "Spring" and lst["listId"] == made["listId"] == added["listId"]
    assert len(set(lst["recordIds"])) == 2  # rejected rows are not members
    (aud,) = sandbox.admin.audiences()
    assert aud["name"] == "Prospects" and aud["audienceId"] == made["audienceId"] and aud["size"] == 2


def _ready_job(api: httpx.Client) -> str:
    content = b"email_address\na@example.com\n"
    slot = init_job(api, "a.csv", content)
    upload(slot, content)
    api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": {"email_address": "string"}, "fieldMap": {"email_address": "email"}},
    )
    return str(slot["jobId"])


def test_eleventh_concurrent_start_is_refused_with_retry_after(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given ten running jobs that stay running
    sandbox.admin.configure(importJobSeconds=30)
    jobs = [_ready_job(api) for _ in range(11)]
    for job_id in jobs[:10]:
        assert api.post(f"/import-jobs/{job_id}/start").status_code == 200
    # When an eleventh is started
    resp = api.post(f"/import-jobs/{jobs[10]}/start")
    # Then it is refused with a retry hint and stays ready
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "CDP_ETL.IMPORT.CONCURRENCY_LIMIT"
    assert resp.headers["Retry-After"] == "30"
    assert api.get(f"/import-jobs/{jobs[10]}").json()["data"]["state"] == "ready"
    # And once a slot frees up, the same start succeeds
    sandbox.admin.fail_job(jobs[0])
    assert api.post(f"/import-jobs/{jobs[10]}/start").status_code == 200


def test_a_start_refused_for_concurrency_succeeds_later_with_the_same_idempotency_key(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given one slot, taken
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=1)
    first, second = _ready_job(api), _ready_job(api)
    assert api.post(f"/import-jobs/{first}/start").status_code == 200
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    # When the second start is refused (429 is not stored under the key), then retried once the slot frees
    assert api.post(f"/import-jobs/{second}/start", headers=headers).status_code == 429
    sandbox.admin.fail_job(first)
    retried = api.post(f"/import-jobs/{second}/start", headers=headers)
    # Then the same key starts the job, rather than replaying the refusal
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert api.get(f"/import-jobs/{second}").json()["data"]["state"] in ("running", "completed")


def test_concurrency_limit_is_configurable(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=1)
    first, second = _ready_job(api), _ready_job(api)
    assert api.post(f"/import-jobs/{first}/start").status_code == 200
    assert api.post(f"/import-jobs/{second}/start").status_code == 429


def test_import_jobs_can_be_made_to_fail(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.fail_next_jobs("import", error_message="infrastructure event")
    result = run_import(api, "contacts.csv", BOM_CSV)
    assert result["state"] == "failed" and result["errorMessage"] == "infrastructure event"
    assert sandbox.admin.records("contacts") == []
