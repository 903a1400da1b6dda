"""The field mapping of an import: as configured, a saved template, or inferred from the file.

Inference maps each column to the object field of the same name once case and separators are
ignored (:func:`match_key`), takes types from the object's schema, and reports what it could not map:

>>> from experiture_ingest.client import ObjectSchema
>>> schema = ObjectSchema.model_validate({"primaryKey": "email", "fields": [
...     {"name": "email", "required": True}, {"name": "first_name"}, {"name": "age", "type": "integer"},
...     {"name": "city", "required": True}]})
>>> plan = infer_mapping([SourceColumn("EMail"), SourceColumn("FirstName"), SourceColumn("Age"),
...                       SourceColumn("Shoe Size")], schema)
>>> plan.field_map
{'EMail': 'email', 'FirstName': 'first_name', 'Age': 'age'}
>>> plan.source_fields["Age"], plan.unmapped_columns, plan.unmapped_required_fields
('integer', ['Shoe Size'], ['city'])
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from experiture_ingest.client import ExperitureClient, ImportMapping, ObjectSchema
from experiture_ingest.files.header import SourceColumn, read_columns
from experiture_ingest.files.options import FileOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from experiture_ingest.files.handoff import SourceObject

_SEPARATORS = re.compile(r"[^0-9a-zA-Z]+")

Origin = Literal["given", "template", "inferred"]


def match_key(name: str) -> str:
    """What two names must share to match: letters and digits, case-folded (``EMail`` = ``e_mail``).

    >>> {match_key(n) for n in ("FirstName", "first-name", "first_name", "FIRST NAME")}
    {'firstname'}
    """
    return _SEPARATORS.sub("", name).lower()


class MappingPlan(BaseModel):
    """The mapping sent to the API and what the summary reports about it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    origin: Origin
    field_map: dict[str, str] | None = None
    source_fields: dict[str, str] | None = None
    template_id: str | None = None
    import_mode: str | None = None
    save_as_template: dict[str, str] | None = None
    columns: list[str] | None = None
    unmapped_columns: list[str] = Field(default_factory=list)
    unmapped_required_fields: list[str] = Field(default_factory=list)

    def request(self) -> ImportMapping:
        """The ``POST /import-jobs/{id}/mapping`` body."""
        return ImportMapping.model_validate(
            {
                "source_fields": self.source_fields,
                "field_map": self.field_map,
                "template_id": self.template_id,
                "import_mode": self.import_mode,
                "save_as_template": self.save_as_template,
            }
        )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class MappingError(ValueError):
    """No mapping can be made (nothing matches, or the key is missing); the message says what to do."""


def infer_mapping(columns: list[SourceColumn], schema: ObjectSchema) -> MappingPlan:
    """Map columns to same-named fields (compared by :func:`match_key`); the first of duplicates wins."""
    fields = {match_key(f.name): f for f in schema.fields}
    field_map: dict[str, str] = {}
    source_fields: dict[str, str] = {}
    unmapped: list[str] = []
    taken: set[str] = set()
    for column in columns:
        target = fields.get(match_key(column.name))
        if target is None or target.name in taken or column.name in field_map:
            unmapped.append(column.name)
            continue
        taken.add(target.name)
        field_map[column.name] = target.name
        source_fields[column.name] = target.type
    required = [f.name for f in schema.fields if (f.required or f.primary_key) and f.name not in taken]
    return MappingPlan(
        origin="inferred",
        field_map=field_map,
        source_fields=source_fields,
        columns=[c.name for c in columns],
        unmapped_columns=unmapped,
        unmapped_required_fields=required,
    )


def given_mapping(options: FileOptions, schema: ObjectSchema | None = None) -> MappingPlan | None:
    """The mapping the object's config (or the file's metadata) gives, or None to infer one."""
    mapping = options.mapping()
    if mapping is None:
        return None
    save = mapping.save_as_template.wire() if mapping.save_as_template else None
    if mapping.template_id:
        return MappingPlan(
            origin="template",
            template_id=mapping.template_id,
            import_mode=mapping.import_mode,
            save_as_template=save,
        )
    field_map = dict(mapping.field_map or {})
    source_fields = dict(mapping.source_fields or {})
    if schema is not None and not options.source_fields:
        # fieldMap without sourceFields: declare each column with its destination field's type.
        for column, dest in field_map.items():
            target = schema.field(dest)
            source_fields[column] = target.type if target else "string"
    mapped = set(field_map.values())
    required = (
        [f.name for f in schema.fields if (f.required or f.primary_key) and f.name not in mapped]
        if schema
        else []
    )
    return MappingPlan(
        origin="given",
        field_map=field_map,
        source_fields=source_fields,
        import_mode=mapping.import_mode,
        save_as_template=save,
        unmapped_required_fields=required,
    )


def plan_mapping(
    s3: S3Client, client: ExperitureClient, object_name: str, source: SourceObject, options: FileOptions
) -> tuple[MappingPlan, str | None]:
    """The mapping for this file and the correlation id of the schema lookup (None if none was needed)."""
    if options.template_id:
        plan = given_mapping(options)
        assert plan is not None
        return plan, None
    schema = client.get_object_schema(object_name)
    plan = given_mapping(options, schema)
    if plan is None:
        plan = infer_mapping(read_columns(s3, source), schema)
        plan.import_mode = options.import_mode
        plan.save_as_template = options.save_as_template.wire() if options.save_as_template else None
        if not plan.field_map:
            raise MappingError(
                f"no column of the file matches a field of {object_name!r} "
                f"(columns: {', '.join(plan.columns or [])[:300]}); give a fieldMap in config/{object_name}.json"
            )
    return plan, schema.correlation_id
