"""The message ledger: which SQS messages are already in an accepted, tracked batch request.

The Idempotency-Key covers a redelivery of the same batch, which packs into the same requests. A
batch that comes back in a *different* grouping (the function timed out after a 202, or SQS mixed
the redelivered messages with new ones) packs into different requests with different keys, and an
append would be written twice. The ledger closes that gap: after a request is accepted and its
settle ticket sent, one item per message (message id + hash of the records written → job id, with a
TTL of a few days) goes to a DynamoDB table; before packing, the writer reads the batch's items and
skips the messages already written, counting them as succeeded.

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

    def written(self, keys: Iterable[str]) -> dict[str, str]:
        """Of ``keys``, those already recorded (and not expired), with their job ids."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
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
                        found[item["pk"]["S"]] = item["jobId"]["S"]
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(0.05 * 2**attempt)
            if request:
                raise LedgerError(f"DynamoDB kept throttling reads of {self.table}")
        return found

    def record(self, keys: Sequence[str], job_id: str) -> None:
        """Note that the messages of ``keys`` are in accepted job ``job_id``."""
        expires = str(int(self._clock() + self._ttl))
        for start in range(0, len(keys), _PUT_BATCH):
            request: dict[str, Any] = {
                self.table: [
                    {
                        "PutRequest": {
                            "Item": {"pk": {"S": k}, "jobId": {"S": job_id}, "expiresAt": {"N": expires}}
                        }
                    }
                    for k in dict.fromkeys(keys[start : start + _PUT_BATCH])
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
