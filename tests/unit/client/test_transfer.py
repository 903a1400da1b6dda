"""Uploads to a pre-signed slot and downloads of an errors file: streamed, exact, retried from byte 0."""

from __future__ import annotations

import io
import tracemalloc

import httpx
import pytest

from experiture_ingest import client as api
from tests.unit.client.scripted import Script

SLOT = api.UploadSlot(
    job_id="imp_1",
    upload_url="https://upload.example.test/jobs/imp_1/file?X-Amz-Signature=SIG-999",
    method="PUT",
    headers={"x-ms-blob-type": "BlockBlob"},
)


class Pattern(io.RawIOBase):
    """A readable stream of ``size`` bytes that never exists in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


class StreamingStorage(httpx.BaseTransport):
    """Consumes the request body chunk by chunk, as a server would (MockTransport reads it whole)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.received = 0
        self.largest_chunk = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = dict(request.headers)
        for chunk in request.stream:  # type: ignore[union-attr]
            self.received += len(chunk)
            self.largest_chunk = max(self.largest_chunk, len(chunk))
        return httpx.Response(200)


def test_60mb_upload_streams_with_exact_length_and_flat_memory(clock):
    # Given a slot that demands an extra header, and a 60 MB body
    size = 60 * 1024 * 1024
    storage = StreamingStorage()
    client = api.ExperitureClient(
        "https://api.example.test/public/v1", api.BearerToken("tok"), transport=storage
    )
    # When it is uploaded
    tracemalloc.start()
    result = client.upload(SLOT, lambda: io.BufferedReader(Pattern(size)), size, content_type="text/csv")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then every byte went, with an exact Content-Length, no chunked encoding, the slot's headers merged
    assert storage.received == size == result.bytes_sent
    assert storage.headers["content-length"] == str(size)
    assert "transfer-encoding" not in storage.headers
    assert storage.headers["x-ms-blob-type"] == "BlockBlob"
    assert storage.headers["content-type"] == "text/csv"
    assert "authorization" not in storage.headers
    assert storage.largest_chunk <= 1024 * 1024
    # and memory stayed flat: a few chunks, never the body
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_failed_upload_restarts_from_byte_zero(make_client):
    data = b"email\na@example.com\n"
    bodies = []

    def broken(request: httpx.Request) -> httpx.Response:
        bodies.append(b"".join(request.stream))
        raise httpx.RemoteProtocolError("server disconnected")

    def ok(request: httpx.Request) -> httpx.Response:
        bodies.append(b"".join(request.stream))
        return httpx.Response(200)

    opened = []
    result = make_client(Script(broken, httpx.Response(503), ok)).upload(
        SLOT, lambda: opened.append(1) or io.BytesIO(data), len(data)
    )
    assert result.attempts == 3 and len(opened) == 3
    assert bodies == [data, data]  # the 503 answer was scripted without reading


def test_expired_slot_is_its_own_error_without_the_signature(make_client):
    with pytest.raises(api.UploadSlotExpiredError) as caught:
        make_client(Script(httpx.Response(403, text="<Error>Request has expired</Error>"))).upload(
            SLOT, lambda: io.BytesIO(b"abc"), 3
        )
    assert "SIG-999" not in str(caught.value) and "X-Amz-Signature" not in str(caught.value)
    assert "https://upload.example.test/jobs/imp_1/file" in str(caught.value)


def test_short_source_is_refused_not_truncated(make_client):
    def storage(request: httpx.Request) -> httpx.Response:
        b"".join(request.stream)
        return httpx.Response(200)

    with pytest.raises(api.UploadError, match="ended after 3 of 10 bytes"):
        make_client(Script(storage)).upload(SLOT, lambda: io.BytesIO(b"abc"), 10)


def test_error_file_rows_stream(make_client):
    lines = b'{"rowNumber": 2, "sourceRow": {"email": "x"}, "error": "invalid email format"}\n' * 3
    client = make_client(Script(httpx.Response(200, content=iter([lines[:50], lines[50:]]))))
    rows = list(client.iter_error_rows("https://e.example.test/errors.jsonl?sig=abc"))
    assert [(r.row_number, r.error) for r in rows] == [(2, "invalid email format")] * 3


def test_expired_error_file_url(make_client):
    with pytest.raises(api.ErrorFileExpiredError) as caught:
        list(
            make_client(Script(httpx.Response(403))).iter_error_file("https://e.example.test/f?sig=SECRETSIG")
        )
    assert "SECRETSIG" not in str(caught.value)


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_error_file_throttling_and_failures_are_retryable(make_client, status):
    script = Script(httpx.Response(status, headers={"Retry-After": "3"}))
    with pytest.raises(api.ServerError) as caught:
        list(make_client(script).iter_error_file("https://e.test/f"))
    assert caught.value.retryable and caught.value.retry_after == 3.0


def test_error_file_not_found_is_permanent(make_client):
    with pytest.raises(api.ExperitureError) as caught:
        list(make_client(Script(httpx.Response(404))).iter_error_file("https://e.test/f"))
    assert not caught.value.retryable


class BreaksMidStream(httpx.SyncByteStream):
    def __iter__(self):
        yield b'{"rowNumber": 1, "error": "x"}\n'
        raise httpx.ReadError("connection reset by peer")


def test_error_file_that_breaks_mid_download_is_a_transient_error(make_client):
    # Given storage that resets the connection halfway through the errors file
    script = Script(lambda request: httpx.Response(200, stream=BreaksMidStream()))
    # When it is read, then the caller gets the project's retryable TransportError, without the query
    with pytest.raises(api.TransportError) as caught:
        list(make_client(script).iter_error_file("https://e.example.test/f?sig=SECRETSIG"))
    assert caught.value.retryable and "SECRETSIG" not in str(caught.value)


def test_storage_refusal_keeps_only_the_error_code(make_client):
    # Given storage that echoes the pre-signed query string in its error body
    body = (
        "<Error><Code>AuthorizationQueryParametersError</Code><Message>X-Amz-Credential=AKIA/SIG-999 "
        "is malformed</Message></Error>"
    )
    with pytest.raises(api.UploadError) as caught:
        make_client(Script(httpx.Response(400, text=body))).upload(SLOT, lambda: io.BytesIO(b"abc"), 3)
    # Then the message names the code, and nothing the storage echoed
    assert caught.value.code == "AuthorizationQueryParametersError"
    assert "SIG-999" not in str(caught.value) and "AKIA" not in str(caught.value)


S3_EXPIRED = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
    "<X-Amz-Expires>300</X-Amz-Expires><Expires>2026-07-20T04:18:45Z</Expires>"
    "<ServerTime>2026-07-20T04:18:55Z</ServerTime><RequestId>E4952EE21FC53CD9</RequestId></Error>"
)
S3_SIGNATURE = (
    "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match "
    "the signature you provided.</Message><StringToSign>AWS4-HMAC-SHA256 X-Amz-Signature=SIG-999</StringToSign>"
    "<SignatureProvided>SIG-999</SignatureProvided></Error>"
)
AZURE_EXPIRED = (
    "<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.</Message>"
    "<AuthenticationErrorDetail>Signature not valid in the specified time frame: Start [x] - Expiry [y]"
    "</AuthenticationErrorDetail></Error>"
)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (403, S3_EXPIRED, "AccessDenied"),
        (
            403,
            "<Error><Code>RequestExpired</Code><Message>Request has expired</Message></Error>",
            "RequestExpired",
        ),
        (
            400,
            "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
            "ExpiredToken",
        ),
        (403, "<Error><Code>ExpiredRequest</Code><Message>gone</Message></Error>", "ExpiredRequest"),
        (403, AZURE_EXPIRED, "AuthenticationFailed"),
        (403, "<Error>Request has expired</Error>", None),
    ],
)
def test_every_flavour_of_an_expired_slot_reads_as_expired(make_client, status, body, code):
    # Given a storage that says, in its own words, that the pre-signed URL has expired
    script = Script(httpx.Response(status, text=body))
    # When uploading, then the slot is reported expired (the intake opens a fresh job) once
    with pytest.raises(api.UploadSlotExpiredError) as caught:
        make_client(script).upload(SLOT, lambda: io.BytesIO(b"abc"), 3)
    assert caught.value.code == code and len(script.requests) == 1
    assert "SIG-999" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (403, S3_SIGNATURE, "SignatureDoesNotMatch"),
        (403, "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", "AccessDenied"),
        (403, '{"error": {"code": "AccessDenied", "message": "bucket policy"}}', "AccessDenied"),
        (403, "", None),
        (400, "<Error><Code>MissingRequiredHeader</Code></Error>", "MissingRequiredHeader"),
    ],
)
def test_a_refusal_that_a_new_slot_would_get_too_is_not_read_as_expired(make_client, status, body, code):
    # Given a storage refusing the upload for a reason other than expiry, before the slot's expiry
    script = Script(httpx.Response(status, text=body))
    # When uploading
    with pytest.raises(api.UploadRefusedError) as caught:
        make_client(script).upload(SLOT, lambda: io.BytesIO(b"abc"), 3)
    # Then the refusal names the storage code, is not retried, and never echoes the signed request
    error = caught.value
    assert not isinstance(error, api.UploadSlotExpiredError) and not error.retryable
    assert error.code == code and error.status == status and len(script.requests) == 1
    assert (code or f"HTTP {status}") in str(error)
    assert "SIG-999" not in str(error) and "SIG-999" not in str(error.to_dict())


def test_a_bare_403_after_the_slots_expiry_reads_as_expired(make_client):
    from datetime import UTC, datetime, timedelta

    expired = SLOT.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    with pytest.raises(api.UploadSlotExpiredError):
        make_client(Script(httpx.Response(403))).upload(expired, lambda: io.BytesIO(b"abc"), 3)


def test_slot_headers_replace_ours_whatever_their_case(make_client):
    # Given a slot whose headers name Content-Type in lower case
    slot = SLOT.model_copy(update={"headers": {"content-type": "text/csv", "X-MS-BLOB-TYPE": "BlockBlob"}})
    script = Script(httpx.Response(200))
    # When uploading with our own content type
    make_client(script).upload(slot, lambda: io.BytesIO(b"abc"), 3, content_type="application/octet-stream")
    # Then one Content-Type goes out, the slot's, with the slot's other header and the exact length
    sent = script.requests[0].headers
    assert sent.get_list("content-type") == ["text/csv"]
    assert sent.get_list("x-ms-blob-type") == ["BlockBlob"] and sent["content-length"] == "3"
