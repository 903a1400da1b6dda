"""The message contract and the schema checks a producer relies on."""

from __future__ import annotations

import json

import pytest

from experiture_ingest.client import ObjectSchema
from experiture_ingest.streams.contract import ContractError, Target, parse_message
from experiture_ingest.streams.schema import SchemaCache, check_record

DEFAULT = Target.parse("contacts:upsert:email")


def test_envelope_with_one_record_and_with_a_list():
    # Given an envelope with one record and one with three, when parsed, then targets and records are read
    one = parse_message(json.dumps({"object": "orders", "operation": "append", "record": {"order_id": "1"}}))
    many = parse_message(
        json.dumps({"object": "c", "operation": "upsert", "records": [{"a": 1}, {"a": 2}, {"a": 3}]})
    )
    assert (str(one.target), one.records) == ("orders:append", [{"order_id": "1"}])
    assert len(many.records) == 3 and many.target.match_key is None


def test_bare_record_takes_its_target_from_attributes_before_the_queue_default():
    # Given a bare record with attributes in the SQS event shape and a queue default
    attributes = {
        "experiture.object": {"stringValue": "events", "dataType": "String"},
        "experiture.operation": {"stringValue": "append", "dataType": "String"},
    }
    # When parsed, then the attributes win; without attributes the default applies
    assert str(parse_message('{"event_id": "e1"}', attributes, default=DEFAULT).target) == "events:append"
    assert parse_message('[{"email": "a@x.io"}, {"email": "b@x.io"}]', default=DEFAULT).target == DEFAULT


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{oops", "STREAM.MALFORMED_JSON"),
        ('{"email": "a@x.io"}', "STREAM.TARGET_MISSING"),
        ('{"object": "c", "operation": "merge", "record": {"a": 1}}', "STREAM.CONTRACT_INVALID"),
        (
            '{"object": "c", "operation": "append", "matchKey": "a", "record": {"a": 1}}',
            "STREAM.CONTRACT_INVALID",
        ),
        (
            '{"object": "c", "operation": "append", "record": {"a": 1}, "records": [{"a": 1}]}',
            "STREAM.CONTRACT_INVALID",
        ),
        ('{"object": "c", "operation": "append", "records": []}', "STREAM.CONTRACT_INVALID"),
    ],
)
def test_unusable_messages_are_refused_with_a_code(body, code):
    # Given a message that can never be written, when parsed, then a ContractError names why
    with pytest.raises(ContractError) as refused:
        parse_message(body)
    assert refused.value.code == code


def test_records_with_no_property_or_over_500_fields_are_set_aside_alone():
    # Given a list with an empty record and a 501-field record between good ones
    wide = {f"f{i}": i for i in range(501)}
    parsed = parse_message(json.dumps([{"a": 1}, {}, wide, {"a": 2}]), default=DEFAULT)
    # Then the good records stay, the others are problems with their index
    assert parsed.records == [{"a": 1}, {"a": 2}]
    assert [(p.index, p.code) for p in parsed.problems] == [
        (1, "STREAM.RECORD_INVALID"),
        (2, "STREAM.TOO_MANY_FIELDS"),
    ]
    assert "500" in parsed.problems[1].message


SCHEMA = ObjectSchema.model_validate(
    {
        "objectName": "contacts",
        "primaryKey": "email",
        "fields": [
            {"name": "email", "type": "string", "format": "email", "required": True, "primaryKey": True},
            {"name": "age", "type": "integer"},
            {"name": "ltv", "type": "number"},
            {"name": "opted_in", "type": "boolean"},
            {"name": "seen", "type": "datetime"},
        ],
    }
)


@pytest.mark.parametrize(
    ("record", "operation", "code"),
    [
        ({"email": "a@x.io", "nick": "z"}, "upsert", "UNKNOWN_FIELD"),
        ({"age": 3}, "append", "REQUIRED_FIELD_MISSING"),
        ({"age": 3}, "upsert", "MATCH_KEY_MISSING"),
        ({"email": None}, "append", "REQUIRED_FIELD_MISSING"),
        ({"email": "a@x.io", "age": True}, "append", "VALIDATION_TYPE_MISMATCH"),
        ({"email": "a@x.io", "ltv": "1.5"}, "append", "VALIDATION_TYPE_MISMATCH"),
        ({"email": "a@x.io", "opted_in": 1}, "append", "VALIDATION_TYPE_MISMATCH"),
        ({"email": "a@x.io", "seen": "2026-04-21T15:30:00"}, "append", "VALIDATION_TYPE_MISMATCH"),
        ({"email": "not-an-email"}, "append", "INVALID_EMAIL_FORMAT"),
    ],
)
def test_schema_problems_are_named_with_the_api_error_codes(record, operation, code):
    assert check_record(SCHEMA, record, operation, None)[0] == code


def test_valid_records_pass():
    record = {"email": "a@x.io", "age": 3, "ltv": 2, "opted_in": False, "seen": "2026-04-21T15:30:00+02:00"}
    assert check_record(SCHEMA, record, "append", None) is None


class _Schemas:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def get_object_schema(self, name):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_schema_cache_fetches_once_per_ttl_and_caches_permanent_refusals():
    from experiture_ingest.client import NotFoundError, ServerError

    now = [0.0]
    api = _Schemas([SCHEMA, SCHEMA])
    cache = SchemaCache(api, ttl_seconds=60, clock=lambda: now[0])  # type: ignore[arg-type]
    # Given two reads within the TTL, then one request; after the TTL, a second
    assert cache.get("contacts") is cache.get("contacts") and api.calls == 1
    now[0] = 61
    cache.get("contacts")
    assert api.calls == 2
    # Given a 404, then it is cached; a 500 is raised and not cached
    missing = _Schemas([NotFoundError("no such object", status=404), SCHEMA])
    cache = SchemaCache(missing, ttl_seconds=60, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(NotFoundError):
            cache.get("nope")
    assert missing.calls == 1
    flaky = _Schemas([ServerError("down", status=500), SCHEMA])
    cache = SchemaCache(flaky, ttl_seconds=60, clock=lambda: now[0])  # type: ignore[arg-type]
    with pytest.raises(ServerError):
        cache.get("contacts")
    assert cache.get("contacts") is SCHEMA


def test_a_body_too_deep_to_parse_keeps_its_other_records_and_the_deep_one_is_kept_as_sent():
    # Given a message whose second record nests 5,000 levels, beside records holding brackets in strings
    deep = '{"b": ' + "[" * 5000 + "]" * 5000 + "}"
    body = '{"object": "c", "operation": "append", "records": [{"s": "[[{"}, ' + deep + ', {"s": "]]}"}]}'
    # When parsed
    parsed = parse_message(body)
    # Then the others are records, the deep one a TOO_DEEP problem whose text can be put back as it was
    assert parsed.records == [{"s": "[[{"}, {"s": "]]}"}]
    [problem] = parsed.problems
    assert (problem.index, problem.code) == (1, "STREAM.TOO_DEEP")
    from experiture_ingest.streams.contract import restore_cuts

    assert restore_cuts(json.dumps(problem.record), parsed.cuts).replace(" ", "") == deep.replace(" ", "")


@pytest.mark.parametrize(
    "tail",
    ['"' * 3 + 'a\\"' * 50_000, "a" * 300_000, ('"' + "]" * 5 + "{") * 30_000],
)
def test_a_hostile_deep_body_is_refused_in_linear_time(tail):
    # Given a body deeper than the parser goes, followed by 150-300 KB built to make a scanner backtrack
    import time

    started = time.perf_counter()
    # When parsed, then it is refused as malformed, well within a Lambda's time (a backtracking scan
    # took minutes on these)
    with pytest.raises(ContractError) as refused:
        parse_message("[" * 3000 + tail)
    assert refused.value.code == "STREAM.MALFORMED_JSON"
    assert time.perf_counter() - started < 5
