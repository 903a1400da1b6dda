"""No secret at any log level: a whole file import and a records write with the root logger at DEBUG
(what Lambda's ApplicationLogLevel DEBUG sets) and OAuth client credentials read from Secrets Manager."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator

import boto3
import pytest

from cli.local_stack import LocalStack
from cli.operations import smoke
from experiture_ingest.client.auth import ClientCredentials
from sandbox.testing import SandboxHandle


@pytest.fixture
def issued_tokens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every access token the token endpoint hands the functions (to look for them in the output)."""
    seen: list[str] = []
    accept = ClientCredentials._accept

    def remember(self: ClientCredentials, response):  # type: ignore[no-untyped-def]
        token = accept(self, response)
        seen.append(token)
        return token

    monkeypatch.setattr(ClientCredentials, "_accept", remember)
    return seen


@pytest.fixture
def stack_with_secret(sandbox: SandboxHandle) -> Iterator[tuple[LocalStack, str]]:
    client_id, client_secret = "ingest-debug", "cs-" + secrets.token_hex(16)
    sandbox.admin.add_client(client_id, client_secret)
    secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:placeholder"
    env = {
        "EXPERITURE_API_URL": sandbox.base_url,
        "EXPERITURE_SECRET_ARN": secret_arn,
        "IMPORT_POLL_INITIAL_SECONDS": "1",
        "IMPORT_POLL_MAX_SECONDS": "1",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",
    }
    with LocalStack(env) as stack:
        # The secret the template's ExperitureSecretArn names: client credentials with tokenUrl
        created = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="experiture/ingest",
            SecretString=json.dumps(
                {"clientId": client_id, "clientSecret": client_secret, "tokenUrl": sandbox.token_url}
            ),
        )
        stack.set_env(EXPERITURE_SECRET_ARN=created["ARN"])
        yield stack, client_secret


def test_debug_logs_of_an_import_and_a_records_write_hold_no_client_secret_or_token(
    stack_with_secret, issued_tokens, sandbox, caplog, capsys, monkeypatch
):
    stack, client_secret = stack_with_secret
    # Given the root logger at DEBUG, everything captured (log records and whatever reaches stdout)
    caplog.set_level(logging.DEBUG)
    # And a cold boto3 (as in a new container): its session resolves credentials and logs again
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    # When a file is imported and records are written (the smoke test does both, through the secret)
    report = smoke(stack, timeout=60)

    # Then it worked with OAuth tokens from the secret's client credentials
    assert report.passed, report.table()
    assert issued_tokens, "the functions should have fetched access tokens"
    assert {r["clientId"] for r in sandbox.admin.requests(path="/public/v1/records")} == {"ingest-debug"}
    # And the DEBUG output is there (botocore's INFO lines, everyone else's DEBUG), without any secret
    out = capsys.readouterr()
    captured = "\n".join([caplog.text, out.out, out.err])
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert any(r.name.startswith("botocore") for r in caplog.records)
    assert client_secret not in captured
    for token in issued_tokens:
        assert token not in captured
