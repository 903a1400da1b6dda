"""The upload slot: a pre-signed single PUT served by the sandbox, streamed to disk."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx
import pytest

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


def test_an_expired_slot_answers_as_s3_does(api: httpx.Client, sandbox: SandboxHandle) -> None:
    # Given upload URLs that expire at once
    sandbox.admin.configure(uploadUrlTtlSeconds=0)
    slot = init_job(api, "a.csv", CSV)
    # When the upload is tried
    resp = upload(slot, CSV)
    # Then the answer is S3's for an expired pre-signed URL: 403 AccessDenied "Request has expired"
    assert resp.status_code == 403
    error = ElementTree.fromstring(resp.content)
    assert error.findtext("Code") == "AccessDenied" and error.findtext("Message") == "Request has expired"
    assert error.findtext("Expires", "").endswith("Z") and error.findtext("ServerTime", "").endswith("Z")


def test_slot_headers_may_use_lower_case_names_and_are_signed(
    api: httpx.Client, sandbox: SandboxHandle
) -> None:
    # Given a store whose slot names its headers in lower case, content-type included
    sandbox.admin.configure(uploadHeaders={"content-type": "text/csv", "x-ms-blob-type": "BlockBlob"})
    slot = init_job(api, "a.csv", CSV)
    assert slot["headers"] == {"content-type": "text/csv", "x-ms-blob-type": "BlockBlob"}
    url = slot["uploadUrl"]
    blob = ("x-ms-blob-type", "BlockBlob")
    # When the PUT carries two Content-Type values, an altered one, none, or exactly the slot's
    twice = httpx.put(
        url,
        content=CSV,
        headers=[("Content-Type", "application/octet-stream"), ("content-type", "text/csv"), blob],
    )
    altered = httpx.put(url, content=CSV, headers=[("Content-Type", "text/plain"), blob])
    missing = httpx.put(url, content=CSV, headers=[blob])
    exact = httpx.put(url, content=CSV, headers=[("Content-Type", "text/csv"), blob])
    # Then a duplicated or altered signed header is 403 SignatureDoesNotMatch, a missing one 400
    for resp in (twice, altered):
        assert resp.status_code == 403
        assert ElementTree.fromstring(resp.content).findtext("Code") == "SignatureDoesNotMatch"
    assert missing.status_code == 400 and b"MissingRequiredHeader" in missing.content
    assert exact.status_code == 200
    assert sandbox.admin.upload_bytes(slot["jobId"]) == CSV


def test_two_content_types_are_refused_even_when_the_slot_asks_for_none(api: httpx.Client) -> None:
    slot = init_job(api, "a.csv", CSV)
    twice = httpx.put(
        slot["uploadUrl"], content=CSV, headers=[("Content-Type", "text/csv"), ("content-type", "text/csv")]
    )
    assert twice.status_code == 403 and b"SignatureDoesNotMatch" in twice.content


@pytest.mark.parametrize(
    ("rule", "code", "message"),
    [
        ({}, "AccessDenied", "Access Denied"),
        ({"code": "SignatureDoesNotMatch"}, "SignatureDoesNotMatch", "injected fault"),
        (
            {"code": "ExpiredToken", "message": "The provided token has expired."},
            "ExpiredToken",
            "The provided token has expired.",
        ),
    ],
)
def test_a_fault_rule_answers_the_upload_with_a_chosen_storage_code(
    api: httpx.Client, sandbox: SandboxHandle, rule: dict[str, str], code: str, message: str
) -> None:
    # Given a fault that refuses the next upload with 403 (and maybe a chosen code and message)
    sandbox.admin.add_faults(
        {"rules": [{"method": "PUT", "path": "/uploads/*", "status": 403, "times": 1, **rule}]}
    )
    slot = init_job(api, "a.csv", CSV)
    # When uploading twice
    first, second = upload(slot, CSV), upload(slot, CSV)
    # Then the first answer carries that storage code, and the next upload goes through
    error = ElementTree.fromstring(first.content)
    assert first.status_code == 403 and (error.findtext("Code"), error.findtext("Message")) == (code, message)
    assert second.status_code == 200


def test_a_fault_rule_code_goes_into_the_api_envelope(api: httpx.Client, sandbox: SandboxHandle) -> None:
    sandbox.admin.add_faults(
        {
            "rules": [
                {"path": "/public/v1/import-jobs", "status": 409, "code": "CDP_ETL.IMPORT.BUSY", "times": 1}
            ]
        }
    )
    resp = api.post("/import-jobs", json={"objectName": "contacts", "fileName": "a.csv", "fileSize": 3})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "CDP_ETL.IMPORT.BUSY"


def test_a_fault_rule_code_needs_a_status(sandbox: SandboxHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.admin.add_faults({"rules": [{"path": "/uploads/*", "latencyMs": 5, "code": "AccessDenied"}]})
