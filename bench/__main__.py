"""``make bench``: run every benchmark with the settings recorded in docs/benchmarks.md.

Each runs in its own process (they measure peak RSS), one after the other; a few minutes in all.
``python -m bench NAME...`` runs only the named ones.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "sandbox_load": ["--clients", "50", "--batches-per-client", "2"],
    "sandbox_upload": ["--size-mb", "1024"],
    "file_upload": [],
    "file_split": ["--size-mb", "1024", "--part-mb", "128", "--workers", "1", "2", "4", "--rounds", "3"],
    "stream_writer": ["--records", "25000", "--per-message", "100", "--rounds", "7"],
    "cold_start": ["--rounds", "9"],
    "import_queue": ["--files", "200", "--capacity", "10", "--objects", "5", "--rounds", "3"],
}


def main(names: list[str]) -> int:
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names or list(BENCHMARKS):
        command = [sys.executable, "-m", f"bench.{name}", *BENCHMARKS[name]]
        print(f"\n$ python -m bench.{name} {' '.join(BENCHMARKS[name])}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
