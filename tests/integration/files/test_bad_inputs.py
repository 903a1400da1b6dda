"""Bad inputs a new user runs into, each ending in a clear summary: a key too long for results/<key>,
a header naming a column twice, deeply nested options, RFC 2047-encoded metadata values."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from experiture_ingest.files.layout import RESULTS_PREFIX, S3_KEY_MAX_BYTES, result_key

CSV = b"email_address,FirstName\na@example.com,Ann\n"


def _no_api_traffic(env) -> None:
    assert env.sandbox.admin.requests() == []
    assert env.sandbox.admin.import_jobs() == []
    assert env.executions() == []


def _results_keys(env) -> list[str]:
    listed = env.s3.list_objects_v2(Bucket=env.bucket, Prefix=RESULTS_PREFIX).get("Contents", [])
    return [item["Key"] for item in listed]


def test_a_key_too_long_for_results_gets_a_shortened_summary_key_naming_the_full_key(env, invoke):
    # Given a key of 1,014 bytes (S3 allows 1,024): results/<key>.json would be 1,027
    key = "incoming/contacts/" + "ü" * 496 + ".csv"
    assert len(key.encode()) == 1014
    # When the intake handles the drop
    invoke(env.drop(key, CSV))
    # Then the summary is at a key S3 accepts, under results/, and says which file it is about
    (summary_key,) = _results_keys(env)
    assert summary_key == result_key(key) and len(summary_key.encode()) <= S3_KEY_MAX_BYTES
    assert summary_key.startswith(f"{RESULTS_PREFIX}incoming/contacts/üüü") and summary_key.endswith(".json")
    summary = env.summary(key)
    assert summary["key"] == key and summary["outcome"] == "uploaded"


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        (
            b"email_address,FirstName,FirstName\na@example.com,Ann,Anna\n",
            "dup.csv",
            "'FirstName' more than once (columns 2 and 3)",
        ),
        (
            gzip.compress(b"email_address,age, email_address ,age,age\na@example.com,1,b@example.com,2,3\n"),
            "dup.csv.gz",
            "'email_address' more than once (columns 1 and 3); 'age' more than once (columns 2, 4 and 5)",
        ),
    ],
)
def test_a_header_naming_a_column_twice_is_refused_before_any_job(env, invoke, body, name, message):
    # Given a CSV whose header names a column twice (which value would land is ambiguous)
    key = f"incoming/contacts/{name}"
    # When the intake handles it
    invoke(env.drop(key, body))
    # Then it is refused as DUPLICATE_COLUMNS, naming the columns, and the API heard nothing
    summary = env.summary(key)
    assert summary["outcome"] == "refused" and summary["reason"]["code"] == "DUPLICATE_COLUMNS"
    assert message in summary["reason"]["message"]
    assert env.tags(key) == {"experiture-status": "refused"}
    _no_api_traffic(env)


def test_a_parquet_schema_naming_a_column_twice_is_refused(env, invoke):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    # Given a Parquet file with two columns called email
    table = pa.Table.from_arrays(
        [pa.array(["a@example.com"]), pa.array(["b@example.com"])], names=["email", "email"]
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    key = "incoming/contacts/dup.parquet"
    # When handled, then it is refused before any job
    invoke(env.drop(key, out.getvalue()))
    summary = env.summary(key)
    assert summary["reason"]["code"] == "DUPLICATE_COLUMNS" and "'email'" in summary["reason"]["message"]
    _no_api_traffic(env)


def test_a_deeply_nested_config_is_invalid_config_not_a_crash(env, invoke):
    # Given a config/contacts.json nested 20,000 levels deep (a parser would run out of stack)
    env.put_config("contacts", b'{"fieldMap": ' + b"[" * 20000 + b"]" * 20000 + b"}")
    key = "incoming/contacts/a.csv"
    # When a file is dropped for contacts
    invoke(env.drop(key, CSV))
    # Then it is refused with a message saying how deep, and nothing reached the API
    summary = env.summary(key)
    assert summary["outcome"] == "refused" and summary["reason"]["code"] == "INVALID_CONFIG"
    assert "nests 20001 levels deep; at most 32" in summary["reason"]["message"]
    _no_api_traffic(env)


def test_deeply_nested_options_metadata_is_invalid_metadata_not_a_crash(env, invoke):
    # Given experiture-options nested 990 levels deep (within S3's 2 KB of metadata)
    document = '{"saveAsTemplate": ' + "[" * 990 + "]" * 990 + "}"
    key = "incoming/contacts/meta.csv"
    # When handled
    invoke(env.drop(key, CSV, Metadata={"experiture-options": document}))
    # Then it is refused as INVALID_METADATA, naming the depth
    summary = env.summary(key)
    assert summary["reason"]["code"] == "INVALID_METADATA"
    assert "experiture-options nests 991 levels deep" in summary["reason"]["message"]
    _no_api_traffic(env)


@pytest.mark.parametrize(
    "encoded",
    [
        "=?UTF-8?B?" + base64.b64encode("Liste für Frühling".encode()).decode() + "?=",
        "=?utf-8?q?Liste_f=C3=BCr_Fr=C3=BChling?=",
    ],
)
def test_an_rfc_2047_encoded_list_name_reaches_the_api_decoded(env, invoke, encoded):
    # Given a non-ASCII list name in S3 metadata, RFC 2047-encoded as SDKs and the console send it
    key = "incoming/contacts/spring.csv"
    metadata = {"experiture-create-list": "true", "experiture-list-name": encoded}
    # When handled
    invoke(env.drop(key, CSV, Metadata=metadata))
    # Then the job asks for the list by its real name, and the summary shows that name
    (job,) = env.sandbox.admin.import_jobs()
    assert job["listName"] == "Liste für Frühling"
    assert env.summary(key)["options"]["listName"] == "Liste für Frühling"


def test_rfc_2047_inside_the_options_document_is_decoded_too(env, invoke):
    options = json.dumps({"createList": True, "listName": "Été"}, ensure_ascii=False)
    encoded = "=?UTF-8?B?" + base64.b64encode(options.encode()).decode() + "?="
    key = "incoming/contacts/ete.csv"
    invoke(env.drop(key, CSV, Metadata={"experiture-options": encoded}))
    (job,) = env.sandbox.admin.import_jobs()
    assert job["listName"] == "Été"


def test_an_unreadable_encoded_value_is_invalid_metadata(env, invoke):
    key = "incoming/contacts/bad.csv"
    invoke(env.drop(key, CSV, Metadata={"experiture-list-name": "=?x-klingon?B?QUJD?="}))
    summary = env.summary(key)
    assert summary["reason"]["code"] == "INVALID_METADATA"
    assert "experiture-list-name is not a readable RFC 2047 encoded value" in summary["reason"]["message"]
    _no_api_traffic(env)
