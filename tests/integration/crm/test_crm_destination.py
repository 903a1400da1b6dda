"""The CRM destination against the emulator: packing by its limits, records refused alone with their
reasons, background rejections reported, faults that store each record once."""

from __future__ import annotations

import json

from cli.streams_local import LocalStream, handler_env
from experiture_ingest.streams.contract import Target
from sandbox.testing import SandboxHandle
from tests.integration.crm.conftest import VEHICLE, crm_env, enqueue, letters_by_code, vehicle
from tests.integration.streams.conftest import run_settler, run_writer


def _upserts(sandbox: SandboxHandle) -> list[dict]:
    return [r for r in sandbox.admin.requests(method="POST") if r["path"].startswith("/crm/v3/objects/")]


def test_5000_records_to_one_object_type_pack_into_5_requests(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given 5,000 vehicle records of about 900 bytes each (4.5 MB) in 50 messages of 100
    records = [vehicle(i, color="x" * 800) for i in range(5000)]
    assert 800_000 < len(json.dumps(records[:1000])) < 1_000_000
    enqueue(crm_stream, VEHICLE, records)

    # When the writer runs and the processes settle
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then they went out in 5 upserts of 1,000 records, every body under 10^6 bytes (the emulator
    # refuses larger ones), and each record is stored once
    upserts = _upserts(sandbox)
    assert [u["status"] for u in upserts] == [202] * 5
    assert sorted(p["info"]["object_records"]["total"] for p in sandbox.admin.crm_processes()) == [1000] * 5
    stored = sandbox.admin.crm_records("vehicle")
    assert sorted(r["ext_id"] for r in stored) == sorted(f"v-{i}" for i in range(5000))
    assert crm_stream.dead_letters() == [] and crm_stream.keys("reports/") == []


def test_a_record_over_the_attribute_or_association_limit_is_dead_lettered_alone(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given an object type with 500 attributes (the most the CRM allows), a record with 501, one with
    # 11 associations, and good neighbours in the same message
    names = [f"a{i}" for i in range(501)]
    sandbox.admin.crm_set_object_type("wide", names[:500], ["garage"])
    wide = Target.parse("crm/wide:upsert")
    links = [{"object_type": "garage", "records": [{"identifiers": {"ext_id": f"g-{i}"}} for i in range(11)]}]
    too_wide = {"identifiers": {"ext_id": "w-big"}, "attributes": {n: 1 for n in names[:501]}}
    too_linked = {"identifiers": {"ext_id": "w-links"}, "attributes": {"a1": 1}, "associations": links}
    good = [
        {"identifiers": {"ext_id": f"w-{i}"}, "attributes": {n: i for n in names[:500]}} for i in range(3)
    ]
    with handler_env(crm_env(sandbox, crm_stream, CRM_OBJECT_TYPES=json.dumps({"wide": names}))):
        enqueue(crm_stream, wide, [good[0], too_wide, good[1], too_linked, good[2]])

        # When the writer runs
        run_writer(crm_stream)
        run_settler(crm_stream)

    # Then each bad record is dead-lettered alone with its reason, and the neighbours landed
    letters = letters_by_code(crm_stream)
    assert set(letters) == {"CRM.TOO_MANY_ATTRIBUTES", "CRM.TOO_MANY_ASSOCIATIONS"}
    (attrs,), (assoc,) = letters["CRM.TOO_MANY_ATTRIBUTES"], letters["CRM.TOO_MANY_ASSOCIATIONS"]
    assert attrs["body"]["records"] == [too_wide] and "501" in attrs["attributes"]["experiture.errorMessage"]
    assert assoc["body"]["records"] == [too_linked] and "11" in assoc["attributes"]["experiture.errorMessage"]
    assert attrs["body"]["destination"] == "crm"  # a replay of the letter goes back to the CRM
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("wide")) == ["w-0", "w-1", "w-2"]


def test_unknown_attributes_are_dead_lettered_by_default_never_dropped(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given a vehicle with an attribute the object type does not define ("colour", not "color")
    typo = vehicle(1, colour="red")
    enqueue(crm_stream, VEHICLE, [vehicle(0), typo, vehicle(2)])

    # When it is written
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then that record is dead-lettered naming the attribute, and the CRM ignored nothing
    (letter,) = letters_by_code(crm_stream)["CRM.UNKNOWN_ATTRIBUTES"]
    assert (
        letter["body"]["records"] == [typo] and "'colour'" in letter["attributes"]["experiture.errorMessage"]
    )
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == ["v-0", "v-2"]
    assert all(not p.get("ignoredAttributes") for p in sandbox.admin.crm_processes())


def test_unknown_attributes_in_report_mode_are_sent_and_reported(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given the queue set to report unknown attributes, and a vehicle with one
    with handler_env(crm_env(sandbox, crm_stream, CRM_UNKNOWN_ATTRIBUTES="report")):
        enqueue(crm_stream, VEHICLE, [vehicle(0), vehicle(1, colour="red")])

        # When it is written
        run_writer(crm_stream)
        run_settler(crm_stream)

    # Then both records landed (without the unknown attribute), and a report names what was lost
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == ["v-0", "v-1"]
    (key,) = crm_stream.keys("reports/crm/vehicle/")
    assert key.endswith("-unknown-attributes.json")
    report = json.loads(crm_stream.s3.get_object(Bucket=crm_stream.bucket, Key=key)["Body"].read())
    assert report["records"] == [{"index": 1, "identifiers": {"ext_id": "v-1"}, "attributes": ["colour"]}]
    assert crm_stream.dead_letters() == []


def test_an_id_matching_nothing_is_reported_after_the_process_completes(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given a record addressed by an id the CRM does not have, beside a good one
    ghost = {"identifiers": {"id": 999_999}, "attributes": {"model": "ghost"}}
    enqueue(crm_stream, VEHICLE, [vehicle(0), ghost])

    # When it is written and its process settles
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then the good record landed and the rejection is in a report under reports/crm/, the payload kept
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v-0"]
    (key,) = crm_stream.keys("reports/crm/vehicle/")
    report = json.loads(crm_stream.s3.get_object(Bucket=crm_stream.bucket, Key=key)["Body"].read())
    assert report["outcome"] == "completed with invalid rows" and report["destination"] == "crm"
    (rejected,) = report["errorSummary"]["rejectedRecords"]
    assert rejected["identifiers"] == {"id": 999_999} and rejected["index"] == 1
    assert crm_stream.keys(report["payload"].split("/", 3)[3])  # the payload is kept to find the record


def test_a_process_without_a_per_record_report_is_reported_not_assumed(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given a CRM whose process status carries no per-record report
    sandbox.admin.crm_configure(reportRejections=False)
    enqueue(crm_stream, VEHICLE, [vehicle(0), {"identifiers": {"id": 999_999}, "attributes": {"model": "g"}}])

    # When it is written and settles
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then the settler cannot tell what landed, so it writes a report and keeps the payload
    (key,) = crm_stream.keys("reports/crm/vehicle/")
    report = json.loads(crm_stream.s3.get_object(Bucket=crm_stream.bucket, Key=key)["Body"].read())
    assert "without a per-record report" in report["outcome"]


def test_429_and_500_faults_still_store_each_record_once(crm_stream: LocalStream, sandbox: SandboxHandle):
    # Given a CRM that answers 429, then 500, then loses the answer of a processed request
    sandbox.admin.set_faults(
        {
            "rules": [
                {"method": "POST", "path": "/crm/v3/objects/*", "status": 429, "retryAfter": 0, "times": 1},
                {"method": "POST", "path": "/crm/v3/objects/*", "status": 500, "times": 1},
                {"method": "POST", "path": "/crm/v3/objects/*", "drop": "after_processing", "times": 1},
                {"path": "/crm/v3/processes/*", "status": 500, "times": 1},
            ]
        }
    )
    enqueue(crm_stream, VEHICLE, [vehicle(i) for i in range(300)])

    # When the writer runs until the queue is empty and the processes settle
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then each record is stored exactly once (a replayed upsert by ext_id updates, never duplicates)
    stored = [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")]
    assert sorted(stored) == sorted(f"v-{i}" for i in range(300))
    assert crm_stream.dead_letters() == []
    assert [u["status"] for u in _upserts(sandbox)][:2] == [429, 500]


def test_a_record_without_identifiers_is_dead_lettered_so_a_retry_cannot_create_it_twice(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given a record with attributes but no identifiers
    anonymous = {"attributes": {"model": "anon"}}
    enqueue(crm_stream, VEHICLE, [vehicle(0), anonymous])

    # When it is written
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then it is dead-lettered with the reason, and its neighbour landed
    (letter,) = letters_by_code(crm_stream)["CRM.IDENTIFIERS_MISSING"]
    assert letter["body"]["records"] == [anonymous]
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v-0"]


def test_an_unknown_object_type_is_dead_lettered_with_the_vendors_message(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    for n, status in enumerate((400, 404), start=1):
        # Given an object type in our configuration that the CRM does not have (each refusal status)
        sandbox.admin.crm_configure(unknownObjectTypeStatus=status)
        sandbox.admin.crm_delete_object_type("garage")
        enqueue(crm_stream, Target.parse("crm/garage:upsert"), [{"identifiers": {"ext_id": f"g-{status}"}}])

        # When it is written
        run_writer(crm_stream)

        # Then the message is dead-lettered with the vendor's message (and the status in its code)
        letters = crm_stream.dead_letters()
        assert len(letters) == n
        (letter,) = [
            x for x in letters if x["body"]["records"] == [{"identifiers": {"ext_id": f"g-{status}"}}]
        ]
        assert "invalid object type" in letter["attributes"]["experiture.errorMessage"]
        assert f"HTTP {status}" in letter["attributes"]["experiture.errorMessage"]


def test_custom_objects_not_enabled_dead_letters_with_the_vendors_message(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given an account without custom objects (403)
    sandbox.admin.crm_configure(customObjectsEnabled=False)
    enqueue(crm_stream, VEHICLE, [vehicle(0)])

    # When it is written
    run_writer(crm_stream)

    # Then the message is dead-lettered with the vendor's reason
    (letter,) = crm_stream.dead_letters()
    assert "not available on this account" in letter["attributes"]["experiture.errorMessage"]


def test_a_link_to_a_missing_record_is_dead_lettered_or_reported_as_the_crm_answers(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    link = [{"object_type": "garage", "records": [{"identifiers": {"ext_id": "missing"}}]}]
    linked = {"identifiers": {"ext_id": "v-linked"}, "attributes": {"model": "m"}, "associations": link}
    # Given a CRM that refuses the request naming the record (400): it is dead-lettered alone
    enqueue(crm_stream, VEHICLE, [vehicle(0), linked])
    run_writer(crm_stream)
    run_settler(crm_stream)
    (letter,) = crm_stream.dead_letters()
    assert (
        letter["body"]["records"] == [linked]
        and "not found" in letter["attributes"]["experiture.errorMessage"]
    )
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v-0"]

    # Given a CRM that accepts it and rejects it in the background: it is reported
    sandbox.admin.crm_configure(associationCheck="process")
    enqueue(crm_stream, VEHICLE, [vehicle(1), linked])
    run_writer(crm_stream)
    run_settler(crm_stream)
    (key,) = crm_stream.keys("reports/crm/vehicle/")
    report = json.loads(crm_stream.s3.get_object(Bucket=crm_stream.bucket, Key=key)["Body"].read())
    assert report["errorSummary"]["rejectedRecords"][0]["identifiers"] == {"ext_id": "v-linked"}


def test_a_failed_process_is_sent_again_and_lands_once(crm_stream: LocalStream, sandbox: SandboxHandle):
    # Given a CRM whose next process fails, writing nothing
    sandbox.admin.fail_next_jobs("crm", object_name="vehicle", error_message="worker lost")
    enqueue(crm_stream, VEHICLE, [vehicle(i) for i in range(20)])

    # When it is written and settles
    run_writer(crm_stream)
    run_settler(crm_stream)

    # Then the settler re-drove it and each record is stored once
    assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == sorted(
        f"v-{i}" for i in range(20)
    )
    assert [p["status"] for p in sandbox.admin.crm_processes()] == ["failed", "completed"]


def test_the_writers_crm_report_is_within_its_s3_statements(crm_stream: LocalStream, sandbox: SandboxHandle):
    import boto3

    from tests.integration.streams.test_permissions import _allowed, _needs, _s3_grants

    # Given every S3 call is recorded, and a vehicle with an unknown attribute in report mode
    calls: list[tuple[str, dict]] = []
    boto3._get_default_session().events.register(
        "before-parameter-build.s3", lambda model, params, **_: calls.append((model.name, params))
    )
    with handler_env(crm_env(sandbox, crm_stream, CRM_UNKNOWN_ATTRIBUTES="report")):
        enqueue(crm_stream, VEHICLE, [vehicle(1, colour="red")])
        # When the writer runs
        run_writer(crm_stream)
    # Then its report went under reports/crm/, which the writer's statements allow
    _, grants = _s3_grants("RecordWriterFunction")
    assert any(c[1]["Key"].startswith("reports/crm/vehicle/") for c in calls)
    assert {n for n in _needs(calls) if not _allowed(n, grants)} == set()


def test_fifo_a_group_mixing_both_destinations_is_packed_by_each_ones_limits(aws, sandbox: SandboxHandle):
    import boto3

    import functions.record_writer.app as writer_app

    # Given one FIFO group: 1,500 vehicles for the CRM in 15 messages, then 20 events for Experiture
    fifo = LocalStream.create(boto3.client("sqs"), boto3.client("s3"), name="mixed", fifo=True)
    from experiture_ingest.streams.contract import envelope

    bodies = [
        json.dumps(envelope(VEHICLE, [vehicle(i) for i in range(n, n + 100)])) for n in range(0, 1500, 100)
    ]
    events = [
        {"event_id": f"e{i}", "event_type": "click", "occurred_at": "2026-04-21T15:30:00Z"} for i in range(20)
    ]
    bodies.append(json.dumps(envelope(Target.parse("events:append"), events)))
    for n, body in enumerate(bodies):
        fifo.sqs.send_message(
            QueueUrl=fifo.queue_url, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=f"m{n}"
        )

    # When the writer runs and everything settles
    with handler_env(crm_env(sandbox, fifo)):
        fifo.drain_writer(writer_app.handler)
        run_settler(fifo)

    # Then the vehicles went in 2 CRM requests (1,000 + 500), each record stored once, nothing sent back
    assert sorted(p["info"]["object_records"]["total"] for p in sandbox.admin.crm_processes()) == [500, 1000]
    assert len(sandbox.admin.crm_records("vehicle")) == 1500 and len(sandbox.admin.records("events")) == 20
    assert all(i.failures == [] for i in fifo.invocations) and fifo.dead_letters() == []


def test_a_crm_with_a_smaller_body_limit_gets_the_requests_split_until_they_fit(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    for status in (413, 400):
        # Given a CRM that takes only 300 kB a request (refused with 413, or 400), and 1,000 records of ~900 bytes
        sandbox.admin.reset()
        sandbox.admin.crm_configure(maxBodyBytes=300_000, bodyTooLargeStatus=status)
        enqueue(crm_stream, VEHICLE, [vehicle(i, color="x" * 800) for i in range(1000)])

        # When they are written
        run_writer(crm_stream)
        run_settler(crm_stream)

        # Then the refused request was split until each part fit, and each record is stored once
        assert sorted(r["ext_id"] for r in sandbox.admin.crm_records("vehicle")) == sorted(
            f"v-{i}" for i in range(1000)
        )
        assert status in [u["status"] for u in _upserts(sandbox)]
        assert crm_stream.dead_letters() == []


def test_an_object_type_without_an_attribute_list_is_dead_lettered_before_any_request(
    crm_stream: LocalStream, sandbox: SandboxHandle
):
    # Given an object type the CRM has but our configuration does not list (attributes unknown)
    sandbox.admin.crm_set_object_type("boat", ["name"], [])
    enqueue(
        crm_stream,
        Target.parse("crm/boat:upsert"),
        [{"identifiers": {"ext_id": "b-1"}, "attributes": {"name": "x"}}],
    )

    # When it is written
    run_writer(crm_stream)

    # Then the message is dead-lettered saying why, and nothing was sent (nothing could be dropped)
    (letter,) = letters_by_code(crm_stream)["CRM.OBJECT_TYPE_NOT_CONFIGURED"]
    assert "CRM_OBJECT_TYPES" in letter["attributes"]["experiture.errorMessage"]
    assert _upserts(sandbox) == []
