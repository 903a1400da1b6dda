"""The read-ahead keeps memory bounded, delivers every byte in order, and stops when abandoned."""

from __future__ import annotations

import threading
import time

import pytest

from experiture_ingest.client import TransportError
from experiture_ingest.files.streaming import ReadAhead


class CountingSource:
    """A slow-to-consume source that records how far it has been read."""

    def __init__(self, size: int) -> None:
        self.data = bytes(i % 251 for i in range(size))
        self.pos = 0
        self.closed = False
        self.lock = threading.Lock()

    def read(self, n: int) -> bytes:
        with self.lock:
            chunk = self.data[self.pos : self.pos + n]
            self.pos += len(chunk)
            return chunk

    def close(self) -> None:
        self.closed = True


def test_every_byte_arrives_in_order():
    # Given a source of 10,000 bytes read in 333-byte chunks
    source = CountingSource(10_000)
    # When iterated
    received = b"".join(ReadAhead(source, chunk_bytes=333, max_chunks=4))
    # Then the bytes are the source's
    assert received == source.data


def test_the_reader_stays_at_most_a_bounded_distance_ahead():
    # Given a consumer slower than the source
    source = CountingSource(100 * 1000)
    ahead = ReadAhead(source, chunk_bytes=1000, max_chunks=4)
    consumed = 0
    worst = 0
    for chunk in ahead:
        consumed += len(chunk)
        time.sleep(0.002)
        worst = max(worst, source.pos - consumed)
    # Then the source was never read more than the queue plus the chunk in hand ahead of the consumer
    assert consumed == len(source.data)
    assert worst <= (4 + 2) * 1000


def test_closing_early_stops_reading_and_closes_the_source():
    # Given a large source and a consumer that gives up after two chunks (a failed upload)
    source = CountingSource(10_000_000)
    ahead = ReadAhead(source, chunk_bytes=1000, max_chunks=2)
    iterator = iter(ahead)
    next(iterator)
    next(iterator)
    # When closed
    ahead.close()
    stopped_at = source.pos
    time.sleep(0.05)
    # Then nothing more is read and the source is closed
    assert source.pos == stopped_at < 10_000
    assert source.closed


def test_a_source_error_reaches_the_consumer():
    # Given a source that fails on its second read
    class Failing(CountingSource):
        def read(self, n: int) -> bytes:
            if self.pos:
                raise ConnectionResetError("S3 connection reset")
            return super().read(n)

    # When iterated, then the consumer sees a retryable error (the upload starts again from byte 0)
    with pytest.raises(TransportError, match="ConnectionResetError") as caught:
        list(ReadAhead(Failing(10_000), chunk_bytes=100, max_chunks=2))
    assert caught.value.retryable
