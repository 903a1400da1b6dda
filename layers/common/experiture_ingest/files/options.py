"""What a user can say about an object's imports: ``config/<object>.json``, overridable per file.

The document uses the API's own camelCase names, so a user can copy them from the vendor docs:

>>> doc = {"createList": True, "listName": "Spring", "importMode": "strict",
...        "fieldMap": {"Email": "email"}, "sourceFields": {"Email": "string"}}
>>> options = FileOptions.model_validate(doc)
>>> options.init_fields()
{'create_list': True, 'list_name': 'Spring'}
>>> options.mapping().wire()
{'sourceFields': {'Email': 'string'}, 'fieldMap': {'Email': 'email'}, 'importMode': 'strict'}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from experiture_ingest.client.models import ImportMapping, ListOptions, MappingFields

INIT_FIELDS = tuple(ListOptions.model_fields)


class FileOptions(ListOptions, MappingFields):
    """Init options, mapping (explicit, a saved template, or inferred when absent) and import mode."""

    model_config = ConfigDict(extra="forbid")

    object_name: str | None = Field(default=None, min_length=1, description="Overrides the folder name")
    parallel_jobs: bool | None = Field(
        default=None,
        description="Let jobs of this folder run together (only when their keys never overlap, guide 003)",
    )
    # A warehouse export loads as one: files are held until a manifest (Redshift UNLOAD) or a
    # _SUCCESS marker (Spark, Glue, Athena) lands, then all its parts load together (files/parts).
    wait_for: Literal["manifest", "_SUCCESS"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FileOptions:
        if self.template_id and (self.field_map or self.source_fields):
            raise ValueError("give either templateId or fieldMap/sourceFields, not both")
        if self.source_fields and not self.field_map:
            raise ValueError("sourceFields needs a fieldMap")
        return self

    def merged(self, override: FileOptions) -> FileOptions:
        """These options with every field ``override`` sets replacing ours (per-file metadata wins)."""
        data = self.model_dump(exclude_unset=True) | override.model_dump(exclude_unset=True)
        return FileOptions.model_validate(data)

    def init_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~experiture_ingest.client.ImportJobInit`."""
        return {name: getattr(self, name) for name in INIT_FIELDS if getattr(self, name) is not None}

    def mapping(self) -> ImportMapping | None:
        """The mapping to send as configured, or None when it must be inferred from the file."""
        if self.template_id:
            return ImportMapping(
                template_id=self.template_id,
                import_mode=self.import_mode,
                save_as_template=self.save_as_template,
            )
        if self.field_map:
            source_fields = self.source_fields or {column: "string" for column in self.field_map}
            return ImportMapping(
                source_fields=source_fields,
                field_map=self.field_map,
                import_mode=self.import_mode,
                save_as_template=self.save_as_template,
            )
        return None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
