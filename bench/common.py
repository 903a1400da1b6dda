"""Shared by the sandbox benchmarks: start a sandbox in a subprocess and measure its memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin"  # the spawned sandboxes' admin token (X-Sandbox-Admin-Token)

SERVE_SANDBOX = """
import argparse, sys
from sandbox.cli import add_command
parser = argparse.ArgumentParser()
add_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["sandbox", *sys.argv[1:]])
sys.exit(args.run(args))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


def spawn_sandbox(port: int, *extra: str) -> subprocess.Popen[bytes]:
    """``experiture-ingest sandbox`` in a subprocess (without importing cli.demo)."""
    cmd = [sys.executable, "-c", SERVE_SANDBOX, "--port", str(port), "--log-level", "warning"]
    cmd += ["--admin-token", ADMIN_TOKEN, *extra]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    wait_ready(f"http://127.0.0.1:{port}/_sandbox/health", proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


class RssSampler:
    """Samples a process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20
