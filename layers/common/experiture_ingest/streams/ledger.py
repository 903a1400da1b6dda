"""The message ledger: which request each SQS message went out in, and whether it was accepted.

The Idempotency-Key covers a redelivery of the same batch, which packs into the same requests. A
batch that comes back in a *different* grouping (an answer was lost, the function timed out after a
202, SQS mixed the redelivered messages with new ones) would pack into different requests with
different keys, and an append would be written twice. The ledger closes that gap with one item per
message (message id + hash of its body, TTL of a few days) in a DynamoDB table:

1. before a request is posted (its payload already kept in S3), each of its messages is noted as
   *sending* in that request (payload location + Idempotency-Key);
2. after it is accepted and its settle ticket sent, each is noted as *written* in its job.

Before packing, the writer reads the batch's items: a written message is skipped (counted as
succeeded); a message still *sending* is not packed anew: the exact request it went out in is sent
again from the kept payload with its own key, so the API replays its first answer or takes it now.

Why not Powertools' Idempotency utility: it is built around one function call per key (it records
"in progress", runs the call, stores its result), while the writer packs many messages into one
request and needs a bulk look-up before packing and a bulk write after acceptance. Two batch calls
on a small table do exactly that.

>>> ledger_key("m-1", "abc")
'm-1#abc'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

LEDGER_TTL_SECONDS = 4 * 24 * 3600  # longer than SQS keeps a message (4 days by default) plus its retries
_GET_BATCH = 100  # BatchGetItem's limit
_PUT_BATCH = 25  # BatchWriteItem's limit
_ATTEMPTS = 5


class LedgerError(Exception):
    """The ledger could not be read or written (DynamoDB kept refusing or throttling)."""


def ledger_key(message_id: str, digest: str) -> str:
    return f"{message_id}#{digest}"


@dataclass(frozen=True)
class LedgerEntry:
    """A message's last known request: written in ``job_id``, or still sending as ``idempotency_key``."""

    job_id: str | None = None
    payload_key: str | None = None
    idempotency_key: str | None = None

    @property
    def written(self) -> bool:
        return self.job_id is not None


class MessageLedger:
    """Items ``{pk: "<message id>#<records hash>", jobId, expiresAt}`` in one DynamoDB table.

    ``dynamodb`` is a boto3 DynamoDB client (typed ``Any``: the project has no DynamoDB stubs).
    """

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        ttl_seconds: float = LEDGER_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = dynamodb
        self.table = table
        self._ttl = ttl_seconds
        self._clock = clock
        self._sleep = sleep

    def lookup(self, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """Of ``keys``, those with an item (not expired): written, or sending in a known request."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, LedgerEntry] = {}
        now = self._clock()
        for start in range(0, len(wanted), _GET_BATCH):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [{"pk": {"S": k}} for k in wanted[start : start + _GET_BATCH]],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(_ATTEMPTS):
                answer = self._db.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    # DynamoDB deletes expired items lazily: an expired one no longer counts
                    if float(item.get("expiresAt", {}).get("N", "inf")) > now:
                        found[item["pk"]["S"]] = LedgerEntry(
                            item.get("jobId", {}).get("S"),
                            item.get("payloadKey", {}).get("S"),
                            item.get("idempotencyKey", {}).get("S"),
                        )
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(0.05 * 2**attempt)
            if request:
                raise LedgerError(f"DynamoDB kept throttling reads of {self.table}")
        return found

    def written(self, keys: Iterable[str]) -> dict[str, str]:
        """Of ``keys``, those already in an accepted job, with their job ids."""
        return {k: e.job_id for k, e in self.lookup(keys).items() if e.job_id is not None}

    def sending(self, keys: Sequence[str], payload_key: str, idempotency_key: str) -> None:
        """Note that the messages of ``keys`` are about to go out in the request kept at ``payload_key``."""
        self._put(keys, {"payloadKey": {"S": payload_key}, "idempotencyKey": {"S": idempotency_key}})

    def record(self, keys: Sequence[str], job_id: str) -> None:
        """Note that the messages of ``keys`` are in accepted job ``job_id``."""
        self._put(keys, {"jobId": {"S": job_id}})

    def _put(self, keys: Sequence[str], fields: dict[str, Any]) -> None:
        expires = str(int(self._clock() + self._ttl))
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _PUT_BATCH):
            request: dict[str, Any] = {
                self.table: [
                    {"PutRequest": {"Item": {"pk": {"S": k}, **fields, "expiresAt": {"N": expires}}}}
                    for k in unique[start : start + _PUT_BATCH]
                ]
            }
            for attempt in range(_ATTEMPTS):
                answer = self._db.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
                if not request:
                    break
                self._sleep(0.05 * 2**attempt)
            if request:
                raise LedgerError(f"DynamoDB kept throttling writes to {self.table}")
