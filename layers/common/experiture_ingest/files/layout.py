"""The ingest bucket's layout: where users drop files and configs, and where results appear.

>>> object_name_from_key("incoming/contacts/2026/11/spring.csv")
'contacts'
>>> result_key("incoming/contacts/2026/11/spring.csv")
'results/incoming/contacts/2026/11/spring.csv.json'
>>> version_result_key("incoming/contacts/spring.csv", "v1")
'results/incoming/contacts/spring.csv.versions/v1.json'
>>> errors_key("incoming/contacts/spring.csv")
'results/incoming/contacts/spring.csv.errors.jsonl'
"""

from __future__ import annotations

INCOMING_PREFIX = "incoming/"
CONFIG_PREFIX = "config/"
RESULTS_PREFIX = "results/"


def object_name_from_key(key: str) -> str | None:
    """The target object a key names by convention (``incoming/<object>/...``), or None."""
    if not key.startswith(INCOMING_PREFIX):
        return None
    parts = key[len(INCOMING_PREFIX) :].split("/")
    return parts[0] if len(parts) >= 2 and parts[0] and parts[-1] else None


def config_key(object_name: str) -> str:
    return f"{CONFIG_PREFIX}{object_name}.json"


def result_key(source_key: str) -> str:
    """The summary of one source file: ``results/<original key>.json``."""
    return f"{RESULTS_PREFIX}{source_key}.json"


def version_result_key(source_key: str, version: str) -> str:
    """The summary of one version that is not the key's newest (superseded, or overtaken by a newer one).

    ``results/<key>.json`` always describes the newest version; older ones are kept beside it.
    """
    return f"{RESULTS_PREFIX}{source_key}.versions/{version}.json"


def errors_key(source_key: str) -> str:
    """The rejected rows of one source file: ``results/<original key>.errors.jsonl``."""
    return f"{RESULTS_PREFIX}{source_key}.errors.jsonl"
