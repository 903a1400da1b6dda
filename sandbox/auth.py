"""Bearer tokens, the OAuth2 client-credentials token endpoint and scope checks.

Tokens live in memory: the static ``--token`` (never expires), tokens added through the admin
endpoint, and tokens issued by ``POST /oauth/token`` (they expire after the client's TTL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.config import ALL_SCOPES, OAuthClient
from sandbox.errors import ApiError


@dataclass
class Principal:
    client_id: str
    scopes: frozenset[str]
    expires_at: float | None


class TokenBook:
    """The tokens and OAuth clients the sandbox knows."""

    def __init__(self, signing_key: bytes) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, Principal] = {}
        self._clients: dict[str, OAuthClient] = {}
        self._key = signing_key

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._clients.clear()

    def add_token(
        self, token: str, scopes: tuple[str, ...] | list[str], *, client_id: str, ttl: float | None = None
    ) -> Principal:
        principal = Principal(client_id, frozenset(scopes), None if ttl is None else time.time() + ttl)
        with self._lock:
            self._tokens[token] = principal
        return principal

    def add_client(self, client: OAuthClient) -> None:
        with self._lock:
            self._clients[client.client_id] = client

    def client(self, client_id: str) -> OAuthClient | None:
        with self._lock:
            return self._clients.get(client_id)

    def lookup(self, token: str) -> Principal | None:
        with self._lock:
            return self._tokens.get(token)

    def issue(self, client: OAuthClient, scopes: tuple[str, ...], ttl: int) -> str:
        """A JWT-shaped HS256 token (clients must treat it as opaque)."""
        now = int(time.time())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": client.client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims).encode())
        sig = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        self.add_token(token, scopes, client_id=client.client_id, ttl=ttl)
        return token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def authenticate(book: TokenBook, request: Request, scope: str) -> Principal:
    """Check the bearer token and the scope; 401/403 in the error envelope otherwise."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "CDP_ETL.AUTH.UNAUTHORIZED",
            "missing bearer token",
            remediation="Send 'Authorization: Bearer <access_token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="experiture"'},
        )
    principal = book.lookup(token.strip())
    if principal is None:
        raise ApiError(
            401,
            "CDP_ETL.AUTH.UNAUTHORIZED",
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="experiture", error="invalid_token"'},
        )
    if principal.expires_at is not None and principal.expires_at <= time.time():
        raise ApiError(
            401,
            "CDP_ETL.AUTH.UNAUTHORIZED",
            "bearer token expired",
            remediation="Request a new token from /oauth/token.",
            headers={"WWW-Authenticate": 'Bearer realm="experiture", error="invalid_token"'},
        )
    accepted = {scope}
    if scope.endswith(":read"):
        accepted.add(scope[: -len("read")] + "write")  # reads accept the matching write scope
    if not accepted & principal.scopes:
        raise ApiError(
            403,
            "CDP_ETL.AUTH.FORBIDDEN",
            f"token lacks scope {scope}",
            details={"requiredScope": scope},
            remediation="Ask for a token with the required scope.",
        )
    return principal


def _oauth_error(status: int, error: str, description: str) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="experiture"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


async def token_endpoint(request: Request) -> Response:
    """POST /oauth/token: RFC 6749 section 4.4 client credentials (bodies are not enveloped)."""
    book: TokenBook = request.app.state.sandbox.tokens
    ttl_default: int = request.app.state.sandbox.config.tokenTtlSeconds
    body = await request.body()
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return _oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
    try:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "body is not UTF-8")
    grant = form.get("grant_type")
    if not grant:
        return _oauth_error(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    client_id, secret = form.get("client_id"), form.get("client_secret")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _oauth_error(401, "invalid_client", "malformed Basic credentials")
        user, _, password = decoded.partition(":")
        client_id, secret = unquote_plus(user), unquote_plus(password)
    if not client_id or secret is None:
        return _oauth_error(401, "invalid_client", "client authentication failed")
    client = book.client(client_id)
    if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
        return _oauth_error(401, "invalid_client", "client authentication failed")
    requested = tuple(form["scope"].split()) if form.get("scope") else client.scopes
    unknown = [s for s in requested if s not in client.scopes]
    if unknown:
        return _oauth_error(400, "invalid_scope", f"scope not granted to this client: {' '.join(unknown)}")
    ttl = client.token_ttl if client.token_ttl is not None else ttl_default
    token = book.issue(client, requested, ttl)
    payload: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": " ".join(requested),
    }
    return JSONResponse(payload, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


__all__ = ["ALL_SCOPES", "Principal", "TokenBook", "authenticate", "token_endpoint"]
