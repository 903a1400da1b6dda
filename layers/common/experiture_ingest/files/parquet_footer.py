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
