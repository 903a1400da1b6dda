"""Object types, records and background processes of the CRM emulator, in memory under one lock.

A process moves ``queued`` -> ``in_process`` -> ``completed`` (or ``failed``, writing nothing) in a
worker thread; all its records are applied at the end in one step, so readers never see half a batch.
Record and process ids keep growing across resets, so an id from before a reset never matches.
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.crm.config import STANDARD_OBJECTS, CrmConfig, ObjectType
from sandbox.crm.errors import CrmError, invalid
from sandbox.crm.upsert import Ident, UpsertRecord, parse_body, parse_records

PROCESS_NAME = "OBJECT_RECORDS_UPSERT"
log = logging.getLogger("sandbox.crm")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CrmRecord:
    id: int
    ext_id: str | None
    attributes: dict[str, Any]
    associations: dict[str, set[int]] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ext_id": self.ext_id,
            "attributes": dict(self.attributes),
            "associations": {t: sorted(ids) for t, ids in sorted(self.associations.items()) if ids},
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass
class Process:
    id: int
    object_type: str
    records: list[UpsertRecord]
    status: str = "queued"
    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    completed_at: str | None = None
    created: int = 0
    updated: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    ignored_attributes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def public(self, report: bool) -> dict[str, Any]:
        """What ``GET /v3/processes/{id}`` answers; ``info`` is ours (the vendor documents none here)."""
        out: dict[str, Any] = {"id": self.id, "name": PROCESS_NAME, "status": self.status}
        if report and self.status in ("completed", "failed"):
            summary: dict[str, Any] = {
                "object_type": self.object_type,
                "total": len(self.records),
                "created": self.created,
                "updated": self.updated,
                "rejected": len(self.rejected),
                "rejected_records": list(self.rejected),
            }
            if self.error:
                summary["error"] = self.error
            out["info"] = {"object_records": summary}
        return out

    def admin(self) -> dict[str, Any]:
        out = self.public(report=True)
        out.update(
            objectType=self.object_type,
            records=len(self.records),
            createdAt=self.created_at,
            startedAt=self.started_at,
            completedAt=self.completed_at,
            ignoredAttributes=dict(self.ignored_attributes),
        )
        return out


class TypeStore:
    """The records of one object type, by id and by ext_id."""

    def __init__(self) -> None:
        self.by_id: dict[int, CrmRecord] = {}
        self.by_ext: dict[str, int] = {}

    def find(self, ident: Ident) -> CrmRecord | None:
        if ident.id is not None:
            return self.by_id.get(ident.id)
        if ident.ext_id is not None and ident.ext_id in self.by_ext:
            return self.by_id[self.by_ext[ident.ext_id]]
        return None


class CrmState:
    """Everything the CRM emulator owns; every method is thread-safe."""

    def __init__(
        self,
        api_key: str,
        object_types: dict[str, ObjectType],
        config: CrmConfig,
        take_failure: Callable[[str], str | None] = lambda _object_type: None,
    ) -> None:
        self.api_key = api_key
        self._startup_types = copy.deepcopy(object_types)
        self._startup_config = config.copy()
        self._take_failure = take_failure
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._process_ids = itertools.count(1)
        self.queue: queue.Queue[int] = queue.Queue()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.generation = 0
        self._clear()

    def _clear(self) -> None:
        self.config = self._startup_config.copy()
        self.types = copy.deepcopy(self._startup_types)
        self.records: dict[str, TypeStore] = {name: TypeStore() for name in self.types}
        self.processes: dict[int, Process] = {}

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="sandbox-crm-process", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def reset(self) -> None:
        """Forget records and processes; restore the startup object types and config."""
        with self.lock:
            self.generation += 1
            while not self.queue.empty():
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            self._clear()

    # --- object types ----------------------------------------------------------------------------
    def put_type(self, object_type: ObjectType) -> None:
        with self.lock:
            self.types[object_type.name] = object_type
            self.records.setdefault(object_type.name, TypeStore())

    def delete_type(self, name: str) -> bool:
        with self.lock:
            self.records.pop(name, None)
            return self.types.pop(name, None) is not None

    def list_types(self) -> list[dict[str, Any]]:
        with self.lock:
            return [t.to_dict() for t in self.types.values()]

    def associable(self, a: str, b: str) -> bool:
        ta, tb = self.types.get(a), self.types.get(b)
        return ta is not None and tb is not None and (b in ta.associations or a in tb.associations)

    def check_type(self, name: str) -> ObjectType:
        """The object type of a request path, or the vendor's refusal."""
        if not self.config.customObjectsEnabled:
            raise CrmError(403, "permission_denied", "Custom objects are not available on this account")
        if name in STANDARD_OBJECTS:
            raise CrmError(
                403,
                "permission_denied",
                "Upsert of Brevo standard object records is not supported via this endpoint",
            )
        with self.lock:
            found = self.types.get(name)
        if found is None:
            if self.config.unknownObjectTypeStatus == 404:
                raise CrmError(404, "document_not_found", "invalid object type")
            raise CrmError(400, "invalid_parameter", "invalid object type")
        return found

    # --- the upsert request ----------------------------------------------------------------------
    def accept(self, object_type: str, body: bytes) -> int:
        """Check a batch upsert body and queue it; the new process id. Raises CrmError (400)."""
        records = parse_records(parse_body(body), self.config)
        with self.lock:
            for record in records:
                self._check_associations(
                    object_type, record, at_request=self.config.associationCheck == "request"
                )
            process = Process(next(self._process_ids), object_type, records)
            self.processes[process.id] = process
        self.queue.put(process.id)
        return process.id

    def _check_associations(self, object_type: str, record: UpsertRecord, *, at_request: bool) -> None:
        """Associated types must be associable; with ``at_request``, linked records must exist."""
        for j, op in enumerate(record.associations):
            where = f"records[{record.index}].associations[{j}]"
            if not self.associable(object_type, op.object_type):
                raise invalid(f"{where}.object_type: invalid association object type {op.object_type!r}")
            if not at_request or op.action != "link":
                continue
            store = self.records[op.object_type]
            for k, target in enumerate(op.targets):
                if store.find(target) is None:
                    raise invalid(
                        f"{where}.records[{k}]: associated record not found "
                        f"({op.object_type} {_describe(target)}); both records must exist before linking"
                    )

    # --- processing --------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                process_id = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self._run(process_id)
            except Exception:  # a broken process must not stop the worker
                log.exception("CRM process %s failed", process_id)

    def _sleep(self, seconds: float, generation: int) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if generation != self.generation or self.stopping.is_set():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.stopping.wait(min(left, 0.05))

    def _run(self, process_id: int) -> None:
        with self.lock:
            generation = self.generation
            process = self.processes.get(process_id)
            if process is None:
                return
            queue_s, run_s = self.config.queueSeconds, self.config.processSeconds
        if not self._sleep(queue_s, generation):
            return
        with self.lock:
            if generation != self.generation:
                return
            process.status, process.started_at = "in_process", now_iso()
        if not self._sleep(run_s, generation):
            return
        with self.lock:
            if generation != self.generation:
                return
            failure = self._take_failure(process.object_type)
            if failure is not None:
                process.status, process.error = "failed", failure
            elif process.object_type not in self.types:
                process.status, process.error = "failed", "invalid object type"
            else:
                for record in process.records:
                    self._apply(process, record)
                process.status = "completed"
            process.completed_at = now_iso()

    def _reject(self, process: Process, record: UpsertRecord, code: str, message: str) -> None:
        process.rejected.append(
            {"index": record.index, "identifiers": record.ident.to_dict(), "code": code, "message": message}
        )

    def _apply(self, process: Process, record: UpsertRecord) -> None:
        """One record, under the lock: resolve, check links, write attributes, then links."""
        object_type = process.object_type
        store = self.records[object_type]
        existing = store.find(record.ident)
        if record.ident.id is not None and existing is None:
            self._reject(
                process,
                record,
                "record_not_found",
                f"no {object_type} record with id {record.ident.id}; id is for updates only, use ext_id to create",
            )
            return
        links: list[tuple[str, str, CrmRecord | None]] = []
        for op in record.associations:
            if not self.associable(object_type, op.object_type):
                self._reject(
                    process,
                    record,
                    "invalid_association",
                    f"invalid association object type {op.object_type!r}",
                )
                return
            for ident in op.targets:
                found = self.records[op.object_type].find(ident)
                if found is None and op.action == "link":
                    self._reject(
                        process,
                        record,
                        "associated_record_not_found",
                        f"associated record not found ({op.object_type} {_describe(ident)})",
                    )
                    return
                links.append((op.object_type, op.action, found))
        known = set(self.types[object_type].attributes)
        kept = {k: v for k, v in record.attributes.items() if k in known}
        for name in record.attributes.keys() - known:
            process.ignored_attributes[name] = process.ignored_attributes.get(name, 0) + 1
        if existing is None:
            existing = CrmRecord(next(self._ids), record.ident.ext_id, kept)
            store.by_id[existing.id] = existing
            if existing.ext_id is not None:
                store.by_ext[existing.ext_id] = existing.id
            process.created += 1
        else:
            existing.attributes.update(kept)
            existing.updated_at = now_iso()
            process.updated += 1
        for target_type, action, target in links:
            if target is None:
                continue  # unlinking a record that does not exist is a no-op
            if action == "link":
                existing.associations.setdefault(target_type, set()).add(target.id)
                target.associations.setdefault(object_type, set()).add(existing.id)
            else:
                existing.associations.get(target_type, set()).discard(target.id)
                target.associations.get(object_type, set()).discard(existing.id)

    # --- reads -----------------------------------------------------------------------------------
    def process(self, process_id: int) -> Process | None:
        with self.lock:
            return self.processes.get(process_id)

    def list_processes(self) -> list[Process]:
        with self.lock:
            return sorted(self.processes.values(), key=lambda p: p.id)

    def list_records(self, object_type: str) -> list[dict[str, Any]]:
        with self.lock:
            store = self.records.get(object_type)
            return [r.to_dict() for r in store.by_id.values()] if store else []


def _describe(ident: Ident) -> str:
    return f"id {ident.id}" if ident.id is not None else f"ext_id {ident.ext_id!r}"
