"""The summary users read: the model, its reference (docs/summary.md) and the README agree."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from experiture_ingest.files.options import FileOptions
from experiture_ingest.files.summary import Summary

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "summary.md").read_text()


def _models(annotation: object) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models inside a field's type, and whether they are items of a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
    elif typing.get_origin(annotation) is list:
        yield from ((m, True) for m, _ in _models(typing.get_args(annotation)[0]))
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models(arg)


def model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field as the JSON names it: ``a``, ``a.b``, ``a[].b`` (options: the config's own shape)."""
    paths = []
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        paths.append(path)
        for sub, listed in _models(info.annotation):
            if sub is not FileOptions:
                paths += model_paths(sub, path + ("[]." if listed else "."))
    return paths


def reference_paths() -> list[str]:
    fields = REFERENCE.split("\n## Fields\n", 1)[1]
    return re.findall(r"^\| `([^`]+)` \|", fields, flags=re.MULTILINE)


def readme_field_list() -> list[str]:
    listed = README.split("\nSummary fields: ", 1)[1].split(". Each outcome fills its own", 1)[0]
    return re.findall(r"`([^`]+)`", listed)


def readme_example() -> dict[str, object]:
    after = README.split("`results/<key>.json` (abridged", 1)[1]
    block = after.split("```json\n", 1)[1].split("```", 1)[0]
    doc: dict[str, object] = json.loads(block)
    return doc


def test_the_reference_table_names_exactly_the_models_fields() -> None:
    # Given the model and the table in docs/summary.md
    documented, modelled = reference_paths(), model_paths(Summary)
    # Then each names the other's fields, once each
    assert sorted(set(modelled) - set(documented)) == [], "fields missing from docs/summary.md"
    assert sorted(set(documented) - set(modelled)) == [], "docs/summary.md names fields the model lacks"
    assert len(documented) == len(set(documented))


def test_the_readmes_field_list_is_the_models_top_level_fields() -> None:
    listed = readme_field_list()
    top = [info.alias or name for name, info in Summary.model_fields.items()]
    assert sorted(set(top) - set(listed)) == [], "fields missing from the README's list"
    assert sorted(set(listed) - set(top)) == [], "the README lists fields the model lacks"


def test_the_readmes_example_is_a_valid_final_summary_with_what_it_promises() -> None:
    # Given the README's example summary
    example = readme_example()
    # Then it is a summary the model accepts (no invented field), and shows the promised fields
    summary = Summary.model_validate(example)
    assert summary.schema_version == 1
    assert summary.timings is not None and summary.timings.upload_attempts is not None
    assert summary.abandoned_job_ids is not None and summary.options is not None
    assert summary.execution_arn and summary.execution is not None
    assert summary.mapping is not None and summary.unmapped_columns == summary.mapping.unmapped_columns


def test_a_builder_cannot_add_an_undocumented_field() -> None:
    summary = Summary(outcome="completed")
    with pytest.raises(ValidationError):
        summary.set(rowsLanded=3)
    with pytest.raises(ValidationError):
        Summary.model_validate({"outcome": "completed", "uploadAttempt": 1})


def test_the_document_holds_what_the_builder_set_even_nulls_and_always_its_version() -> None:
    # Given a summary whose builder set an errors file to null and nothing else
    summary = Summary(outcome="completed", errors_file=None, job_id="imp_1")
    # Then the document says so, with its schema version, and nothing unset
    assert summary.wire() == {
        "schemaVersion": 1,
        "outcome": "completed",
        "errorsFile": None,
        "jobId": "imp_1",
    }
    assert Summary.model_validate(summary.wire()).wire() == summary.wire()
