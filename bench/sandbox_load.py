"""Sandbox under load: N concurrent clients posting 10,000-record upsert batches.

    .tools/bin/uv run --frozen --no-sync python -m bench.sandbox_load [--clients 50] [--batches-per-client 2]

The sandbox runs in a subprocess (as `experiture-ingest sandbox --speed instant`). Each client sends
its batches one after another, each with an Idempotency-Key, as the record writer does. Prints
requests/s, records/s, latency percentiles, errors, and how long the batch jobs took to settle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx

from bench.common import free_port, spawn_sandbox, stop

RECORDS_PER_BATCH = 10_000


def make_body(client: int, batch: int) -> bytes:
    records = [
        {
            "email": f"c{client}-b{batch}-{i}@example.com",
            "first_name": f"Name{i}",
            "tier": ("gold", "silver", "bronze")[i % 3],
            "age": 20 + i % 50,
            "signed_up_at": "2026-04-21T15:30:00Z",
        }
        for i in range(RECORDS_PER_BATCH)
    ]
    return json.dumps({"records": records}).encode()


async def client_task(
    http: httpx.AsyncClient,
    bodies: list[bytes],
    latencies: list[float],
    errors: list[str],
    job_ids: list[str],
) -> None:
    for body in bodies:
        began = time.perf_counter()
        try:
            resp = await http.post(
                "/records/contacts/upsert-batch",
                content=body,
                headers={"Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
            continue
        latencies.append(time.perf_counter() - began)
        if resp.status_code != 202:
            errors.append(str(resp.status_code))
        else:
            job_ids.append(resp.json()["data"]["jobId"])


async def run(clients: int, per_client: int, base: str) -> dict[str, float]:
    bodies = [[make_body(c, b) for b in range(per_client)] for c in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    job_ids: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": "Bearer dev-token"}, timeout=300, limits=limits
    ) as http:
        began = time.perf_counter()
        await asyncio.gather(
            *(client_task(http, bodies[c], latencies, errors, job_ids) for c in range(clients))
        )
        elapsed = time.perf_counter() - began
        # Settle: every accepted job must complete (none failed, every row merged).
        settle_began = time.perf_counter()
        pending = set(job_ids)
        failed = 0
        merged = 0
        while pending:
            for job_id in list(pending):
                data = (await http.get(f"/records/contacts/jobs/{job_id}")).json()["data"]
                if data["state"] in ("completed", "failed"):
                    pending.discard(job_id)
                    failed += data["state"] == "failed"
                    merged += data["metrics"]["mergedInserts"]
            if pending:
                await asyncio.sleep(0.5)
        settle = time.perf_counter() - settle_began
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n + len(errors),
        "errors": len(errors),
        "elapsed_s": elapsed,
        "requests_per_s": n / elapsed,
        "records_per_s": n * RECORDS_PER_BATCH / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "jobs_failed": failed,
        "rows_merged": merged,
        "settle_s": settle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batches-per-client", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    proc = spawn_sandbox(port, "--speed", "instant")
    try:
        result = asyncio.run(run(args.clients, args.batches_per_client, f"http://127.0.0.1:{port}/public/v1"))
    finally:
        stop(proc)
    print(
        f"sandbox load: {args.clients} clients x {args.batches_per_client} batches x {RECORDS_PER_BATCH} records"
    )
    print(
        f"  requests {result['requests']:.0f}  errors {result['errors']:.0f}  elapsed {result['elapsed_s']:.1f} s"
    )
    print(f"  throughput {result['requests_per_s']:.1f} requests/s = {result['records_per_s']:.0f} records/s")
    print(
        f"  latency p50 {result['p50_ms']:.0f} ms  p99 {result['p99_ms']:.0f} ms  max {result['max_ms']:.0f} ms"
    )
    print(
        f"  batch jobs: failed {result['jobs_failed']:.0f}, rows merged {result['rows_merged']:.0f}, "
        f"all settled {result['settle_s']:.1f} s after the last response"
    )
    if result["errors"] or result["jobs_failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
