"""The workspace's running-jobs limit: how a start beyond it is refused, whether the refusal is cached
under its Idempotency-Key, how the limit is set at start, and the timeline of every job's start and
finish that tests use to check order and overlap."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from cli.main import build_parser
from sandbox.cli import build_options
from sandbox.testing import (
    SandboxHandle,
    peak_running,
    peak_running_per_object,
    running_sandbox,
    start_order,
)

from .helpers import init_job, upload


def _ready_job(api: httpx.Client, file_name: str = "a.csv", obj: str = "contacts") -> str:
    content = b"email_address\na@example.com\n"
    slot = init_job(api, file_name, content, obj)
    assert upload(slot, content).status_code == 200
    mapped = api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": {"email_address": "string"}, "fieldMap": {"email_address": "email"}},
    )
    assert mapped.status_code == 200, mapped.text
    return str(slot["jobId"])


def _state(api: httpx.Client, job_id: str) -> str:
    return str(api.get(f"/import-jobs/{job_id}").json()["data"]["state"])


@pytest.mark.parametrize(
    ("refusal", "status", "code", "retry_after"),
    [
        ("429", 429, "CDP_ETL.IMPORT.CONCURRENCY_LIMIT", "30"),
        ("429-rate", 429, "CDP_ETL.RATE.LIMITED", "30"),
        ("409", 409, "CDP_ETL.IMPORT.INVALID_STATE", None),
    ],
)
def test_a_start_beyond_the_limit_is_refused_as_configured_and_the_job_stays_ready(
    api: httpx.Client, sandbox: SandboxHandle, refusal: str, status: int, code: str, retry_after: str | None
) -> None:
    # Given a workspace limited to one running job, refusing the way the switch says
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=1, concurrencyRefusal=refusal)
    first, second = _ready_job(api), _ready_job(api)
    assert api.post(f"/import-jobs/{first}/start").status_code == 200
    # When a second job is started
    refused = api.post(f"/import-jobs/{second}/start")
    # Then it is refused with that status and code, naming the limit, and the job is still ready
    assert refused.status_code == status
    error = refused.json()["error"]
    assert error["code"] == code and error["details"]["limit"] == 1
    assert refused.headers.get("Retry-After") == retry_after
    assert _state(api, second) == "ready"
    # And once the slot frees, the job starts
    sandbox.admin.fail_job(first)
    assert api.post(f"/import-jobs/{second}/start").status_code == 200


def test_an_unknown_refusal_style_is_refused_by_the_admin(sandbox: SandboxHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        sandbox.admin.configure(concurrencyRefusal="418")
    assert "429-rate" in caught.value.response.text
    assert sandbox.admin.config()["concurrencyRefusal"] == "429"


@pytest.mark.parametrize("refusal", ["429", "429-rate"])
def test_with_cache_refusals_a_retried_start_replays_the_429_after_capacity_frees(
    api: httpx.Client, sandbox: SandboxHandle, refusal: str
) -> None:
    # Given a full workspace whose refusals are stored under their Idempotency-Key
    sandbox.admin.configure(
        importJobSeconds=30, maxRunningImports=1, concurrencyRefusal=refusal, cacheRefusals=True
    )
    first, second = _ready_job(api), _ready_job(api)
    assert api.post(f"/import-jobs/{first}/start").status_code == 200
    key = {"Idempotency-Key": str(uuid.uuid4())}
    refused = api.post(f"/import-jobs/{second}/start", headers=key)
    assert refused.status_code == 429
    # When capacity frees and the start is retried with the same key
    sandbox.admin.fail_job(first)
    replayed = api.post(f"/import-jobs/{second}/start", headers=key)
    # Then the cached refusal comes back (same body, Retry-After kept) and the job did not start
    assert replayed.status_code == 429 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == refused.json() and replayed.headers["Retry-After"] == "30"
    assert _state(api, second) == "ready"
    # And a fresh key starts it
    assert api.post(f"/import-jobs/{second}/start", headers={"Idempotency-Key": str(uuid.uuid4())}).is_success


def test_by_default_a_429_is_not_cached_but_a_409_refusal_is(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given one slot, taken, and two jobs refused with the same key each: one by 429, one by 409
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=1)
    first, by_429, by_409 = _ready_job(api), _ready_job(api), _ready_job(api)
    assert api.post(f"/import-jobs/{first}/start").status_code == 200
    key_429, key_409 = {"Idempotency-Key": str(uuid.uuid4())}, {"Idempotency-Key": str(uuid.uuid4())}
    assert api.post(f"/import-jobs/{by_429}/start", headers=key_429).status_code == 429
    sandbox.admin.configure(concurrencyRefusal="409")
    assert api.post(f"/import-jobs/{by_409}/start", headers=key_409).status_code == 409
    # When capacity frees (two slots) and both are retried with their keys
    sandbox.admin.configure(maxRunningImports=3)
    sandbox.admin.fail_job(first)
    retried_429 = api.post(f"/import-jobs/{by_429}/start", headers=key_429)
    retried_409 = api.post(f"/import-jobs/{by_409}/start", headers=key_409)
    # Then the 429 was not stored (the start runs) while the 409 is replayed like any 4xx
    assert retried_429.status_code == 200 and "Idempotent-Replayed" not in retried_429.headers
    assert retried_409.status_code == 409 and retried_409.headers["Idempotent-Replayed"] == "true"
    assert _state(api, by_409) == "ready"


def test_the_timeline_records_starts_and_finishes_in_order(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given two slots and three jobs on two objects
    sandbox.admin.configure(importJobSeconds=30, maxRunningImports=2)
    a = _ready_job(api, "a.csv", "contacts")
    b = _ready_job(api, "b.csv", "profiles")
    c = _ready_job(api, "c.csv", "contacts")
    never = _ready_job(api, "never.csv", "contacts")
    # When a and b start, c is refused, a finishes, then c starts; `never` is failed while ready
    assert api.post(f"/import-jobs/{a}/start").status_code == 200
    assert api.post(f"/import-jobs/{b}/start").status_code == 200
    assert api.post(f"/import-jobs/{c}/start").status_code == 429
    sandbox.admin.fail_job(a)
    assert api.post(f"/import-jobs/{c}/start").status_code == 200
    sandbox.admin.fail_job(never)
    # Then the timeline lists the started jobs in start order, a finished, b and c still running
    timeline = sandbox.admin.import_timeline()
    assert [e["jobId"] for e in timeline] == [a, b, c]
    assert start_order(timeline) == ["a.csv", "b.csv", "c.csv"]
    assert start_order(timeline, "contacts", field="jobId") == [a, c]
    first = timeline[0]
    assert first["state"] == "failed" and first["finishedAt"] is not None
    assert first["finishSeq"] < timeline[2]["startSeq"]
    assert [e["finishedAt"] for e in timeline[1:]] == [None, None]
    assert {e["objectName"] for e in timeline} == {"contacts", "profiles"}
    # And the overlap helpers see at most two at once, one per object
    assert peak_running(timeline) == 2
    assert peak_running_per_object(timeline) == {"contacts": 1, "profiles": 1}


def test_the_timeline_shows_overlap_on_one_object_and_completion(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given two jobs on one object that run at once, and a third that runs to completion later
    sandbox.admin.configure(importJobSeconds=30)
    a, b = _ready_job(api, "a.csv"), _ready_job(api, "b.csv")
    assert api.post(f"/import-jobs/{a}/start").status_code == 200
    assert api.post(f"/import-jobs/{b}/start").status_code == 200
    sandbox.admin.fail_job(a)
    sandbox.admin.fail_job(b)
    sandbox.admin.configure(importJobSeconds=0)
    c = _ready_job(api, "c.csv")
    assert api.post(f"/import-jobs/{c}/start").status_code == 200
    sandbox.admin.wait_job(c)
    # When the timeline is read
    timeline = sandbox.admin.import_timeline()
    # Then the overlap of a and b is visible, and c's completion is recorded
    assert peak_running(timeline, "contacts") == 2 and peak_running(timeline) == 2
    assert timeline[2]["jobId"] == c and timeline[2]["state"] == "completed"
    assert timeline[2]["finishSeq"] > timeline[2]["startSeq"] > timeline[1]["finishSeq"]
    # And a reset forgets it
    sandbox.admin.reset()
    assert sandbox.admin.import_timeline() == []


def test_the_limit_and_refusal_switches_are_set_at_start() -> None:
    # Given a private sandbox started with a limit of 1, 409 refusals and cached refusals
    config = {"maxRunningImports": 1, "concurrencyRefusal": "409", "cacheRefusals": True}
    with running_sandbox(config=config) as sb, sb.api() as api:
        sb.admin.configure(importJobSeconds=30)
        first, second = _ready_job(api), _ready_job(api)
        assert api.post(f"/import-jobs/{first}/start").status_code == 200
        # When a second job is started, then it is refused with 409 and the config reads back
        assert api.post(f"/import-jobs/{second}/start").status_code == 409
        assert {k: sb.admin.config()[k] for k in config} == config
        # And a reset restores the startup values, not the defaults
        sb.admin.configure(maxRunningImports=5, concurrencyRefusal="429")
        sb.admin.reset()
        assert {k: sb.admin.config()[k] for k in config} == config


def test_the_cli_flags_set_the_limit_and_the_refusal_style(tmp_path: Path) -> None:
    # Given the command line a user would type
    parser = build_parser()
    data = ["--data-dir", str(tmp_path)]
    args = parser.parse_args(
        ["sandbox", *data, "--max-running-jobs", "3", "--concurrency-refusal", "409", "--cache-refusals"]
    )
    # When the sandbox options are built, then the runtime config carries the switches
    options = build_options(args)
    assert options.config["maxRunningImports"] == 3
    assert options.config["concurrencyRefusal"] == "409"
    assert options.config["cacheRefusals"] is True
    # And the defaults are today's behaviour; the old flag name still works
    defaults = build_options(parser.parse_args(["sandbox", *data, "--max-running-imports", "4"])).config
    assert defaults["maxRunningImports"] == 4
    assert (defaults["concurrencyRefusal"], defaults["cacheRefusals"]) == ("429", False)
    # And a bad value is refused with a message
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "--concurrency-refusal", "418"])
    with pytest.raises(ValueError, match="must not be negative"):
        build_options(parser.parse_args(["sandbox", *data, "--max-running-jobs", "-1"]))
