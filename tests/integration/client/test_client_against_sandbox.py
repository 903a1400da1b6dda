"""The client against the sandbox over real HTTP: two independent readings of the docs must agree."""

from __future__ import annotations

import hashlib
import io
import logging
import tracemalloc
from pathlib import Path

import pytest

from cli.demo import SAMPLE_CSV, SAMPLE_MAPPING, import_with_client
from experiture_ingest import client as api

FAST = api.RetryPolicy(max_attempts=6, budget_seconds=30, base_seconds=0.01, cap_seconds=0.05)


@pytest.fixture
def client(sandbox):
    with api.ExperitureClient(sandbox.base_url, api.BearerToken(sandbox.token), retry=FAST) as c:
        yield c


def test_batch_upsert_lands_with_merge_metrics(client, sandbox):
    # Given one stored contact
    client.upsert("contacts", {"email": "a@example.com", "tier": "gold"})
    # When a batch updates it, repeats it unchanged in a second batch, and adds another
    first = client.upsert_batch(
        "contacts", [{"email": "a@example.com", "tier": "silver"}, {"email": "b@example.com"}]
    )
    done = sandbox.admin.wait_job(first.job_id)
    status = client.get_batch_job("contacts", first.job_id)
    # Then the job reports an update and an insert, and the sandbox holds both rows
    assert done["state"] == status.state == "completed"
    assert (status.metrics.merged_updates, status.metrics.merged_inserts) == (1, 1)
    assert first.match_key == "email"
    stored = {r["email"]: r for r in sandbox.admin.records("contacts")}
    assert stored["a@example.com"]["tier"] == "silver" and "b@example.com" in stored


def test_documented_errors_come_back_as_typed_exceptions(client, sandbox):
    with pytest.raises(api.NotFoundError) as not_found:
        client.append_batch("no_such_object", [{"a": 1}])
    assert not_found.value.code == "CDP_ETL.OBJECT.NOT_FOUND" and not_found.value.correlation_id
    with pytest.raises(api.SchemaMismatchError) as mismatch:
        client.append_batch(
            "contacts", [{"email": "a@example.com"}, {"email": "b@example.com", "shoe_size": 9}]
        )
    assert mismatch.value.details["path"] == "records[1].shoe_size"
    with pytest.raises(api.ValidationError):
        client.append_batch("contacts", [])
    slot = client.init_import(api.ImportJobInit(object_name="contacts", file_name="x.csv", file_size=3))
    with pytest.raises(api.ConflictError) as conflict:
        client.start_import(slot.job_id)  # still pending: no mapping yet
    assert not conflict.value.retryable
    with pytest.raises(api.SchemaMismatchError) as bad_mapping:
        client.set_mapping(
            slot.job_id, api.ImportMapping(source_fields={"x": "string"}, field_map={"x": "nope"})
        )
    assert bad_mapping.value.code == "CDP_ETL.VALIDATION.REQUEST_SCHEMA"
    with pytest.raises(api.NotFoundError):
        client.get_import("imp_does_not_exist")


def test_forbidden_scope(sandbox):
    sandbox.admin.add_token("read-only", ["cdp:metadata:read"])
    with api.ExperitureClient(sandbox.base_url, api.BearerToken("read-only"), retry=FAST) as c:
        assert c.get_object_schema("contacts").key_field == "email"
        with pytest.raises(api.ForbiddenError):
            c.append("contacts", {"email": "a@example.com"})


def test_idempotent_retry_after_a_lost_answer_writes_once(client, sandbox):
    # Given the first answer to a batch write is lost after the sandbox did the work
    sandbox.admin.set_faults(
        {"rules": [{"path": "/public/v1/records/*/append-batch", "drop": "after_processing", "times": 1}]}
    )
    # When the client retries (same Idempotency-Key)
    event = {"event_id": "e1", "event_type": "click", "occurred_at": "2026-01-01T00:00:00Z"}
    accepted = client.append_batch("events", [event])
    sandbox.admin.wait_job(accepted.job_id)
    # Then one job exists and one row was appended
    posts = sandbox.admin.requests(method="POST", path="/public/v1/records/events/append-batch")
    assert len(posts) == 2 and len({p["idempotencyKey"] for p in posts}) == 1
    assert len(sandbox.admin.batch_jobs()) == 1
    assert len(sandbox.admin.records("events")) == 1


def test_injected_429_and_500_are_ridden_out(client, sandbox):
    sandbox.admin.set_faults(
        {
            "rules": [
                {"path": "/public/v1/metadata/*", "status": 429, "retryAfter": 0, "times": 2},
                {"path": "/public/v1/metadata/*", "status": 500, "times": 2},
            ]
        }
    )
    assert client.get_object_schema("orders").key_field == "order_id"
    assert len(sandbox.admin.requests(path="/public/v1/metadata/")) == 5


def test_oauth_client_credentials_and_refresh_on_401(sandbox):
    # Given an OAuth client whose tokens the sandbox issues, and a client using it
    sandbox.admin.add_client("etl-app", "etl-secret-value", token_ttl=3600)
    auth = api.ClientCredentials("etl-app", "etl-secret-value", sandbox.token_url)
    with api.ExperitureClient(sandbox.base_url, auth, retry=FAST) as c:
        c.get_object_schema("contacts")
        c.get_object_schema("contacts")
        assert auth.refreshes == 1  # cached across calls
        # When the sandbox forgets every token (as after a revocation)
        sandbox.admin.reset()
        sandbox.admin.add_client("etl-app", "etl-secret-value", token_ttl=3600)
        c.get_object_schema("contacts")
    # Then exactly one refresh happened and the call succeeded
    assert auth.refreshes == 2


def test_wrong_client_secret_is_a_clear_error(sandbox):
    auth = api.ClientCredentials("etl-app", "wrong-secret", sandbox.token_url)
    with (
        api.ExperitureClient(sandbox.base_url, auth, retry=FAST) as c,
        pytest.raises(api.AuthenticationError) as err,
    ):
        c.get_object_schema("contacts")
    assert "wrong-secret" not in str(err.value)


@pytest.mark.slow
def test_60mb_upload_over_real_http_is_exact_and_flat(client, sandbox, tmp_path: Path, caplog):
    # Given a 60 MB file and an import job expecting exactly that many bytes
    caplog.set_level(logging.DEBUG)
    size = 60 * 1024 * 1024
    path = tmp_path / "big.csv"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        block = b"email,first_name\n" + b"someone@example.com,Someone\n" * 37000
        written = 0
        while written < size:
            chunk = block[: size - written]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    slot = client.init_import(api.ImportJobInit(object_name="contacts", file_name="big.csv", file_size=size))
    # When the client uploads it (the sandbox refuses chunked bodies and wrong lengths)
    tracemalloc.start()
    result = client.upload(slot, lambda: path.open("rb"), size, content_type="text/csv")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then the sandbox stored the exact bytes, and the client's memory never held the body
    info = sandbox.admin.upload_info(slot.job_id)
    assert info["complete"] and info["bytes"] == size == result.bytes_sent
    assert info["sha256"] == digest.hexdigest()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB (client and in-process sandbox together)"
    signature = slot.upload_url.split("?", 1)[1]
    assert all(signature not in r.getMessage() for r in caplog.records)


def test_upload_slot_headers_are_merged(client, sandbox):
    sandbox.admin.configure(uploadHeaders={"x-ms-blob-type": "BlockBlob"})
    data = SAMPLE_CSV.read_bytes()
    slot = client.init_import(
        api.ImportJobInit(object_name="contacts", file_name="c.csv", file_size=len(data))
    )
    assert slot.headers == {"x-ms-blob-type": "BlockBlob"}
    client.upload(slot, lambda: io.BytesIO(data), len(data), content_type="text/csv")
    assert sandbox.admin.upload_info(slot.job_id)["complete"]


def test_expired_upload_slot_is_reported_as_such(client, sandbox):
    sandbox.admin.configure(uploadUrlTtlSeconds=0)
    slot = client.init_import(api.ImportJobInit(object_name="contacts", file_name="c.csv", file_size=3))
    with pytest.raises(api.UploadSlotExpiredError) as err:
        client.upload(slot, lambda: io.BytesIO(b"a,b"), 3)
    assert slot.upload_url.split("?", 1)[1] not in str(err.value)


def test_demo_import_reports_rows_and_reasons(sandbox, capsys):
    # Given the bundled sample with four bad rows, when the demo's import runs
    import_with_client(sandbox, SAMPLE_CSV)
    out = capsys.readouterr().out
    # Then it says what landed and why the rest did not, and the sandbox agrees
    assert "8 rows imported" in out and "4 rejected" in out
    assert "invalid email format" in out and "naive datetime" in out
    emails = {r["email"] for r in sandbox.admin.records("contacts")}
    assert len(emails) == 8 and "not-an-email" not in emails
    assert len(SAMPLE_MAPPING.field_map or {}) == 8


def test_lower_case_slot_headers_replace_ours_and_content_type_is_sent_once(client, sandbox):
    # Given a slot whose headers name Content-Type in lower case, as the docs' own example does
    sandbox.admin.configure(uploadHeaders={"content-type": "text/csv", "x-ms-blob-type": "BlockBlob"})
    data = SAMPLE_CSV.read_bytes()
    slot = client.init_import(
        api.ImportJobInit(object_name="contacts", file_name="c.csv", file_size=len(data))
    )
    # When the client uploads with its own content type
    client.upload(slot, lambda: io.BytesIO(data), len(data), content_type="application/octet-stream")
    # Then the storage received exactly one Content-Type, the slot's, and the whole file
    info = sandbox.admin.upload_info(slot.job_id)
    assert info["contentTypes"] == ["text/csv"]
    assert info["complete"] and sandbox.admin.upload_bytes(slot.job_id) == data


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ({"code": "SignatureDoesNotMatch"}, "SignatureDoesNotMatch"),
        ({}, "AccessDenied"),
    ],
)
def test_a_signature_or_access_refusal_is_not_read_as_an_expired_slot(client, sandbox, rule, code):
    # Given a storage that refuses the upload with 403 for a reason other than expiry
    sandbox.admin.add_faults({"rules": [{"method": "PUT", "path": "/uploads/*", "status": 403, **rule}]})
    slot = client.init_import(api.ImportJobInit(object_name="contacts", file_name="c.csv", file_size=3))
    # When the client uploads
    with pytest.raises(api.UploadRefusedError) as refused:
        client.upload(slot, lambda: io.BytesIO(b"a,b"), 3)
    # Then the refusal names the storage's code, is not retried, and never shows the signature
    assert not isinstance(refused.value, api.UploadSlotExpiredError) and not refused.value.retryable
    assert refused.value.code == code and code in str(refused.value)
    assert slot.upload_url.split("?", 1)[1] not in str(refused.value)
    assert "signature=" not in str(refused.value.to_dict())
    assert len(sandbox.admin.requests(method="PUT")) == 1


@pytest.mark.parametrize(
    ("refusal", "exc_type", "code"),
    [
        ("429", api.ConcurrencyLimitError, "CDP_ETL.IMPORT.CONCURRENCY_LIMIT"),
        ("429-rate", api.RateLimitedError, "CDP_ETL.RATE.LIMITED"),
        ("409", api.ConflictError, "CDP_ETL.IMPORT.INVALID_STATE"),
    ],
)
def test_each_capacity_refusal_of_a_start_is_its_own_error(sandbox, refusal, exc_type, code):
    # Given a workspace with one running job and a limit of one, refusing the way the switch says
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=1, concurrencyRefusal=refusal)
    once = api.RetryPolicy(max_attempts=1)
    with api.ExperitureClient(sandbox.base_url, api.BearerToken(sandbox.token), retry=once) as client:
        jobs = []
        for _ in range(2):
            slot = client.init_import(
                api.ImportJobInit(object_name="contacts", file_name="c.csv", file_size=3)
            )
            client.upload(slot, lambda: io.BytesIO(b"a,b"), 3)
            client.set_mapping(
                slot.job_id, api.ImportMapping(source_fields={"a": "string"}, field_map={"a": "email"})
            )
            jobs.append(slot.job_id)
        client.start_import(jobs[0])
        # When the second is started
        with pytest.raises(api.ExperitureError) as refused:
            client.start_import(jobs[1])
    # Then the exception's class and code tell the three answers apart, and the job is still ready
    assert type(refused.value) is exc_type and refused.value.code == code
    assert not isinstance(refused.value, api.WriteConflictError)  # not the retry-with-same-key 409
    assert refused.value.retryable is (refusal != "409")
    assert refused.value.details["limit"] == 1
    assert sandbox.admin.job(jobs[1])["state"] == "ready"
