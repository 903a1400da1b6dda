"""Settings read from the environment into pydantic models, failing with one line per bad variable.

>>> from pydantic import BaseModel, Field
>>> class Demo(BaseModel):
...     bucket: str = Field(alias="DEMO_BUCKET")
>>> load_settings(Demo, {"DEMO_BUCKET": "b"}).bucket
'b'
>>> load_settings(Demo, {})
Traceback (most recent call last):
...
experiture_ingest.settings.SettingsError: DEMO_BUCKET: missing (required)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import pydantic

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def load_settings(model: type[ModelT], env: Mapping[str, str] | None = None) -> ModelT:
    """Validate ``env`` (default: the process environment) into ``model``; fields alias variable names."""
    env = os.environ if env is None else env
    try:
        return model.model_validate({k: v for k, v in env.items() if v != ""})
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            name = ".".join(str(part) for part in error["loc"]) or model.__name__
            reason = "missing (required)" if error["type"] == "missing" else error["msg"]
            problems.append(f"{name}: {reason}")
        raise SettingsError("; ".join(problems)) from None
