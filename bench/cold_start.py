"""Cold imports of the four handler modules against ``import boto3``, as Lambda would see them.

Lambda-like: a fresh ``python -S`` process (no site-packages) with only the function's folder and the
layer's packages on ``sys.path`` -- the layer is built into a temporary directory by installing
``layers/common/requirements.txt`` (uv, or pip) and copying ``experiture_ingest`` beside it, as
``sam build`` does. Each round runs, in a rotating order and each in its own process:

- ``import boto3`` (the yardstick: every function needs it sooner or later);
- ``import app`` of the handler now;
- ``import app`` of the handler at ``--before`` (the code before issue 12: handler modules that
  imported boto3, the client, the domain logic and built the X-Ray tracer at import), when that
  commit is in the repository;
- ``import app`` and then what the first invocation builds (the tracer, boto3 clients, the API
  client, the domain objects): what moved from the import to the first use, so nothing is hidden.

Medians of ``--rounds`` rounds (first, untimed warm-up round writes the .pyc files).

    python -m bench.cold_start [--rounds 9] [--before 7ce1c02]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "7ce1c02"  # the last commit before issue 12's cold-start work

# handler folder -> what its first invocation builds (the functools.cache'd builders, the tracer)
HANDLERS = {
    "intake": "app.intake(); app.tracer.real",
    "import_job": "app.deps(); import experiture_ingest.files.collect; app.tracer.real",
    "record_writer": "app.writer(); app.tracer.real",
    "batch_settler": "app.settler(); app.tracer.real",
}
ENV = {  # what the template sets, with placeholder values (nothing is called)
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's documented dummy; never sent anywhere
    "AWS_LAMBDA_FUNCTION_NAME": "cold-start-bench",
    "POWERTOOLS_SERVICE_NAME": "experiture-ingest",
    "POWERTOOLS_METRICS_NAMESPACE": "ExperitureIngest",
    "EXPERITURE_API_URL": "https://api.example.invalid/public/v1",
    "EXPERITURE_API_TOKEN": "placeholder",
    "IMPORT_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:bench",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
    "SETTLE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/settle",
    "PAYLOAD_BUCKET": "bench-payloads",
    "LEDGER_TABLE": "bench-ledger",
}


def build_layer(target: Path) -> Path:
    """The layer's packages in ``target/python`` (installed from the pins, plus experiture_ingest)."""
    packages = target / "python"
    requirements = ROOT / "layers" / "common" / "requirements.txt"
    uv = ROOT / ".tools" / "bin" / "uv"
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--quiet", "--target", str(packages), "-r", str(requirements)]
        cmd += ["--python", sys.executable, "--compile-bytecode"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(packages),
            "-r",
            str(requirements),
        ]
    subprocess.run(cmd, check=True)
    return packages


def checkout(ref: str, target: Path) -> Path | None:
    """``layers/common/experiture_ingest`` and ``functions/`` as they were at ``ref`` (None if unknown)."""
    archive = subprocess.run(
        ["git", "archive", ref, "layers/common/experiture_ingest", "functions"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def timed(paths: list[Path], statement: str) -> float:
    """Seconds ``statement`` takes in a fresh ``python -S`` with only ``paths`` importable."""
    code = (
        "import sys, time; sys.path[:0] = " + repr([str(p) for p in paths]) + "\n"
        "t = time.perf_counter()\n" + statement.replace("; ", "\n") + "\n"
        "print(time.perf_counter() - t)"
    )
    env = {"PATH": os.environ.get("PATH", ""), **ENV}
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=False, cwd="/"
    )
    if done.returncode != 0:
        raise RuntimeError(f"{statement!r} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--before", default=BEFORE, help="git ref of the previous handlers (default %(default)s)"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    try:
        layer = build_layer(work / "layer")
        now = work / "now"
        shutil.copytree(ROOT / "layers" / "common" / "experiture_ingest", now / "experiture_ingest")
        shutil.copytree(ROOT / "functions", now / "functions")
        before = checkout(args.before, work / "before")
        empty = work / "empty"
        empty.mkdir()

        print(f"python {sys.version.split()[0]}, layer {layer} ({args.rounds} rounds, medians)")
        print("handler        import ms   before ms   boto3 ms   ratio   before ratio   import+first use ms")
        for name, first_use in HANDLERS.items():
            ways = {
                "boto3": ([empty, layer], "import boto3"),
                "now": ([now / "functions" / name, now, layer], "import app"),
                "first": ([now / "functions" / name, now, layer], "import app; " + first_use),
            }
            if before is not None:
                old = before / "layers" / "common"
                ways["before"] = ([before / "functions" / name, old, layer], "import app")
            for paths, statement in ways.values():  # warm-up: compile .pyc files, fill the page cache
                timed(paths, statement)
            samples: dict[str, list[float]] = {way: [] for way in ways}
            order = list(ways)
            for round_no in range(args.rounds):
                rotated = order[round_no % len(order) :] + order[: round_no % len(order)]
                for way in rotated:
                    samples[way].append(timed(*ways[way]))
            med = {way: statistics.median(values) * 1000 for way, values in samples.items()}
            before_ms = f"{med['before']:9.0f}" if "before" in med else "      n/a"
            before_ratio = f"{med['before'] / med['boto3']:12.2f}x" if "before" in med else "          n/a"
            print(
                f"{name:<14} {med['now']:9.0f}   {before_ms}   {med['boto3']:8.0f}   "
                f"{med['now'] / med['boto3']:4.2f}x   {before_ratio}   {med['first']:12.0f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
