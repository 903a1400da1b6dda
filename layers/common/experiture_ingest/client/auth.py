"""Authentication as ``httpx.Auth`` flows: a static bearer token, OAuth2 client credentials, or either
one read from an AWS Secrets Manager secret through Powertools Parameters.

The client-credentials flow caches its token until shortly before expiry and, on a 401, fetches a new
one once and replays the request once.

>>> import httpx
>>> request = httpx.Request("GET", "https://api.example/x")
>>> next(BearerToken("t0k").auth_flow(request)).headers["Authorization"]
'Bearer t0k'
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from experiture_ingest.client.errors import (
    AuthenticationError,
    ExperitureError,
    RateLimitedError,
    ServerError,
    SettingsError,
)
from experiture_ingest.client.retry import parse_retry_after
from experiture_ingest.client.settings import require_secure_url


class BearerToken(httpx.Auth):
    """A static token, for local runs and long-lived workspace tokens."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class ClientCredentials(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 4.4) with a cached, self-refreshing access token."""

    requires_response_body = True

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_url: str,
        *,
        scope: str | None = None,
        refresh_margin_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = require_secure_url(token_url)
        self._scope = scope
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self._client_id!r}, token_url={self._token_url!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            token = self._accept((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # The token may have been revoked or expired early: one fresh token, one replay.
            token = self._accept((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _cached(self) -> str | None:
        with self._lock:
            if self._token and self._clock() < self._expires_at - self._margin:
                return self._token
            return None

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        # RFC 6749 2.3.1: HTTP Basic with form-encoded id and secret.
        basic = base64.b64encode(f"{quote(self._client_id)}:{quote(self._client_secret)}".encode()).decode()
        return httpx.Request(
            "POST",
            self._token_url,
            data=form,
            headers={"Accept": "application/json", "Authorization": f"Basic {basic}"},
        )

    def _accept(self, response: httpx.Response) -> str:
        payload: Any
        try:
            payload = response.json()
        except ValueError:
            payload = None
        status = response.status_code
        if status >= 500 or status == 429:  # transient: the client's retry policy takes it from here
            error = RateLimitedError if status == 429 else ServerError
            raise error(
                f"token endpoint answered HTTP {status}",
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code != 200 or not isinstance(payload, dict) or "access_token" not in payload:
            reason = payload.get("error") if isinstance(payload, dict) else None
            raise AuthenticationError(
                f"the token endpoint refused the client credentials ({reason or 'no access_token'})",
                status=response.status_code,
                code="OAUTH2." + str(reason or "invalid_response").upper(),
                remediation="Check clientId and clientSecret in the secret, and the token URL.",
            )
        expires_in = float(payload.get("expires_in") or 3600)
        with self._lock:
            self._token = str(payload["access_token"])
            self._expires_at = self._clock() + expires_in
            self.refreshes += 1
            return self._token


def auth_from_secret(secret: Mapping[str, Any], *, default_token_url: str) -> httpx.Auth:
    """The auth a secret describes: ``{"token": ...}`` or ``{"clientId", "clientSecret", "tokenUrl"?}``."""
    if isinstance(secret.get("token"), str) and secret["token"]:
        return BearerToken(secret["token"])
    client_id, client_secret = secret.get("clientId"), secret.get("clientSecret")
    if isinstance(client_id, str) and isinstance(client_secret, str) and client_id and client_secret:
        try:
            return ClientCredentials(
                client_id,
                client_secret,
                str(secret.get("tokenUrl") or default_token_url),
                scope=secret.get("scope") if isinstance(secret.get("scope"), str) else None,
            )
        except ValueError as exc:
            raise SettingsError(f"EXPERITURE_SECRET_ARN: tokenUrl {exc}") from None
    raise SettingsError(
        'EXPERITURE_SECRET_ARN: the secret must hold {"token": ...} or {"clientId": ..., "clientSecret": ...}'
    )


class SecretAuth(httpx.Auth):
    """Credentials from Secrets Manager, cached by Powertools Parameters across warm invocations.

    A rotated secret is picked up when the cache ages out, or at once when the API answers 401 (the
    secret is read again, bypassing the cache, and the request replayed once if it changed). The inner
    auth (and its token cache) is kept for as long as the secret's content is unchanged.
    """

    def __init__(self, secret_arn: str, *, default_token_url: str, max_age_seconds: int = 300) -> None:
        self._arn = secret_arn
        self._default_token_url = default_token_url
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._seen: Mapping[str, Any] | None = None
        self._inner: httpx.Auth | None = None

    def __repr__(self) -> str:
        return f"SecretAuth({self._arn!r})"

    def _current(self, *, force_fetch: bool = False) -> httpx.Auth:
        from aws_lambda_powertools.utilities import parameters

        try:
            secret = parameters.get_secret(
                self._arn, transform="json", max_age=self._max_age, force_fetch=force_fetch
            )
        except parameters.exceptions.TransformParameterError:
            raise SettingsError("EXPERITURE_SECRET_ARN: the secret is not a JSON object") from None
        except parameters.exceptions.GetParameterError as exc:
            raise SettingsError(
                f"EXPERITURE_SECRET_ARN: cannot read the secret ({type(exc).__name__})"
            ) from None
        if not isinstance(secret, Mapping):
            raise SettingsError("EXPERITURE_SECRET_ARN: the secret is not a JSON object")
        with self._lock:
            if self._inner is None or secret != self._seen:
                self._inner = auth_from_secret(secret, default_token_url=self._default_token_url)
                self._seen = dict(secret)
            return self._inner

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        auth = self._current()
        response = yield from _last_response(auth.sync_auth_flow(request))
        if response is not None and response.status_code == 401:
            fresh = self._current(force_fetch=True)
            if fresh is not auth:  # the secret was rotated: one replay with the new credentials
                yield from _last_response(fresh.sync_auth_flow(request))


def _last_response(
    flow: Generator[httpx.Request, httpx.Response, None],
) -> Generator[httpx.Request, httpx.Response, httpx.Response | None]:
    """Drive an auth flow and return the last response it saw."""
    response = None
    try:
        outgoing = next(flow)
        while True:
            response = yield outgoing
            outgoing = flow.send(response)
    except StopIteration:
        return response


__all__ = ["BearerToken", "ClientCredentials", "ExperitureError", "SecretAuth", "auth_from_secret"]
