"""CRM emulator: upserts, background processing, silent attribute drops, rejections in the background."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sandbox.testing import SandboxHandle

from .helpers import crm_upsert, crm_wait

UPSERT = "/objects/vehicle/batch/upsert"


def _link_garage(ext_id: str, action: str = "link") -> dict[str, Any]:
    return {"object_type": "garage", "action": action, "records": [{"identifiers": {"ext_id": ext_id}}]}


def test_upsert_by_ext_id_creates_then_updates_in_place(crm: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given a vehicle created by ext_id
    first = crm_upsert(
        crm, "vehicle", [{"identifiers": {"ext_id": "v1"}, "attributes": {"model": "A", "year": 2020}}]
    )
    # When the same ext_id is upserted again with one attribute changed, plus a record without identifiers
    second = crm_upsert(
        crm,
        "vehicle",
        [{"identifiers": {"ext_id": "v1"}, "attributes": {"model": "B"}}, {"attributes": {"model": "C"}}],
    )
    # Then the first record is updated (other attributes kept) and the anonymous one gets a new id
    assert first["info"]["object_records"] | {"rejected_records": []} == {
        "object_type": "vehicle",
        "total": 1,
        "created": 1,
        "updated": 0,
        "rejected": 0,
        "rejected_records": [],
    }
    assert (second["info"]["object_records"]["created"], second["info"]["object_records"]["updated"]) == (
        1,
        1,
    )
    records = sandbox.admin.crm_records("vehicle")
    assert [(r["ext_id"], r["attributes"]) for r in records] == [
        ("v1", {"model": "B", "year": 2020}),
        (None, {"model": "C"}),
    ]
    # And an update by the vendor's id works too
    crm_upsert(crm, "vehicle", [{"identifiers": {"id": records[1]["id"]}, "attributes": {"color": "red"}}])
    assert sandbox.admin.crm_records("vehicle")[1]["attributes"] == {"model": "C", "color": "red"}


def test_an_attribute_the_object_does_not_define_is_silently_ignored(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a vehicle record with one defined attribute and one the object type does not define
    records = [{"identifiers": {"ext_id": "v1"}, "attributes": {"model": "A", "Model Label": "x"}}]
    # When it is upserted
    resp = crm.post(UPSERT, json={"records": records})
    process = crm_wait(crm, resp.json()["processId"])
    # Then the API says nothing about it (202, completed, nothing rejected) and the attribute is not stored
    assert resp.status_code == 202
    assert process["status"] == "completed"
    assert process["info"]["object_records"]["rejected"] == 0
    assert "Model Label" not in str(process)
    assert sandbox.admin.crm_records("vehicle")[0]["attributes"] == {"model": "A"}
    # And only the admin view shows what was dropped
    assert sandbox.admin.crm_process(process["id"])["ignoredAttributes"] == {"Model Label": 1}


def test_an_id_that_matches_no_record_is_accepted_then_rejected_in_the_background(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a batch whose middle record names a vendor id that does not exist
    records = [
        {"identifiers": {"ext_id": "v1"}, "attributes": {"model": "A"}},
        {"identifiers": {"id": 987654}, "attributes": {"model": "ghost"}},
        {"identifiers": {"ext_id": "v3"}, "attributes": {"model": "C"}},
    ]
    # When it is upserted
    resp = crm.post(UPSERT, json={"records": records})
    # Then the request is accepted, and the completed process reports that one record, by index
    assert resp.status_code == 202
    process = crm_wait(crm, resp.json()["processId"])
    summary = process["info"]["object_records"]
    assert (summary["created"], summary["rejected"]) == (2, 1)
    (rejected,) = summary["rejected_records"]
    assert rejected["index"] == 1 and rejected["identifiers"] == {"id": 987654}
    assert rejected["code"] == "record_not_found" and "987654" in rejected["message"]
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v1", "v3"]


def test_without_the_report_a_rejection_is_only_visible_in_the_admin_view(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a vendor whose process status carries no report (the reference documents none)
    sandbox.admin.crm_configure(reportRejections=False)
    resp = crm.post(UPSERT, json={"records": [{"identifiers": {"id": 5}, "attributes": {"model": "x"}}]})
    # When the process completes
    process = crm_wait(crm, resp.json()["processId"])
    # Then the API shows only id, name and status, and the admin still knows what was rejected
    assert process == {"id": resp.json()["processId"], "name": "OBJECT_RECORDS_UPSERT", "status": "completed"}
    assert sandbox.admin.crm_process(process["id"])["info"]["object_records"]["rejected"] == 1
    assert sandbox.admin.crm_records("vehicle") == []


def test_a_process_goes_queued_then_in_process_then_completed(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given processes that wait 0.3 s queued and 0.3 s in process
    sandbox.admin.crm_configure(queueSeconds=0.3, processSeconds=0.3)
    # When a record is upserted and the process polled
    pid = crm.post(UPSERT, json={"records": [{"identifiers": {"ext_id": "v1"}}]}).json()["processId"]
    seen = []
    deadline = time.monotonic() + 10
    while not seen or seen[-1] != "completed":
        status = crm.get(f"/processes/{pid}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
            if status != "completed":
                assert sandbox.admin.crm_records("vehicle") == []  # nothing lands before the end
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Then it went through the vendor's states in order and the record landed at the end
    assert seen == ["queued", "in_process", "completed"]
    assert len(sandbox.admin.crm_records("vehicle")) == 1
    listed = crm.get("/processes", params={"limit": 5}).json()
    assert listed["count"] == 1 and listed["processes"][0]["id"] == pid


def test_unknown_process_is_404(crm: httpx.Client) -> None:
    assert crm.get("/processes/424242").json() == {
        "code": "document_not_found",
        "message": "Process ID not found",
    }
    assert crm.get("/processes/abc").status_code == 400


@pytest.mark.parametrize("status", [400, 404])
def test_an_unknown_object_type_is_refused_with_invalid_object_type(
    crm: httpx.Client, sandbox: SandboxHandle, status: int
) -> None:
    # Given a vendor answering an unknown object type with 400 or 404 (the reference lists both)
    sandbox.admin.crm_configure(unknownObjectTypeStatus=status)
    # When records are upserted to an object type that was never created
    resp = crm.post("/objects/spaceship/batch/upsert", json={"records": [{"attributes": {"model": "A"}}]})
    # Then the answer carries the vendor's message, and nothing is queued
    assert resp.status_code == status
    assert resp.json()["message"] == "invalid object type"
    assert sandbox.admin.crm_processes() == []


def test_standard_objects_and_disabled_custom_objects_are_403(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    contact = crm.post("/objects/contact/batch/upsert", json={"records": [{"attributes": {"x": 1}}]})
    assert contact.status_code == 403 and "standard object" in contact.json()["message"]
    # Given an account without custom objects
    sandbox.admin.crm_configure(customObjectsEnabled=False)
    resp = crm.post(UPSERT, json={"records": [{"attributes": {"model": "A"}}]})
    assert resp.status_code == 403
    assert resp.json() == {
        "code": "permission_denied",
        "message": "Custom objects are not available on this account",
    }
    assert sandbox.admin.crm_processes() == []


def test_linking_needs_both_records_and_refuses_the_request_by_default(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given one garage
    crm_upsert(crm, "garage", [{"identifiers": {"ext_id": "g1"}, "attributes": {"name": "North"}}])
    # When a vehicle links it and another vehicle links a garage that does not exist
    crm_upsert(crm, "vehicle", [{"identifiers": {"ext_id": "v1"}, "associations": [_link_garage("g1")]}])
    refused = crm.post(
        UPSERT,
        json={"records": [{"identifiers": {"ext_id": "v2"}, "associations": [_link_garage("nowhere")]}]},
    )
    # Then the link is stored on both sides, and the second request is refused naming the record
    vehicle = sandbox.admin.crm_records("vehicle")[0]
    garage = sandbox.admin.crm_records("garage")[0]
    assert vehicle["associations"] == {"garage": [garage["id"]]}
    assert garage["associations"] == {"vehicle": [vehicle["id"]]}
    assert refused.status_code == 400
    assert refused.json()["message"].startswith(
        "records[0].associations[0].records[0]: associated record not found"
    )
    # And unlinking is idempotent: twice, and once for a record that does not exist, all succeed
    for target in ("g1", "g1", "nowhere"):
        crm_upsert(
            crm,
            "vehicle",
            [{"identifiers": {"ext_id": "v1"}, "associations": [_link_garage(target, "unlink")]}],
        )
    assert sandbox.admin.crm_records("vehicle")[0]["associations"] == {}
    assert sandbox.admin.crm_records("garage")[0]["associations"] == {}


def test_a_missing_linked_record_can_be_rejected_in_the_background_instead(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a vendor that checks links while processing
    sandbox.admin.crm_configure(associationCheck="process")
    # When a batch has one record linking a garage that does not exist
    resp = crm.post(
        UPSERT,
        json={
            "records": [
                {"identifiers": {"ext_id": "v1"}, "associations": [_link_garage("nowhere")]},
                {"identifiers": {"ext_id": "v2"}},
            ]
        },
    )
    # Then it is accepted, that record is rejected whole in the background, the other lands
    assert resp.status_code == 202
    summary = crm_wait(crm, resp.json()["processId"])["info"]["object_records"]
    assert [(r["index"], r["code"]) for r in summary["rejected_records"]] == [
        (0, "associated_record_not_found")
    ]
    assert [r["ext_id"] for r in sandbox.admin.crm_records("vehicle")] == ["v2"]


def test_an_association_to_a_type_that_is_not_associated_is_refused(
    crm: httpx.Client, sandbox: SandboxHandle
) -> None:
    sandbox.admin.crm_set_object_type("owner", ["name"])  # no association with garage
    crm_upsert(crm, "owner", [{"identifiers": {"ext_id": "o1"}}])
    resp = crm.post(
        "/objects/garage/batch/upsert",
        json={
            "records": [
                {"associations": [{"object_type": "owner", "records": [{"identifiers": {"ext_id": "o1"}}]}]}
            ]
        },
    )
    assert resp.status_code == 400 and "invalid association object type 'owner'" in resp.json()["message"]


def test_the_vendor_records_listing_pages_newest_first(crm: httpx.Client) -> None:
    crm_upsert(
        crm, "vehicle", [{"identifiers": {"ext_id": f"v{i}"}, "attributes": {"year": i}} for i in range(5)]
    )
    page = crm.get("/objects/vehicle/records", params={"limit": 2, "page_num": 1}).json()
    assert page["count"] == 5
    assert [r["identifiers"]["ext_id"] for r in page["records"]] == ["v4", "v3"]
    asc = crm.get("/objects/vehicle/records", params={"limit": 2, "page_num": 3, "sort": "asc"}).json()
    assert [r["attributes"] for r in asc["records"]] == [{"year": 4}]
    assert crm.get("/objects/vehicle/records", params={"limit": 2}).json()["code"] == "missing_parameter"


@pytest.mark.parametrize("api_key", [None, "wrong-key"])
def test_a_missing_or_wrong_api_key_is_401(sandbox: SandboxHandle, api_key: str | None) -> None:
    headers = {} if api_key is None else {"api-key": api_key}
    with httpx.Client(base_url=sandbox.crm_base_url, headers=headers) as client:
        upsert = client.post(UPSERT, json={"records": [{"attributes": {"model": "A"}}]})
        status = client.get("/processes/1")
    assert upsert.status_code == status.status_code == 401
    assert upsert.json() == {"code": "unauthorized", "message": "Key not found"}
    assert sandbox.admin.crm_processes() == []
    # The Experiture bearer token is not a CRM key either
    with sandbox.crm_api(api_key=sandbox.token) as client:
        assert client.get("/processes").status_code == 401
