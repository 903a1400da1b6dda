"""The import state machine end to end: real definition, real handlers, the sandbox over HTTP."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from experiture_ingest.files.summary import Summary
from tests.e2e.conftest import Imports


def csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def clean_rows(n: int) -> list[list[object]]:
    return [[f"user{i}@example.com", f"First{i}", f"Last{i}", 20 + i] for i in range(n)]


def emitted_metrics(captured: str) -> set[str]:
    """Names of the metrics in the CloudWatch EMF lines the handlers printed."""
    names: set[str] = set()
    for line in captured.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            names |= {m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    return names


def test_clean_csv_completes_with_counts_matching_the_stored_rows(imports: Imports):
    # Given a clean CSV whose header names the fields exactly
    body = csv_bytes(["email", "first_name", "last_name", "age"], clean_rows(25))
    submitted = imports.submit("incoming/contacts/clean.csv", body)

    # When the state machine runs it to its end
    done = imports.finish(submitted)

    # Then the execution succeeds and the summary's counts are the rows the CDP now holds
    stored = imports.sandbox.admin.records("contacts")
    assert done.execution.status == "SUCCEEDED"
    assert done.summary["outcome"] == "completed"
    assert done.summary["jobId"] == submitted.job_id
    metrics = done.summary["metrics"]
    assert metrics["readRows"] == metrics["rowsImported"] == metrics["mergedInserts"] == len(stored) == 25
    assert metrics["rowsRejected"] == 0 and metrics["successRate"] == 1.0
    assert {r["email"] for r in stored} == {f"user{i}@example.com" for i in range(25)}
    assert done.errors_lines is None and done.summary["errorsFile"] is None
    assert done.tags == {"experiture-status": "completed", "experiture-job-id": submitted.job_id}
    assert done.summary["correlationIds"], "correlation ids let support trace the run"
    assert done.summary["timings"]["finishedAt"] and done.summary["timings"]["jobStartedAt"]


def test_bad_rows_land_in_an_errors_file_matching_the_rejected_rows(imports: Imports):
    # Given a CSV with three bad rows (bad email, an age that is not a number, no email)
    rows = clean_rows(6)
    rows[1][0] = "not-an-email"
    rows[3][3] = "forty"
    rows[4][0] = ""
    body = csv_bytes(["email", "first_name", "last_name", "age"], rows)
    submitted = imports.submit("incoming/contacts/2026/bad rows.csv", body)

    # When it runs
    done = imports.finish(submitted)

    # Then the errors file holds exactly the rejected rows, and the summary points at it
    assert done.execution.status == "SUCCEEDED"
    assert done.summary["outcome"] == "completed_with_errors"
    assert done.errors_lines is not None
    assert sorted(line["rowNumber"] for line in done.errors_lines) == [2, 4, 5]
    assert {line["sourceRow"]["first_name"] for line in done.errors_lines} == {"First1", "First3", "First4"}
    assert done.summary["metrics"]["rowsRejected"] == len(done.errors_lines) == 3
    assert done.summary["errorsFile"]["rows"] == 3
    assert done.summary["errorsFile"]["key"] == "results/incoming/contacts/2026/bad rows.csv.errors.jsonl"
    assert sum(done.summary["errorSummary"].values()) == 3
    stored = {r["email"] for r in imports.sandbox.admin.records("contacts")}
    assert len(stored) == done.summary["metrics"]["rowsImported"] == 3


def test_inferred_mapping_matches_renamed_case_columns_and_reports_unmapped(imports: Imports):
    # Given a gzipped CSV whose columns differ from the field names in case and separators
    header = ["EMail", "FirstName", "last-name", "Signup Source", "Shoe Size", "favourite_colour"]
    rows = [[f"p{i}@example.com", f"Ann{i}", f"Lee{i}", "web", 42, "red"] for i in range(4)]
    body = gzip.compress(csv_bytes(header, rows))
    submitted = imports.submit("incoming/contacts/renamed.csv.gz", body, compression="gzip")

    # When no fieldMap is configured, so the mapping is inferred
    done = imports.finish(submitted)

    # Then the renamed columns map to their fields and the rest are reported
    mapping = done.summary["mapping"]
    assert mapping["origin"] == "inferred"
    assert mapping["fieldMap"] == {
        "EMail": "email",
        "FirstName": "first_name",
        "last-name": "last_name",
        "Signup Source": "signup_source",
    }
    assert done.summary["unmappedColumns"] == ["Shoe Size", "favourite_colour"]
    assert done.summary["unmappedRequiredFields"] == mapping["unmappedRequiredFields"] == []
    stored = sorted(imports.sandbox.admin.records("contacts"), key=lambda r: r["email"])
    assert stored[0]["first_name"] == "Ann0" and stored[0]["last_name"] == "Lee0"
    assert done.summary["outcome"] == "completed"


def test_inferred_mapping_from_jsonl(imports: Imports):
    # Given a JSONL file with camelCase keys
    lines = [
        {"email": f"j{i}@example.com", "firstName": "Jo", "lifetimeValue": 1.5, "extra": 1} for i in range(3)
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    submitted = imports.submit("incoming/contacts/people.jsonl", body, fmt="jsonl")

    # When it runs
    done = imports.finish(submitted)

    # Then the keys map to snake_case fields, typed from the schema
    assert done.summary["mapping"]["sourceFields"] == {
        "email": "string",
        "firstName": "string",
        "lifetimeValue": "number",
    }
    assert done.summary["unmappedColumns"] == ["extra"]
    assert len(imports.sandbox.admin.records("contacts")) == done.summary["metrics"]["rowsImported"] == 3


def test_unknown_destination_field_ends_with_a_422_summary(imports: Imports, capsys):
    # Given a configured fieldMap naming a field the object does not have
    body = csv_bytes(["email", "nick"], [["a@example.com", "A"]])
    options = {"fieldMap": {"email": "email", "nick": "nickname"}}
    submitted = imports.submit("incoming/contacts/unknown.csv", body, options=options)

    # When it runs
    done = imports.finish(submitted)

    # Then the execution fails and the summary tells the user why, at the mapping step, without a trace
    assert done.execution.status == "FAILED"
    assert done.execution.error == "ImportFailed"
    assert "results/incoming/contacts/unknown.csv.json" in (done.execution.cause or "")
    summary = done.summary
    assert summary["outcome"] == "failed"
    assert summary["error"]["status"] == 422
    assert summary["error"]["code"] == "CDP_ETL.VALIDATION.REQUEST_SCHEMA"
    assert summary["error"]["stage"] == "mapping"
    assert "nickname" in summary["error"]["message"]
    assert summary["mapping"]["fieldMap"] == {"email": "email", "nick": "nickname"}
    assert "Traceback" not in json.dumps(summary) and "stackTrace" not in json.dumps(summary)
    assert done.tags["experiture-status"] == "failed"
    assert imports.sandbox.admin.records("contacts") == []
    # And it counts as a file the CDP rejected, not as a broken pipeline (which pages)
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "FilesRejected" in metrics and "ImportPipelineFailures" not in metrics
    assert "ApiAnswers4xx" in metrics and "ApiAnswers2xx" in metrics


def test_a_job_the_sandbox_fails_ends_with_a_failure_summary(imports: Imports):
    # Given the CDP will fail the next import job
    imports.sandbox.admin.fail_next_jobs("import", error_message="merge worker lost")
    body = csv_bytes(["email"], [["a@example.com"]])
    submitted = imports.submit("incoming/contacts/doomed.csv", body)

    # When it runs
    done = imports.finish(submitted)

    # Then the execution fails, and the summary carries the job's errorMessage
    assert done.execution.status == "FAILED"
    assert done.summary["outcome"] == "failed"
    assert "merge worker lost" in done.summary["errorMessage"]
    assert "merge worker lost" in done.summary["message"]
    assert done.summary["jobId"] == submitted.job_id


@pytest.mark.slow
def test_injected_429s_and_500s_on_every_route_still_complete(imports: Imports):
    # Given a file with a bad row, and every route the run uses answering 429 once and 500 once
    rows = clean_rows(5)
    rows[2][0] = "broken"
    body = csv_bytes(["email", "first_name", "last_name", "age"], rows)
    routes = [
        ("GET", "/public/v1/metadata/objects/*"),
        ("POST", "/public/v1/import-jobs/*/mapping"),
        ("POST", "/public/v1/import-jobs/*/start"),
        ("GET", "/public/v1/import-jobs/imp_*"),
        ("GET", "/public/v1/import-jobs/*/errors"),
        ("GET", "/error-files/*"),
    ]
    rules = []
    for method, path in routes:
        rules.append({"method": method, "path": path, "status": 429, "retryAfter": 0, "times": 1})
        rules.append({"method": method, "path": path, "status": 500, "times": 1})
    imports.sandbox.admin.set_faults({"rules": rules})
    submitted = imports.submit("incoming/contacts/flaky.csv", body)

    # When it runs
    done = imports.finish(submitted, timeout=120)

    # Then it completes with the right counts, and every route really was faulted
    assert done.execution.status == "SUCCEEDED", done.execution
    assert done.summary["metrics"]["rowsImported"] == len(imports.sandbox.admin.records("contacts")) == 4
    assert [line["rowNumber"] for line in done.errors_lines or []] == [3]
    hits = [rule["hits"] for rule in imports.sandbox.admin.faults()["rules"]]
    assert hits == [1] * len(rules)


@pytest.mark.slow
def test_the_state_machine_retries_what_the_client_no_longer_does(
    imports: Imports, monkeypatch: pytest.MonkeyPatch
):
    # Given a client that makes one attempt only (no in-process retry), the mapping route answering 429
    # once and the poll route answering 500 twice (IntervalSeconds are real seconds on moto: slow)
    monkeypatch.setenv("EXPERITURE_RETRY_MAX_ATTEMPTS", "1")
    imports.sandbox.admin.set_faults(
        {
            "rules": [
                {
                    "method": "POST",
                    "path": "/public/v1/import-jobs/*/mapping",
                    "status": 429,
                    "retryAfter": 0,
                    "times": 1,
                },
                {"method": "GET", "path": "/public/v1/import-jobs/imp_*", "status": 500, "times": 2},
            ]
        }
    )
    submitted = imports.submit("incoming/contacts/retried.csv", csv_bytes(["email"], [["r@example.com"]]))

    # When it runs
    done = imports.finish(submitted, timeout=120)

    # Then it completes: the failing requests reached the sandbox; the state machine's Retry (not the
    # client) ran the mapping task again after the RateLimitedError, and the two failed polls were
    # ridden out by the wait loop (an outage, counted in the summary), not by a task failure
    assert done.execution.status == "SUCCEEDED", done.execution
    assert done.summary["outcome"] == "completed"
    assert len(imports.sandbox.admin.records("contacts")) == 1
    assert [rule["hits"] for rule in imports.sandbox.admin.faults()["rules"]] == [1, 2]
    requests = imports.sandbox.admin.requests()
    mapping = [r["status"] for r in requests if r["method"] == "POST" and r["path"].endswith("/mapping")]
    polls = [
        r["status"]
        for r in requests
        if r["method"] == "GET" and r["path"] == f"/public/v1/import-jobs/{submitted.job_id}"
    ]
    assert mapping[:2] == [429, 200]
    assert polls[:3] == [500, 500, 200]
    failed = [
        event["lambdaFunctionFailedEventDetails"]["error"]
        for event in imports.aws.history(submitted.execution_arn)
        if event["type"] == "LambdaFunctionFailed"
    ]
    assert failed == ["RateLimitedError"]
    assert done.summary["pollOutages"] == {
        "count": 1,
        "longestSeconds": pytest.approx(2, abs=1.5),
        "failedPolls": 2,
    }


@pytest.mark.slow
def test_an_eleventh_concurrent_job_waits_in_the_queue_then_completes(imports: Imports):
    # Given jobs that run for a while (longer than submitting all 11 takes on a busy machine), on a
    # workspace (and a stack) that runs at most 10 at once
    imports.sandbox.admin.configure(importJobSeconds=10.0)
    submitted = [
        imports.submit(
            f"incoming/contacts/part-{i}.csv",
            csv_bytes(["email"], [[f"c{i}@example.com"]]),
            options={"parallelJobs": True},  # distinct keys: the folder opts out of one-job-per-object
        )
        for i in range(11)
    ]

    # When the 11 runs go at the same time
    results = [imports.finish(s, timeout=120) for s in submitted]

    # Then the 11th waited in the stack's queue: no start was refused, never more than 10 ran at once
    starts = [r for r in imports.sandbox.admin.requests(method="POST") if r["path"].endswith("/start")]
    assert [r["status"] for r in starts] == [200] * 11
    jobs = imports.sandbox.admin.import_jobs()
    moments = sorted([(j["startedAt"], 1) for j in jobs] + [(j["completedAt"], -1) for j in jobs])
    running = [sum(change for _, change in moments[: i + 1]) for i in range(len(moments))]
    assert max(running) == 10
    assert [r.execution.status for r in results] == ["SUCCEEDED"] * 11
    assert all(r.summary["outcome"] == "completed" for r in results)
    assert max(r.summary["scheduling"]["waitedSeconds"] for r in results) >= 1
    assert len(imports.sandbox.admin.records("contacts")) == 11


def test_a_file_refused_beyond_queue_max_seconds_ends_with_a_summary(imports: Imports):
    # Given a workspace that never has room, and a short queue limit
    imports.sandbox.admin.configure(maxRunningImports=0, concurrencyRetryAfterSeconds=0)
    submitted = imports.submit(
        "incoming/contacts/never.csv",
        csv_bytes(["email"], [["n@example.com"]]),
        poll={"queueMaxSeconds": 3},
    )

    # When it runs
    done = imports.finish(submitted)

    # Then the summary says the job was never started, and why; its place in the queue is gone
    assert done.execution.status == "FAILED"
    assert done.summary["outcome"] == "failed"
    assert done.summary["error"]["stage"] in ("start", "queue")
    assert "never started" in done.summary["message"]
    assert done.summary["scheduling"]["startAttempts"] >= 2
    assert done.summary["scheduling"]["lastRefusal"] == "429 CDP_ETL.IMPORT.CONCURRENCY_LIMIT"
    starts = [r for r in imports.sandbox.admin.requests(method="POST") if r["path"].endswith("/start")]
    assert len(starts) >= 2, "the refused start was retried before giving up"
    assert len({r["idempotencyKey"] for r in starts}) == len(starts), "a fresh key for every attempt"
    assert imports.aws.queue() == []


def test_a_stuck_job_ends_at_the_deadline_with_a_clear_summary(imports: Imports, capsys):
    # Given a job slower than the run's deadline
    imports.sandbox.admin.configure(importJobSeconds=30.0)
    submitted = imports.submit(
        "incoming/contacts/slow.csv", csv_bytes(["email"], [["s@example.com"]]), poll={"deadlineSeconds": 2}
    )

    # When it runs
    done = imports.finish(submitted)

    # Then it ends timed out, with a summary that names the job
    assert done.execution.status == "FAILED"
    assert done.execution.error == "ImportTimedOut"
    assert done.summary["outcome"] == "timed_out"
    assert submitted.job_id in done.summary["message"]
    assert done.tags["experiture-status"] == "timed_out"
    # And it counts as a pipeline failure (the alarm's metric), not as rejected data
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "ImportPipelineFailures" in metrics and "FilesRejected" not in metrics


def test_a_long_wait_continues_as_a_new_execution(imports: Imports):
    # Given a job that needs several polls, and a tiny iteration budget per execution
    imports.sandbox.admin.configure(importJobSeconds=3.0)
    submitted = imports.submit(
        "incoming/contacts/long.csv",
        csv_bytes(["email"], [["l@example.com"]]),
        poll={"iterationsPerExecution": 1},
    )

    # When it runs (following the continuations)
    done = imports.finish(submitted)

    # Then the run went on in new executions and the last one wrote the completed summary
    first = imports.aws.describe(submitted.execution_arn)
    assert first.status == "SUCCEEDED" and first.output["continuedAs"]["executionArn"]
    assert done.summary["outcome"] == "completed"
    assert done.summary["execution"]["executions"] >= 2
    assert done.summary["execution"]["name"].startswith(submitted.execution_arn.rsplit(":", 1)[-1] + "-c")
    assert len(imports.aws.executions()) == done.summary["execution"]["executions"]


def test_a_continuation_that_already_exists_is_not_reported_as_a_failure(imports: Imports):
    # Given the continuation's deterministic name is already taken by an execution that has ended
    # (its input names no file, so it wrote no summary)
    root = "e2e-already-continued"
    taken = imports.aws.start({}, f"{root}-c2")
    assert imports.aws.wait(taken, follow=False).status == "FAILED"
    imports.sandbox.admin.configure(importJobSeconds=3.0)

    # When a run that must continue as new reaches its continuation
    submitted = imports.submit(
        "incoming/contacts/continued.csv",
        csv_bytes(["email"], [["c@example.com"]]),
        poll={"iterationsPerExecution": 1},
        name=root,
    )
    first = imports.aws.wait(submitted.execution_arn, follow=False)

    # Then it ends as continued (ExecutionAlreadyExists is success), and writes no failure summary
    # that would overwrite the summary of the execution that owns the run
    assert first.status == "SUCCEEDED", first
    assert first.output["continuedAs"]["Error"] == "StepFunctions.ExecutionAlreadyExistsException"
    listed = imports.aws.s3.list_objects_v2(Bucket="ingest-e2e", Prefix="results/")
    assert listed.get("KeyCount") == 0


def test_an_expired_errors_file_url_is_fetched_again(imports: Imports):
    # Given the errors file URL answers 403 (expired) the first time
    rows = clean_rows(3)
    rows[0][0] = "nope"
    imports.sandbox.admin.set_faults(
        {"rules": [{"method": "GET", "path": "/error-files/*", "status": 403, "times": 1}]}
    )
    submitted = imports.submit(
        "incoming/contacts/expired.csv", csv_bytes(["email", "first_name", "last_name", "age"], rows)
    )

    # When it runs
    done = imports.finish(submitted)

    # Then a fresh location was fetched and the errors file is complete
    assert done.execution.status == "SUCCEEDED"
    assert [line["rowNumber"] for line in done.errors_lines or []] == [1]
    locations = [r for r in imports.sandbox.admin.requests(method="GET") if r["path"].endswith("/errors")]
    assert len(locations) == 2


def test_a_report_that_fails_after_the_job_completed_says_the_rows_are_imported(imports: Imports):
    # Given a file with a bad row, and an errors file the CDP's storage never serves (404)
    rows = clean_rows(3)
    rows[0][0] = "nope"
    imports.sandbox.admin.set_faults(
        {"rules": [{"method": "GET", "path": "/error-files/*", "status": 404, "times": 20}]}
    )
    submitted = imports.submit(
        "incoming/contacts/unreported.csv", csv_bytes(["email", "first_name", "last_name", "age"], rows)
    )

    # When it runs
    done = imports.finish(submitted)

    # Then the summary does not call the import failed: the rows are in the CDP, the report is incomplete
    assert done.execution.status == "FAILED"
    assert done.execution.error == "ImportReportIncomplete"
    assert done.summary["outcome"] == "completed_report_incomplete"
    assert done.summary["error"]["stage"] == "collect"
    assert done.summary["metrics"]["rowsImported"] == len(imports.sandbox.admin.records("contacts")) == 2
    assert done.errors_lines is None
    assert done.tags["experiture-status"] == "completed_report_incomplete"


def test_an_s3_drop_goes_through_the_intake_to_a_final_summary(sandbox):
    # Given the whole file path: moto S3, the intake function, the real state machine, the sandbox
    from cli.local_aws import LocalAws

    env = {
        "EXPERITURE_API_URL": sandbox.base_url,
        "EXPERITURE_API_TOKEN": sandbox.token,
        "IMPORT_POLL_INITIAL_SECONDS": "1",
        "IMPORT_POLL_MAX_SECONDS": "1",
    }
    rows = clean_rows(4)
    rows[0][0] = "broken"
    body = csv_bytes(["Email", "FirstName", "Last Name", "age"], rows)
    with LocalAws(env=env) as aws:
        aws.s3.create_bucket(Bucket="drop-e2e")
        aws.s3.put_bucket_versioning(Bucket="drop-e2e", VersioningConfiguration={"Status": "Enabled"})
        options = {"createList": True, "listName": "Drop e2e"}
        aws.s3.put_object(Bucket="drop-e2e", Key="config/contacts.json", Body=json.dumps(options).encode())

        # When a file is dropped under incoming/contacts/ (the intake runs on its S3 event)
        aws.drop("drop-e2e", "incoming/contacts/2026/drop.csv", body)
        [execution] = aws.executions()
        interim = json.loads(
            aws.s3.get_object(Bucket="drop-e2e", Key="results/incoming/contacts/2026/drop.csv.json")[
                "Body"
            ].read()
        )
        done = aws.wait(execution["executionArn"], 60)

        # Then the run ends with a summary and an errors file next to the file, and the rows are stored
        summary = json.loads(
            aws.s3.get_object(Bucket="drop-e2e", Key="results/incoming/contacts/2026/drop.csv.json")[
                "Body"
            ].read()
        )
        errors = aws.s3.get_object(
            Bucket="drop-e2e", Key="results/incoming/contacts/2026/drop.csv.errors.jsonl"
        )
        assert done.status == "SUCCEEDED"
        assert summary["outcome"] == "completed_with_errors"
        assert summary["metrics"]["rowsImported"] == len(sandbox.admin.records("contacts")) == 3
        assert [json.loads(line)["rowNumber"] for line in errors["Body"].read().splitlines()] == [1]
        assert summary["timings"]["uploadedAt"], "the intake's part of the story is in the summary"
        # And both summaries are the documented model (schema version 1), and the final one keeps
        # what the README promises from the intake: upload attempts, abandoned jobs, options, ARN
        assert Summary.model_validate(interim).outcome == "uploaded"
        assert Summary.model_validate(summary).schema_version == summary["schemaVersion"] == 1
        assert summary["timings"]["uploadAttempts"] == interim["uploadAttempts"] == 1
        assert summary["abandonedJobIds"] == interim["abandonedJobIds"] == []
        assert summary["options"] == interim["options"] == options
        assert summary["executionArn"] == interim["executionArn"] == execution["executionArn"]
        assert summary["execution"] == {"name": execution["name"], "executions": 1}
        assert summary["unmappedColumns"] == summary["mapping"]["unmappedColumns"] == []
        # And the README's example has exactly the real file's fields, but those it says it leaves out
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        example = json.loads(
            readme.split("`results/<key>.json` (abridged", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
        )
        assert set(summary) - set(example) == {"source", "scheduling", "pollOutages"}
        assert set(example) - set(summary) == set()
