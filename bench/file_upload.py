"""S3 object -> Experiture upload slot: throughput and peak memory growth of the intake's upload.

    .tools/bin/uv run --frozen --no-sync python -m bench.file_upload [--sizes-mb 100 1024]
    # show that the check can fail: a 64 MiB read-ahead must exceed the budget
    .tools/bin/uv run --frozen --no-sync python -m bench.file_upload --ways intake --read-ahead-mb 64

Moto runs in server mode (a subprocess) as the local S3 and Step Functions endpoint; the sandbox (a
subprocess) provides the upload slot. For each size, in the same run and against the same two
endpoints, three ways to move the same object:

- ``intake``: the real :class:`experiture_ingest.files.intake.Intake` (head, config, init, streamed
  upload with read-ahead, hand-off), in a fresh child process.
- ``naive``: the baseline a quick script would write, ``get_object()['Body'].read()`` then one PUT
  of the bytes, also in a fresh child process.
- ``raw copy``: ``curl`` GET piped into ``curl`` PUT with a Content-Length (no Python at all), the
  ceiling the two endpoints allow; without curl, a plain ``http.client`` socket copy in a child.

Memory is the *growth* of the child's resident set during the transfer, over a warmed-up baseline:
the child first imports everything, builds its clients and makes one call to each endpoint, then
reads VmRSS, resets the kernel's high-water mark (``5`` into ``/proc/self/clear_refs``; a 2 ms VmRSS
sampling thread where that is not allowed) and reads VmHWM after the transfer. The process-wide
``ru_maxrss`` would be dominated by the interpreter and imports (~200 MB here) and hide what the
transfer costs. The intake's growth must stay under ``RSS_BUDGET_MB`` at every size and differ by
less than ``RSS_BUDGET_MB`` between sizes; ``--read-ahead-mb 64`` shows both checks failing.

Every upload is checked against the object's SHA-256 in the sandbox. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import boto3
import httpx

from bench.common import ADMIN_TOKEN, ROOT, free_port, spawn_sandbox, stop, wait_ready

CHUNK = 1 << 20
BUCKET = "bench-ingest"
TOKEN = "dev-token"
RSS_BUDGET_MB = 32
PASS_MACHINE = json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Pass", "End": True}}})
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class PatternReader:
    """``size`` bytes of a repeating pattern as a file-like object (no disk, one chunk in memory)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0
        self.block = bytes(range(256)) * (CHUNK // 256)

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            offset = (self.pos + len(out)) % len(self.block)
            out += self.block[offset : offset + n - len(out)]
        self.pos += n
        return bytes(out)


def pattern_sha256(size: int) -> str:
    reader, digest = PatternReader(size), hashlib.sha256()
    while chunk := reader.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def clients(s3_url: str) -> tuple[Any, Any]:
    session = boto3.session.Session(**{k.lower(): v for k, v in AWS_ENV.items() if k != "AWS_DEFAULT_REGION"})
    s3 = session.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    sfn = session.client("stepfunctions", endpoint_url=s3_url, region_name="us-east-1")
    return s3, sfn


def status_kib(field: str) -> int:
    """One ``Vm*`` line of /proc/self/status, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakGrowth:
    """Peak resident-set growth of this process inside the ``with`` block, over its RSS on entry."""

    def __init__(self) -> None:
        self.baseline_kib = self.peak_kib = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> PeakGrowth:
        gc.collect()
        self.baseline_kib = status_kib("VmRSS")
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")
        except OSError:
            self.peak_kib = self.baseline_kib
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            self.peak_kib = status_kib("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()

    def report(self) -> dict[str, float]:
        return {
            "baselineRssMb": round(self.baseline_kib / 1024, 1),
            "peakGrowthMb": round((self.peak_kib - self.baseline_kib) / 1024, 1),
        }


# --- children: one measured transfer each, in a fresh process ---------------------------------------


def child_intake(args: argparse.Namespace) -> dict[str, Any]:
    from experiture_ingest.client import BearerToken, ExperitureClient
    from experiture_ingest.files.intake import DroppedFile, Intake, IntakeSettings

    s3, sfn = clients(args.s3_url)
    settings: dict[str, Any] = {"IMPORT_STATE_MACHINE_ARN": args.state_machine}
    if args.read_ahead_mb is not None:
        settings["INTAKE_READ_AHEAD_BYTES"] = args.read_ahead_mb * 2**20
    with ExperitureClient(args.api_url, BearerToken(TOKEN)) as api:
        intake = Intake(s3=s3, sfn=sfn, client=api, settings=IntakeSettings.model_validate(settings))
        # Warm-up: one call to each endpoint, so lazy imports and connection pools are in the baseline.
        s3.head_object(Bucket=BUCKET, Key=args.key)
        sfn.describe_state_machine(stateMachineArn=args.state_machine)
        api.get_object_schema("contacts")
        with PeakGrowth() as memory:
            outcome = intake.handle(DroppedFile(bucket=BUCKET, key=args.key))
    if outcome.outcome != "uploaded":
        raise SystemExit(f"intake answered {outcome.outcome}: {outcome.summary.get('reason')}")
    return {
        "jobId": outcome.job_id,
        "seconds": outcome.upload_seconds,
        "bytes": outcome.bytes_uploaded,
        **memory.report(),
    }


def child_naive(args: argparse.Namespace) -> dict[str, Any]:
    s3, _ = clients(args.s3_url)
    size = s3.head_object(Bucket=BUCKET, Key=args.key)["ContentLength"]
    slot = init_job(args.api_url, args.key, size)
    with PeakGrowth() as memory:
        started = time.perf_counter()
        data = s3.get_object(Bucket=BUCKET, Key=args.key)["Body"].read()
        httpx.put(
            slot["uploadUrl"],
            content=data,
            headers={**slot["headers"], "Content-Type": "text/csv"},
            timeout=600,
        )
        seconds = time.perf_counter() - started
    return {"jobId": slot["jobId"], "seconds": seconds, "bytes": len(data), **memory.report()}


def child_socket_copy(args: argparse.Namespace) -> dict[str, Any]:
    """The raw copy without curl: http.client GET streamed into an http.client PUT."""
    import http.client
    from urllib.parse import urlsplit

    s3, _ = clients(args.s3_url)
    size = s3.head_object(Bucket=BUCKET, Key=args.key)["ContentLength"]
    slot = init_job(args.api_url, args.key, size)
    get_url = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": args.key}))
    put_url = urlsplit(slot["uploadUrl"])
    memory = PeakGrowth().__enter__()
    started = time.perf_counter()
    source = http.client.HTTPConnection(get_url.netloc)
    source.request("GET", f"{get_url.path}?{get_url.query}")
    response = source.getresponse()
    target = http.client.HTTPConnection(put_url.netloc)
    target.putrequest("PUT", f"{put_url.path}?{put_url.query}")
    for name, value in {**slot["headers"], "Content-Length": str(size), "Content-Type": "text/csv"}.items():
        target.putheader(name, value)
    target.endheaders()
    while chunk := response.read(CHUNK):
        target.send(chunk)
    target.getresponse().read()
    seconds = time.perf_counter() - started
    memory.__exit__()
    return {"jobId": slot["jobId"], "seconds": seconds, "bytes": size, **memory.report()}


def init_job(api_url: str, key: str, size: int) -> dict[str, Any]:
    answer = httpx.post(
        f"{api_url}/import-jobs",
        json={"objectName": "contacts", "fileName": key.rsplit("/", 1)[-1], "fileSize": size},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["data"]  # type: ignore[no-any-return]


CHILDREN = {"intake": child_intake, "naive": child_naive, "socket": child_socket_copy}


def run_child(
    mode: str, key: str, s3_url: str, api_url: str, state_machine: str, read_ahead_mb: int | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.file_upload", "--child", mode, "--key", key, "--s3-url", s3_url]
    cmd += ["--api-url", api_url, "--state-machine", state_machine]
    if read_ahead_mb is not None:
        cmd += ["--read-ahead-mb", str(read_ahead_mb)]
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": f"{ROOT}:{ROOT / 'layers/common'}"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def curl_copy(s3: Any, api_url: str, key: str, size: int) -> dict[str, Any]:
    slot = init_job(api_url, key, size)
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})
    headers = [f"{k}: {v}" for k, v in {**slot["headers"], "Content-Type": "text/csv"}.items()]
    # -T - would send chunked (refused by pre-signed PUTs): declare the length and drop the chunking.
    put = ["curl", "-sS", "--fail", "-X", "PUT", "-T", "-", "-H", f"Content-Length: {size}"]
    put += ["-H", "Transfer-Encoding:", "-o", "/dev/null"]
    for header in headers:
        put += ["-H", header]
    started = time.perf_counter()
    getter = subprocess.Popen(["curl", "-sS", "--fail", get_url], stdout=subprocess.PIPE)
    putter = subprocess.run([*put, slot["uploadUrl"]], stdin=getter.stdout, check=False, capture_output=True)
    assert getter.stdout is not None
    getter.stdout.close()
    getter.wait()
    if putter.returncode or getter.returncode:
        raise RuntimeError(f"curl copy failed: {putter.stderr.decode()[-500:]}")
    return {
        "jobId": slot["jobId"],
        "seconds": time.perf_counter() - started,
        "bytes": size,
        "peakGrowthMb": None,  # two curl processes with fixed buffers: not measured
    }


# --- the run -----------------------------------------------------------------------------------------


def spawn_moto(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/moto-api/", proc)
    return proc


def seed(s3: Any, sfn: Any, sizes_mb: list[int]) -> tuple[str, dict[int, str]]:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    arn = sfn.create_state_machine(
        name="ImportStateMachine", definition=PASS_MACHINE, roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    digests = {}
    for size_mb in sizes_mb:
        size = size_mb * 2**20
        s3.upload_fileobj(PatternReader(size), BUCKET, f"incoming/contacts/bench-{size_mb}mb.csv")
        digests[size_mb] = pattern_sha256(size)
    return arn, digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1024])
    parser.add_argument(
        "--ways", nargs="+", choices=["intake", "naive", "raw"], default=["intake", "naive", "raw"]
    )
    parser.add_argument(
        "--read-ahead-mb", type=int, help="the intake's INTAKE_READ_AHEAD_BYTES in MiB (default: its own)"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--s3-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--state-machine", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    moto_port, sandbox_port = free_port(), free_port()
    moto, sandbox = spawn_moto(moto_port), spawn_sandbox(sandbox_port, "--speed", "instant")
    s3_url, api_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}/public/v1"
    admin = httpx.Client(
        base_url=f"http://127.0.0.1:{sandbox_port}/_sandbox",
        timeout=30,
        headers={"X-Sandbox-Admin-Token": ADMIN_TOKEN},
    )
    curl = shutil.which("curl")
    raw_label = "raw copy (curl | curl)" if curl else "raw copy (http.client socket copy; curl not installed)"
    failures: list[str] = []
    rows: list[tuple[int, str, dict[str, Any]]] = []
    try:
        os.environ.update(AWS_ENV)
        s3, sfn = clients(s3_url)
        print(f"seeding moto S3 with {', '.join(f'{s} MB' for s in args.sizes_mb)} objects ...", flush=True)
        arn, digests = seed(s3, sfn, args.sizes_mb)
        for size_mb in args.sizes_mb:
            key = f"incoming/contacts/bench-{size_mb}mb.csv"
            labels = {"intake": "intake (streamed, read-ahead)", "naive": "naive (read all, then PUT)"}
            for label in [labels.get(way, raw_label) for way in args.ways]:
                if label.startswith("intake"):
                    result = run_child("intake", key, s3_url, api_url, arn, args.read_ahead_mb)
                elif label.startswith("naive"):
                    result = run_child("naive", key, s3_url, api_url, arn)
                elif curl:
                    result = curl_copy(s3, api_url, key, size_mb * 2**20)
                else:
                    result = run_child("socket", key, s3_url, api_url, arn)
                info = admin.get(f"/import-jobs/{result['jobId']}/upload-info").json()
                if info.get("sha256") != digests[size_mb]:
                    failures.append(f"{label} {size_mb} MB: uploaded bytes differ from the object")
                rows.append((size_mb, label, result))
                growth = result.get("peakGrowthMb")
                print(
                    f"{size_mb:>6} MB  {label:<52} {result['seconds']:8.2f} s "
                    f"{size_mb * 2**20 / 1e6 / result['seconds']:9.1f} MB/s  peak RSS growth "
                    + ("n/a (not Python)" if growth is None else f"{growth:7.1f} MB")
                    + ("" if growth is None else f" (over a warmed-up {result['baselineRssMb']:.1f} MB)"),
                    flush=True,
                )
    finally:
        admin.close()
        stop(sandbox)
        stop(moto)

    growths = {size: r["peakGrowthMb"] for size, label, r in rows if label.startswith("intake")}
    for size_mb, growth in growths.items():
        if growth >= RSS_BUDGET_MB:
            failures.append(
                f"intake peak RSS grew by {growth:.1f} MB for {size_mb} MB (budget < {RSS_BUDGET_MB})"
            )
    if len(growths) >= 2:
        spread = max(growths.values()) - min(growths.values())
        verdict = "ok" if spread < RSS_BUDGET_MB else "FAIL"
        print(
            f"intake peak RSS growth spread across sizes: {spread:.1f} MB "
            f"(budget < {RSS_BUDGET_MB} MB): {verdict}"
        )
        if spread >= RSS_BUDGET_MB:
            failures.append(f"intake peak RSS growth differs by {spread:.1f} MB with the file size")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
