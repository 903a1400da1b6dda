"""Shared fixtures for every suite.

``sandbox``: a local Experiture sandbox (see sandbox/testing.py for the handle's API), served once
per test session on a free loopback port and reset before each test, so every test starts with no
records, jobs, requests or faults, the default schemas and the startup config (and the CRM
emulator under /crm/v3 with no records or processes, its default object types and switches).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.testing import SandboxHandle, running_sandbox


@pytest.fixture(scope="session")
def _sandbox_server() -> Iterator[SandboxHandle]:
    with running_sandbox(speed="instant") as handle:
        yield handle


@pytest.fixture
def sandbox(_sandbox_server: SandboxHandle) -> SandboxHandle:
    _sandbox_server.admin.reset()
    return _sandbox_server
