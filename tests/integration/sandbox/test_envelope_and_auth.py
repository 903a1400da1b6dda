"""Envelope, correlation ids, unknown routes, bearer auth, OAuth client credentials and scopes."""

from __future__ import annotations

import time
import uuid

import httpx

from sandbox.testing import SandboxHandle


def test_success_answers_carry_the_envelope_and_correlation_header(api: httpx.Client) -> None:
    # Given a valid token
    # When reading an object schema
    resp = api.get("/metadata/objects/contacts")
    # Then the envelope holds data and the same correlation id as the header
    body = resp.json()
    assert resp.status_code == 200
    assert body["success"] is True
    assert body["correlationId"] == resp.headers["x-correlation-id"]
    uuid.UUID(body["correlationId"])
    assert body["data"]["primaryKey"] == "email"
    email = next(f for f in body["data"]["fields"] if f["name"] == "email")
    assert email == {
        "name": "email",
        "type": "string",
        "format": "email",
        "required": True,
        "primaryKey": True,
    }


def test_every_default_object_has_a_schema(api: httpx.Client) -> None:
    for name in ("contacts", "profiles", "orders", "events"):
        data = api.get(f"/metadata/objects/{name}").json()["data"]
        assert data["objectName"] == name
        assert {f["type"] for f in data["fields"]} <= {"string", "integer", "number", "boolean", "datetime"}


def test_unknown_object_is_404_object_not_found(api: httpx.Client) -> None:
    resp = api.get("/metadata/objects/unicorns")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "CDP_ETL.OBJECT.NOT_FOUND"


def test_unknown_routes_and_methods_answer_in_the_envelope(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given no such route / a route without that method
    missing = api.get("/no/such/route")
    wrong_method = api.delete("/import-jobs")
    outside = httpx.get(sandbox.root_url + "/nowhere")
    # Then both are enveloped errors with a correlation id
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "CDP_ETL.NOT_FOUND"
    assert missing.json()["success"] is False
    assert missing.headers["x-correlation-id"] == missing.json()["correlationId"]
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "CDP_ETL.METHOD_NOT_ALLOWED"
    assert "POST" in wrong_method.headers["allow"]
    assert outside.status_code == 404 and outside.json()["success"] is False


def test_malformed_json_is_400_request_invalid(api: httpx.Client) -> None:
    resp = api.post(
        "/records/contacts/append", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "CDP_ETL.VALIDATION.REQUEST_INVALID"


def test_missing_or_wrong_bearer_token_is_401(sandbox: SandboxHandle) -> None:
    # Given no token, then a wrong token
    no_token = httpx.get(sandbox.base_url + "/metadata/objects/contacts")
    wrong = httpx.get(sandbox.base_url + "/import-jobs/imp_x", headers={"Authorization": "Bearer nope"})
    # Then both are 401 UNAUTHORIZED in the envelope
    for resp in (no_token, wrong):
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "CDP_ETL.AUTH.UNAUTHORIZED"
        assert resp.headers["x-correlation-id"]


def test_client_credentials_issue_a_working_token(sandbox: SandboxHandle) -> None:
    # Given the default OAuth client, credentials as HTTP Basic
    resp = httpx.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials"},
        auth=(sandbox.client_id, sandbox.client_secret),
    )
    # Then an RFC 6749 answer (not enveloped) whose token works on the API
    assert resp.status_code == 200
    token = resp.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert "cdp:records:write" in token["scope"].split()
    with sandbox.api(token=token["access_token"]) as api:
        assert api.get("/metadata/objects/contacts").status_code == 200


def test_client_credentials_as_form_fields_with_a_narrower_scope(sandbox: SandboxHandle) -> None:
    resp = httpx.post(
        sandbox.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "scope": "cdp:metadata:read",
        },
    )
    assert resp.status_code == 200
    with sandbox.api(token=resp.json()["access_token"]) as api:
        assert api.get("/metadata/objects/contacts").status_code == 200
        denied = api.post("/records/contacts/append", json={"record": {"email": "a@example.com"}})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "CDP_ETL.AUTH.FORBIDDEN"


def test_token_endpoint_errors_follow_rfc6749(sandbox: SandboxHandle) -> None:
    bad_secret = httpx.post(
        sandbox.token_url, data={"grant_type": "client_credentials"}, auth=(sandbox.client_id, "x")
    )
    bad_grant = httpx.post(sandbox.token_url, data={"grant_type": "password"}, auth=(sandbox.client_id, "x"))
    no_grant = httpx.post(sandbox.token_url, data={}, auth=(sandbox.client_id, sandbox.client_secret))
    assert (bad_secret.status_code, bad_secret.json()["error"]) == (401, "invalid_client")
    assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "unsupported_grant_type")
    assert (no_grant.status_code, no_grant.json()["error"]) == (400, "invalid_request")


def test_issued_tokens_expire(sandbox: SandboxHandle) -> None:
    # Given a client whose tokens live one second
    sandbox.admin.add_client("short", "lived", token_ttl=1)
    token = httpx.post(
        sandbox.token_url, data={"grant_type": "client_credentials"}, auth=("short", "lived")
    ).json()
    assert token["expires_in"] == 1
    with sandbox.api(token=token["access_token"]) as api:
        assert api.get("/metadata/objects/contacts").status_code == 200
        # When the lifetime has passed
        time.sleep(1.1)
        resp = api.get("/metadata/objects/contacts")
    # Then the token is refused
    assert resp.status_code == 401
    assert "expired" in resp.json()["error"]["message"]


def test_scopes_are_checked_per_token_and_reads_accept_write(sandbox: SandboxHandle) -> None:
    # Given a token that may only write imports
    sandbox.admin.add_token("imports-only", ["cdp:imports:write"])
    with sandbox.api(token="imports-only") as api:
        created = api.post(
            "/import-jobs", json={"objectName": "contacts", "fileName": "a.csv", "fileSize": 3}
        )
        # Then imports work, reads of imports accept the write scope, records and metadata do not
        assert created.status_code == 201
        assert api.get(f"/import-jobs/{created.json()['data']['jobId']}").status_code == 200
        rec = api.post("/records/contacts/upsert", json={"record": {"email": "a@example.com"}})
        meta = api.get("/metadata/objects/contacts")
    assert rec.status_code == 403 and rec.json()["error"]["code"] == "CDP_ETL.AUTH.FORBIDDEN"
    assert meta.status_code == 403


def test_admin_added_tokens_can_expire(sandbox: SandboxHandle) -> None:
    sandbox.admin.add_token("brief", ["cdp:metadata:read"], expires_in=0)
    resp = httpx.get(
        sandbox.base_url + "/metadata/objects/contacts", headers={"Authorization": "Bearer brief"}
    )
    assert resp.status_code == 401
