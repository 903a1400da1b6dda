"""Deterministic identities for duplicate events, and the intake's settings."""

from __future__ import annotations

import re
import uuid

import pytest

from experiture_ingest.files.intake import IntakeSettings, execution_name, idempotency_key
from experiture_ingest.settings import SettingsError, load_settings

SFN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


def test_the_same_object_version_always_gets_the_same_key_and_execution_name():
    # Given the same bucket, key and version, when derived twice, then key and name are equal
    assert idempotency_key("b", "k.csv", "v1", None) == idempotency_key("b", "k.csv", "v1", None)
    assert execution_name("b", "k.csv", "v1", None) == execution_name("b", "k.csv", "v1", None)


@pytest.mark.parametrize(
    "other",
    [
        ("b2", "k.csv", "v1", None),
        ("b", "k2.csv", "v1", None),
        ("b", "k.csv", "v2", None),
        ("b", "k.csv", None, "e1"),
    ],
)
def test_any_other_object_version_gets_another_identity(other):
    # Given another bucket, key or version, then both key and execution name differ
    assert idempotency_key(*other) != idempotency_key("b", "k.csv", "v1", None)
    assert execution_name(*other) != execution_name("b", "k.csv", "v1", None)


def test_unversioned_objects_are_identified_by_etag_quoted_or_not():
    # Given an unversioned object, when its ETag comes quoted or bare, then the identity is the same
    assert idempotency_key("b", "k.csv", None, '"abc"') == idempotency_key("b", "k.csv", None, "abc")
    assert idempotency_key("b", "k.csv", None, "abc") != idempotency_key("b", "k.csv", None, "abd")


def test_each_job_generation_of_a_file_has_its_own_key():
    # Given a file whose first job was abandoned, then the next init uses a new (still deterministic) key
    keys = {idempotency_key("b", "k.csv", "v1", None, generation) for generation in range(1, 6)}
    assert len(keys) == 5
    assert all(uuid.UUID(k).version == 4 for k in keys)


@pytest.mark.parametrize(
    "key",
    [
        "incoming/contacts/a.csv",
        "incoming/contacts/über [1] (copy) 東京.csv",
        "incoming/x/" + "long name " * 30 + ".csv",
    ],
)
def test_execution_names_are_valid_step_functions_names(key):
    # Given any key (spaces, brackets, unicode, very long), then the name fits Step Functions' rules
    assert SFN_NAME.match(execution_name("bucket", key, "v1", None))


def test_missing_state_machine_arn_names_the_variable():
    # Given an environment without the state machine, when loading settings, then the message names it
    with pytest.raises(SettingsError, match="IMPORT_STATE_MACHINE_ARN: missing"):
        load_settings(IntakeSettings, {})


def test_settings_come_from_the_environment():
    # Given overrides for the limit and the poll cadence, then the hand-off's poll settings follow them
    settings = load_settings(
        IntakeSettings,
        {
            "IMPORT_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:m",
            "INTAKE_SINGLE_PUT_MAX_BYTES": "1000",
            "IMPORT_POLL_INITIAL_SECONDS": "0.1",
        },
    )
    assert settings.single_put_max_bytes == 1000
    assert settings.poll().initial_seconds == 0.1
    with pytest.raises(SettingsError, match="INTAKE_SINGLE_PUT_MAX_BYTES"):
        load_settings(IntakeSettings, {"IMPORT_STATE_MACHINE_ARN": "a", "INTAKE_SINGLE_PUT_MAX_BYTES": "-1"})


def test_the_part_size_defaults_to_4_gib_accepts_1_mib_and_never_exceeds_one_put():
    arn = {"IMPORT_STATE_MACHINE_ARN": "a"}
    # Given no setting, the part size is 4 GiB (under the 5 GiB single PUT)
    assert load_settings(IntakeSettings, arn).part_size == 4 * 1024**3
    # Given 1 MiB (the smallest accepted), it is taken as is
    assert load_settings(IntakeSettings, {**arn, "INTAKE_PART_MAX_BYTES": str(1024**2)}).part_size == 1024**2
    # Given less than 1 MiB, or more than the single-PUT limit, the message names the variable
    with pytest.raises(SettingsError, match="INTAKE_PART_MAX_BYTES"):
        load_settings(IntakeSettings, {**arn, "INTAKE_PART_MAX_BYTES": "1000"})
    with pytest.raises(SettingsError, match="INTAKE_PART_MAX_BYTES .* is above the single-PUT limit"):
        load_settings(IntakeSettings, {**arn, "INTAKE_PART_MAX_BYTES": str(6 * 1024**3)})
