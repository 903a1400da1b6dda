"""Typed requests and responses of the Experiture API.

camelCase on the wire, snake_case in Python. Responses ignore fields they do not know, because the
API promises additive changes; requests refuse unknown fields, because a typo there is our bug.

>>> ImportJobInit(object_name="contacts", file_name="a.csv", file_size=10).wire()
{'objectName': 'contacts', 'fileName': 'a.csv', 'fileSize': 10}
>>> BatchJobStatus.model_validate({"jobId": "j1", "state": "running", "brandNew": 1}).is_terminal
False
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

TERMINAL_STATES = frozenset({"completed", "failed"})
ImportMode = Literal["balanced", "strict", "landing_friendly", "custom"]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Request(_Wire):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The JSON body as the API expects it."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Response(_Wire):
    model_config = ConfigDict(extra="ignore")

    correlation_id: str | None = None


# Records -----------------------------------------------------------------------------------------


class RecordWriteResult(Response):
    operation: str
    object_name: str
    accepted: bool
    accepted_at: datetime | None = None
    accepted_records: int = 1
    match_key: str | None = None


class BatchAccepted(Response):
    operation: str
    object_name: str
    job_id: str
    state: str = "queued"
    accepted_records: int
    status_path: str | None = None
    match_key: str | None = None


class JobMetrics(_Wire):
    """Row counts of a job: batch jobs nest them under ``metrics``, import jobs report them flat."""

    model_config = ConfigDict(extra="ignore")

    read_rows: int = 0
    valid_rows: int = 0
    invalid_rows: int = 0
    merged_inserts: int = 0
    merged_updates: int = 0
    merged_retained: int = 0


class _JobStatus(Response):
    """What batch and import job status answers share."""

    job_id: str | None = None
    object_name: str | None = None
    state: str
    stage: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    rows_total: int | None = None
    rows_imported: int | None = None
    rows_rejected: int | None = None
    success_rate: float | None = None
    error_message: str | None = None
    error_summary: dict[str, int] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class BatchJobStatus(_JobStatus):
    job_id: str
    file_name: str | None = None
    file_size: int | None = None
    metrics: JobMetrics = Field(default_factory=JobMetrics)


# Import jobs -------------------------------------------------------------------------------------


class ListOptions(_Wire):
    """The init's optional fields: what to build from the imported records (list, audience, profiles)."""

    create_list: bool | None = None
    list_name: str | None = None
    target_list_id: str | None = None
    auto_profile_after_import: bool | None = None
    create_audience: bool | None = None
    audience_name: str | None = None

    @model_validator(mode="after")
    def _conditional_names(self) -> Self:
        # The docs' "Cond." fields: a list or audience to create needs a name.
        if self.create_list and not self.list_name:
            raise ValueError("listName is required when createList is true")
        if self.create_audience and not self.audience_name:
            raise ValueError("audienceName is required when createAudience is true")
        return self


class ImportJobInit(Request, ListOptions):
    """``POST /import-jobs``: the target object, the file, and what to build from the import."""

    object_name: str = Field(min_length=1)
    file_name: str = Field(min_length=1)
    file_size: int = Field(gt=0)


class UploadSlot(Response):
    """The answer to ``POST /import-jobs``: where and how to upload the file."""

    job_id: str
    # repr=False: the query string is a credential and must not reach a log line through repr().
    upload_url: str = Field(repr=False)
    expires_at: datetime | None = None
    landing_path: str | None = None
    method: str = "PUT"
    headers: dict[str, str] = Field(default_factory=dict)
    requested_by: str | None = None


class SaveAsTemplate(Request):
    name: str = Field(min_length=1)


class MappingFields(_Wire):
    """The mapping's fields: explicit columns, or a saved template; and the processing mode."""

    source_fields: dict[str, str] | None = None
    field_map: dict[str, str] | None = None
    import_mode: ImportMode | None = None
    template_id: str | None = None
    save_as_template: SaveAsTemplate | None = None


class ImportMapping(Request, MappingFields):
    """``POST /import-jobs/{id}/mapping``: either sourceFields + fieldMap, or a saved templateId."""

    @model_validator(mode="after")
    def _mapping_or_template(self) -> ImportMapping:
        if self.template_id is None and (self.source_fields is None or self.field_map is None):
            raise ValueError("give sourceFields and fieldMap, or a templateId")
        return self


class ImportStarted(Response):
    status: str
    job_id: str | None = None
    lane: str | None = None
    message: str | None = None


class ImportJobStatus(_JobStatus, JobMetrics):
    """``GET /import-jobs/{id}``: state plus the row counts, flat."""


class ImportErrorsLocation(Response):
    has_errors: bool
    error_file_url: str | None = Field(default=None, repr=False)
    expires_at: datetime | None = None
    error_count: int | None = None


class ErrorRow(_Wire):
    """One line of an errors file: the rejected source row and why."""

    model_config = ConfigDict(extra="allow")

    row_number: int | None = None
    source_row: dict[str, Any] | None = None
    error: str | None = None


# Metadata ----------------------------------------------------------------------------------------


class FieldSchema(_Wire):
    model_config = ConfigDict(extra="ignore")

    name: str
    type: str = "string"
    required: bool = False
    primary_key: bool = False
    format: str | None = None


class ObjectSchema(Response):
    object_name: str | None = None
    primary_key: str | None = None
    fields: list[FieldSchema]

    def field(self, name: str) -> FieldSchema | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def key_field(self) -> str | None:
        """The primary key: as declared at the top, or the field flagged ``primaryKey``."""
        return self.primary_key or next((f.name for f in self.fields if f.primary_key), None)
