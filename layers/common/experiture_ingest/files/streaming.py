"""Stream one S3 object version to an upload slot in constant memory.

:class:`S3Source` opens the exact object version afresh for every upload attempt (a failed upload
restarts at byte 0) and reads it in bounded chunks. A background thread keeps a bounded read-ahead
(a few MB) so that reading S3 and writing to the slot overlap; memory stays at
``read_ahead_bytes + chunk_bytes`` whatever the object's size. Nothing touches /tmp.

>>> import io
>>> chunks = ReadAhead(io.BytesIO(b"abcdefgh"), chunk_bytes=3, max_chunks=2)
>>> list(chunks)
[b'abc', b'def', b'gh']
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from experiture_ingest.client.errors import ExperitureError, TransportError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_READ_AHEAD_BYTES = 8 * 1024 * 1024
_PUT_TIMEOUT = 0.5


class _Readable(Protocol):
    def read(self, amt: int = ..., /) -> bytes: ...


@dataclass
class _Failed:
    error: BaseException


_DONE = object()


class ReadAhead:
    """Iterate ``source`` in ``chunk_bytes`` pieces, read ahead by at most ``max_chunks`` pieces.

    ``close()`` stops the reader thread and closes the source: call it when the consumer gives up
    early (the upload failed), so nothing keeps reading a body nobody will send.
    """

    def __init__(self, source: _Readable | IO[bytes], *, chunk_bytes: int, max_chunks: int) -> None:
        self._source = source
        self._chunk_bytes = chunk_bytes
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_chunks))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="s3-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_PUT_TIMEOUT)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._source.read(self._chunk_bytes)
                if not chunk:
                    break
                if not self._put(chunk):
                    return
        except ExperitureError as exc:  # handed to the consumer, which raises it in its own thread
            self._put(_Failed(exc))
            return
        except Exception as exc:
            # A read that breaks mid-stream (botocore's ResponseStreamingError, a read timeout) is
            # transient: the upload starts again from byte 0 with a fresh GET.
            self._put(_Failed(TransportError(f"reading the source failed: {type(exc).__name__}")))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
        close = getattr(self._source, "close", None)
        if callable(close):
            close()


@dataclass(frozen=True)
class S3Source:
    """One S3 object version, opened afresh for each upload attempt.

    With a ``version_id`` the exact version is read; without one (an unversioned bucket) the read is
    pinned to the ``etag`` the event announced, so a newer overwrite is never uploaded under an old
    event's name (S3 answers 412 and the newer object's own event imports it).
    """

    s3: S3Client
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES

    def open(self) -> ReadAhead:
        """A chunk iterator over the object's bytes (pass ``source.open`` to ``client.upload``)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            kwargs["VersionId"] = self.version_id
        elif self.etag:
            kwargs["IfMatch"] = f'"{self.etag.strip(chr(34))}"'
        body = self.s3.get_object(**kwargs)["Body"]
        return ReadAhead(
            body, chunk_bytes=self.chunk_bytes, max_chunks=self.read_ahead_bytes // self.chunk_bytes
        )
