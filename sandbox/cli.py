"""``experiture-ingest sandbox``: serve the local Experiture sandbox until interrupted."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from typing import Any

from sandbox.admin import ADMIN_TOKEN_HEADER, is_loopback_host
from sandbox.config import ALL_SCOPES, CONCURRENCY_REFUSALS, OAuthClient, SandboxOptions, speed_timings
from sandbox.crm.config import ObjectTypeError, load_object_types_file
from sandbox.faults import FaultPlanError, parse_plan
from sandbox.schemas import SchemaError, load_schema_file


def add_command(subparsers: Any) -> None:
    """Register the ``sandbox`` subcommand on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run the local Experiture API sandbox (and the CRM emulator)",
        description="Serve stateful emulators of the Experiture public API (/public/v1) and of the "
        "peer CRM's custom-object records API (/crm/v3) on loopback.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; anything but loopback needs --allow-remote)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --host beyond loopback: other machines can then use the API with its dev token",
    )
    parser.add_argument(
        "--admin-token",
        default=None,
        help="token for the /_sandbox/ admin routes, sent as X-Sandbox-Admin-Token (default: random)",
    )
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    parser.add_argument("--token", default="dev-token", help="static bearer token with every scope")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="keep state here across restarts (default: a fresh temporary directory)",
    )
    parser.add_argument(
        "--speed",
        default="realistic",
        help="job progress: 'instant', 'realistic' (default) or a factor N (N times faster than realistic)",
    )
    parser.add_argument("--faults", default=None, help="JSON fault plan file (see docs/sandbox.md)")
    parser.add_argument("--schemas", default=None, help="JSON object schemas file (extends the defaults)")
    parser.add_argument("--client-id", default="dev-client", help="OAuth client id for /oauth/token")
    parser.add_argument("--client-secret", default="dev-secret", help="OAuth client secret for /oauth/token")
    parser.add_argument(
        "--token-ttl", type=int, default=3600, help="lifetime of issued OAuth tokens, seconds"
    )
    parser.add_argument(
        "--max-running-jobs",
        "--max-running-imports",
        dest="max_running_jobs",
        type=int,
        default=10,
        help="the workspace's limit of running import jobs (default 10, as the docs say)",
    )
    parser.add_argument(
        "--concurrency-refusal",
        choices=CONCURRENCY_REFUSALS,
        default="429",
        help="how a start beyond the limit is refused: 429 CDP_ETL.IMPORT.CONCURRENCY_LIMIT (default), "
        "429-rate (429 CDP_ETL.RATE.LIMITED) or 409 (409 CDP_ETL.IMPORT.INVALID_STATE, job stays ready)",
    )
    parser.add_argument(
        "--cache-refusals",
        action="store_true",
        help="store 429 answers under their Idempotency-Key and replay them for 24 h like other 4xx",
    )
    parser.add_argument(
        "--upload-header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="require this header on uploads and return it in init 'headers' (e.g. x-ms-blob-type:BlockBlob)",
    )
    parser.add_argument(
        "--crm-api-key", default="dev-crm-key", help="api-key header the CRM emulator accepts (/crm/v3)"
    )
    parser.add_argument(
        "--crm-object-types",
        default=None,
        metavar="FILE",
        help="JSON object types for the CRM emulator (extends the defaults vehicle and garage)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(run=run)


def build_options(args: argparse.Namespace) -> SandboxOptions:
    speed_timings(args.speed)  # validate early with a clear message
    if args.schemas:
        load_schema_file(args.schemas)
    if args.crm_object_types:
        load_object_types_file(args.crm_object_types)
    faults = None
    if args.faults:
        with open(args.faults, encoding="utf-8") as fh:
            faults = json.load(fh)
        parse_plan(faults)
    if args.max_running_jobs < 0:
        raise ValueError("--max-running-jobs must not be negative")
    headers: dict[str, str] = {}
    for item in args.upload_header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--upload-header must be NAME:VALUE, got {item!r}")
        headers[name.strip().lower()] = value.strip()
    if not is_loopback_host(args.host) and not args.allow_remote:
        raise ValueError(
            f"--host {args.host} would serve beyond this machine; pass --allow-remote to mean it "
            "(the admin routes still answer only to loopback)"
        )
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="experiture-sandbox-")
    extra = {"admin_token": args.admin_token} if args.admin_token else {}
    return SandboxOptions(
        **extra,
        data_dir=data_dir,
        token=args.token,
        speed=args.speed,
        schemas_file=args.schemas,
        faults=faults,
        clients=[OAuthClient(args.client_id, args.client_secret, ALL_SCOPES, args.token_ttl)],
        config={
            "maxRunningImports": args.max_running_jobs,
            "concurrencyRefusal": args.concurrency_refusal,
            "cacheRefusals": args.cache_refusals,
            "uploadHeaders": headers,
        },
        crm_api_key=args.crm_api_key,
        crm_object_types_file=args.crm_object_types,
    )


def run(args: argparse.Namespace) -> int:
    try:
        options = build_options(args)
    except (ValueError, OSError, SchemaError, FaultPlanError, ObjectTypeError) as exc:
        print(f"experiture-ingest sandbox: {exc}", file=sys.stderr)
        return 2
    from sandbox.server import serve_forever

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    base = f"http://{args.host}:{args.port}"
    print(f"Experiture sandbox  base URL: {base}/public/v1", flush=True)
    print(f"  token:      {args.token}   (Authorization: Bearer {args.token})", flush=True)
    print(f"  OAuth:      POST {base}/oauth/token  client_id={args.client_id}", flush=True)
    print(f"  admin:      {base}/_sandbox/   ({ADMIN_TOKEN_HEADER}: {options.admin_token})", flush=True)
    print(f"  data dir:   {options.data_dir}", flush=True)
    print(f"CRM emulator        base URL: {base}/crm/v3", flush=True)
    print(f"  api key:    {args.crm_api_key}   (api-key: {args.crm_api_key})", flush=True)
    if not is_loopback_host(args.host):
        print(
            f"WARNING: listening on {args.host}, beyond loopback: anyone who can reach this port can use "
            "the API with the token above. Admin routes answer only to loopback.",
            file=sys.stderr,
            flush=True,
        )
    print("  Ctrl-C to stop.", flush=True)
    serve_forever(options, args.host, args.port, args.log_level)
    return 0
