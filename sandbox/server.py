"""Run the sandbox on uvicorn: in the foreground (the CLI) or in a background thread (tests)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import uvicorn

from sandbox.app import create_app
from sandbox.config import SandboxOptions
from sandbox.core import Sandbox

API_PREFIX = "/public/v1"
CRM_PREFIX = "/crm/v3"


def _config(sandbox: Sandbox, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(sandbox=sandbox),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # our own access log never prints query strings (upload signatures)
        lifespan="on",
        timeout_keep_alive=30,
        # Headers with no limits beyond uvicorn's defaults; the body is streamed by the handlers.
    )


def serve_forever(options: SandboxOptions, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM in the main thread)."""
    sandbox = Sandbox(options)
    uvicorn.Server(_config(sandbox, host, port, log_level)).run()


@dataclass
class BackgroundServer:
    """A sandbox served by uvicorn in a daemon thread on an already bound loopback socket."""

    sandbox: Sandbox
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_in_thread(options: SandboxOptions, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve in a daemon thread (port 0 picks a free one); return once connections are accepted."""
    sandbox = Sandbox(options)
    server = uvicorn.Server(_config(sandbox, host, port, "warning"))
    thread = threading.Thread(target=server.run, name="sandbox-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the sandbox server thread died during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start within 15 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    logging.getLogger("sandbox").debug("sandbox listening on %s:%s", host, port)
    return BackgroundServer(sandbox, host, port, server, thread)
