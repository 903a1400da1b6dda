"""The CRM client against each emulator switch where the vendor's reference leaves room."""

from __future__ import annotations

import json

import pytest

from experiture_ingest.client.retry import RetryPolicy
from experiture_ingest.crm import (
    ApiKey,
    CrmAuthError,
    CrmClient,
    CrmNotFoundError,
    CrmRequestError,
    CrmTooLargeError,
    CrmTransientError,
)
from experiture_ingest.streams.crm import as_destination_error
from sandbox.testing import SandboxHandle


def _client(sandbox: SandboxHandle, key: str | None = None, attempts: int = 3) -> CrmClient:
    return CrmClient(
        sandbox.crm_base_url,
        ApiKey(key or sandbox.crm_api_key),
        policy=RetryPolicy(max_attempts=attempts, budget_seconds=5, base_seconds=0.01),
    )


def _body(records: list[dict]) -> bytes:
    return json.dumps({"records": records}).encode()


@pytest.mark.parametrize("status", [413, 400])
def test_an_oversized_body_is_read_as_too_large_under_either_status(sandbox: SandboxHandle, status: int):
    # Given a CRM answering an oversized body with 413 or 400
    sandbox.admin.crm_configure(bodyTooLargeStatus=status)
    big = _body(
        [{"identifiers": {"ext_id": f"v-{i}"}, "attributes": {"model": "x" * 2000}} for i in range(600)]
    )
    assert len(big) > 1_000_000
    # When the client sends it, Then it is a too-large refusal the writer splits (record-level, no index)
    with _client(sandbox) as client, pytest.raises(CrmTooLargeError) as caught:
        client.upsert_batch("vehicle", big)
    err = as_destination_error(caught.value)
    assert err.record_level and err.record_index is None and not err.retryable


@pytest.mark.parametrize("scope", ["record", "object_type"])
def test_eleven_associations_under_each_reading_of_the_limit(sandbox: SandboxHandle, scope: str):
    # Given garages g-0..g-10, and a CRM counting associations per record or per associated type
    sandbox.admin.crm_configure(associationLimitScope=scope)
    with _client(sandbox) as client:
        garages = _body(
            [{"identifiers": {"ext_id": f"g-{i}"}, "attributes": {"name": "G"}} for i in range(11)]
        )
        sandbox.admin.wait_crm_process(client.upsert_batch("garage", garages))
        links = [
            {"object_type": "garage", "records": [{"identifiers": {"ext_id": f"g-{i}"}} for i in range(11)]}
        ]
        record = {"identifiers": {"ext_id": "v-1"}, "associations": links}
        # When one record links 11 garages, Then both readings refuse it naming the record (400)
        with pytest.raises(CrmRequestError) as caught:
            client.upsert_batch("vehicle", _body([{"identifiers": {"ext_id": "v-0"}}, record]))
    err = as_destination_error(caught.value)
    assert err.record_level and err.record_index == 1


@pytest.mark.parametrize("status", [400, 404])
def test_an_unknown_object_type_is_a_final_refusal_of_the_request(sandbox: SandboxHandle, status: int):
    sandbox.admin.crm_configure(unknownObjectTypeStatus=status)
    with _client(sandbox) as client, pytest.raises(CrmRequestError) as caught:
        client.upsert_batch("boat", _body([{"identifiers": {"ext_id": "b"}}]))
    err = as_destination_error(caught.value)
    assert not err.retryable and not err.record_level and "invalid object type" in err.message


def test_a_wrong_key_is_transient_for_the_writer_and_never_logged(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
):
    with _client(sandbox, key="wrong-key-123") as client, pytest.raises(CrmAuthError) as caught:
        client.upsert_batch("vehicle", _body([{"identifiers": {"ext_id": "v"}}]))
    assert as_destination_error(caught.value).retryable  # keys rotate: the messages wait
    assert "wrong-key-123" not in caplog.text and "wrong-key-123" not in str(caught.value)


def test_429_without_retry_after_is_retried_after_the_ratelimit_reset(sandbox: SandboxHandle):
    # Given a CRM that answers 429 twice (x-sib-ratelimit-reset, no Retry-After), then accepts
    sandbox.admin.set_faults(
        {"rules": [{"path": "/crm/v3/objects/*", "status": 429, "retryAfter": 0, "times": 2}]}
    )
    with _client(sandbox) as client:
        process = client.upsert_batch("vehicle", _body([{"identifiers": {"ext_id": "v"}}]))
    assert sandbox.admin.wait_crm_process(process)["status"] == "completed"
    assert [r["status"] for r in sandbox.admin.requests(method="POST") if "/crm/" in r["path"]] == [
        429,
        429,
        202,
    ]


def test_a_5xx_that_persists_is_transient_and_an_unknown_process_is_not_found(sandbox: SandboxHandle):
    sandbox.admin.set_faults({"rules": [{"path": "/crm/v3/objects/*", "status": 503, "times": 5}]})
    with _client(sandbox, attempts=2) as client:
        with pytest.raises(CrmTransientError):
            client.upsert_batch("vehicle", _body([{"identifiers": {"ext_id": "v"}}]))
        with pytest.raises(CrmNotFoundError):
            client.get_process(987654)


def test_a_process_report_is_read_whether_or_not_the_crm_gives_one(sandbox: SandboxHandle):
    with _client(sandbox) as client:
        ghost = _body([{"identifiers": {"id": 424242}, "attributes": {"model": "m"}}])
        first = client.upsert_batch("vehicle", ghost)
        sandbox.admin.wait_crm_process(first)
        report = client.get_process(first).report
        assert report is not None and report.rejected == 1
        sandbox.admin.crm_configure(reportRejections=False)
        second = client.upsert_batch("vehicle", ghost)
        sandbox.admin.wait_crm_process(second)
        status = client.get_process(second)
        assert status.finished and status.report is None
