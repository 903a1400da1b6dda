"""The sample events under events/ stay valid for the code that consumes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.data_classes import S3Event, SQSEvent

from experiture_ingest.files import import_tasks as tasks
from experiture_ingest.files.handoff import ImportRun, SplitRun
from experiture_ingest.files.routing import decode_event_key
from experiture_ingest.scheduling import job_id_from_input

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_every_sample_event_is_used_here():
    checked = {
        "import_run.json",
        "import_job_prepare.json",
        "import_job_state.json",
        "import_queue_enqueue.json",
        "import_queue_schedule.json",
        "execution_status_aborted.json",
        "s3_object_created.json",
        "s3_object_created_encoded_key.json",
        "s3_object_created_unsupported.json",
        "sqs_record_batch.json",
        "sqs_record_batch_fifo.json",
        "sqs_settle_ticket.json",
        "split_run.json",
    }
    assert {p.name for p in EVENTS.glob("*.json")} == checked


def test_execution_input_and_task_events_validate():
    # Given the state machine input a user could start by hand
    run = ImportRun.model_validate(load("import_run.json"))
    assert run.source.key.startswith("incoming/contacts/")
    # When the Prepare task turns its event into the state document, then it matches the sample
    prepare = load("import_job_prepare.json")
    execution = prepare["execution"]
    state = tasks.prepare(prepare["input"], execution["name"], execution["startTime"], datetime.now(UTC))
    sample = tasks.ImportState.model_validate(load("import_job_state.json"))
    assert state.run == sample.run
    assert state.progress.execution_name == sample.progress.execution_name


def test_the_split_input_validates():
    # Given the input the intake hands over for a file over the part size
    run = SplitRun.model_validate(load("split_run.json")["split"])
    # Then it names a file larger than its parts
    assert run.source.size > run.part_max_bytes and run.workers >= 1


def test_queue_samples_carry_what_the_queue_functions_read():
    # The Enqueue task's payload: the state document, the task token, the execution
    enqueue = load("import_queue_enqueue.json")
    state = tasks.ImportState.model_validate(enqueue["state"])
    assert state.progress.next == "enqueue" and state.run.source.sequencer
    assert enqueue["taskToken"] and enqueue["executionArn"].startswith("arn:aws:states:")
    # The execution-status rule's event names the job in the execution's input
    aborted = load("execution_status_aborted.json")
    assert aborted["detail"]["status"] in ("ABORTED", "TIMED_OUT", "FAILED")
    assert job_id_from_input(aborted["detail"]["input"]) == "imp_01HXYZEXAMPLE"
    assert load("import_queue_schedule.json")["detail-type"] == "Scheduled Event"


@pytest.mark.parametrize(
    "name",
    ["s3_object_created.json", "s3_object_created_encoded_key.json", "s3_object_created_unsupported.json"],
)
def test_s3_samples_parse(name):
    event = S3Event(load(name))
    for record in event.records:
        assert record.s3.bucket.name
        assert decode_event_key(record.s3.get_object.key)


@pytest.mark.parametrize(
    "name", ["sqs_record_batch.json", "sqs_record_batch_fifo.json", "sqs_settle_ticket.json"]
)
def test_sqs_samples_parse(name):
    records = list(SQSEvent(load(name)).records)
    assert records and all(r.body and r.message_id for r in records)
