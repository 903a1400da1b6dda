"""The CRM api-key from Secrets Manager: read, re-read once after a 401, never logged; off without one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import httpx
import pytest
from moto import mock_aws

from experiture_ingest.client.retry import RetryPolicy
from experiture_ingest.crm import ApiKey, CrmClient, CrmSettings, CrmSettingsError
from experiture_ingest.observability import setup_logging


@pytest.fixture
def secrets(monkeypatch) -> Iterator[object]:
    for k, v in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.client("secretsmanager")


def _crm(seen: list[str], good: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("api-key", ""))
        if request.headers.get("api-key") != good:
            return httpx.Response(401, json={"code": "unauthorized", "message": "Key not found"})
        return httpx.Response(202, json={"message": "ok", "processId": 7})

    return httpx.MockTransport(answer)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_rotated_key_is_read_again_once_after_a_401_and_never_logged(secrets):
    # Given a secret holding an old key, rotated after the client read it
    arn = secrets.create_secret(Name="crm-key", SecretString=json.dumps({"apiKey": "old-key-1"}))["ARN"]
    seen: list[str] = []
    client = CrmClient(
        "https://crm.test/v3",
        ApiKey(secret_arn=arn, max_age=300),
        transport=_crm(seen, "new-key-2"),
        policy=RetryPolicy(max_attempts=1),
    )
    setup_logging()  # as the handlers do: secret-bearing library DEBUG lines are dropped
    kept = _Kept()
    names = ("", "httpx", "experiture_ingest", "experiture-ingest", "botocore")
    loggers = [logging.getLogger(n) for n in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(kept)
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    with pytest.raises(Exception):  # noqa: B017  (the old key is refused)
        client.upsert_batch("vehicle", b'{"records":[{"identifiers":{"ext_id":"v"}}]}')
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"apiKey": "new-key-2"}))
    # When the next call is refused with the cached (old) key, Then it re-reads the secret and succeeds
    assert client.upsert_batch("vehicle", b'{"records":[{"identifiers":{"ext_id":"v"}}]}') == 7
    assert seen[-2:] == ["old-key-1", "new-key-2"]
    for log, level in zip(loggers, levels, strict=True):
        log.removeHandler(kept)
        log.setLevel(level)
    # And neither key reached a log line (the requests themselves were logged)
    shown = "\n".join(kept.lines)
    assert "batch/upsert" in shown and "old-key-1" not in shown and "new-key-2" not in shown


def test_an_unreadable_secret_is_a_settings_error_naming_no_key(secrets):
    auth = ApiKey(secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf")
    client = CrmClient(
        "https://crm.test/v3", auth, transport=_crm([], "k"), policy=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(CrmSettingsError) as caught:
        client.get_process(1)
    assert "CRM_SECRET_ARN: cannot read the secret" in str(caught.value)


def test_no_key_and_an_empty_arn_mean_the_destination_is_off():
    assert not CrmSettings.from_env({"CRM_SECRET_ARN": ""}).enabled
    assert CrmSettings.from_env({"CRM_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:k"}).enabled
