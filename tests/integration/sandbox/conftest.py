"""Fixtures for the sandbox's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.testing import SandboxHandle


@pytest.fixture
def api(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with sandbox.api() as client:
        yield client


@pytest.fixture
def crm(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    """A client of the CRM emulator (base URL .../crm/v3, the api-key header set)."""
    with sandbox.crm_api() as client:
        yield client
