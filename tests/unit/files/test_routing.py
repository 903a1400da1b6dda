"""Keys to objects, config documents and metadata overrides to options."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from experiture_ingest.files.options import FileOptions
from experiture_ingest.files.routing import (
    CONFIG_MAX_BYTES,
    Refusal,
    decode_event_key,
    folder_of,
    load_config,
    options_from_metadata,
    resolve_options,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("incoming/contacts/a+b.csv", "incoming/contacts/a b.csv"),
        ("incoming/contacts/%C3%BCber+%E6%9D%B1%E4%BA%AC.csv", "incoming/contacts/über 東京.csv"),
        ("incoming/contacts/a%2Bb.csv", "incoming/contacts/a+b.csv"),
    ],
)
def test_event_keys_are_url_decoded(raw, key):
    # Given a key as S3 events encode it, when decoded, then it is the object's real key
    assert decode_event_key(raw) == key


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("incoming/contacts/", "FOLDER_MARKER"),
        ("incoming/", "FOLDER_MARKER"),
        ("other/contacts/a.csv", "OUTSIDE_INCOMING"),
        ("incoming/a.csv", "NO_OBJECT_FOLDER"),
        ("incoming//a.csv", "NO_OBJECT_FOLDER"),
    ],
)
def test_keys_the_convention_cannot_route_are_refused(key, code):
    # Given a key outside the incoming/<object>/ convention, when routed, then it is refused with a code
    with pytest.raises(Refusal) as refused:
        folder_of(key)
    assert refused.value.code == code


def test_the_folder_names_the_object_at_any_depth():
    # Given nested folders, when routed, then the first folder under incoming/ names the object
    assert folder_of("incoming/orders/2026/04/21/file.csv") == "orders"


def test_metadata_overrides_single_options_and_documents():
    # Given an options document and a single key in metadata, when parsed, then the single key wins
    options = options_from_metadata(
        {
            "experiture-options": json.dumps({"fieldMap": {"Email": "email"}, "importMode": "strict"}),
            "experiture-import-mode": "balanced",
            "experiture-object-name": "leads",
            "uploaded-by": "etl",
        }
    )
    assert (options.object_name, options.import_mode, options.field_map) == (
        "leads",
        "balanced",
        {"Email": "email"},
    )


def test_metadata_wins_over_the_folder_config_field_by_field():
    # Given a config creating a list and metadata that only renames it
    config = FileOptions.model_validate(
        {"createList": True, "listName": "All", "autoProfileAfterImport": True}
    )
    # When resolved, then the metadata's field replaces the config's and the others stay
    merged = resolve_options(config, {"experiture-list-name": "Only this file"})
    assert merged.wire() == {"createList": True, "listName": "Only this file", "autoProfileAfterImport": True}


def test_metadata_that_breaks_the_config_is_refused():
    # Given a config with a template and metadata adding a fieldMap (mutually exclusive)
    config = FileOptions.model_validate({"templateId": "tpl_1"})
    # When resolved, then the combination is refused with the reason
    with pytest.raises(Refusal) as refused:
        resolve_options(config, {"experiture-options": json.dumps({"fieldMap": {"a": "b"}})})
    assert refused.value.code == "INVALID_METADATA" and "templateId" in refused.value.message


@mock_aws
def test_config_documents_load_from_the_bucket():
    # Given a bucket with config/contacts.json and none for orders
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg-bucket")
    s3.put_object(Bucket="cfg-bucket", Key="config/contacts.json", Body=json.dumps({"targetListId": "lst_1"}))
    # When loaded, then contacts gets its options and orders the defaults
    assert load_config(s3, "cfg-bucket", "contacts").target_list_id == "lst_1"
    assert load_config(s3, "cfg-bucket", "orders") == FileOptions()


@mock_aws
def test_an_oversized_config_document_is_refused():
    # Given a config document over the size limit
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg-bucket")
    s3.put_object(Bucket="cfg-bucket", Key="config/contacts.json", Body=b" " * (CONFIG_MAX_BYTES + 1))
    # When loaded, then it is refused, not read whole
    with pytest.raises(Refusal, match="larger than"):
        load_config(s3, "cfg-bucket", "contacts")
