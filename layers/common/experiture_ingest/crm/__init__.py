"""The peer CRM's custom object records API: settings, a small client, one exception tree."""

from experiture_ingest.crm.client import ApiKey, CrmClient, ObjectRecordsReport, ProcessStatus
from experiture_ingest.crm.errors import (
    CrmAuthError,
    CrmDisabledError,
    CrmError,
    CrmNotFoundError,
    CrmRequestError,
    CrmSettingsError,
    CrmTooLargeError,
    CrmTransientError,
)
from experiture_ingest.crm.settings import CrmSettings

__all__ = [
    "ApiKey",
    "CrmAuthError",
    "CrmClient",
    "CrmDisabledError",
    "CrmError",
    "CrmNotFoundError",
    "CrmRequestError",
    "CrmSettings",
    "CrmSettingsError",
    "CrmTooLargeError",
    "CrmTransientError",
    "ObjectRecordsReport",
    "ProcessStatus",
]
