"""Mapping: given, template, or inferred from the header by normalised names, typed from the schema."""

from __future__ import annotations

import pytest

from experiture_ingest.client import ObjectSchema
from experiture_ingest.files.header import SourceColumn
from experiture_ingest.files.mapping import given_mapping, infer_mapping, match_key
from experiture_ingest.files.options import FileOptions

SCHEMA = ObjectSchema.model_validate(
    {
        "primaryKey": "email",
        "fields": [
            {"name": "email", "type": "string", "required": True, "primaryKey": True},
            {"name": "first_name"},
            {"name": "signed_up_at", "type": "datetime"},
            {"name": "age", "type": "integer"},
            {"name": "city", "required": True},
        ],
    }
)


@pytest.mark.parametrize(
    "name", ["FirstName", "first-name", "first_name", "First Name", "FIRST_NAME", "firstName"]
)
def test_separators_and_case_all_match_first_name(name):
    assert match_key(name) == match_key("first_name")


def test_inferred_mapping_types_from_the_schema_and_reports_what_is_left():
    # Given columns in other spellings, one unknown, one duplicate of a mapped field
    columns = [SourceColumn(n) for n in ["E-Mail", "FirstName", "Signed Up At", "AGE", "shoe", "first_name"]]
    # When inferred
    plan = infer_mapping(columns, SCHEMA)
    # Then each maps to its field with the field's type; the rest is reported
    assert plan.field_map == {
        "E-Mail": "email",
        "FirstName": "first_name",
        "Signed Up At": "signed_up_at",
        "AGE": "age",
    }
    assert plan.source_fields == {
        "E-Mail": "string",
        "FirstName": "string",
        "Signed Up At": "datetime",
        "AGE": "integer",
    }
    assert plan.unmapped_columns == ["shoe", "first_name"]
    assert plan.unmapped_required_fields == ["city"]
    assert plan.request().wire()["fieldMap"] == plan.field_map


def test_given_field_map_without_source_fields_declares_schema_types():
    options = FileOptions.model_validate(
        {"fieldMap": {"mail": "email", "joined": "signed_up_at"}, "importMode": "strict"}
    )
    plan = given_mapping(options, SCHEMA)
    assert plan is not None and plan.origin == "given"
    assert plan.source_fields == {"mail": "string", "joined": "datetime"}
    assert plan.import_mode == "strict"
    assert plan.unmapped_required_fields == ["city"]


def test_template_mapping_is_sent_as_a_template():
    plan = given_mapping(FileOptions.model_validate({"templateId": "tpl_1"}))
    assert plan is not None and plan.origin == "template"
    assert plan.request().wire() == {"templateId": "tpl_1"}


def test_no_options_means_infer():
    assert given_mapping(FileOptions(), SCHEMA) is None
