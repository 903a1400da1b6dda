"""No log line or exception text carries the token, the client secret or a URL signature."""

from __future__ import annotations

import io
import logging

import httpx
import pytest

from experiture_ingest import client as api
from tests.unit.client.scripted import Script, envelope, error_body

SECRETS = ("tok-SECRET-123", "s3cr3t-VALUE", "SIG-999", "X-Amz-Signature")


def test_nothing_secret_reaches_logs_or_errors(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    slot = api.UploadSlot(
        job_id="j", upload_url="https://up.example.test/f?X-Amz-Signature=SIG-999", method="PUT"
    )
    texts = []
    # Given every kind of failure a user could meet, with a static token and client credentials
    creds = api.ClientCredentials("cid", "s3cr3t-VALUE", "https://auth.example.test/oauth/token")
    failures = [
        (
            make_client(Script(*[httpx.Response(500, json=error_body("CDP_ETL.INTERNAL_ERROR"))] * 5)),
            lambda c: c.get_import("j"),
        ),
        (make_client(Script(*[httpx.ConnectError("refused")] * 5)), lambda c: c.get_import("j")),
        (
            make_client(Script(httpx.Response(401, json={"error": "invalid_client"})), auth=creds),
            lambda c: c.get_import("j"),
        ),
        (
            make_client(Script(*[httpx.ReadError("reset")] * 3)),
            lambda c: c.upload(slot, lambda: io.BytesIO(b"a"), 1),
        ),
        (make_client(Script(httpx.Response(403))), lambda c: c.upload(slot, lambda: io.BytesIO(b"a"), 1)),
        (
            make_client(Script(httpx.Response(500), httpx.Response(500), httpx.Response(500))),
            lambda c: c.upload(slot, lambda: io.BytesIO(b"a"), 1),
        ),
    ]
    for client, call in failures:
        # When each fails
        with pytest.raises(api.ExperitureError) as caught:
            call(client)
        texts += [str(caught.value), repr(caught.value), repr(client._auth)]
    texts += [r.getMessage() for r in caplog.records]
    # Then no text carries a secret, and the correlation id is there when the API gave one
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text
    assert any("corr-err" in t for t in texts)
    assert caplog.records, "retries should have been logged"


def test_success_does_not_log_secrets(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    make_client(Script(httpx.Response(200, json=envelope({"fields": []})))).get_object_schema("c")
    assert all("tok-SECRET-123" not in r.getMessage() for r in caplog.records)
