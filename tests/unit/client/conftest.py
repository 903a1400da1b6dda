from __future__ import annotations

from collections.abc import Callable

import pytest

from experiture_ingest.client import BearerToken, ExperitureClient, RetryPolicy
from tests.unit.client.scripted import FakeClock, Script

API = "https://api.example.test/public/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., ExperitureClient]:
    def make(script: Script, **kwargs: object) -> ExperitureClient:
        kwargs.setdefault("auth", BearerToken("tok-SECRET-123"))
        kwargs.setdefault("retry", RetryPolicy(max_attempts=5, budget_seconds=60, rng=lambda: 1.0))
        return ExperitureClient(
            API,
            transport=script.transport,
            sleep=clock.sleep,
            clock=clock,
            **kwargs,  # type: ignore[arg-type]
        )

    return make
