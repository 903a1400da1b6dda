"""Retries: which answers are retried, how long the client waits, and what bounds it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from experiture_ingest import client as api
from tests.unit.client.scripted import Script, envelope, error_body

ACCEPTED = envelope(
    {"operation": "append-batch", "objectName": "contacts", "jobId": "job_1", "acceptedRecords": 1}
)


def test_429_retry_after_seconds_is_honoured(make_client, clock):
    # Given a 429 asking for 2 s, then success
    script = Script(
        httpx.Response(429, json=error_body("CDP_ETL.RATE.LIMITED"), headers={"Retry-After": "2"}),
        httpx.Response(200, json=envelope({"fields": []})),
    )
    client = make_client(script, retry=api.RetryPolicy(rng=lambda: 0.1))
    # When
    client.get_object_schema("contacts")
    # Then the client waited about 2 s (on the fake clock) and tried again once
    assert clock.sleeps == [pytest.approx(2.0)]
    assert len(script.requests) == 2


def test_429_retry_after_http_date_is_honoured(make_client, clock):
    when = datetime.now(UTC) + timedelta(seconds=5)
    script = Script(
        httpx.Response(
            429,
            json=error_body("CDP_ETL.RATE.LIMITED"),
            headers={"Retry-After": format_datetime(when, usegmt=True)},
        ),
        httpx.Response(200, json=envelope({"fields": []})),
    )
    make_client(script, retry=api.RetryPolicy(rng=lambda: 0.0)).get_object_schema("contacts")
    assert 3.5 < clock.sleeps[0] <= 5.0


def test_500_500_200_succeeds_with_one_idempotency_key(make_client):
    # Given two server errors before success
    script = Script(
        httpx.Response(500, json=error_body("CDP_ETL.INTERNAL_ERROR")),
        httpx.Response(500, json=error_body("CDP_ETL.INTERNAL_ERROR")),
        httpx.Response(202, json=ACCEPTED),
    )
    # When a batch is written
    result = make_client(script).append_batch("contacts", [{"email": "a@example.com"}])
    # Then it succeeds after three attempts that all carry the same key and the same body
    assert result.job_id == "job_1"
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    assert len({r.content for r in script.requests}) == 1


def test_caller_key_is_used_verbatim(make_client):
    script = Script(httpx.Response(202, json=ACCEPTED))
    make_client(script).append_batch(
        "contacts", [{"a": 1}], idempotency_key="6f1c3c52-9d0e-4c7e-9a43-0d6b8c1f2e55"
    )
    assert script.requests[0].headers["Idempotency-Key"] == "6f1c3c52-9d0e-4c7e-9a43-0d6b8c1f2e55"


def test_each_logical_write_gets_its_own_key(make_client):
    script = Script(httpx.Response(202, json=ACCEPTED), httpx.Response(202, json=ACCEPTED))
    client = make_client(script)
    client.append_batch("contacts", [{"a": 1}])
    client.append_batch("contacts", [{"a": 1}])
    assert script.requests[0].headers["Idempotency-Key"] != script.requests[1].headers["Idempotency-Key"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(make_client, clock, status):
    script = Script(httpx.Response(status, json=error_body("CDP_ETL.SOMETHING")))
    with pytest.raises(api.ApiError):
        make_client(script).append_batch("contacts", [{"a": 1}])
    assert len(script.requests) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadError("connection reset by peer"),
    ],
)
def test_transport_faults_are_retried(make_client, fault):
    script = Script(fault, httpx.Response(202, json=ACCEPTED))
    assert make_client(script).append_batch("contacts", [{"a": 1}]).job_id == "job_1"
    assert script.requests[0].headers["Idempotency-Key"] == script.requests[1].headers["Idempotency-Key"]


def test_transport_fault_that_persists_becomes_transport_error(make_client):
    script = Script(*[httpx.ConnectError("connection refused")] * 5)
    with pytest.raises(api.TransportError, match="ConnectError"):
        make_client(script).get_import("imp_1")
    assert len(script.requests) == 5


def test_attempt_budget_bounds_the_call(make_client):
    script = Script(*[httpx.Response(503, text="")] * 3)
    with pytest.raises(api.ServerError):
        make_client(script, retry=api.RetryPolicy(max_attempts=3, rng=lambda: 1.0)).get_import("imp_1")
    assert len(script.requests) == 3


def test_time_budget_bounds_the_call(make_client, clock):
    # Given a server that asks for 30 s pauses and a 60 s budget
    answer = httpx.Response(429, json=error_body("CDP_ETL.RATE.LIMITED"), headers={"Retry-After": "30"})
    script = Script(*[answer] * 10)
    # When / Then the client gives up once the next wait would exceed the budget
    with pytest.raises(api.RateLimitedError):
        make_client(script, retry=api.RetryPolicy(max_attempts=10, budget_seconds=60)).get_import("imp_1")
    assert clock.sleeps == [30.0, 30.0]
    assert len(script.requests) == 3


def test_backoff_grows_with_full_jitter_and_a_cap():
    policy = api.RetryPolicy(base_seconds=0.5, cap_seconds=4, rng=lambda: 1.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert api.RetryPolicy(rng=lambda: 0.0).backoff(3) == 0.0


def test_retry_hook_sees_each_retry(make_client):
    seen: list[api.RetryEvent] = []
    script = Script(
        httpx.Response(500, json=error_body("CDP_ETL.INTERNAL_ERROR")), httpx.Response(202, json=ACCEPTED)
    )
    make_client(script, on_retry=seen.append).append_batch("contacts", [{"a": 1}])
    assert [(e.operation, e.attempt, type(e.error)) for e in seen] == [
        ("POST /records/contacts/append-batch", 1, api.ServerError)
    ]


def test_parse_retry_after_forms():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert api.parse_retry_after("7", now=now) == 7.0
    assert api.parse_retry_after("Thu, 01 Jan 2026 00:00:09 GMT", now=now) == 9.0
    assert api.parse_retry_after("garbage", now=now) is None
    assert api.parse_retry_after(None) is None
