"""Settings: read from EXPERITURE_* variables; a bad one fails with one line naming it."""

from __future__ import annotations

import pytest

from experiture_ingest.client import ClientSettings, SettingsError

BASE = {"EXPERITURE_API_URL": "https://api.experiture.ai/public/v1", "EXPERITURE_API_TOKEN": "t"}


def test_defaults():
    s = ClientSettings.from_env(BASE)
    assert s.retry_max_attempts == 5 and s.retry_budget_seconds == 60.0
    assert s.resolved_token_url == "https://api.experiture.ai/oauth/token"


def test_missing_url_names_the_variable():
    with pytest.raises(SettingsError, match=r"^EXPERITURE_API_URL: missing \(required\)$"):
        ClientSettings.from_env({"EXPERITURE_API_TOKEN": "t"})


def test_missing_credentials_is_one_clear_line():
    with pytest.raises(SettingsError, match="EXPERITURE_API_TOKEN .* or EXPERITURE_SECRET_ARN"):
        ClientSettings.from_env({"EXPERITURE_API_URL": BASE["EXPERITURE_API_URL"]})


def test_malformed_number_names_the_variable_and_hides_the_value():
    with pytest.raises(SettingsError, match="^EXPERITURE_RETRY_MAX_ATTEMPTS: ") as caught:
        ClientSettings.from_env({**BASE, "EXPERITURE_RETRY_MAX_ATTEMPTS": "many"})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://api.experiture.ai/public/v1", "http://10.0.0.5/public/v1", "ftp://x/y"]
)
def test_plain_http_is_refused_except_loopback(url):
    with pytest.raises(SettingsError, match="EXPERITURE_API_URL"):
        ClientSettings.from_env({**BASE, "EXPERITURE_API_URL": url})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787/public/v1", "http://localhost:1/public/v1", "http://[::1]:9/public/v1"]
)
def test_loopback_http_is_allowed(url):
    assert ClientSettings.from_env({**BASE, "EXPERITURE_API_URL": url}).api_url == url


def test_token_is_not_in_repr():
    assert "t0ken-value" not in repr(ClientSettings.from_env({**BASE, "EXPERITURE_API_TOKEN": "t0ken-value"}))
