"""Import Jobs API: init with an upload slot, mapping, start, status, errors, and the processing.

The upload slot and the errors file are served by the sandbox itself, outside ``/public/v1``,
behaving like an object store's pre-signed URLs (their answers are not the API envelope).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from sandbox.core import Call, Sandbox, new_id, object_schema
from sandbox.errors import ApiError, invalid
from sandbox.records import fail_job, public_job
from sandbox.schemas import FIELD_TYPES
from sandbox.store import now_iso
from sandbox.validation import RowError, parse_source, to_field

log = logging.getLogger("sandbox.imports")
TABLE = "import_jobs"
FORMATS = {
    ".csv": ("csv", None),
    ".jsonl": ("jsonl", None),
    ".ndjson": ("jsonl", None),
    ".parquet": ("parquet", None),
    ".csv.gz": ("csv", "gzip"),
    ".jsonl.gz": ("jsonl", "gzip"),
    ".ndjson.gz": ("jsonl", "gzip"),
}
MODES = ("balanced", "strict", "landing_friendly")
METRIC_KEYS = ("readRows", "validRows", "invalidRows", "mergedInserts", "mergedUpdates", "mergedRetained")
CHUNK = 1 << 16


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "CDP_ETL.NOT_FOUND", f"import job {job_id!r} does not exist", path="job_id")


def invalid_state(doc: dict[str, Any], action: str) -> ApiError:
    return ApiError(
        409,
        "CDP_ETL.IMPORT.INVALID_STATE",
        f"cannot {action} an import job in state {doc['state']!r}",
        details={"state": doc["state"]},
        remediation="Create a new import job to change the mapping or the source.",
    )


def detect_format(file_name: str) -> tuple[str, str | None] | None:
    low = file_name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(suffix):
            return FORMATS[suffix]
    return None


def _opt_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean", name)
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name} must be a non-empty string", name)
    return value


# --- API handlers ----------------------------------------------------------------------------------


def init(call: Call) -> tuple[int, Any]:
    """POST /import-jobs."""
    sandbox, body = call.sandbox, call.json
    for name in ("objectName", "fileName", "fileSize"):
        if body.get(name) is None:
            raise invalid(f"{name} is required", name)
    obj = body["objectName"]
    if not isinstance(obj, str):
        raise invalid("objectName must be a string", "objectName")
    object_schema(sandbox, obj)
    file_name = body["fileName"]
    if not isinstance(file_name, str) or not file_name.strip():
        raise invalid("fileName must be a non-empty string", "fileName")
    fmt = detect_format(file_name)
    if fmt is None:
        raise invalid("fileName extension must be one of " + ", ".join(FORMATS), "fileName", value=file_name)
    size = body["fileSize"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise invalid("fileSize must be a positive integer (bytes)", "fileSize", value=size)
    if size > sandbox.config.maxImportFileBytes:
        raise invalid(
            f"fileSize exceeds the {sandbox.config.maxImportFileBytes} byte limit",
            "fileSize",
            limit=sandbox.config.maxImportFileBytes,
        )
    create_list = _opt_bool(body, "createList")
    list_name = _opt_str(body, "listName")
    target_list = _opt_str(body, "targetListId")
    create_aud = _opt_bool(body, "createAudience")
    aud_name = _opt_str(body, "audienceName")
    auto_profile = _opt_bool(body, "autoProfileAfterImport")
    if create_list and not list_name:
        raise invalid("listName is required when createList is true", "listName")
    if list_name and not create_list:
        raise invalid("listName is only valid with createList: true", "listName")
    if create_list and target_list:
        raise invalid("give either createList or targetListId, not both", "targetListId")
    if create_aud and not aud_name:
        raise invalid("audienceName is required when createAudience is true", "audienceName")
    if aud_name and not create_aud:
        raise invalid("audienceName is only valid with createAudience: true", "audienceName")
    job_id = new_id("imp")
    ts = now_iso()
    query, expires = sandbox.signed_query("upload", job_id, sandbox.config.uploadUrlTtlSeconds)
    root = str(call.request.base_url).rstrip("/")
    headers = dict(sandbox.config.uploadHeaders)
    doc: dict[str, Any] = {
        "jobId": job_id,
        "objectName": obj,
        "fileName": file_name,
        "fileSize": size,
        "format": fmt[0],
        "compression": fmt[1],
        "state": "pending",
        "stage": "upload",
        "createdAt": ts,
        "startedAt": None,
        "completedAt": None,
        "updatedAt": ts,
        **dict.fromkeys(METRIC_KEYS, 0),
        "rowsTotal": 0,
        "rowsImported": 0,
        "rowsRejected": 0,
        "successRate": None,
        "errorSummary": None,
        "errorMessage": None,
        "errorCode": None,
        "importMode": None,
        "templateId": None,
        "createList": create_list,
        "listName": list_name,
        "targetListId": target_list,
        "createAudience": create_aud,
        "audienceName": aud_name,
        "autoProfileAfterImport": auto_profile,
        "listId": target_list,
        "audienceId": None,
        "requestedBy": call.principal.client_id,
        "upload": {"complete": False, "bytes": 0, "sha256": None, "uploadedAt": None},
        "_uploadHeaders": headers,
    }
    sandbox.store.put_job(TABLE, doc)
    return 201, {
        "jobId": job_id,
        "uploadUrl": f"{root}/uploads/{job_id}?{query}",
        "expiresAt": _iso(expires),
        "landingPath": f"jobs/{job_id}/file",
        "method": "PUT",
        "headers": headers,
        "requestedBy": call.principal.client_id,
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _get(sandbox: Sandbox, job_id: str) -> dict[str, Any]:
    doc = sandbox.store.get_job(TABLE, job_id)
    if doc is None:
        raise not_found(job_id)
    return doc


def mapping(call: Call) -> tuple[int, Any]:
    """POST /import-jobs/{id}/mapping: validated against the schema; 422 leaves the job pending."""
    sandbox, body = call.sandbox, call.json
    job_id = call.path_params["job_id"]
    doc = _get(sandbox, job_id)
    if doc["state"] not in ("pending", "ready"):
        raise invalid_state(doc, "set the mapping of")
    schema = object_schema(sandbox, doc["objectName"])
    source_fields = body.get("sourceFields")
    field_map = body.get("fieldMap")
    mode = body.get("importMode", "balanced")
    template_id = body.get("templateId")
    if template_id is not None:
        if not isinstance(template_id, str):
            raise invalid("templateId must be a string", "templateId")
        template = sandbox.store.get_doc("templates", "template_id", template_id)
        if template is None:
            raise invalid(f"template {template_id!r} does not exist", "templateId", value=template_id)
        source_fields = source_fields if source_fields is not None else template["sourceFields"]
        field_map = field_map if field_map is not None else template["fieldMap"]
        mode = body.get("importMode", template.get("importMode", "balanced"))
    if not isinstance(source_fields, dict) or not source_fields:
        raise invalid("sourceFields must be a non-empty object of column: type", "sourceFields")
    if not isinstance(field_map, dict) or not field_map:
        raise invalid("fieldMap must be a non-empty object of source column: destination field", "fieldMap")
    for col, typ in source_fields.items():
        if typ not in FIELD_TYPES:
            raise invalid(
                f"sourceFields.{col}: type must be one of {', '.join(FIELD_TYPES)}", f"sourceFields.{col}"
            )
    if mode == "custom":
        raise invalid(
            "importMode 'custom' is reserved for workspace policy overrides", "importMode", value=mode
        )
    if mode not in MODES:
        raise invalid(f"importMode must be one of {', '.join(MODES)}", "importMode", value=mode)
    names = {f["name"] for f in schema["fields"]}
    seen: dict[str, str] = {}
    for src, dest in field_map.items():
        if src not in source_fields:
            raise invalid(f"fieldMap.{src}: source column is not declared in sourceFields", f"fieldMap.{src}")
        if not isinstance(dest, str) or dest not in names:
            raise ApiError(
                422,
                "CDP_ETL.VALIDATION.REQUEST_SCHEMA",
                f"fieldMap.{src}: destination field {dest!r} does not exist on {doc['objectName']}",
                path=f"fieldMap.{src}",
                details={"value": dest},
                remediation=f"Check GET /metadata/objects/{doc['objectName']}.",
            )
        if dest in seen:
            raise invalid(
                f"fieldMap.{src}: {dest!r} is already mapped from {seen[dest]!r}", f"fieldMap.{src}"
            )
        seen[dest] = src
    if schema["primaryKey"] not in seen:
        raise ApiError(
            422,
            "CDP_ETL.VALIDATION.REQUEST_SCHEMA",
            f"the primary key {schema['primaryKey']!r} of {doc['objectName']} must be mapped",
            path="fieldMap",
        )
    save = body.get("saveAsTemplate")
    saved_id = None
    if save is not None:
        if not isinstance(save, dict) or not isinstance(save.get("name"), str) or not save["name"].strip():
            raise invalid('saveAsTemplate must be {"name": "..."}', "saveAsTemplate.name")
        saved_id = new_id("tpl")
        sandbox.store.put_doc(
            "templates",
            "template_id",
            saved_id,
            {
                "templateId": saved_id,
                "name": save["name"],
                "objectName": doc["objectName"],
                "sourceFields": source_fields,
                "fieldMap": field_map,
                "importMode": mode,
                "createdAt": now_iso(),
            },
        )
    with sandbox.store.tx() as c:
        current = json.loads(
            c.execute("SELECT doc FROM import_jobs WHERE job_id = ?", (job_id,)).fetchone()["doc"]
        )
        if current["state"] not in ("pending", "ready"):
            raise invalid_state(current, "set the mapping of")
        current.update(
            state="ready",
            stage="mapping",
            importMode=mode,
            templateId=template_id,
            mapping={"sourceFields": source_fields, "fieldMap": field_map},
            updatedAt=now_iso(),
        )
        sandbox.store.put_job(TABLE, current, c)
    data: dict[str, Any] = {"ok": True}
    if saved_id:
        data["templateId"] = saved_id
    return 200, data


def start(call: Call) -> tuple[int, Any]:
    """POST /import-jobs/{id}/start: ready -> running, within the concurrent-jobs limit."""
    sandbox = call.sandbox
    job_id = call.path_params["job_id"]
    limit = sandbox.config.maxRunningImports
    with sandbox.store.tx() as c:
        row = c.execute("SELECT doc FROM import_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise not_found(job_id)
        doc = json.loads(row["doc"])
        if doc["state"] != "ready":
            raise invalid_state(doc, "start")
        running = c.execute("SELECT COUNT(*) AS n FROM import_jobs WHERE state = 'running'").fetchone()["n"]
        if running >= limit:
            raise capacity_refusal(sandbox, running, limit)
        ts = now_iso()
        doc.update(state="running", stage="validate", startedAt=ts, updatedAt=ts, lane="standard")
        forced = sandbox.faults.take_job_failure("import", doc["objectName"])
        if forced:
            doc["_forceFail"] = forced
        doc["_jobSeconds"] = sandbox.config.importJobSeconds
        sandbox.store.put_job(TABLE, doc, c)
        sandbox.store.timeline_event(c, doc, "started", ts)
    launch(sandbox, job_id)
    return 200, {
        "status": "started",
        "jobId": job_id,
        "lane": "standard",
        "message": "Job queued for processing",
    }


def capacity_refusal(sandbox: Sandbox, running: int, limit: int) -> ApiError:
    """The answer to a start beyond the workspace's running-jobs limit, as ``concurrencyRefusal`` says.

    The job stays ``ready`` in every case, so the same job may be started again later.
    """
    retry = sandbox.config.concurrencyRetryAfterSeconds
    details = {"limit": limit, "running": running}
    what = f"the workspace already runs {running} import jobs (limit {limit})"
    style = sandbox.config.concurrencyRefusal
    if style == "409":
        # A strict reading of docs 001: "409 CDP_ETL.* Operation not allowed in the current state".
        return ApiError(
            409,
            "CDP_ETL.IMPORT.INVALID_STATE",
            f"cannot start the import job now: {what}",
            details={**details, "state": "ready"},
            remediation="Start the job again once a running job has finished; it stays ready.",
        )
    code = "CDP_ETL.RATE.LIMITED" if style == "429-rate" else "CDP_ETL.IMPORT.CONCURRENCY_LIMIT"
    return ApiError(
        429,
        code,
        what,
        details=details,
        remediation=f"Retry the start after {retry} s; the job stays ready.",
        headers={"Retry-After": str(retry)},
    )


def status(call: Call) -> tuple[int, Any]:
    doc = _get(call.sandbox, call.path_params["job_id"])
    return 200, public_job(doc)


def errors(call: Call) -> tuple[int, Any]:
    sandbox = call.sandbox
    job_id = call.path_params["job_id"]
    doc = _get(sandbox, job_id)
    if doc["state"] not in ("completed", "failed"):
        raise invalid_state(doc, "read the errors of")
    count = int(doc.get("invalidRows") or 0)
    if count == 0 or not sandbox.errors_path(job_id).exists():
        return 200, {"hasErrors": False}
    query, expires = sandbox.signed_query("errors", job_id, sandbox.config.errorFileUrlTtlSeconds)
    root = str(call.request.base_url).rstrip("/")
    return 200, {
        "hasErrors": True,
        "errorFileUrl": f"{root}/error-files/{job_id}?{query}",
        "expiresAt": _iso(expires),
        "errorCount": count,
    }


# --- storage-style endpoints -----------------------------------------------------------------------


def storage_error(status: int, code: str, message: str, **extra: str) -> Response:
    """An S3-style XML error: the upload slot is the storage provider's, not the API's.

    ``extra`` adds elements after the message, as S3 does (``Expires``, ``ServerTime``, ...); a
    ``RequestId`` is always there.
    """
    elements = {"Code": code, "Message": message, **extra, "RequestId": secrets.token_hex(8).upper()}
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in elements.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return Response(body, status_code=status, media_type="application/xml")


def signature_mismatch() -> Response:
    """S3's answer when the request differs from what was signed (query, or a signed header)."""
    return storage_error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def _signature_problem(sandbox: Sandbox, kind: str, job_id: str, request: Request) -> Response | None:
    problem = sandbox.check_signature(kind, job_id, dict(request.query_params))
    if problem == "expired":
        # What S3 answers for an expired pre-signed URL: 403 AccessDenied "Request has expired".
        expires = int(request.query_params.get("expires", "0"))
        return storage_error(
            403, "AccessDenied", "Request has expired", Expires=_iso(expires), ServerTime=_iso(time.time())
        )
    if problem:
        return signature_mismatch()
    return None


def _header_problem(required: dict[str, str], request: Request) -> Response | None:
    """The slot's ``headers`` are signed: one missing is 400, one altered or sent twice is 403.

    Content-Type is always signed (as S3 pre-signs it), so two Content-Type values are refused too.
    """
    for name, value in required.items():
        sent = request.headers.getlist(name)
        if not sent:
            return storage_error(400, "MissingRequiredHeader", f"Header {name}: {value} is required")
        if len(sent) > 1 or sent[0] != value:
            return signature_mismatch()
    if len(request.headers.getlist("content-type")) > 1:
        return signature_mismatch()
    return None


async def upload(request: Request) -> Response:
    """PUT /uploads/{job_id}?expires=..&signature=..: a pre-signed single PUT, streamed to disk."""
    sandbox: Sandbox = request.app.state.sandbox
    job_id = request.path_params["job_id"]
    denied = _signature_problem(sandbox, "upload", job_id, request)
    if denied:
        return denied
    doc = await run_in_threadpool(sandbox.store.get_job, TABLE, job_id)
    if doc is None:
        return storage_error(404, "NoSuchUpload", "The upload slot does not exist")
    refused = _header_problem(doc.get("_uploadHeaders", {}), request)
    if refused:
        return refused
    if doc["state"] not in ("pending", "ready"):
        return storage_error(
            409, "InvalidObjectState", f"The import job is {doc['state']}; the slot is closed"
        )
    if "transfer-encoding" in request.headers:
        return storage_error(
            411, "MissingContentLength", "Chunked transfer encoding is not supported; send Content-Length"
        )
    declared = request.headers.get("content-length")
    if declared is None:
        return storage_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header")
    if not declared.isdigit():
        return storage_error(400, "InvalidArgument", "Content-Length is not a number")
    length = int(declared)
    if length > sandbox.config.singlePutLimitBytes:
        return storage_error(
            400,
            "EntityTooLarge",
            f"Your proposed upload exceeds the maximum allowed size ({sandbox.config.singlePutLimitBytes})",
        )
    if length != doc["fileSize"]:
        return storage_error(
            400,
            "InvalidContentLength",
            f"Content-Length {length} does not match the declared fileSize {doc['fileSize']}",
        )
    target = sandbox.upload_path(job_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"file.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.part")
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with part.open("wb") as fh:
            async for chunk in request.stream():
                received += len(chunk)
                if received > length:
                    break
                fh.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
    except ClientDisconnect:
        part.unlink(missing_ok=True)
        return Response(status_code=400)
    if received != length:
        part.unlink(missing_ok=True)
        return storage_error(400, "IncompleteBody", "The body does not match Content-Length")
    info = {
        "complete": True,
        "bytes": received,
        "sha256": sha.hexdigest(),
        "uploadedAt": now_iso(),
        "contentTypes": request.headers.getlist("content-type"),  # as received: tests count them
    }

    def record() -> str | None:
        # State check and rename in one transaction: a slow PUT that ends after the job started must
        # not replace the file the job is reading.
        with sandbox.store.tx() as c:
            row = c.execute("SELECT doc FROM import_jobs WHERE job_id = ?", (job_id,)).fetchone()
            current = json.loads(row["doc"]) if row is not None else None
            if current is None or current["state"] not in ("pending", "ready"):
                part.unlink(missing_ok=True)
                return current["state"] if current else "gone"
            os.replace(part, target)  # the last complete upload wins
            current["upload"] = info
            sandbox.store.put_job(TABLE, current, c)
            return None

    closed = await run_in_threadpool(record)
    if closed:
        return storage_error(409, "InvalidObjectState", f"The import job is {closed}; the slot is closed")
    return Response(b"", status_code=200, headers={"ETag": f'"{md5.hexdigest()}"'})


async def error_file(request: Request) -> Response:
    """GET /error-files/{job_id}?expires=..&signature=..: the JSONL errors file."""
    sandbox: Sandbox = request.app.state.sandbox
    job_id = request.path_params["job_id"]
    denied = _signature_problem(sandbox, "errors", job_id, request)
    if denied:
        return denied
    path = sandbox.errors_path(job_id)
    if not path.exists():
        return storage_error(404, "NoSuchKey", "The errors file does not exist")
    return FileResponse(path, media_type="application/x-ndjson", filename=f"{job_id}.errors.jsonl")


# --- processing ------------------------------------------------------------------------------------


class SourceUnreadable(Exception):
    """The uploaded file cannot be read as its declared format."""


def launch(sandbox: Sandbox, job_id: str) -> None:
    generation = sandbox.generation
    thread = threading.Thread(
        target=_process_guarded,
        args=(sandbox, job_id, generation),
        name=f"sandbox-import-{job_id}",
        daemon=True,
    )
    sandbox.import_threads[job_id] = thread
    thread.start()


def _process_guarded(sandbox: Sandbox, job_id: str, generation: int) -> None:
    try:
        process(sandbox, job_id, generation)
    except Exception:
        log.exception("import job %s crashed", job_id)
        if sandbox.alive(generation):
            fail_job(
                sandbox, TABLE, job_id, "CDP_ETL.INTERNAL_ERROR: processing crashed", "CDP_ETL.INTERNAL_ERROR"
            )
    finally:
        sandbox.import_threads.pop(job_id, None)


def _text(path: Path, compression: str | None) -> io.TextIOWrapper:
    raw: Any = gzip.open(path, "rb") if compression == "gzip" else path.open("rb")  # noqa: SIM115 (closed by the wrapper)
    # utf-8-sig drops an optional BOM; strict errors make bad bytes an unreadable source.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")


def iter_rows(path: Path, fmt: str, compression: str | None) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Yield (row, extra keys) in file order. Unreadable content raises SourceUnreadable."""
    try:
        if fmt == "csv":
            with _text(path, compression) as fh:
                reader = csv.reader(fh, strict=True)
                header = next(reader, None)
                if not header or not any(h.strip() for h in header):
                    raise SourceUnreadable("the CSV file has no header row")
                for cells in reader:
                    if not cells or (len(cells) == 1 and cells[0] == ""):
                        continue  # blank line
                    row = dict(zip(header, cells, strict=False))
                    extra = [f"_column{i + 1}" for i in range(len(header), len(cells))]
                    for name, value in zip(extra, cells[len(header) :], strict=True):
                        row[name] = value
                    yield row, extra
        elif fmt == "jsonl":
            with _text(path, compression) as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        value = json.loads(line)
                    except ValueError:
                        value = None
                    if not isinstance(value, dict):
                        yield {"_raw": line.rstrip("\r\n")}, ["_raw"]
                        continue
                    yield value, []
        elif fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:  # the optional extra is not installed
                raise SourceUnreadable("Parquet needs the optional 'parquet' extra (pyarrow)") from exc
            try:
                pf = pq.ParquetFile(path)
                for batch in pf.iter_batches(batch_size=2048):
                    for row in batch.to_pylist():
                        yield row, []
            except (OSError, ValueError) as exc:
                raise SourceUnreadable(f"not a readable Parquet file: {exc}") from exc
    except (
        UnicodeDecodeError,
        gzip.BadGzipFile,
        EOFError,
        csv.Error,
        OSError,
    ) as exc:
        raise SourceUnreadable(f"cannot read the {fmt} file: {type(exc).__name__}: {exc}") from exc


def convert_row(
    row: dict[str, Any], extra: list[str], mapping: dict[str, Any], schema: dict[str, Any], mode: str
) -> dict[str, Any]:
    """One source row -> one record, or RowError (the first problem found)."""
    if "_raw" in row and extra == ["_raw"]:
        raise RowError("VALIDATION_TYPE_MISMATCH", "line is not a JSON object")
    source_fields: dict[str, str] = mapping["sourceFields"]
    fields = {f["name"]: f for f in schema["fields"]}
    if mode == "strict":
        unknown = [k for k in row if k not in source_fields]
        if unknown:
            raise RowError("UNKNOWN_FIELD", f"{unknown[0]}: column is not declared in sourceFields")
    record: dict[str, Any] = {}
    for src, dest in mapping["fieldMap"].items():
        field = fields[dest]
        raw = row.get(src)
        if raw is None or (isinstance(raw, str) and raw == ""):
            if field["required"] and (mode != "landing_friendly" or field["primaryKey"]):
                raise RowError("REQUIRED_FIELD_MISSING", f"{src}: required field {dest} is missing")
            if mode == "strict":
                raise RowError("REQUIRED_FIELD_MISSING", f"{src}: value is missing")
            if mode == "landing_friendly":
                record[dest] = None
            continue
        try:
            value = parse_source(raw, source_fields[src], mode)
            if value is not None:
                value = to_field(value, source_fields[src], field, mode)
        except RowError as err:
            raise RowError(err.code, f"{src}: {err.message}") from None
        if value is None and field["primaryKey"]:
            raise RowError("VALIDATION_TYPE_MISMATCH", f"{src}: key value cannot be read as {field['type']}")
        record[dest] = value
    return record


def _update(sandbox: Sandbox, job_id: str, generation: int, **changes: Any) -> bool:
    """Write progress if the job is still running and nothing reset it."""
    with sandbox.store.tx() as c:
        row = c.execute("SELECT doc FROM import_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or not sandbox.alive(generation):
            return False
        doc = json.loads(row["doc"])
        if doc["state"] != "running":
            return False
        doc.update(changes, updatedAt=now_iso())
        sandbox.store.put_job(TABLE, doc, c)
        return True


def process(sandbox: Sandbox, job_id: str, generation: int) -> None:
    doc = sandbox.store.get_job(TABLE, job_id)
    if doc is None or doc["state"] != "running":
        return
    began = time.monotonic()
    budget = float(doc.get("_jobSeconds") or 0.0)
    if doc.get("_forceFail"):
        if sandbox.sleep(budget, generation):
            fail_job(sandbox, TABLE, job_id, doc["_forceFail"], "CDP_ETL.IMPORT.PROCESSING_FAILED")
        return
    path = sandbox.upload_path(job_id)
    if not doc["upload"]["complete"] or not path.exists():
        fail_job(
            sandbox,
            TABLE,
            job_id,
            "CDP_ETL.IMPORT.SOURCE_MISSING: no complete upload was received for this job",
            "CDP_ETL.IMPORT.SOURCE_MISSING",
        )
        return
    schema = sandbox.store.get_object(doc["objectName"])
    if schema is None:
        fail_job(
            sandbox,
            TABLE,
            job_id,
            "CDP_ETL.IMPORT.OBJECT_MISSING: the object was removed",
            "CDP_ETL.IMPORT.OBJECT_MISSING",
        )
        return
    mapping, mode = doc["mapping"], doc["importMode"] or "balanced"
    total = 0
    if budget > 0:  # a first pass counts rows so progress can be paced over the job's duration
        try:
            total = sum(1 for _ in iter_rows(path, doc["format"], doc["compression"]))
        except SourceUnreadable as exc:
            _fail_unreadable(sandbox, job_id, exc)
            return
    job_dir = sandbox.data_dir / "uploads" / job_id
    staging = job_dir / "valid.jsonl"
    errors_path = sandbox.errors_path(job_id)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    counts = Counter[str]()
    summary = Counter[str]()
    step = max(1, total // 20) if total else 1000
    try:
        with staging.open("w", encoding="utf-8") as good, errors_path.open("w", encoding="utf-8") as bad:
            for number, (row, extra) in enumerate(
                iter_rows(path, doc["format"], doc["compression"]), start=1
            ):
                counts["readRows"] += 1
                try:
                    record = convert_row(row, extra, mapping, schema, mode)
                except RowError as err:
                    counts["invalidRows"] += 1
                    summary[err.code] += 1
                    line = {"rowNumber": number, "sourceRow": row, "error": err.message, "code": err.code}
                    bad.write(json.dumps(line, default=str) + "\n")
                else:
                    counts["validRows"] += 1
                    good.write(json.dumps(record) + "\n")
                if number % step == 0:
                    if not _update(
                        sandbox, job_id, generation, **dict(counts), errorSummary=dict(summary) or None
                    ):
                        return
                    if total and not sandbox.sleep(
                        budget * 0.8 * number / total - (time.monotonic() - began), generation
                    ):
                        return
    except SourceUnreadable as exc:
        staging.unlink(missing_ok=True)
        errors_path.unlink(missing_ok=True)
        _fail_unreadable(sandbox, job_id, exc)
        return
    if not _update(
        sandbox, job_id, generation, stage="merge", **dict(counts), errorSummary=dict(summary) or None
    ):
        return
    if not sandbox.sleep(budget - (time.monotonic() - began), generation):
        return
    _merge(
        sandbox,
        job_id=job_id,
        generation=generation,
        doc=doc,
        schema=schema,
        staging=staging,
        counts=counts,
        summary=summary,
        mode=mode,
    )


def _fail_unreadable(sandbox: Sandbox, job_id: str, exc: Exception) -> None:
    fail_job(
        sandbox, TABLE, job_id, f"CDP_ETL.IMPORT.SOURCE_UNREADABLE: {exc}", "CDP_ETL.IMPORT.SOURCE_UNREADABLE"
    )


def _merge(
    sandbox: Sandbox,
    *,
    job_id: str,
    generation: int,
    doc: dict[str, Any],
    schema: dict[str, Any],
    staging: Path,
    counts: Counter[str],
    summary: Counter[str],
    mode: str,
) -> None:
    obj, pk = doc["objectName"], schema["primaryKey"]
    record_ids: list[int] = []
    outcomes = {"insert": "mergedInserts", "update": "mergedUpdates", "retain": "mergedRetained"}
    # One transaction: a failed or reset job writes no rows, as the guide says of failed jobs.
    with sandbox.store.tx() as c:
        row = c.execute("SELECT doc FROM import_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or json.loads(row["doc"])["state"] != "running" or not sandbox.alive(generation):
            return
        current = json.loads(row["doc"])
        with staging.open(encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                outcome, rid = sandbox.store.merge(
                    c,
                    obj,
                    pk,
                    record,
                    match_key=pk,
                    source=f"import:{job_id}",
                    overwrite_nulls=mode == "landing_friendly",
                )
                counts[outcomes[outcome]] += 1
                record_ids.append(rid)
        ts = now_iso()
        if current["createList"] or current["targetListId"]:
            list_id = current["targetListId"] or new_id("lst")
            existing = c.execute("SELECT doc FROM lists WHERE list_id = ?", (list_id,)).fetchone()
            list_doc = (
                json.loads(existing["doc"])
                if existing
                else {
                    "listId": list_id,
                    "name": current["listName"],
                    "objectName": obj,
                    "createdAt": ts,
                    "createdByImport": job_id if current["createList"] else None,
                }
            )
            list_doc.setdefault("importJobIds", []).append(job_id)
            c.execute(
                "INSERT OR REPLACE INTO lists(list_id, doc) VALUES (?, ?)", (list_id, json.dumps(list_doc))
            )
            c.executemany(
                "INSERT INTO list_members(list_id, record_id) VALUES (?, ?)",
                [(list_id, r) for r in sorted(set(record_ids))],
            )
            current["listId"] = list_id
        if current["createAudience"]:
            aud_id = new_id("aud")
            aud_doc = {
                "audienceId": aud_id,
                "name": current["audienceName"],
                "objectName": obj,
                "rule": {"importJobId": job_id},
                "size": len(set(record_ids)),
                "createdAt": ts,
            }
            c.execute("INSERT INTO audiences(audience_id, doc) VALUES (?, ?)", (aud_id, json.dumps(aud_doc)))
            current["audienceId"] = aud_id
        read = counts["readRows"]
        current.update(
            {k: counts[k] for k in METRIC_KEYS},
            state="completed",
            stage="merge",
            completedAt=ts,
            updatedAt=ts,
            rowsTotal=read,
            rowsImported=counts["validRows"],
            rowsRejected=counts["invalidRows"],
            successRate=round(counts["validRows"] / read, 4) if read else 1.0,
            errorSummary=dict(summary) or None,
        )
        sandbox.store.put_job(TABLE, current, c)
        sandbox.store.timeline_event(c, current, "finished", ts)
    staging.unlink(missing_ok=True)
