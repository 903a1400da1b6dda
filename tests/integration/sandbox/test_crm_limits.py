"""CRM emulator: the vendor's request limits (1,000 records, 1 MB, 500 attributes, 10 associations).

A request over a limit is refused whole (400, or 413 for the body size) with a message naming the
record, and nothing is queued or stored.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sandbox.testing import SandboxHandle

from .helpers import crm_upsert

UPSERT = "/objects/vehicle/batch/upsert"


def _body_of_size(size: int) -> bytes:
    """A valid upsert body of exactly ``size`` bytes: 100 vehicles with padded models."""
    records: list[dict[str, Any]] = [
        {"identifiers": {"ext_id": f"v{i}"}, "attributes": {"model": ""}} for i in range(100)
    ]
    base = len(json.dumps({"records": records}, separators=(",", ":")))
    per, extra = divmod(size - base, 100)
    for i, record in enumerate(records):
        record["attributes"]["model"] = "m" * (per + (1 if i < extra else 0))
    body = json.dumps({"records": records}, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def _post_raw(crm: httpx.Client, body: bytes) -> httpx.Response:
    return crm.post(UPSERT, content=body, headers={"content-type": "application/json"})


def test_1000_records_are_accepted_and_1001_refused_whole(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given 1,000 vehicles, then 1,001 others
    thousand = [{"identifiers": {"ext_id": f"v{i}"}, "attributes": {"model": "A"}} for i in range(1000)]
    more = [{"identifiers": {"ext_id": f"w{i}"}, "attributes": {"model": "B"}} for i in range(1001)]
    # When both are upserted
    process = crm_upsert(crm, "vehicle", thousand)
    refused = crm.post(UPSERT, json={"records": more})
    # Then the first lands whole and the second is refused with the vendor's message, storing nothing
    assert process["info"]["object_records"]["created"] == 1000
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "invalid_parameter",
        "message": "records cannot be more than 1000 (got 1001)",
    }
    stored = sandbox.admin.crm_records("vehicle")
    assert len(stored) == 1000 and {r["ext_id"][0] for r in stored} == {"v"}
    assert len(sandbox.admin.crm_processes()) == 1


def test_empty_or_missing_records_are_refused(crm: httpx.Client) -> None:
    assert crm.post(UPSERT, json={"records": []}).json() == {
        "code": "invalid_parameter",
        "message": "records cannot be empty",
    }
    missing = crm.post(UPSERT, json={})
    assert missing.status_code == 400 and missing.json()["code"] == "missing_parameter"
    malformed = crm.post(UPSERT, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["code"] == "bad_request"


def test_a_body_of_1_mb_is_accepted_and_one_byte_more_refused_with_413(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given two bodies of 100 records: exactly 1,000,000 bytes, and 1,000,001 bytes
    # When both are posted
    at_limit = _post_raw(crm, _body_of_size(1_000_000))
    over = _post_raw(crm, _body_of_size(1_000_001))
    # Then the first is accepted and the second refused before anything is queued
    assert at_limit.status_code == 202, at_limit.text
    assert over.status_code == 413
    assert over.json()["code"] == "invalid_parameter" and "1000000 bytes" in over.json()["message"]
    assert [p["id"] for p in sandbox.admin.crm_processes()] == [at_limit.json()["processId"]]


def test_the_body_limit_can_answer_400_instead(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given a vendor that answers an oversized body with 400 (the reference names no status for it)
    sandbox.admin.crm_configure(bodyTooLargeStatus=400)
    # When 1,000,001 bytes are posted
    resp = _post_raw(crm, _body_of_size(1_000_001))
    # Then it is a 400 with the same body, and nothing was queued
    assert resp.status_code == 400 and "exceeds" in resp.json()["message"]
    assert sandbox.admin.crm_processes() == []


def test_500_attributes_land_and_501_refuse_the_request_naming_the_record(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given an object type with 500 attributes
    names = [f"a{i}" for i in range(500)]
    sandbox.admin.crm_set_object_type("wide", names)
    full = {name: i for i, name in enumerate(names)}
    # When a record with all 500 is upserted, then a batch whose second record has 501
    process = crm_upsert(crm, "wide", [{"identifiers": {"ext_id": "w1"}, "attributes": full}])
    refused = crm.post(
        "/objects/wide/batch/upsert",
        json={
            "records": [
                {"identifiers": {"ext_id": "w2"}, "attributes": {"a0": 1}},
                {"identifiers": {"ext_id": "w3"}, "attributes": {**full, "a500": 0}},
            ]
        },
    )
    # Then the first lands with every attribute; the second request is refused whole
    assert process["info"]["object_records"]["created"] == 1
    assert sandbox.admin.crm_records("wide")[0]["attributes"] == full
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "records[1].attributes: at most 500 attributes per object record (got 501)"
    )
    assert [r["ext_id"] for r in sandbox.admin.crm_records("wide")] == ["w1"]


def _links(object_type: str, ext_ids: list[str]) -> dict[str, Any]:
    return {"object_type": object_type, "records": [{"identifiers": {"ext_id": e}} for e in ext_ids]}


def test_10_associations_land_and_11_refuse_the_request_naming_the_record(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given 11 garages
    garages = [f"g{i}" for i in range(11)]
    crm_upsert(crm, "garage", [{"identifiers": {"ext_id": g}, "attributes": {"name": g}} for g in garages])
    # When a vehicle links 10 of them, then another links all 11
    crm_upsert(
        crm, "vehicle", [{"identifiers": {"ext_id": "v1"}, "associations": [_links("garage", garages[:10])]}]
    )
    refused = crm.post(
        UPSERT,
        json={"records": [{"identifiers": {"ext_id": "v2"}, "associations": [_links("garage", garages)]}]},
    )
    # Then the first is linked to 10 garages; the second request is refused whole
    (vehicle,) = sandbox.admin.crm_records("vehicle")
    assert len(vehicle["associations"]["garage"]) == 10
    assert refused.status_code == 400
    assert (
        refused.json()["message"]
        == "records[0].associations: at most 10 associations per object record (got 11)"
    )


@pytest.mark.parametrize(("scope", "accepted"), [("record", False), ("object_type", True)])
def test_the_association_limit_counts_per_record_or_per_associated_type(
    crm: httpx.Client, sandbox: SandboxHandle, scope: str, accepted: bool
) -> None:
    # Given 6 garages and 6 owners, both associable with vehicles, and the limit read one way or the other
    # (api-docs/004: 10 per record; the vendor's current reference: 10 per associated object type)
    sandbox.admin.crm_set_object_type("owner", ["name"], ["vehicle"])
    sandbox.admin.crm_configure(associationLimitScope=scope)
    six = [f"x{i}" for i in range(6)]
    crm_upsert(crm, "garage", [{"identifiers": {"ext_id": e}} for e in six])
    crm_upsert(crm, "owner", [{"identifiers": {"ext_id": e}} for e in six])
    # When a vehicle links 6 of each (12 in all)
    resp = crm.post(
        UPSERT,
        json={
            "records": [
                {
                    "identifiers": {"ext_id": "v1"},
                    "associations": [_links("garage", six), _links("owner", six)],
                }
            ]
        },
    )
    # Then it is refused when counted per record, accepted when counted per associated type
    assert (resp.status_code == 202) is accepted, resp.text
