"""Routing: a message names its destination (envelope, attribute or the queue default); Experiture is
the default; a router hands each target to its destination and refuses names it does not know."""

from __future__ import annotations

import pytest

from experiture_ingest.crm import CrmSettings
from experiture_ingest.streams.contract import ContractError, Target, envelope, parse_message
from experiture_ingest.streams.crm import CrmObjectRecords
from experiture_ingest.streams.destination import DestinationError, Router, routed

RECORD = '{"identifiers": {"ext_id": "v-1"}}'


def test_the_destination_comes_from_the_envelope_then_the_attributes_then_the_queue_default():
    body = '{"destination": "crm", "object": "vehicle", "operation": "upsert", "records": [' + RECORD + "]}"
    assert parse_message(body).target == Target.parse("crm/vehicle:upsert")
    attrs = {
        "experiture.destination": {"stringValue": "crm"},
        "experiture.object": {"stringValue": "vehicle"},
        "experiture.operation": {"stringValue": "upsert"},
    }
    assert parse_message(RECORD, attrs).target.destination == "crm"
    assert parse_message(RECORD, default=Target.parse("crm/vehicle:upsert")).target.destination == "crm"
    # a message naming its object but no destination goes to the queue default's destination
    named = '{"object": "garage", "operation": "upsert", "record": ' + RECORD + "}"
    assert parse_message(named, default=Target.parse("crm/vehicle:upsert")).target == Target.parse(
        "crm/garage:upsert"
    )


def test_experiture_stays_the_default_and_its_envelopes_do_not_change():
    target = parse_message('{"object": "contacts", "operation": "append", "record": {"a": 1}}').target
    assert target.destination == "experiture" and str(target) == "contacts:append"
    assert "destination" not in envelope(target, [{"a": 1}])
    assert envelope(Target.parse("crm/vehicle:upsert"), [])["destination"] == "crm"


def test_a_malformed_destination_name_dead_letters_the_message():
    with pytest.raises(ContractError) as caught:
        parse_message('{"destination": "../x", "object": "v", "operation": "upsert", "record": {"a": 1}}')
    assert caught.value.code == "STREAM.CONTRACT_INVALID"


def test_a_router_refuses_a_destination_it_does_not_have_for_good():
    crm = CrmObjectRecords(None, CrmSettings())
    router = Router({"crm": crm})
    assert routed(router, "crm") is crm and router.limits.max_records == 1000
    with pytest.raises(DestinationError) as caught:
        router.route("mailer")
    assert caught.value.code == "STREAM.UNKNOWN_DESTINATION" and not caught.value.retryable
    with pytest.raises(DestinationError) as off:  # no key: the destination is off, for good
        router.checker(Target.parse("crm/vehicle:upsert"))
    assert off.value.code == "CRM.DISABLED" and not off.value.retryable
