"""The upload slot: a pre-signed single PUT served by the sandbox, streamed to disk."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from sandbox.testing import SandboxHandle

from .helpers import init_job, upload

CSV = b"email_address,FirstName\na@example.com,Ann\n"


def test_upload_streams_the_exact_bytes_to_disk(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given an init for a 3 MB file
    content = bytes(range(256)) * (3 * 4096)
    slot = init_job(api, "big.csv", content)
    assert slot["method"] == "PUT" and slot["headers"] == {}
    assert slot["landingPath"] == f"jobs/{slot['jobId']}/file"
    assert slot["uploadUrl"].startswith(sandbox.root_url + "/uploads/")
    assert "signature=" in slot["uploadUrl"] and slot["expiresAt"].endswith("Z")
    # When uploading it
    resp = upload(slot, content)
    # Then the bytes on disk and their sha256 match
    assert resp.status_code == 200 and resp.headers["etag"]
    info = sandbox.admin.upload_info(slot["jobId"])
    assert info["complete"] is True and info["bytes"] == len(content)
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert sandbox.admin.upload_bytes(slot["jobId"]) == content
    assert "signature" not in str(sandbox.admin.requests(method="PUT"))  # query strings never logged


def test_chunked_upload_is_411(api: httpx.Client, sandbox: SandboxHandle) -> None:
    slot = init_job(api, "a.csv", CSV)

    def chunks() -> Iterator[bytes]:
        yield CSV[:10]
        yield CSV[10:]

    resp = httpx.put(slot["uploadUrl"], content=chunks())
    assert resp.status_code == 411
    assert b"MissingContentLength" in resp.content
    assert sandbox.admin.upload_info(slot["jobId"])["complete"] is False


def test_upload_without_content_length_is_411(api: httpx.Client) -> None:
    slot = init_job(api, "a.csv", CSV)
    url = urlsplit(slot["uploadUrl"])
    conn = http.client.HTTPConnection(url.hostname or "", url.port)
    conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_body_shorter_than_declared_is_refused(api: httpx.Client, sandbox: SandboxHandle) -> None:
    slot = init_job(api, "a.csv", CSV)
    resp = upload(slot, CSV[:-5])
    assert resp.status_code == 400
    assert b"InvalidContentLength" in resp.content
    assert sandbox.admin.upload_info(slot["jobId"])["complete"] is False


def test_expired_upload_url_is_403(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given upload URLs that expire at once
    sandbox.admin.configure(uploadUrlTtlSeconds=0)
    slot = init_job(api, "a.csv", CSV)
    resp = upload(slot, CSV)
    assert resp.status_code == 403
    assert b"expired" in resp.content


def test_tampered_upload_url_is_403(api: httpx.Client) -> None:
    slot = init_job(api, "a.csv", CSV)
    other = init_job(api, "b.csv", CSV)
    forged = slot["uploadUrl"].replace(slot["jobId"], other["jobId"])
    later = slot["uploadUrl"].replace("expires=", "expires=9")
    assert httpx.put(forged, content=CSV).status_code == 403
    assert httpx.put(later, content=CSV).status_code == 403
    assert httpx.put(slot["uploadUrl"].split("?")[0], content=CSV).status_code == 403


def test_single_put_limit(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(singlePutLimitBytes=10)
    slot = init_job(api, "a.csv", CSV)
    resp = upload(slot, CSV)
    assert resp.status_code == 400 and b"EntityTooLarge" in resp.content
    assert sandbox.admin.config()["singlePutLimitBytes"] == 10


def test_default_single_put_limit_is_5_gib(sandbox: SandboxHandle) -> None:
    assert sandbox.admin.config()["singlePutLimitBytes"] == 5 * 1024**3


def test_required_extra_header_is_returned_and_enforced(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given an Azure-like store that wants x-ms-blob-type
    sandbox.admin.configure(uploadHeaders={"x-ms-blob-type": "BlockBlob"})
    slot = init_job(api, "a.csv", CSV)
    assert slot["headers"] == {"x-ms-blob-type": "BlockBlob"}
    # When a client forgets to merge the headers, then remembers
    forgot = httpx.put(slot["uploadUrl"], content=CSV)
    merged = upload(slot, CSV)
    assert forgot.status_code == 400 and b"MissingRequiredHeader" in forgot.content
    assert merged.status_code == 200


def test_reupload_while_pending_last_wins_and_slot_closes_after_start(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    other = CSV.replace(b"Ann", b"Bob")
    slot = init_job(api, "a.csv", CSV)
    assert upload(slot, CSV).status_code == 200
    assert upload(slot, other).status_code == 200
    assert sandbox.admin.upload_bytes(slot["jobId"]) == other
    api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": {"email_address": "string"}, "fieldMap": {"email_address": "email"}},
    )
    api.post(f"/import-jobs/{slot['jobId']}/start")
    sandbox.admin.wait_job(slot["jobId"])
    assert upload(slot, CSV).status_code == 409


def test_a_slow_put_that_ends_after_start_does_not_replace_the_jobs_file(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a job with a complete upload, and a second PUT of other bytes that is still sending
    sandbox.admin.configure(importJobSeconds=5)
    other = CSV.replace(b"Ann", b"Bob")
    slot = init_job(api, "a.csv", CSV)
    assert upload(slot, CSV).status_code == 200
    url = urlsplit(slot["uploadUrl"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    conn.putheader("Content-Length", str(len(other)))
    conn.endheaders()
    conn.send(other[:10])
    # When the job is mapped and started meanwhile, and the slow PUT then completes
    api.post(
        f"/import-jobs/{slot['jobId']}/mapping",
        json={"sourceFields": {"email_address": "string"}, "fieldMap": {"email_address": "email"}},
    )
    assert api.post(f"/import-jobs/{slot['jobId']}/start").status_code == 200
    conn.send(other[10:])
    late = conn.getresponse()
    # Then the late PUT is refused and the running job keeps the file it started with
    assert late.status == 409
    assert sandbox.admin.upload_bytes(slot["jobId"]) == CSV
    conn.close()
