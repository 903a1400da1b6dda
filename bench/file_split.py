"""Split uploads: a big CSV cut into row-aligned parts, streamed by 1, 2 and 4 parallel workers.

    .tools/bin/uv run --frozen --no-sync python -m bench.file_split [--size-mb 1024] [--part-mb 128]
        [--workers 1 2 4] [--rounds 3]

S3 reads are served by :mod:`bench.s3_files` (HEAD and ranged GET from a local directory, streamed
from disk: moto reads the whole object for every ranged GET, which would measure moto), the sandbox
(a subprocess) provides the upload slots. The
object is a CSV with quoted fields, escaped quotes and one multi-line record in ten. Each round runs
every way once, in an order rotated from round to round, and the sandbox is reset between rounds
(its uploads deleted); the table shows medians over the rounds.

- ``plan (quote-tracking scan)``: :func:`~experiture_ingest.files.parts.plan.plan_split`, the
  planning pass, one GET streamed through :class:`~experiture_ingest.files.parts.records.RecordScanner`;
- ``plan (naive: csv.reader)``: the baseline, the same GET decoded and parsed by ``csv.reader`` to
  find where records end;
- ``one stream``: the whole file as one job, streamed as the intake does (``S3Source`` + upload);
- ``split, N workers``: the planned parts shared by N worker processes, each streaming its parts
  with ranged GETs (:class:`~experiture_ingest.files.parts.upload.PartBody`) to their own jobs.

Each worker reports its peak resident-set growth during its transfers over a warmed-up baseline
(as bench/file_upload.py does); aggregate MB/s is the file's bytes over the time from the first
worker's first byte to the last worker's end. Every part's upload is checked by size in the sandbox,
and the parts' rows must add up to the file's. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import ADMIN_TOKEN, ROOT, free_port, spawn_sandbox, stop, wait_ready
from bench.file_upload import AWS_ENV, BUCKET, RSS_BUDGET_MB, TOKEN, PeakGrowth, clients

KEY = "incoming/contacts/bench-split.csv"


class CsvReader:
    """A CSV of about ``size`` bytes as a file-like object: the header, then one block of quoted
    records repeated (ends on a record boundary; one block in memory)."""

    def __init__(self, size: int) -> None:
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        for i in range(8000):
            note = f'line one\nline "two" of {i}' if i % 10 == 0 else f"note {i}, plain"
            writer.writerow([f"user{i}@example.com", f"Name {i}", "Paris, France", note, str(i % 90)])
        self.header = b'"email","first_name","city","note","age"\r\n'
        self.block = out.getvalue().encode()
        self.rows_per_block = 8000
        self.blocks = max(1, (size - len(self.header)) // len(self.block))
        self.size = len(self.header) + self.blocks * len(self.block)
        self.rows = self.blocks * self.rows_per_block
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            at = self.pos + len(out)
            if at < len(self.header):
                out += self.header[at : at + n - len(out)]
            else:
                offset = (at - len(self.header)) % len(self.block)
                out += self.block[offset : offset + n - len(out)]
        self.pos += n
        return bytes(out)


def _source(s3: Any) -> Any:
    from experiture_ingest.files.handoff import SourceObject

    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    return SourceObject(bucket=BUCKET, key=KEY, size=head["ContentLength"], format="csv")


# --- children ---------------------------------------------------------------------------------------


def child_plan(args: argparse.Namespace) -> dict[str, Any]:
    from experiture_ingest.files.parts.plan import plan_split

    s3, _ = clients(args.s3_url)
    source = _source(s3)
    with PeakGrowth() as memory:
        started = time.perf_counter()
        plan = plan_split(s3, source, args.part_mb * 2**20)
        seconds = time.perf_counter() - started
    Path(args.plan_file).write_text(json.dumps(plan.wire()))
    return {
        "seconds": seconds,
        "bytes": source.size,
        "parts": len(plan.parts),
        "rows": plan.total_rows,
        **memory.report(),
    }


def child_naive_plan(args: argparse.Namespace) -> dict[str, Any]:
    s3, _ = clients(args.s3_url)
    with PeakGrowth() as memory:
        started = time.perf_counter()
        body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"]
        text = io.TextIOWrapper(body, encoding="utf-8", newline="")
        rows = sum(1 for _ in csv.reader(text)) - 1
        seconds = time.perf_counter() - started
    size = s3.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"]
    return {"seconds": seconds, "bytes": size, "rows": rows, **memory.report()}


def child_one_stream(args: argparse.Namespace) -> dict[str, Any]:
    from experiture_ingest.client import BearerToken, ExperitureClient, ImportJobInit
    from experiture_ingest.files.streaming import S3Source

    s3, _ = clients(args.s3_url)
    source = _source(s3)
    with ExperitureClient(args.api_url, BearerToken(TOKEN)) as api:
        api.get_object_schema("contacts")
        slot = api.init_import(
            ImportJobInit(object_name="contacts", file_name="one.csv", file_size=source.size)
        )
        with PeakGrowth() as memory:
            start = time.time()
            result = api.upload(
                slot, S3Source(s3, BUCKET, KEY, source.version_id).open, source.size, content_type="text/csv"
            )
            end = time.time()
    return {
        "jobIds": [slot.job_id],
        "start": start,
        "end": end,
        "bytes": result.bytes_sent,
        **memory.report(),
    }


def child_worker(args: argparse.Namespace) -> dict[str, Any]:
    from experiture_ingest.client import BearerToken, ExperitureClient, ImportJobInit
    from experiture_ingest.files.parts.plan import PartPlan
    from experiture_ingest.files.parts.upload import PartBody, upload_part

    s3, _ = clients(args.s3_url)
    plan = PartPlan.model_validate_json(Path(args.plan_file).read_text())
    specs = [plan.parts[int(i) - 1] for i in args.indices.split(",") if i]
    job_ids, sent = [], 0
    with ExperitureClient(args.api_url, BearerToken(TOKEN)) as api:
        s3.head_object(Bucket=BUCKET, Key=KEY)
        api.get_object_schema("contacts")
        with PeakGrowth() as memory:
            start = time.time()
            for spec in specs:
                body = PartBody.prepare(s3, spec)
                request = ImportJobInit(
                    object_name="contacts", file_name=f"part-{spec.index}.csv", file_size=spec.bytes
                )
                done = upload_part(api, body, request, uuid.uuid4().bytes, "text/csv")
                job_ids.append(done.job_id)
                sent += done.bytes
            end = time.time()
    return {"jobIds": job_ids, "start": start, "end": end, "bytes": sent, **memory.report()}


CHILDREN = {
    "plan": child_plan,
    "naive-plan": child_naive_plan,
    "one": child_one_stream,
    "worker": child_worker,
}


def _spawn(mode: str, args: argparse.Namespace, **extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.file_split", "--child", mode, "--s3-url", args.s3_url]
    cmd += ["--api-url", args.api_url, "--plan-file", args.plan_file, "--part-mb", str(args.part_mb)]
    for name, value in extra.items():
        cmd += [f"--{name}", value]
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": f"{ROOT}:{ROOT / 'layers/common'}"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_workers(args: argparse.Namespace, workers: int, parts: int) -> dict[str, Any]:
    shares = [",".join(str(i) for i in range(w + 1, parts + 1, workers)) for w in range(workers)]
    results = [_result(p) for p in [_spawn("worker", args, indices=s) for s in shares if s]]
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "seconds": seconds,
        "bytes": sum(r["bytes"] for r in results),
        "peakGrowthMb": [r["peakGrowthMb"] for r in results],
        "jobIds": [j for r in results for j in r["jobIds"]],
        "perWorkerMbps": [r["bytes"] / 1e6 / (r["end"] - r["start"]) for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--part-mb", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--s3-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--plan-file", help=argparse.SUPPRESS)
    parser.add_argument("--indices", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    s3_port, sandbox_port = free_port(), free_port()
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    (root / BUCKET / KEY).parent.mkdir(parents=True)
    args.plan_file = str(root / "plan.json")
    reader = CsvReader(args.size_mb * 2**20)
    print(f"writing a {reader.size / 2**20:.0f} MiB CSV ({reader.rows} rows) ...", flush=True)
    with (root / BUCKET / KEY).open("wb") as out:
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    files = subprocess.Popen(
        [sys.executable, "-m", "bench.s3_files", "--root", str(root), "--port", str(s3_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{s3_port}/", files)
    sandbox = spawn_sandbox(sandbox_port, "--speed", "instant")
    args.s3_url, args.api_url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{sandbox_port}/public/v1"
    admin = httpx.Client(
        base_url=f"http://127.0.0.1:{sandbox_port}/_sandbox",
        timeout=60,
        headers={"X-Sandbox-Admin-Token": ADMIN_TOKEN},
    )
    failures: list[str] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        os.environ.update(AWS_ENV)
        planned = _result(_spawn("plan", args))  # the plan every split way uses
        if planned["rows"] != reader.rows:
            failures.append(f"the plan counts {planned['rows']} rows, the file has {reader.rows}")
        ways = ["plan", "naive-plan", "one", *[f"split-{w}" for w in args.workers]]
        for round_no in range(args.rounds):
            admin.post("/reset").raise_for_status()
            order = ways[round_no % len(ways) :] + ways[: round_no % len(ways)]
            for way in order:
                if way.startswith("split-"):
                    result = run_workers(args, int(way.split("-")[1]), planned["parts"])
                else:
                    result = _result(_spawn(way, args))
                    if way == "one":
                        result["seconds"] = result["end"] - result["start"]
                        result["peakGrowthMb"] = [result["peakGrowthMb"]]
                received = 0
                for job_id in result.get("jobIds", []):
                    info = admin.get(f"/import-jobs/{job_id}/upload-info").json()
                    if not info.get("complete"):
                        failures.append(f"{way}: job {job_id} has no complete upload")
                    received += int(info.get("bytes") or 0)
                expected = reader.size + (planned["parts"] - 1) * len(reader.header)
                if way.startswith("split") and received != expected:
                    failures.append(
                        f"{way}: the sandbox received {received} bytes, the parts hold {expected}"
                    )
                if way == "one" and received != reader.size:
                    failures.append(f"{way}: the sandbox received {received} bytes of {reader.size}")
                samples.setdefault(way, []).append(result)
                print(
                    f"  round {round_no + 1} {way:<12} {result['bytes'] / 1e6 / result['seconds']:8.1f} MB/s",
                    flush=True,
                )
    finally:
        admin.close()
        stop(sandbox)
        stop(files)
        tmp.cleanup()

    labels = {
        "plan": "plan (quote-tracking scan)",
        "naive-plan": "plan (naive: csv.reader)",
        "one": "one stream (whole file, 1 job)",
        **{f"split-{w}": f"split, {w} worker(s), {args.part_mb} MiB parts" for w in args.workers},
    }
    print(
        f"\n{reader.size / 2**20:.0f} MiB CSV, {planned['parts']} parts of at most {args.part_mb} MiB; medians of {args.rounds} rounds"
    )
    one = statistics.median(r["bytes"] / 1e6 / r["seconds"] for r in samples["one"])
    for way, label in labels.items():
        rates = [r["bytes"] / 1e6 / r["seconds"] for r in samples[way]]
        rate = statistics.median(rates)
        growth = statistics.median(
            max(r["peakGrowthMb"]) if isinstance(r["peakGrowthMb"], list) else r["peakGrowthMb"]
            for r in samples[way]
        )
        vs = f"  x{rate / one:4.2f} of one stream" if way.startswith("split") else ""
        if way.startswith("split"):
            each = statistics.median(statistics.median(r["perWorkerMbps"]) for r in samples[way])
            vs += f", each worker {each:.1f} MB/s"
        print(
            f"  {label:<44} {rate:8.1f} MB/s (min {min(rates):.1f}, max {max(rates):.1f}){vs}   peak RSS growth per worker {growth:6.1f} MB"
        )
        if way.startswith(("one", "split", "plan")) and way != "naive-plan" and growth >= RSS_BUDGET_MB:
            failures.append(f"{label}: peak RSS growth {growth:.1f} MB (budget < {RSS_BUDGET_MB})")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
