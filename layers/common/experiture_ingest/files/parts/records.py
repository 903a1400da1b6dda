"""Record boundaries in CSV and JSONL bytes, found in one streaming pass in constant memory.

A CSV record ends at a newline outside quotes. With RFC 4180 quoting (a ``"`` opens or closes a
quoted field; ``""`` inside one is an escaped quote, which toggles twice), a newline is outside
quotes exactly when the number of ``"`` before it is even, so the pass only tracks that parity.
A JSONL record ends at every newline.

Records are counted as the API numbers rows (docs/sandbox.md): blank lines are skipped, a quoted
multi-line CSV record counts once. The scanner keeps the last boundary it passed, so a planner can
feed bytes up to a limit and cut there.

>>> scan = RecordScanner("csv")
>>> scan.feed(b'id,note\\r\\n1,"two\\nlines"\\r\\n\\r\\n2,x\\n3,y')
>>> scan.finish()
>>> scan.records, scan.first_boundary, scan.last_boundary, scan.records_at_last_boundary
(4, 9, 30, 3)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import accumulate
from operator import methodcaller, xor
from typing import Literal

from experiture_ingest.files.parts.errors import SplitRefusedError

_CSV_BLANK = re.compile(rb"\n\r?(?=\n)")  # a newline followed by an empty record
_JSONL_BLANK = re.compile(rb"\n[ \t\r\x0b\x0c]*(?=\n)")
_JSONL_SPACE = b" \t\r\n\x0b\x0c"
_QUOTES = methodcaller("count", b'"')
_ONE = 1
_NOT_QUOTE_OR_NEWLINE = bytes(b for b in range(256) if b not in b'"\n')


class RecordScanner:
    """Feed bytes in order; read the record count and the last record boundary passed.

    ``records``: complete non-blank records so far (the header is a record). ``last_boundary``:
    the absolute offset just after the last record-ending newline; ``records_at_last_boundary``:
    the records before it. ``first_boundary``: the end of the first record (a CSV header), or None.
    """

    def __init__(self, fmt: Literal["csv", "jsonl"]) -> None:
        self.csv = fmt == "csv"
        self.offset = 0
        self.in_quotes = False
        self.records = 0
        self.last_boundary = 0
        self.records_at_last_boundary = 0
        self.first_boundary: int | None = None
        self._content = False  # the record being read has content so far
        self._blank = _CSV_BLANK if self.csv else _JSONL_BLANK

    def _is_blank(self, data: bytes) -> bool:
        return not (data.rstrip(b"\r") if self.csv else data.strip(_JSONL_SPACE))

    def feed(self, data: bytes) -> None:
        """Consume the next bytes of the file."""
        if not data:
            return
        if self.csv and (self.in_quotes or b'"' in data):
            if self.first_boundary is None:
                self._feed_quoted(data)
            else:
                self._feed_quoted_fast(data)
        else:
            self._feed_plain(data)
        self.offset += len(data)

    def _feed_plain(self, view: bytes) -> None:
        """No quote state to track: every newline ends a record (C-speed counts and searches)."""
        first = view.find(b"\n")
        if first < 0:
            self._content = self._content or not self._is_blank(view)
            return
        first_blank = not self._content and self._is_blank(view[:first])
        blanks = len(self._blank.findall(view)) + (1 if first_blank else 0)
        self.records += view.count(b"\n") - blanks
        if self.first_boundary is None and self.records:
            self.first_boundary = self.offset + (
                _first_record_end(view, first + 1, self._is_blank) if first_blank else first + 1
            )
        last = view.rfind(b"\n")
        self._boundary(self.offset + last + 1)
        self._content = not self._is_blank(view[last + 1 :])

    def _feed_quoted(self, data: bytes) -> None:
        """Quotes present: the state after each line is the running parity of its quotes."""
        lines = data.split(b"\n")
        odd = map(_ONE.__and__, map(_QUOTES, lines))
        # states[i]: inside quotes before line i; line i's newline ends a record when states[i + 1] is 0.
        states = list(accumulate(odd, xor, initial=int(self.in_quotes)))
        ends = states[1 : len(lines)]
        boundaries = len(ends) - sum(ends)
        self.in_quotes = bool(states[-1])
        if not boundaries:
            self._content = self._content or len(lines) > 1 or not self._is_blank(lines[0])
            return
        blanks = 0
        if lines.count(b"") + lines.count(b"\r"):
            blanks = sum(
                1
                for i, line in enumerate(lines[:-1])
                if line in (b"", b"\r") and not states[i] and not states[i + 1] and (i or not self._content)
            )
        self.records += boundaries - blanks
        last = len(ends) - 1 - ends[::-1].index(0)  # the line whose newline is the last boundary
        self._boundary(self.offset + sum(map(len, lines[: last + 1])) + last + 1)
        if self.first_boundary is None and self.records:
            pos = 0
            for i, line in enumerate(lines[:-1]):
                pos += len(line) + 1
                if not states[i + 1] and (
                    not self._is_blank(line) or (i == 0 and self._content) or states[i]
                ):
                    self.first_boundary = self.offset + pos
                    break
        tail = lines[last + 1 :]
        self._content = len(tail) > 1 or not self._is_blank(tail[0])

    def _feed_quoted_fast(self, data: bytes) -> None:
        """As :meth:`_feed_quoted`, on the quotes alone: every byte but ``"`` and newline is dropped
        in C first, so each line is a run of quotes whose length is its count."""
        lines = data.translate(None, _NOT_QUOTE_OR_NEWLINE).split(b"\n")
        states = list(accumulate(map(_ONE.__and__, map(len, lines)), xor, initial=int(self.in_quotes)))
        ends = states[1 : len(lines)]
        boundaries = len(ends) - sum(ends)
        self.in_quotes = bool(states[-1])
        if not boundaries:
            self._content = self._content or len(lines) > 1 or not self._is_blank(data)
            return
        blanks = 0
        for line in _empty_lines(data):
            if not states[line] and not states[line + 1] and (line or not self._content):
                blanks += 1
        self.records += boundaries - blanks
        last = len(ends) - 1 - ends[::-1].index(0)  # the line whose newline is the last boundary
        at = len(data)
        for _ in range(len(lines) - 1 - last):  # back over the newlines after it
            at = data.rfind(b"\n", 0, at)
        self._boundary(self.offset + at + 1)
        self._content = len(lines) - 1 > last + 1 or not self._is_blank(data[at + 1 :])

    def _boundary(self, at: int) -> None:
        self.last_boundary = at
        self.records_at_last_boundary = self.records

    def finish(self) -> None:
        """The end of the file: a last record without a newline counts; open quotes are refused."""
        if self.csv and self.in_quotes:
            raise SplitRefusedError(
                "the CSV file ends inside a quoted field (an odd number of '\"'), so its record "
                "boundaries cannot be found; fix the quoting",
                code="CSV_UNBALANCED_QUOTES",
            )
        if self._content:
            self.records += 1
            if self.first_boundary is None:
                self.first_boundary = self.offset
        self._content = False


def _empty_lines(data: bytes) -> Iterator[int]:
    """Indexes of the lines of ``data`` that are empty (or a lone ``\\r``), except the last one."""
    if data.startswith((b"\n", b"\r\n")):
        yield 0
    line, at = 0, 0
    for match in _CSV_BLANK.finditer(data):
        line += data.count(b"\n", at, match.start()) + 1
        at = match.start() + 1
        yield line


def _first_record_end(view: bytes, start: int, is_blank: Callable[[bytes], bool]) -> int:
    """The offset after the first non-blank line's newline (the plain path: no quotes)."""
    while True:
        end = view.index(b"\n", start)
        if not is_blank(view[start:end]):
            return end + 1
        start = end + 1
