"""Tracking: what the writer records around each request, so nothing is lost or written twice.

Before a request is posted its payload is kept in S3 and each of its messages is noted in the ledger
as *sending* in it; after the destination accepts it, a settle ticket goes to the settle queue and
the messages are noted as *written* in the job. A redelivered message is then either skipped
(written) or its request is sent again byte for byte with its own key (still sending): see
:mod:`~experiture_ingest.streams.ledger`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from experiture_ingest.streams.checking import InboundMessage
from experiture_ingest.streams.destination import Accepted
from experiture_ingest.streams.ledger import LedgerEntry, LedgerError, MessageLedger, ledger_key
from experiture_ingest.streams.packing import PackedRequest
from experiture_ingest.streams.settle import (
    KeptRequest,
    ManifestEntry,
    PayloadStore,
    SettleQueue,
    SettleTicket,
    payload_key,
)

logger = logging.getLogger(__name__)


class TrackingError(Exception):
    """S3, SQS or the ledger did not take a record of a request; its messages go back to the queue."""


class KeptRequestGone(TrackingError):
    """The kept request is no longer in S3 (expired by the bucket's lifecycle rule)."""


def message_key(message: InboundMessage) -> str:
    """The ledger key of a message: its id and its body's hash (a changed body is a new message)."""
    return ledger_key(
        message.message_id, hashlib.sha256(message.body.encode("utf-8", "surrogatepass")).hexdigest()
    )


@dataclass(frozen=True)
class Outgoing:
    """A request on its way: where it is kept, its key, its target and the messages it carries."""

    kept: KeptRequest
    location: str

    @property
    def ledger_keys(self) -> list[str]:
        return [m.ledger_key for m in self.kept.manifest if m.ledger_key]

    @property
    def records(self) -> int:
        return len(self.kept.records)


class Tracker:
    """Keeps payloads, notes messages in the ledger (when there is one) and sends settle tickets."""

    def __init__(self, payloads: PayloadStore, tickets: SettleQueue, ledger: MessageLedger | None) -> None:
        self._payloads = payloads
        self._tickets = tickets
        self._ledger = ledger

    @property
    def calls_per_request(self) -> int:
        """AWS calls around one request (payload, sending, ticket, written): for the time budget."""
        return 4 if self._ledger is not None else 2

    def lookup(self, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger's entries for ``keys``; TrackingError when it cannot be read."""
        if self._ledger is None:
            return {}
        try:
            return self._ledger.lookup(keys)
        except (LedgerError, BotoCoreError, ClientError) as exc:
            raise TrackingError(f"could not read the message ledger: {exc}") from exc

    def load(self, location: str) -> KeptRequest:
        try:
            return self._payloads.load(location)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise KeptRequestGone(f"the kept request {location} is gone") from exc
            raise TrackingError(f"could not read the kept request {location}: {exc}") from exc
        except (ValueError, KeyError) as exc:
            raise KeptRequestGone(f"the kept request {location} cannot be read ({exc})") from exc
        except BotoCoreError as exc:
            raise TrackingError(f"could not read the kept request {location}: {exc}") from exc

    def keep(self, request: PackedRequest) -> Outgoing:
        """Keep ``request`` and note its messages as sending; nothing may be posted if this fails."""
        key = request.idempotency_key
        location = payload_key(request.target.object, key)
        manifest = [
            ManifestEntry(m.message_id, len(m.records), m.group_id, m.ledger_key or None)
            for m in request.messages
        ]
        records = [r for m in request.messages for r in m.records]
        outgoing = Outgoing(KeptRequest(request.target, key, manifest, records, request.frame), location)
        try:
            self._payloads.put(
                location,
                request.target,
                key,
                manifest,
                frame=request.frame,
                encoded_records=[e for m in request.messages for e in m.encoded],
            )
            self.sending(outgoing)
        except Exception as exc:  # S3 or DynamoDB: nothing was sent, so the messages may simply retry
            raise TrackingError(
                f"could not keep the request at {location}: {type(exc).__name__}: {exc}"
            ) from exc
        return outgoing

    def sending(self, outgoing: Outgoing) -> None:
        if self._ledger is not None:
            self._ledger.sending(outgoing.ledger_keys, outgoing.location, outgoing.kept.idempotency_key)

    def accepted(self, outgoing: Outgoing, accepted: Accepted) -> None:
        """Send the job's settle ticket, then note its messages as written."""
        try:
            self._tickets.send(
                SettleTicket(
                    job_id=accepted.job_id,
                    object=outgoing.kept.target.object,
                    payload_key=outgoing.location,
                    idempotency_key=outgoing.kept.idempotency_key,
                    records=outgoing.records,
                    correlation_id=accepted.correlation_id,
                    accepted_at=time.time(),
                )
            )
        except Exception as exc:
            # Still noted as sending: the redelivery re-sends the same request with the same key.
            raise TrackingError(
                f"job {accepted.job_id} is accepted but its settle ticket was not sent ({type(exc).__name__}: {exc})"
            ) from exc
        if self._ledger is None:
            return
        try:
            self._ledger.record(outgoing.ledger_keys, accepted.job_id)
        except (LedgerError, BotoCoreError, ClientError) as exc:
            # Still noted as sending: a redelivery re-sends the request with its key and the API
            # replays its answer, so this costs one request and a second ticket, not a duplicate.
            logger.error(
                "job %s is tracked but not noted as written in the ledger (%s)", accepted.job_id, exc
            )
