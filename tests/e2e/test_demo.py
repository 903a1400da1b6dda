"""`make demo` from nothing: the whole pipeline runs locally and says what happened."""

from __future__ import annotations

import re

import pytest

from cli.main import main


@pytest.mark.slow
def test_demo_runs_files_and_streams_and_reports_outcomes(capsys, tmp_path):
    # Given nothing configured, when the demo runs (jobs at instant speed to keep the suite fast)
    assert main(["demo", "--speed", "instant", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    # Then the files part imported the good rows and brought the rejected ones back with reasons
    assert "Imported 5 of 8 rows into contacts; 3 rows were rejected" in out
    assert "row 3: Email: invalid email format" in out
    assert "Imported 3 of 3 rows into contacts" in out
    assert "intake: refused" in out and "intake: duplicate" in out
    # and the streams part landed every good record, dead-lettering the one bad record with its reason
    assert re.search(r"contacts: 2999 new records", out) and re.search(r"events: 2000 new records", out)
    assert "dead letter: VALIDATION_TYPE_MISMATCH" in out
    # and the CRM got its garages and vehicles, the one with an attribute it does not define dead-lettered
    assert "CRM garage: 3 new records" in out and "CRM vehicle: 5 new records" in out
    assert "dead letter: CRM.UNKNOWN_ATTRIBUTES" in out and "'colour'" in out
    # and no CloudWatch metric blob or traceback reached the screen
    assert '"_aws"' not in out and "Traceback" not in out
    # and what it printed is there to read afterwards
    summary = tmp_path / "demo/results/incoming/contacts/2026/spring.csv.json"
    assert '"completed_with_errors"' in summary.read_text()
    assert (tmp_path / "demo/sandbox").is_dir()


def test_demo_client_part_alone(capsys, tmp_path):
    assert main(["demo", "--only", "client", "--speed", "instant", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "8 rows imported" in out and "4 rejected" in out
