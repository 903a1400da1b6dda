"""Every documented error code becomes its own exception, carrying what a user needs to act."""

from __future__ import annotations

import httpx
import pytest

from experiture_ingest import client as api
from tests.unit.client.scripted import Script, error_body

DOCUMENTED = [
    (400, "CDP_ETL.VALIDATION.REQUEST_INVALID", api.ValidationError, False),
    (401, "CDP_ETL.AUTH.UNAUTHORIZED", api.AuthenticationError, False),
    (403, "CDP_ETL.AUTH.FORBIDDEN", api.ForbiddenError, False),
    (404, "CDP_ETL.OBJECT.NOT_FOUND", api.NotFoundError, False),
    (404, "CDP_ETL.NOT_FOUND", api.NotFoundError, False),
    (409, "CDP_ETL.WRITE.CONFLICT", api.WriteConflictError, True),
    (409, "CDP_ETL.IMPORT.INVALID_STATE", api.ConflictError, False),
    (422, "CDP_ETL.VALIDATION.SCHEMA_MISMATCH", api.SchemaMismatchError, False),
    (422, "CDP_ETL.VALIDATION.REQUEST_SCHEMA", api.SchemaMismatchError, False),
    (429, "CDP_ETL.RATE.LIMITED", api.RateLimitedError, True),
    (429, "CDP_ETL.IMPORT.CONCURRENCY_LIMIT", api.ConcurrencyLimitError, True),
    (500, "CDP_ETL.INTERNAL_ERROR", api.ServerError, True),
    (413, "CDP_ETL.VALIDATION.PAYLOAD_TOO_LARGE", api.PayloadTooLargeError, False),
    (422, "CDP_ETL.IDEMPOTENCY.KEY_REUSED", api.IdempotencyKeyReusedError, False),
    (409, "CDP_ETL.IDEMPOTENCY.IN_PROGRESS", api.WriteConflictError, True),
]


@pytest.mark.parametrize(("status", "code", "exc_type", "retryable"), DOCUMENTED)
def test_documented_code_maps_to_its_exception(make_client, status, code, exc_type, retryable):
    # Given an API that answers one documented error (every retry sees the same answer)
    answer = httpx.Response(
        status,
        json=error_body(
            code,
            "records[2].email: invalid email format",
            details={"path": "records[2].email", "value": "x"},
            remediation="Fix the email.",
        ),
        headers={"Retry-After": "0"},
    )
    script = Script(*[answer] * 5)
    client = make_client(script)

    # When a call hits it
    with pytest.raises(api.ApiError) as caught:
        client.get_object_schema("contacts")

    # Then the exception is the documented one and carries everything a user needs
    err = caught.value
    assert type(err) is exc_type
    assert (err.status, err.code, err.retryable) == (status, code, retryable)
    assert err.details["path"] == "records[2].email"
    assert err.remediation == "Fix the email."
    assert err.correlation_id == "corr-err"
    assert str(err) == (
        f"{status} {code}: records[2].email: invalid email format [at records[2].email] "
        "Remediation: Fix the email. (correlation id corr-err)"
    )
    # and only transient errors were retried
    assert len(script.requests) == (5 if retryable else 1)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_without_envelope_are_server_errors(make_client, status):
    # Given a load balancer answering HTML, then the API recovering
    script = Script(
        httpx.Response(status, text="<html>bad gateway</html>", headers={"x-correlation-id": "lb-1"}),
        httpx.Response(200, json={"success": True, "data": {"fields": []}, "correlationId": "c2"}),
    )
    client = make_client(script)
    # When / Then the call is retried and succeeds
    assert client.get_object_schema("contacts").correlation_id == "c2"
    assert len(script.requests) == 2


def test_correlation_id_falls_back_to_header(make_client):
    script = Script(httpx.Response(404, text="not json", headers={"x-correlation-id": "hdr-9"}))
    with pytest.raises(api.NotFoundError) as caught:
        make_client(script).get_import("imp_1")
    assert caught.value.correlation_id == "hdr-9"
    assert "hdr-9" in str(caught.value)


def test_success_false_on_200_is_an_error(make_client):
    script = Script(httpx.Response(200, json=error_body("CDP_ETL.VALIDATION.REQUEST_INVALID")))
    with pytest.raises(api.ValidationError):
        make_client(script).get_import("imp_1")
