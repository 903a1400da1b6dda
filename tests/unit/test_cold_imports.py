"""Each handler module imports only what every invocation needs at once; the heavy modules (boto3,
the X-Ray SDK, httpx, pydantic, the domain logic) load on first use. bench/cold_start.py measures the
time; this guards the property, in a fresh interpreter per handler."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.local_aws import ROOT

# (Powertools imports the bare botocore package to set its user agent: a few milliseconds.)
HEAVY = ("boto3", "botocore.session", "aws_xray_sdk", "httpx", "pydantic", "experiture_ingest.client")


@pytest.mark.parametrize("function", ["intake", "import_job", "parts", "record_writer", "batch_settler"])
def test_importing_a_handler_loads_no_heavy_module(function):
    code = (
        f"import json, sys; import app; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "functions" / function,
        env={"PYTHONPATH": str(ROOT / "layers" / "common"), "AWS_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
