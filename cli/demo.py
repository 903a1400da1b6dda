"""``experiture-ingest demo``: the product's main jobs, locally, with nothing to configure.

It starts the local Experiture sandbox, then runs the parts below against it (all by default):

- files: bundled files dropped into a local S3 bucket (moto) go through the intake function and
  the real import state machine; the summaries and errors file land back in the bucket.
- streams: a few thousand records enqueued on a local SQS queue (moto) are packed into batch
  writes by the record writer and settle in the sandbox.
- client: the vendor's four-step import flow driven directly by the project's API client.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

from experiture_ingest.client import (
    ClientSettings,
    ExperitureClient,
    ImportJobInit,
    ImportMapping,
    RetryPolicy,
)
from sandbox.testing import SandboxHandle, running_sandbox

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_CSV = SAMPLES / "contacts.csv"

# The sample's columns, as a user would map them onto the sandbox's `contacts` object.
SAMPLE_MAPPING = ImportMapping(
    source_fields={
        "Email": "string",
        "First Name": "string",
        "Last Name": "string",
        "City": "string",
        "Age": "integer",
        "Lifetime Value": "number",
        "Opted In": "boolean",
        "Signed Up At": "datetime",
    },
    field_map={
        "Email": "email",
        "First Name": "first_name",
        "Last Name": "last_name",
        "City": "city",
        "Age": "age",
        "Lifetime Value": "lifetime_value",
        "Opted In": "opted_in",
        "Signed Up At": "signed_up_at",
    },
    import_mode="balanced",
)


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the pipeline end to end against a local Experiture sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--speed", default="realistic", help="sandbox job speed: instant, realistic or a factor"
    )
    parser.add_argument(
        "--workdir",
        default=".demo",
        type=Path,
        help="where the demo leaves what it produced (emptied first; default: .demo)",
    )
    parser.add_argument(
        "--only",
        choices=sorted(PARTS),
        action="append",
        help=f"run only this part (repeatable; default: {', '.join(DEFAULT_PARTS)})",
    )
    parser.set_defaults(run=run)


def _files(sandbox: SandboxHandle, workdir: Path) -> None:
    from cli import demo_files

    demo_files.run(sandbox, workdir)


def _streams(sandbox: SandboxHandle, workdir: Path) -> None:
    from cli import demo_streams

    demo_streams.run(sandbox, workdir)


def _client(sandbox: SandboxHandle, workdir: Path) -> None:
    import_with_client(sandbox, SAMPLE_CSV)


PARTS: dict[str, Callable[[SandboxHandle, Path], None]] = {
    "files": _files,
    "streams": _streams,
    "client": _client,
}
DEFAULT_PARTS = ["files", "streams"]


class _HideMetricBlobs(io.TextIOBase):
    """Drops the CloudWatch EMF lines Powertools Metrics prints (even when disabled, once a metric
    holds 100 values): on a terminal they are noise, in Lambda they are how metrics reach CloudWatch."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._hiding = False

    def write(self, text: str) -> int:
        if text.startswith('{"_aws"'):
            self._hiding = True
        elif not (self._hiding and text == "\n"):
            self._hiding = False
            self.target.write(text)
        else:
            self._hiding = False
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def run(args: argparse.Namespace) -> int:
    # The handlers run in-process: keep their metric blobs and JSON logs off the screen.
    quiet = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR"}
    with (
        mock.patch.dict(os.environ, quiet),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(_HideMetricBlobs(sys.stdout)),
    ):
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        return _run_parts(args)


def _run_parts(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with running_sandbox(speed=args.speed, data_dir=str(workdir / "sandbox")) as sandbox:
        print(f"Local Experiture sandbox at {sandbox.base_url} (token {sandbox.token})")
        for name in args.only or DEFAULT_PARTS:
            print(f"\n=== {name} ===\n", flush=True)
            PARTS[name](sandbox, workdir)
        print(
            f"\nEverything the demo produced is under {workdir}: result summaries, the errors file, "
            f"dead letters, and the sandbox's SQLite database ({Path(sandbox.db_path).name})."
        )
    return 0


def import_with_client(sandbox: SandboxHandle, path: Path) -> None:
    """The vendor's four-step flow, driven by our client, narrated for a person watching."""
    settings = ClientSettings.from_env(
        {"EXPERITURE_API_URL": sandbox.base_url, "EXPERITURE_API_TOKEN": sandbox.token}
    )
    size = path.stat().st_size
    with ExperitureClient.from_settings(
        settings, retry=RetryPolicy(max_attempts=5, budget_seconds=30)
    ) as client:
        print(f"1. Import {path.name} ({size} bytes) into 'contacts'")
        slot = client.init_import(ImportJobInit(object_name="contacts", file_name=path.name, file_size=size))
        print(f"   job {slot.job_id} created; upload slot expires at {slot.expires_at}")
        uploaded = client.upload(slot, lambda: path.open("rb"), size, content_type="text/csv")
        print(
            f"2. Uploaded {uploaded.bytes_sent} bytes in {uploaded.seconds:.2f}s (streamed, exact Content-Length)"
        )
        client.set_mapping(slot.job_id, SAMPLE_MAPPING)
        print(f"3. Mapping set: {len(SAMPLE_MAPPING.field_map or {})} columns mapped, mode balanced")
        client.start_import(slot.job_id)
        print("4. Started; polling (the docs' cadence is 5 s growing to 60 s, shortened here):")
        status = client.get_import(slot.job_id)
        delay = 0.5
        while not status.is_terminal:
            counts = f"read={status.read_rows} valid={status.valid_rows} invalid={status.invalid_rows}"
            print(f"   [{status.state}] {counts}")
            time.sleep(delay)
            delay = min(delay * 1.5, 3.0)
            status = client.get_import(slot.job_id)
        print(f"   [{status.state}]\n")
        if status.state != "completed":
            print(f"The job failed: {status.error_message}")
            return
        print(
            f"Result: {status.rows_imported} rows imported ({status.merged_inserts} inserted, "
            f"{status.merged_updates} updated), {status.rows_rejected} rejected"
        )
        if status.error_summary:
            print(
                "Rejections by reason: "
                + ", ".join(f"{code} x{n}" for code, n in status.error_summary.items())
            )
            errors = client.get_import_errors(slot.job_id)
            if errors.has_errors and errors.error_file_url:
                print("Rejected rows (from the errors file):")
                for row in client.iter_error_rows(errors.error_file_url):
                    print(f"  row {row.row_number}: {row.error}  <- {row.source_row}")
        stored = sandbox.admin.records("contacts")
        print(f"\nThe sandbox now holds {len(stored)} contacts.")
