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
