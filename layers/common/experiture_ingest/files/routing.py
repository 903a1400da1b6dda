"""From an S3 key (and the object's metadata) to a target object and its options, or a refusal.

Keys arrive URL-encoded in S3 events (spaces as ``+``, unicode percent-encoded):

>>> decode_event_key("incoming/contacts/spring+sale+%C3%BC.csv")
'incoming/contacts/spring sale ü.csv'

A key names its folder by convention; S3 user metadata may override options for one file:

>>> options_from_metadata({"experiture-list-name": "Spring", "experiture-create-list": "true",
...                        "owner": "ignored"}).wire()
{'createList': True, 'listName': 'Spring'}
>>> options_from_metadata({"experiture-colour": "blue"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
experiture_ingest.files.routing.Refusal: INVALID_METADATA: unknown S3 metadata key experiture-colour ...
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import pydantic
from pydantic.alias_generators import to_camel

from experiture_ingest.files.layout import INCOMING_PREFIX, config_key, object_name_from_key
from experiture_ingest.files.options import INIT_FIELDS, FileOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

METADATA_PREFIX = "experiture-"
OPTIONS_METADATA_KEY = "experiture-options"
CONFIG_MAX_BYTES = 64 * 1024
# The options document nests 3 levels (saveAsTemplate); anything far deeper is a mistake.
JSON_MAX_DEPTH = 32
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=")
# The scalar options a user may set one by one as S3 user metadata (kebab-case of the API's names).
_METADATA_FIELDS = {
    f"{METADATA_PREFIX}{name.replace('_', '-')}": to_camel(name)
    for name in ("object_name", *INIT_FIELDS, "template_id", "import_mode")
}


class Refusal(Exception):
    """A file the intake will not send to the API; ``code`` and the message go into its summary."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def decode_event_key(raw_key: str) -> str:
    """The real key of an S3 event's ``object.key`` (form-encoded: ``+`` is a space)."""
    return unquote_plus(raw_key)


def folder_of(key: str) -> str:
    """The ``<object>`` folder a key is dropped in; refuses keys the convention cannot route.

    >>> folder_of("incoming/orders/2026/a.csv")
    'orders'
    """
    if key.endswith("/"):
        raise Refusal("FOLDER_MARKER", "the key is a folder marker (ends with '/'), not a file")
    if not key.startswith(INCOMING_PREFIX):
        raise Refusal("OUTSIDE_INCOMING", f"only keys under {INCOMING_PREFIX}<object>/ are imported")
    folder = object_name_from_key(key)
    if folder is None:
        raise Refusal(
            "NO_OBJECT_FOLDER",
            f"drop files in {INCOMING_PREFIX}<object>/..., e.g. {INCOMING_PREFIX}contacts/file.csv",
        )
    return folder


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """One line naming each bad field by the name the user wrote."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(problems)


def load_config(s3: S3Client, bucket: str, folder: str) -> FileOptions:
    """``config/<folder>.json`` validated into :class:`FileOptions` (defaults when absent)."""
    key = config_key(folder)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return FileOptions()
    body = response["Body"]
    try:
        raw = body.read(CONFIG_MAX_BYTES + 1)
    finally:
        body.close()
    if len(raw) > CONFIG_MAX_BYTES:
        raise Refusal("INVALID_CONFIG", f"{key} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as exc:
        raise Refusal("INVALID_CONFIG", f"{key} is not valid JSON: {exc}") from None
    document = parse_json_object(text, "INVALID_CONFIG", key)
    try:
        return FileOptions.model_validate(document)
    except pydantic.ValidationError as exc:
        raise Refusal("INVALID_CONFIG", f"{key}: {describe_validation_error(exc)}") from None


def decode_metadata_value(name: str, value: str) -> str:
    """A user metadata value as the user wrote it. S3 metadata travels in HTTP headers, so SDKs and
    the console send (and S3 returns) non-ASCII values RFC 2047-encoded; decode them.

    >>> decode_metadata_value("x", "=?UTF-8?B?RnLDvGhsaW5n?="), decode_metadata_value("x", "=?utf-8?q?Fr=C3=BChling_2026?=")
    ('Frühling', 'Frühling 2026')
    >>> decode_metadata_value("x", "plain =? text")
    'plain =? text'
    """
    if not _ENCODED_WORD.search(value):
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, ValueError, LookupError) as exc:  # bad base64, charset or bytes
        raise Refusal("INVALID_METADATA", f"{name} is not a readable RFC 2047 encoded value: {exc}") from None


def json_nesting(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without parsing it (a parser
    recurses, and runs out of stack on a document nested a few thousand levels deep).

    >>> json_nesting('{"a": [1, {"b": "]]]"}]}'), json_nesting("3")
    (3, 0)
    """
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json_object(text: str, code: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object, or a :class:`Refusal` with ``code`` naming ``what`` is wrong."""
    depth = json_nesting(text)
    if depth > JSON_MAX_DEPTH:
        raise Refusal(code, f"{what} nests {depth} levels deep; at most {JSON_MAX_DEPTH} are accepted")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: a backstop, the depth check comes first
        raise Refusal(code, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Refusal(code, f"{what} must be a JSON object")
    return document


def options_from_metadata(metadata: Mapping[str, str]) -> FileOptions:
    """Per-file options from S3 user metadata: ``experiture-options`` (a JSON document) and/or
    single ``experiture-<option>`` keys, which win over the document. Other metadata is ignored."""
    document: dict[str, Any] = {}
    ours = {
        k.lower(): decode_metadata_value(k, v)
        for k, v in metadata.items()
        if k.lower().startswith(METADATA_PREFIX)
    }
    if OPTIONS_METADATA_KEY in ours:
        document.update(
            parse_json_object(ours.pop(OPTIONS_METADATA_KEY), "INVALID_METADATA", OPTIONS_METADATA_KEY)
        )
    for key, value in ours.items():
        if key not in _METADATA_FIELDS:
            known = ", ".join(sorted([OPTIONS_METADATA_KEY, *_METADATA_FIELDS]))
            raise Refusal("INVALID_METADATA", f"unknown S3 metadata key {key} (known: {known})")
        document[_METADATA_FIELDS[key]] = value
    try:
        return FileOptions.model_validate(document)
    except pydantic.ValidationError as exc:
        raise Refusal("INVALID_METADATA", f"S3 metadata: {describe_validation_error(exc)}") from None


def resolve_options(config: FileOptions, metadata: Mapping[str, str]) -> FileOptions:
    """The folder's config with this file's metadata overrides applied (metadata wins).

    >>> resolve_options(FileOptions(listName="A", createList=True),
    ...                 {"experiture-list-name": "B"}).list_name
    'B'
    """
    override = options_from_metadata(metadata)
    try:
        return config.merged(override)
    except pydantic.ValidationError as exc:
        raise Refusal(
            "INVALID_METADATA", f"config plus S3 metadata: {describe_validation_error(exc)}"
        ) from None
