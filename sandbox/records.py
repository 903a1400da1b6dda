"""Records API: single and batch append/upsert, and the batch job worker."""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import Counter
from typing import Any

from sandbox.core import Call, Sandbox, new_id, object_schema
from sandbox.errors import ApiError, invalid
from sandbox.store import now_iso
from sandbox.validation import RowError, check_json_value, validate_json_record

MAX_BATCH = 10_000
MAX_FIELDS = 500
log = logging.getLogger("sandbox.records")


def _check_shape(record: Any, path: str, schema: dict[str, Any]) -> None:
    if not isinstance(record, dict):
        raise invalid("record must be a JSON object", path)
    if not record:
        raise invalid("record must contain at least one property", path)
    if len(record) > MAX_FIELDS:
        raise invalid(f"record has {len(record)} properties; at most {MAX_FIELDS}", path, limit=MAX_FIELDS)
    names = {f["name"] for f in schema["fields"]}
    for key in record:
        if key not in names:
            raise ApiError(
                422,
                "CDP_ETL.VALIDATION.SCHEMA_MISMATCH",
                f"{path}.{key}: field is not in the {schema['objectName']} schema",
                path=f"{path}.{key}",
                details={"value": key},
                remediation=f"Check GET /metadata/objects/{schema['objectName']}.",
            )


def _match_key(body: dict[str, Any], schema: dict[str, Any]) -> str:
    key = body.get("matchKey")
    if key is None:
        return str(schema["primaryKey"])
    if not isinstance(key, str) or not key:
        raise invalid("matchKey must be a field name", "matchKey")
    if key not in {f["name"] for f in schema["fields"]}:
        raise ApiError(
            422,
            "CDP_ETL.VALIDATION.SCHEMA_MISMATCH",
            f"matchKey {key!r} is not a field of {schema['objectName']}",
            path="matchKey",
            details={"value": key},
        )
    return key


def single(call: Call) -> tuple[int, Any]:
    """POST /records/{object}/append | /upsert: one record, checked and written synchronously."""
    sandbox = call.sandbox
    obj, op = call.path_params["object_name"], call.path_params["op"]
    schema = object_schema(sandbox, obj)
    body = call.json
    if "record" not in body:
        raise invalid("record is required", "record")
    record = body["record"]
    _check_shape(record, "record", schema)
    match_key = _match_key(body, schema) if op == "upsert" else None
    fields = {f["name"]: f for f in schema["fields"]}
    for name, value in record.items():
        if value is None:
            if fields[name]["required"]:
                raise invalid(f"record.{name}: required field is null", f"record.{name}", value=None)
            continue
        try:
            check_json_value(fields[name], value)
        except RowError as err:
            raise invalid(f"record.{name}: {err.message}", f"record.{name}", value=value) from None
    if match_key is not None and record.get(match_key) is None:
        raise invalid(f"record.{match_key}: match key is missing", f"record.{match_key}")

    def require_all(rec: dict[str, Any]) -> None:
        for f in schema["fields"]:
            if f["required"] and rec.get(f["name"]) is None:
                raise invalid(f"record.{f['name']}: required field is missing", f"record.{f['name']}")

    with sandbox.store.tx() as c:
        if match_key is None or sandbox.store.find_record(obj, match_key, record[match_key]) is None:
            require_all(record)
        sandbox.store.merge(c, obj, schema["primaryKey"], record, match_key=match_key, source=f"records.{op}")
    data: dict[str, Any] = {
        "operation": op,
        "objectName": obj,
        "accepted": True,
        "acceptedAt": now_iso(),
        "acceptedRecords": 1,
    }
    if op == "upsert":
        data["matchKey"] = match_key
    return 200, data


def batch(call: Call) -> tuple[int, Any]:
    """POST /records/{object}/append-batch | /upsert-batch: shape checks now, row values in the job."""
    sandbox = call.sandbox
    obj, op = call.path_params["object_name"], call.path_params["op"]
    schema = object_schema(sandbox, obj)
    body = call.json
    records = body.get("records")
    if not isinstance(records, list):
        raise invalid("records must be an array of objects", "records")
    if not 1 <= len(records) <= MAX_BATCH:
        raise invalid(
            f"records must hold 1 to {MAX_BATCH} records, got {len(records)}", "records", limit=MAX_BATCH
        )
    for i, record in enumerate(records):
        _check_shape(record, f"records[{i}]", schema)
    match_key = _match_key(body, schema) if op == "upsert-batch" else None
    job_id = new_id("job")
    ts = now_iso()
    doc: dict[str, Any] = {
        "jobId": job_id,
        "objectName": obj,
        "operation": op,
        "matchKey": match_key,
        "state": "queued",
        "stage": "queued",
        "fileName": f"batch_{job_id}.jsonl",
        "fileSize": len(call.body),
        "createdAt": ts,
        "startedAt": None,
        "completedAt": None,
        "metrics": dict.fromkeys(
            ("readRows", "validRows", "invalidRows", "mergedInserts", "mergedUpdates", "mergedRetained"), 0
        ),
        "rowsTotal": len(records),
        "rowsImported": 0,
        "rowsRejected": 0,
        "successRate": None,
        "updatedAt": ts,
        "errorMessage": None,
        "errorSummary": None,
        "_createdMonotonic": time.time(),
    }
    forced = sandbox.faults.take_job_failure("batch", obj)
    if forced:
        doc["_forceFail"] = forced
    with sandbox.store.tx() as c:
        sandbox.store.put_job("batch_jobs", doc, c)
        c.execute("INSERT INTO batch_payloads(job_id, records) VALUES (?, ?)", (job_id, json.dumps(records)))
    sandbox.batch_queue.put(job_id)
    return 202, {
        "operation": op,
        "objectName": obj,
        "jobId": job_id,
        "state": "queued",
        "acceptedRecords": len(records),
        "statusPath": f"/public/v1/records/{obj}/jobs/{job_id}",
        "matchKey": match_key,
    }


def public_job(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def job_status(call: Call) -> tuple[int, Any]:
    obj, job_id = call.path_params["object_name"], call.path_params["job_id"]
    object_schema(call.sandbox, obj)
    doc = call.sandbox.store.get_job("batch_jobs", job_id)
    if doc is None or doc["objectName"] != obj:
        raise ApiError(404, "CDP_ETL.NOT_FOUND", f"job {job_id!r} does not exist for {obj}", path="job_id")
    return 200, public_job(doc)


# --- the worker ------------------------------------------------------------------------------------


def batch_worker(sandbox: Sandbox) -> None:
    while not sandbox.stopping.is_set():
        try:
            job_id = sandbox.batch_queue.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            run_batch_job(sandbox, job_id, sandbox.generation)
        except Exception:
            log.exception("batch job %s crashed", job_id)
            fail_job(sandbox, "batch_jobs", job_id, "internal error while processing the batch")


def fail_job(sandbox: Sandbox, table: str, job_id: str, message: str, code: str | None = None) -> bool:
    """Move a non-terminal job to failed. False when it is already terminal or gone."""
    with sandbox.store.tx() as c:
        row = c.execute(f"SELECT doc FROM {table} WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return False
        doc = json.loads(row["doc"])
        if doc["state"] in ("completed", "failed"):
            return False
        ts = now_iso()
        was_running = doc["state"] == "running"
        doc.update(state="failed", updatedAt=ts, completedAt=ts, errorMessage=message)
        if code:
            doc["errorCode"] = code
        if doc.get("startedAt") is None:
            doc["startedAt"] = ts
        sandbox.store.put_job(table, doc, c)
        if table == "import_jobs" and was_running:
            sandbox.store.timeline_event(c, doc, "finished", ts)
    return True


def _update(sandbox: Sandbox, job_id: str, expect: str, **changes: Any) -> dict[str, Any] | None:
    """Apply changes if the job is still in state ``expect`` (admin may have failed it)."""
    with sandbox.store.tx() as c:
        row = c.execute("SELECT doc FROM batch_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        doc = json.loads(row["doc"])
        if doc["state"] != expect:
            return None
        doc.update(changes, updatedAt=now_iso())
        sandbox.store.put_job("batch_jobs", doc, c)
        return dict(doc)


def run_batch_job(sandbox: Sandbox, job_id: str, generation: int) -> None:
    doc = sandbox.store.get_job("batch_jobs", job_id)
    if doc is None:
        return
    cfg = sandbox.config
    if doc["state"] == "queued":
        wait = doc["_createdMonotonic"] + cfg.queueSeconds - time.time()
        if wait > 0 and not sandbox.sleep(wait, generation):
            return
        started = time.time()
        if _update(sandbox, job_id, "queued", state="running", stage="validate", startedAt=now_iso()) is None:
            return
    else:
        started = time.time()
    if not sandbox.sleep(max(0.0, cfg.batchJobSeconds - (time.time() - started)), generation):
        return
    doc = sandbox.store.get_job("batch_jobs", job_id)
    if doc is None or doc["state"] != "running":
        return
    if doc.get("_forceFail"):
        fail_job(sandbox, "batch_jobs", job_id, doc["_forceFail"])
        return
    schema = sandbox.store.get_object(doc["objectName"])
    rows = sandbox.store.query("SELECT records FROM batch_payloads WHERE job_id = ?", (job_id,))
    if schema is None or not rows:
        fail_job(sandbox, "batch_jobs", job_id, "object or payload no longer exists")
        return
    records: list[dict[str, Any]] = json.loads(rows[0]["records"])
    match_key = doc["matchKey"]
    metrics = Counter[str]()
    summary = Counter[str]()
    errors: list[dict[str, Any]] = []
    with sandbox.store.tx() as c:
        # Merge under one transaction and re-check the state inside it: a reset or an admin
        # "fail" must win over a half-written batch.
        current = c.execute("SELECT state FROM batch_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if current is None or current["state"] != "running" or not sandbox.alive(generation):
            return
        for i, record in enumerate(records):
            metrics["readRows"] += 1
            is_insert = match_key is None or _no_match(c, doc["objectName"], schema, match_key, record)
            problem = validate_json_record(schema, record, match_key=match_key, is_insert=is_insert)
            if problem is not None:
                field, err = problem
                metrics["invalidRows"] += 1
                summary[err.code] += 1
                if len(errors) < 100:
                    errors.append(
                        {"index": i, "path": f"records[{i}].{field}", "code": err.code, "error": err.message}
                    )
                continue
            metrics["validRows"] += 1
            outcome, _ = sandbox.store.merge(
                c,
                doc["objectName"],
                schema["primaryKey"],
                record,
                match_key=match_key,
                source=f"job:{job_id}",
            )
            metrics[
                {"insert": "mergedInserts", "update": "mergedUpdates", "retain": "mergedRetained"}[outcome]
            ] += 1
        ts = now_iso()
        doc.update(
            state="completed",
            stage="merge",
            completedAt=ts,
            updatedAt=ts,
            metrics={k: metrics[k] for k in doc["metrics"]},
            rowsImported=metrics["validRows"],
            rowsRejected=metrics["invalidRows"],
            successRate=round(metrics["validRows"] / metrics["readRows"], 4) if metrics["readRows"] else 1.0,
            errorSummary=dict(summary) or None,
        )
        if errors:
            doc["errors"] = errors  # additive: the first rejected rows, so a caller can see why
        sandbox.store.put_job("batch_jobs", doc, c)
        c.execute("DELETE FROM batch_payloads WHERE job_id = ?", (job_id,))


def _no_match(c: Any, obj: str, schema: dict[str, Any], match_key: str, record: dict[str, Any]) -> bool:
    from sandbox.store import pk_value

    value = record.get(match_key)
    if value is None or isinstance(value, dict | list):
        return True
    if match_key == schema["primaryKey"]:
        row = c.execute(
            "SELECT 1 FROM records WHERE object = ? AND pk = ? LIMIT 1", (obj, pk_value(value))
        ).fetchone()
    else:
        row = c.execute(
            "SELECT 1 FROM records WHERE object = ? AND json_extract(data, ?) = ? LIMIT 1",
            (obj, f'$."{match_key}"', value),
        ).fetchone()
    return row is None
