"""SQLite state under the data directory (``<data-dir>/sandbox.sqlite3``), readable with any SQLite tool.

One connection guarded by a re-entrant lock: uvicorn runs one event loop and the job workers are a
few threads, so serialising statements is simpler than juggling SQLITE_BUSY and costs little here.
Handlers call the store from a thread pool, never from the event loop itself.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS objects (name TEXT PRIMARY KEY, schema TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    object TEXT NOT NULL,
    pk TEXT,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    source TEXT
);
CREATE INDEX IF NOT EXISTS records_object_pk ON records(object, pk);
CREATE TABLE IF NOT EXISTS batch_jobs (job_id TEXT PRIMARY KEY, object TEXT, state TEXT, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_payloads (job_id TEXT PRIMARY KEY, records TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS import_jobs (job_id TEXT PRIMARY KEY, object TEXT, state TEXT, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS templates (template_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lists (list_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS list_members (list_id TEXT NOT NULL, record_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audiences (audience_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER,
    idempotency_key TEXT,
    replayed INTEGER NOT NULL DEFAULT 0,
    correlation_id TEXT,
    client_id TEXT,
    fault TEXT,
    duration_ms REAL
);
CREATE TABLE IF NOT EXISTS import_timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    client_id TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created_at REAL NOT NULL,
    PRIMARY KEY (client_id, route, key)
);
"""

RESET_TABLES = (
    "records",
    "batch_jobs",
    "batch_payloads",
    "import_jobs",
    "templates",
    "lists",
    "list_members",
    "audiences",
    "requests",
    "idempotency",
    "import_timeline",
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pk_value(value: Any) -> str:
    """Canonical text of a key value, so 1 and "1" stay different keys."""
    return json.dumps(value, sort_keys=True)


class Store:
    """All persistent state. Methods are thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "sandbox.sqlite3"
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA_SQL)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def reset(self) -> None:
        with self.tx() as c:
            for table in RESET_TABLES:
                c.execute(f"DELETE FROM {table}")

    # --- objects -------------------------------------------------------------------------------
    def put_objects(self, objects: dict[str, dict[str, Any]], *, replace_all: bool = False) -> None:
        with self.tx() as c:
            if replace_all:
                c.execute("DELETE FROM objects")
            for name, schema in objects.items():
                c.execute(
                    "INSERT OR REPLACE INTO objects(name, schema) VALUES (?, ?)", (name, json.dumps(schema))
                )

    def objects(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: json.loads(r["schema"]) for r in self.query("SELECT name, schema FROM objects")}

    def get_object(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT schema FROM objects WHERE name = ?", (name,))
        return json.loads(rows[0]["schema"]) if rows else None

    # --- records -------------------------------------------------------------------------------
    def merge(
        self,
        c: sqlite3.Connection,
        obj: str,
        primary_key: str,
        record: dict[str, Any],
        *,
        match_key: str | None,
        source: str,
        overwrite_nulls: bool = True,
    ) -> tuple[str, int]:
        """Append (match_key None) or upsert one record inside a transaction.

        Returns ("insert" | "update" | "retain", record id).
        """
        ts = now_iso()
        if match_key is not None:
            if match_key == primary_key:
                row = c.execute(
                    "SELECT id, data FROM records WHERE object = ? AND pk = ? ORDER BY id LIMIT 1",
                    (obj, pk_value(record[match_key])),
                ).fetchone()
            else:
                row = c.execute(
                    "SELECT id, data FROM records WHERE object = ? AND json_extract(data, ?) = ? "
                    "ORDER BY id LIMIT 1",
                    (obj, f'$."{match_key}"', record[match_key]),
                ).fetchone()
            if row is not None:
                existing = json.loads(row["data"])
                merged = dict(existing)
                for k, v in record.items():
                    if v is None and not overwrite_nulls:
                        continue
                    merged[k] = v
                if merged == existing:
                    return "retain", int(row["id"])
                c.execute(
                    "UPDATE records SET data = ?, pk = ?, updated_at = ?, source = ? WHERE id = ?",
                    (json.dumps(merged), pk_value(merged.get(primary_key)), ts, source, row["id"]),
                )
                return "update", int(row["id"])
        cur = c.execute(
            "INSERT INTO records(object, pk, data, created_at, updated_at, source) VALUES (?, ?, ?, ?, ?, ?)",
            (obj, pk_value(record.get(primary_key)), json.dumps(record), ts, ts, source),
        )
        return "insert", int(cur.lastrowid or 0)

    def find_record(self, obj: str, field: str, value: Any) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT data FROM records WHERE object = ? AND json_extract(data, ?) = ? ORDER BY id LIMIT 1",
            (obj, f'$."{field}"', value),
        )
        return json.loads(rows[0]["data"]) if rows else None

    def list_records(self, obj: str, limit: int = 100_000, offset: int = 0) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT id, data, created_at, updated_at, source FROM records WHERE object = ? "
            "ORDER BY id LIMIT ? OFFSET ?",
            (obj, limit, offset),
        )
        return [
            {
                "id": r["id"],
                "data": json.loads(r["data"]),
                "createdAt": r["created_at"],
                "updatedAt": r["updated_at"],
                "source": r["source"],
            }
            for r in rows
        ]

    def count_records(self, obj: str) -> int:
        return int(self.query("SELECT COUNT(*) AS n FROM records WHERE object = ?", (obj,))[0]["n"])

    # --- job documents -------------------------------------------------------------------------
    def put_job(self, table: str, doc: dict[str, Any], c: sqlite3.Connection | None = None) -> None:
        sql = f"INSERT OR REPLACE INTO {table}(job_id, object, state, doc) VALUES (?, ?, ?, ?)"
        params = (doc["jobId"], doc["objectName"], doc["state"], json.dumps(doc))
        if c is not None:
            c.execute(sql, params)
            return
        with self.lock:
            self.conn.execute(sql, params)

    def get_job(self, table: str, job_id: str) -> dict[str, Any] | None:
        rows = self.query(f"SELECT doc FROM {table} WHERE job_id = ?", (job_id,))
        return json.loads(rows[0]["doc"]) if rows else None

    def list_jobs(self, table: str, state: str | None = None) -> list[dict[str, Any]]:
        if state:
            rows = self.query(f"SELECT doc FROM {table} WHERE state = ? ORDER BY rowid", (state,))
        else:
            rows = self.query(f"SELECT doc FROM {table} ORDER BY rowid")
        return [json.loads(r["doc"]) for r in rows]

    def count_jobs(self, table: str, state: str) -> int:
        return int(self.query(f"SELECT COUNT(*) AS n FROM {table} WHERE state = ?", (state,))[0]["n"])

    # --- import timeline -----------------------------------------------------------------------
    def timeline_event(self, c: sqlite3.Connection, doc: dict[str, Any], event: str, at: str) -> None:
        """Record that an import job ``started`` or ``finished``, inside the transaction that did it,
        so the sequence numbers follow the order in which the state changes were committed."""
        c.execute(
            "INSERT INTO import_timeline(job_id, event, at) VALUES (?, ?, ?)", (doc["jobId"], event, at)
        )

    def import_timeline(self) -> list[dict[str, Any]]:
        """One entry per import job that started, in start order (see sandbox/testing.py)."""
        with self.lock:
            events = self.conn.execute(
                "SELECT seq, job_id, event, at FROM import_timeline ORDER BY seq"
            ).fetchall()
            entries: dict[str, dict[str, Any]] = {}
            for row in events:
                if row["event"] == "started":
                    entries[row["job_id"]] = {
                        "jobId": row["job_id"],
                        "startedAt": row["at"],
                        "startSeq": row["seq"],
                        "finishedAt": None,
                        "finishSeq": None,
                    }
                elif row["job_id"] in entries:
                    entries[row["job_id"]].update(finishedAt=row["at"], finishSeq=row["seq"])
            for entry in entries.values():
                found = self.conn.execute(
                    "SELECT doc FROM import_jobs WHERE job_id = ?", (entry["jobId"],)
                ).fetchone()
                doc = json.loads(found["doc"]) if found else {}
                entry.update(
                    objectName=doc.get("objectName"), fileName=doc.get("fileName"), state=doc.get("state")
                )
        return sorted(entries.values(), key=lambda e: e["startSeq"])

    # --- generic documents (templates, lists, audiences) ---------------------------------------
    def put_doc(self, table: str, id_col: str, doc_id: str, doc: dict[str, Any]) -> None:
        with self.lock:
            self.conn.execute(
                f"INSERT OR REPLACE INTO {table}({id_col}, doc) VALUES (?, ?)", (doc_id, json.dumps(doc))
            )

    def get_doc(self, table: str, id_col: str, doc_id: str) -> dict[str, Any] | None:
        rows = self.query(f"SELECT doc FROM {table} WHERE {id_col} = ?", (doc_id,))
        return json.loads(rows[0]["doc"]) if rows else None

    def list_docs(self, table: str) -> list[dict[str, Any]]:
        return [json.loads(r["doc"]) for r in self.query(f"SELECT doc FROM {table} ORDER BY rowid")]

    # --- request log ---------------------------------------------------------------------------
    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO requests(at, method, path, status, idempotency_key, replayed, correlation_id, "
                "client_id, fault, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry["at"],
                    entry["method"],
                    entry["path"],
                    entry.get("status"),
                    entry.get("idempotencyKey"),
                    1 if entry.get("replayed") else 0,
                    entry.get("correlationId"),
                    entry.get("clientId"),
                    entry.get("fault"),
                    entry.get("durationMs"),
                ),
            )

    def list_requests(
        self, method: str | None = None, path_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM requests WHERE 1=1"
        params: list[Any] = []
        if method:
            sql += " AND method = ?"
            params.append(method.upper())
        if path_prefix:
            sql += " AND path LIKE ?"
            params.append(path_prefix.replace("%", r"\%") + "%")
        rows = self.query(sql + " ORDER BY id", tuple(params))
        return [
            {
                "at": r["at"],
                "method": r["method"],
                "path": r["path"],
                "status": r["status"],
                "idempotencyKey": r["idempotency_key"],
                "replayed": bool(r["replayed"]),
                "correlationId": r["correlation_id"],
                "clientId": r["client_id"],
                "fault": r["fault"],
                "durationMs": r["duration_ms"],
            }
            for r in rows
        ]

    # --- idempotency ---------------------------------------------------------------------------
    def idem_claim(
        self, client_id: str, route: str, key: str, body_hash: str, ttl: float
    ) -> dict[str, Any] | None:
        """Claim a key. None when claimed now; otherwise the existing entry (a replay candidate)."""
        now = time.time()
        with self.tx() as c:
            row = c.execute(
                "SELECT * FROM idempotency WHERE client_id = ? AND route = ? AND key = ?",
                (client_id, route, key),
            ).fetchone()
            if row is not None and row["created_at"] + ttl > now:
                return dict(row)
            c.execute(
                "INSERT OR REPLACE INTO idempotency(client_id, route, key, body_hash, state, created_at) "
                "VALUES (?, ?, ?, ?, 'in_progress', ?)",
                (client_id, route, key, body_hash, now),
            )
            return None

    def idem_finish(
        self, client_id: str, route: str, key: str, *, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        with self.lock:
            self.conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, headers = ?, body = ? "
                "WHERE client_id = ? AND route = ? AND key = ?",
                (status, json.dumps(headers), body, client_id, route, key),
            )

    def idem_release(self, client_id: str, route: str, key: str) -> None:
        with self.lock:
            self.conn.execute(
                "DELETE FROM idempotency WHERE client_id = ? AND route = ? AND key = ?",
                (client_id, route, key),
            )
