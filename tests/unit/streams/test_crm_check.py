"""The CRM record check: what the vendor would refuse or silently drop is found before sending."""

from __future__ import annotations

from experiture_ingest.streams.crm import compile_check

CHECK = compile_check(frozenset({"model", "brand"}))


def _code(record: dict) -> str | None:
    found = CHECK(record)
    return found[0] if found else None


def test_a_good_record_passes():
    assert _code({"identifiers": {"ext_id": "v"}, "attributes": {"model": "m"}}) is None
    assert _code({"identifiers": {"id": 7}}) is None


def test_each_problem_has_its_own_code():
    link = {"object_type": "garage", "records": [{"identifiers": {"ext_id": "g"}}]}
    cases = {
        "CRM.IDENTIFIERS_MISSING": {"attributes": {"model": "m"}},
        "CRM.RECORD_INVALID": {"identifiers": {"id": True}},
        "CRM.UNKNOWN_ATTRIBUTES": {"identifiers": {"ext_id": "v"}, "attributes": {"colour": "red"}},
        "CRM.TOO_MANY_ATTRIBUTES": {
            "identifiers": {"ext_id": "v"},
            "attributes": {f"a{i}": 1 for i in range(501)},
        },
        "CRM.TOO_MANY_ASSOCIATIONS": {"identifiers": {"ext_id": "v"}, "associations": [link] * 11},
    }
    assert {code: _code(record) for code, record in cases.items()} == {code: code for code in cases}
    assert _code({"identifiers": {"ext_id": "v"}, "associations": [link] * 10}) is None
    assert _code({"identifiers": {"ext_id": "v"}, "email": "x"}) == "CRM.RECORD_INVALID"
