"""The admin routes plant tokens and reset state: only loopback callers holding the admin token."""

from __future__ import annotations

import argparse

import httpx
import pytest

import sandbox.server
from sandbox import cli
from sandbox.admin import ADMIN_TOKEN_HEADER
from sandbox.testing import SandboxHandle


def _plant(sb: SandboxHandle, headers: dict[str, str]) -> httpx.Response:
    # What a cross-site form or fetch can send without a preflight: a text/plain POST
    return httpx.post(
        f"{sb.root_url}/_sandbox/tokens",
        content='{"token": "planted", "scopes": ["cdp:metadata:read"]}',
        headers={"Content-Type": "text/plain", **headers},
    )


def _planted_works(sb: SandboxHandle) -> bool:
    with sb.api(token="planted") as api:
        return api.get("/metadata/objects/contacts").status_code == 200


def test_a_cross_origin_admin_post_is_refused_and_plants_nothing(sandbox: SandboxHandle) -> None:
    # When a page on another site POSTs to the admin route (even with the admin token somehow known)
    answer = _plant(sandbox, {"Origin": "https://evil.example", ADMIN_TOKEN_HEADER: sandbox.admin_token})
    # Then it is refused and the token does not exist
    assert answer.status_code == 403 and "Origin" in answer.json()["error"]
    assert not _planted_works(sandbox)


def test_an_admin_request_for_another_host_name_is_refused(sandbox: SandboxHandle) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away
    answer = _plant(sandbox, {"Host": "rebind.evil.example", ADMIN_TOKEN_HEADER: sandbox.admin_token})
    assert answer.status_code == 403 and "Host" in answer.json()["error"]
    assert not _planted_works(sandbox)


def test_an_admin_request_without_the_admin_token_is_refused(sandbox: SandboxHandle) -> None:
    for headers in ({}, {ADMIN_TOKEN_HEADER: "guess"}):
        answer = _plant(sandbox, headers)
        assert answer.status_code == 401 and ADMIN_TOKEN_HEADER in answer.json()["error"]
    assert httpx.post(f"{sandbox.root_url}/_sandbox/reset").status_code == 401
    assert not _planted_works(sandbox)


def test_a_loopback_request_with_the_admin_token_is_served(sandbox: SandboxHandle) -> None:
    for origin in ({}, {"Origin": f"http://localhost:{sandbox.port}"}):
        answer = _plant(sandbox, {**origin, ADMIN_TOKEN_HEADER: sandbox.admin_token})
        assert answer.status_code == 200
    assert _planted_works(sandbox)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_command(parser.add_subparsers())
    return parser.parse_args(["sandbox", *argv])


def test_binding_beyond_loopback_needs_allow_remote(capsys) -> None:
    # When --host 0.0.0.0 is given alone, the sandbox does not start and says why
    assert cli.run(_args("--host", "0.0.0.0")) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_binding_beyond_loopback_with_allow_remote_warns(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []
    monkeypatch.setattr(
        sandbox.server, "serve_forever", lambda options, host, port, level: served.append((host, port))
    )
    # When the flag is given, it serves there, with a warning on stderr and the admin token shown
    assert (
        cli.run(_args("--host", "0.0.0.0", "--allow-remote", "--port", "9999", "--admin-token", "adm")) == 0
    )
    out = capsys.readouterr()
    assert served == [("0.0.0.0", 9999)]
    assert "WARNING" in out.err and "0.0.0.0" in out.err
    assert f"{ADMIN_TOKEN_HEADER}: adm" in out.out


def test_loopback_binding_does_not_warn(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.server, "serve_forever", lambda *a, **k: None)
    assert cli.run(_args("--port", "9999")) == 0
    assert "WARNING" not in capsys.readouterr().err
