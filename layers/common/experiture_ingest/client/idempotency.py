"""Deterministic Idempotency-Keys in the format the API asks for (UUID v4).

A retried or redelivered write must carry the same key as the first attempt, so keys are derived
from what identifies the write; the digest is laid out as a version-4 UUID.

>>> key = derived_key("imp_1", "mapping")
>>> key == derived_key("imp_1", "mapping") != derived_key("imp_1", "start")
True
>>> import uuid; uuid.UUID(key).version
4
"""

from __future__ import annotations

import hashlib
import uuid


def derived_key(*parts: str | bytes) -> str:
    """A UUID v4-formatted key determined by ``parts`` (joined unambiguously)."""
    digest = hashlib.sha256(b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))
