"""Read a Parquet file's column names and types from its footer, without pyarrow.

pyarrow is far too big for a Lambda layer, and the schema is all the mapping needs. A Parquet file
ends with ``<FileMetaData (Thrift compact)><4-byte little-endian length>PAR1``; the schema is the
second field of ``FileMetaData``. This module decodes just enough of the Thrift compact protocol
to read it (https://github.com/apache/parquet-format, parquet.thrift).

>>> footer_length(b"...." + (10).to_bytes(4, "little") + b"PAR1")
10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAGIC = b"PAR1"
TRAILER_BYTES = 8

# Thrift compact protocol type ids.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# parquet.thrift enums (physical Type, ConvertedType) and LogicalType union members.
_PHYSICAL = {0: "boolean", 1: "integer", 2: "integer", 3: "datetime", 4: "number", 5: "number", 6: "string"}
_CONVERTED = {0: "string", 5: "number", 6: "datetime", 9: "datetime", 10: "datetime", 19: "string"}
_CONVERTED_INTEGER = range(11, 19)  # UINT_8 .. INT_64
_LOGICAL = {1: "string", 4: "string", 5: "number", 6: "datetime", 8: "datetime", 10: "integer", 14: "string"}


class ParquetFooterError(ValueError):
    """The bytes are not a Parquet footer this reader understands (the message says why)."""


@dataclass(frozen=True)
class ParquetColumn:
    """A top-level column: its name and the API type it maps to (None for nested groups)."""

    name: str
    type: str | None


def footer_length(trailer: bytes) -> int:
    """The metadata length declared by the last 8 bytes of a Parquet file."""
    if len(trailer) < TRAILER_BYTES:
        raise ParquetFooterError("the file is too short to be Parquet")
    if trailer[-4:] == b"PARE":
        raise ParquetFooterError("encrypted Parquet footers are not supported; give a fieldMap")
    if trailer[-4:] != MAGIC:
        raise ParquetFooterError("the file does not end with the Parquet magic bytes PAR1")
    return int.from_bytes(trailer[-8:-4], "little")


def parse_columns(metadata: bytes) -> list[ParquetColumn]:
    """The top-level columns described by serialized ``FileMetaData`` (the footer without its trailer)."""
    reader = _Reader(metadata)
    try:
        for field_id, kind in reader.fields():
            if field_id == 2 and kind == _LIST:
                return _top_level(reader.read_list(_schema_element))
            reader.skip(kind)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ParquetFooterError(
            f"the Parquet footer is truncated or corrupt ({type(exc).__name__})"
        ) from None
    raise ParquetFooterError("the Parquet footer has no schema")


def _top_level(elements: list[dict[str, Any]]) -> list[ParquetColumn]:
    if not elements:
        raise ParquetFooterError("the Parquet schema is empty")
    columns: list[ParquetColumn] = []
    index = 1
    for _ in range(elements[0].get("num_children", 0)):
        if index >= len(elements):
            raise ParquetFooterError("the Parquet schema declares more columns than it has")
        element = elements[index]
        columns.append(
            ParquetColumn(element["name"], None if element.get("num_children") else _api_type(element))
        )
        index = _after_subtree(elements, index)
    return columns


def _after_subtree(elements: list[dict[str, Any]], index: int) -> int:
    pending = 1
    while pending:
        pending += elements[index].get("num_children", 0) - 1
        index += 1
    return index


def _api_type(element: dict[str, Any]) -> str:
    logical = element.get("logical_type")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    converted = element.get("converted_type")
    if converted in _CONVERTED:
        return _CONVERTED[converted]
    if converted in _CONVERTED_INTEGER:
        return "integer"
    return _PHYSICAL.get(element.get("type", 6), "string")


def _schema_element(reader: _Reader) -> dict[str, Any]:
    element: dict[str, Any] = {}
    for field_id, kind in reader.fields():
        if field_id == 1 and kind == _I32:
            element["type"] = reader.varint_signed()
        elif field_id == 4 and kind == _BINARY:
            element["name"] = reader.binary().decode("utf-8")
        elif field_id == 5 and kind == _I32:
            element["num_children"] = reader.varint_signed()
        elif field_id == 6 and kind == _I32:
            element["converted_type"] = reader.varint_signed()
        elif field_id == 10 and kind == _STRUCT:
            element["logical_type"] = reader.union_member()
        else:
            reader.skip(kind)
    if "name" not in element:
        raise ParquetFooterError("a Parquet schema element has no name")
    return element


class _Reader:
    """A cursor over Thrift compact bytes: fields, varints, binaries, lists, and skipping."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ParquetFooterError("a varint in the Parquet footer is too long")

    def varint_signed(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)  # zigzag

    def binary(self) -> bytes:
        size = self.varint()
        if self.pos + size > len(self.data):
            raise IndexError("binary runs past the end")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def fields(self) -> Any:
        """Yield (field id, type) for each field of the struct at the cursor, up to its STOP."""
        last = 0
        while True:
            header = self.byte()
            kind = header & 0x0F
            if kind == _STOP:
                return
            delta = header >> 4
            last = last + delta if delta else self.varint_signed()
            yield last, kind

    def union_member(self) -> int | None:
        """The id of the member set in a union struct (skipping its value)."""
        member = None
        for field_id, kind in self.fields():
            member = field_id
            self.skip(kind)
        return member

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        return size, header & 0x0F

    def read_list(self, read_item: Any) -> list[Any]:
        size, _ = self.list_header()
        return [read_item(self) for _ in range(size)]

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.pos += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            size, item = self.list_header()
            for _ in range(size):
                if item in (_TRUE, _FALSE):
                    self.pos += 1  # booleans in a list take one byte each
                else:
                    self.skip(item)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == _STRUCT:
            for _, inner in self.fields():
                self.skip(inner)
        else:
            raise ParquetFooterError(f"unknown Thrift type {kind} in the Parquet footer")
        if self.pos > len(self.data):
            raise IndexError("value runs past the end")


# Writing: part files from row groups ----------------------------------------------------------------
#
# A part is ``PAR1`` + the byte ranges of whole row groups, copied unchanged, + a rewritten footer:
# the source's ``FileMetaData`` with only those row groups, every file offset shifted to where the
# bytes now sit, ``num_rows`` summed, and the page-index and bloom-filter offsets dropped (they point
# at bytes outside the copied ranges; readers then simply do not use them). Every other field is
# copied byte for byte, so schema, key-value metadata (pyarrow's ARROW:schema) and statistics stay.


@dataclass(frozen=True)
class RowGroup:
    """One row group: its rows and the byte range ``[start, end)`` its column chunks occupy."""

    index: int
    rows: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FooterPiece:
    """Row groups ``indices`` (consecutive) of one source's footer, now starting at ``new_start``."""

    metadata: bytes
    indices: tuple[int, ...]
    new_start: int


def _i64(value: int) -> bytes:
    return _varint((value << 1) ^ (value >> 63))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _struct_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """A serialized struct as ``(field id, type, value bytes)`` (a bool's value is in its type)."""
    reader = _Reader(data)
    fields: list[tuple[int, int, bytes]] = []
    for field_id, kind in reader.fields():
        start = reader.pos
        reader.skip(kind)
        fields.append((field_id, kind, data[start : reader.pos]))
    return fields


def _write_struct(fields: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray()
    last = 0
    for field_id, kind, value in sorted(fields, key=lambda f: f[0]):
        delta = field_id - last
        if 0 < delta <= 15:
            out.append((delta << 4) | kind)
        else:
            out.append(kind)
            out += _varint((field_id << 1) ^ (field_id >> 15))
        out += value
        last = field_id
    out.append(_STOP)
    return bytes(out)


def _list_items(value: bytes) -> tuple[int, list[bytes]]:
    reader = _Reader(value)
    size, kind = reader.list_header()
    items = []
    for _ in range(size):
        start = reader.pos
        reader.skip(kind)
        items.append(value[start : reader.pos])
    return kind, items


def _write_list(kind: int, items: list[bytes]) -> bytes:
    header = (
        bytes([(len(items) << 4) | kind]) if len(items) < 15 else bytes([0xF0 | kind]) + _varint(len(items))
    )
    return header + b"".join(items)


def _int_value(value: bytes) -> int:
    return _Reader(value).varint_signed()


def _metadata_fields(metadata: bytes) -> list[tuple[int, int, bytes]]:
    try:
        fields = _struct_fields(metadata)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ParquetFooterError(
            f"the Parquet footer is truncated or corrupt ({type(exc).__name__})"
        ) from None
    if any(field_id in (8, 9) for field_id, _, _ in fields):
        raise ParquetFooterError("encrypted Parquet files cannot be split")
    return fields


def _row_group_items(fields: list[tuple[int, int, bytes]]) -> list[bytes]:
    for field_id, kind, value in fields:
        if field_id == 4 and kind == _LIST:
            return _list_items(value)[1]
    return []


def _chunk_range(chunk: bytes) -> tuple[int, int]:
    """The ``[start, end)`` bytes of one column chunk, from its ColumnMetaData."""
    meta = None
    for field_id, kind, value in _struct_fields(chunk):
        if field_id == 1 and kind == _BINARY:
            raise ParquetFooterError("the Parquet file keeps column data in other files (file_path)")
        if field_id == 3 and kind == _STRUCT:
            meta = {fid: v for fid, k, v in _struct_fields(value) if k in (_I32, _I64)}
    if meta is None or 9 not in meta or 7 not in meta:
        raise ParquetFooterError("a Parquet column chunk has no metadata")
    start = _int_value(meta[9])
    if 11 in meta and 0 < _int_value(meta[11]) < start:
        start = _int_value(meta[11])
    return start, start + _int_value(meta[7])


def row_groups(metadata: bytes) -> list[RowGroup]:
    """The row groups of serialized ``FileMetaData``, with their rows and byte ranges."""
    groups = []
    try:
        for index, item in enumerate(_row_group_items(_metadata_fields(metadata))):
            rows = 0
            ranges = []
            for field_id, kind, value in _struct_fields(item):
                if field_id == 3 and kind == _I64:
                    rows = _int_value(value)
                elif field_id == 1 and kind == _LIST:
                    ranges = [_chunk_range(chunk) for chunk in _list_items(value)[1]]
            if not ranges:
                raise ParquetFooterError(f"row group {index} has no column chunks")
            groups.append(RowGroup(index, rows, min(r[0] for r in ranges), max(r[1] for r in ranges)))
    except (IndexError, UnicodeDecodeError) as exc:
        raise ParquetFooterError(
            f"the Parquet footer is truncated or corrupt ({type(exc).__name__})"
        ) from None
    return groups


def schema_bytes(metadata: bytes) -> bytes:
    """The serialized schema (field 2): two files can share a part only when theirs are equal."""
    for field_id, kind, value in _metadata_fields(metadata):
        if field_id == 2 and kind == _LIST:
            return value
    raise ParquetFooterError("the Parquet footer has no schema")


def _shift(value: bytes, delta: int) -> bytes:
    return _i64(_int_value(value) + delta)


_DROPPED_CHUNK_FIELDS = frozenset({4, 5, 6, 7})  # offset index and column index (page index)
_DROPPED_META_FIELDS = frozenset({14, 15})  # bloom filter offset and length
_SHIFTED_META_FIELDS = frozenset({9, 10, 11})  # data, index and dictionary page offsets


def _rewrite_chunk(chunk: bytes, delta: int) -> bytes:
    fields = []
    for field_id, kind, raw in _struct_fields(chunk):
        if field_id in _DROPPED_CHUNK_FIELDS:
            continue
        value = raw
        if field_id == 2 and kind == _I64:
            value = _shift(raw, delta)
        elif field_id == 3 and kind == _STRUCT:
            meta = [
                (fid, k, _shift(v, delta) if fid in _SHIFTED_META_FIELDS and k == _I64 else v)
                for fid, k, v in _struct_fields(raw)
                if fid not in _DROPPED_META_FIELDS
            ]
            value = _write_struct(meta)
        fields.append((field_id, kind, value))
    return _write_struct(fields)


def _rewrite_group(item: bytes, delta: int, ordinal: int) -> bytes:
    fields = []
    for field_id, kind, raw in _struct_fields(item):
        value = raw
        if field_id == 1 and kind == _LIST:
            chunk_kind, chunks = _list_items(raw)
            value = _write_list(chunk_kind, [_rewrite_chunk(chunk, delta) for chunk in chunks])
        elif field_id == 5 and kind == _I64:
            value = _shift(raw, delta)
        elif field_id == 7 and kind == _I16:
            value = _varint((ordinal << 1) ^ (ordinal >> 15))
        fields.append((field_id, kind, value))
    return _write_struct(fields)


def part_footer(pieces: list[FooterPiece]) -> bytes:
    """The footer of a part made of ``pieces`` (schema and metadata from the first), with its trailer.

    Each piece's row groups must be consecutive in its source and are copied as one byte range
    starting at the first group's start; ``new_start`` is where that range now begins in the part.
    """
    if not pieces:
        raise ParquetFooterError("a part needs at least one row group")
    first = _metadata_fields(pieces[0].metadata)
    schema = schema_bytes(pieces[0].metadata)
    groups: list[bytes] = []
    rows = 0
    for piece in pieces:
        if schema_bytes(piece.metadata) != schema:
            raise ParquetFooterError("the Parquet files do not share one schema")
        all_groups = row_groups(piece.metadata)
        items = _row_group_items(_metadata_fields(piece.metadata))
        delta = piece.new_start - all_groups[piece.indices[0]].start
        for index in piece.indices:
            groups.append(_rewrite_group(items[index], delta, len(groups)))
            rows += all_groups[index].rows
    fields = []
    for field_id, kind, raw in first:
        value = raw
        if field_id == 3 and kind == _I64:
            value = _i64(rows)
        elif field_id == 4 and kind == _LIST:
            value = _write_list(_STRUCT, groups)
        fields.append((field_id, kind, value))
    metadata = _write_struct(fields)
    return metadata + len(metadata).to_bytes(4, "little") + MAGIC
