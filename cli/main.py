"""The `experiture-ingest` command: local tools that are never deployed.

Each subcommand lives in the room it belongs to and registers itself here, e.g.::

    experiture-ingest sandbox --port 8787 --token dev-token
    experiture-ingest demo
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes ``add_command(subparsers)`` and sets ``run`` on the parser it adds.
COMMAND_MODULES = [
    "sandbox.cli",
    "cli.demo",
    "cli.streams",
    "cli.operations",
    "cli.status",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="experiture-ingest",
        description="Local tools for experiture-ingest: the Experiture sandbox, the demo and helpers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
