"""Auth: static bearer tokens, OAuth2 client credentials with caching and one refresh on 401."""

from __future__ import annotations

import base64
import json

import boto3
import httpx
import pytest
from moto import mock_aws

from experiture_ingest import client as api
from tests.unit.client.scripted import Script, envelope, error_body

TOKEN_URL = "https://auth.example.test/oauth/token"
SCHEMA = envelope({"fields": [{"name": "email"}]})


def token(value: str, expires_in: int = 3600) -> httpx.Response:
    return httpx.Response(200, json={"access_token": value, "token_type": "Bearer", "expires_in": expires_in})


def credentials(now: list[float] | None = None) -> api.ClientCredentials:
    clock = (lambda: now[0]) if now is not None else None
    kwargs = {"clock": clock} if clock else {}
    return api.ClientCredentials("client-1", "s3cr3t-VALUE", TOKEN_URL, **kwargs)  # type: ignore[arg-type]


def test_static_token_is_sent_as_bearer(make_client):
    script = Script(httpx.Response(200, json=SCHEMA))
    make_client(script, auth=api.BearerToken("abc")).get_object_schema("contacts")
    assert script.requests[0].headers["Authorization"] == "Bearer abc"


def test_client_credentials_fetches_then_caches_token(make_client):
    # Given a token endpoint and an API
    script = Script(token("T1"), httpx.Response(200, json=SCHEMA), httpx.Response(200, json=SCHEMA))
    client = make_client(script, auth=credentials())
    # When two calls are made
    client.get_object_schema("contacts")
    client.get_object_schema("contacts")
    # Then one token request (client credentials grant, HTTP Basic) served both calls
    token_request, first, second = script.requests
    assert str(token_request.url) == TOKEN_URL
    assert b"grant_type=client_credentials" in token_request.content
    basic = base64.b64decode(token_request.headers["Authorization"].split()[1]).decode()
    assert basic == "client-1:s3cr3t-VALUE"
    assert first.headers["Authorization"] == second.headers["Authorization"] == "Bearer T1"


def test_token_is_refreshed_shortly_before_expiry(make_client):
    now = [0.0]
    script = Script(
        token("T1", 300), httpx.Response(200, json=SCHEMA), token("T2", 300), httpx.Response(200, json=SCHEMA)
    )
    client = make_client(script, auth=credentials(now))
    client.get_object_schema("contacts")
    now[0] = 250.0  # within the 60 s refresh margin of the 300 s lifetime
    client.get_object_schema("contacts")
    assert [r.headers.get("Authorization") for r in script.requests][-1] == "Bearer T2"


def test_401_triggers_exactly_one_refresh(make_client):
    # Given a cached token the API no longer accepts
    auth = credentials()
    script = Script(
        token("OLD"),
        httpx.Response(401, json=error_body("CDP_ETL.AUTH.UNAUTHORIZED")),
        token("NEW"),
        httpx.Response(200, json=SCHEMA),
    )
    # When a call is made
    make_client(script, auth=auth).get_object_schema("contacts")
    # Then the token was refreshed once and the request replayed with the new token
    assert auth.refreshes == 2
    assert [r.headers["Authorization"] for r in script.requests if "oauth" not in str(r.url)] == [
        "Bearer OLD",
        "Bearer NEW",
    ]


def test_401_after_refresh_is_an_authentication_error(make_client):
    auth = credentials()
    script = Script(
        token("A"),
        httpx.Response(401, json=error_body("CDP_ETL.AUTH.UNAUTHORIZED")),
        token("B"),
        httpx.Response(401, json=error_body("CDP_ETL.AUTH.UNAUTHORIZED")),
    )
    with pytest.raises(api.AuthenticationError):
        make_client(script, auth=auth).get_object_schema("contacts")
    assert auth.refreshes == 2
    assert len(script.requests) == 4


def test_token_endpoint_refusal_is_clear(make_client):
    script = Script(httpx.Response(401, json={"error": "invalid_client"}))
    with pytest.raises(api.AuthenticationError, match="invalid_client") as caught:
        make_client(script, auth=credentials()).get_object_schema("contacts")
    assert "s3cr3t" not in str(caught.value)


@mock_aws
def test_credentials_come_from_secrets_manager(make_client, monkeypatch):
    # Given a secret holding client credentials
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = boto3.client("secretsmanager").create_secret(
        Name="experiture/api",
        SecretString=json.dumps({"clientId": "cid", "clientSecret": "csecret", "tokenUrl": TOKEN_URL}),
    )["ARN"]
    settings = api.ClientSettings.from_env(
        {"EXPERITURE_API_URL": "https://api.example.test/public/v1", "EXPERITURE_SECRET_ARN": arn}
    )
    script = Script(token("FROM-SECRET"), httpx.Response(200, json=SCHEMA), httpx.Response(200, json=SCHEMA))
    # When the client is built from settings and used twice
    client = api.ExperitureClient.from_settings(settings, transport=script.transport)
    client.get_object_schema("contacts")
    client.get_object_schema("contacts")
    # Then the secret's credentials were exchanged for one token, reused across calls
    assert script.requests[1].headers["Authorization"] == "Bearer FROM-SECRET"
    assert len(script.requests) == 3


@mock_aws
def test_secret_with_a_static_token(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = boto3.client("secretsmanager").create_secret(Name="t", SecretString='{"token": "static-1"}')["ARN"]
    script = Script(httpx.Response(200, json=SCHEMA))
    auth = api.SecretAuth(arn, default_token_url=TOKEN_URL)
    api.ExperitureClient(
        "https://api.example.test/public/v1", auth, transport=script.transport
    ).get_object_schema("c")
    assert script.requests[0].headers["Authorization"] == "Bearer static-1"


@mock_aws
def test_malformed_secret_names_the_variable(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = boto3.client("secretsmanager").create_secret(Name="bad", SecretString='{"user": "x"}')["ARN"]
    script = Script()
    auth = api.SecretAuth(arn, default_token_url=TOKEN_URL)
    client = api.ExperitureClient("https://api.example.test/public/v1", auth, transport=script.transport)
    with pytest.raises(api.SettingsError, match="^EXPERITURE_SECRET_ARN: the secret must hold"):
        client.get_object_schema("c")


@mock_aws
def test_a_rotated_secret_is_picked_up_on_401_without_waiting_for_the_cache(monkeypatch):
    # Given a static token in Secrets Manager, read once and cached for 5 minutes
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="rotating", SecretString='{"token": "old-token"}')["ARN"]
    script = Script(httpx.Response(200, json=SCHEMA))
    client = api.ExperitureClient(
        "https://api.example.test/public/v1",
        api.SecretAuth(arn, default_token_url=TOKEN_URL, max_age_seconds=300),
        transport=script.transport,
    )
    client.get_object_schema("c")
    # When the secret is rotated and the API starts refusing the old token
    secrets.put_secret_value(SecretId=arn, SecretString='{"token": "new-token"}')
    script.answers += [
        httpx.Response(401, json=error_body("CDP_ETL.AUTH.UNAUTHORIZED")),
        httpx.Response(200, json=SCHEMA),
    ]
    client.get_object_schema("c")
    # Then the 401 made the client read the secret afresh and replay once with the new token
    assert [r.headers["Authorization"] for r in script.requests] == [
        "Bearer old-token",
        "Bearer old-token",
        "Bearer new-token",
    ]


@mock_aws
def test_401_with_an_unchanged_secret_is_not_replayed(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = boto3.client("secretsmanager").create_secret(Name="same", SecretString='{"token": "t"}')["ARN"]
    script = Script(httpx.Response(401, json=error_body("CDP_ETL.AUTH.UNAUTHORIZED")))
    client = api.ExperitureClient(
        "https://api.example.test/public/v1",
        api.SecretAuth(arn, default_token_url=TOKEN_URL),
        transport=script.transport,
    )
    with pytest.raises(api.AuthenticationError):
        client.get_object_schema("c")
    assert len(script.requests) == 1


def test_token_endpoint_throttling_is_retried_after_its_retry_after(make_client, clock):
    # Given a token endpoint that throttles once
    script = Script(
        httpx.Response(429, json={"error": "slow_down"}, headers={"Retry-After": "3"}),
        token("T1"),
        httpx.Response(200, json=SCHEMA),
    )
    # When a call needs a token, then it waits as asked and succeeds
    make_client(script, auth=credentials()).get_object_schema("contacts")
    assert clock.sleeps == [3.0]
    assert script.requests[-1].headers["Authorization"] == "Bearer T1"
