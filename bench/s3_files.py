"""A read-only S3 endpoint over a local directory, for benchmarks that read with ranged GETs.

moto's S3 loads the whole object for every ranged GET (its cost grows with the object, not the
range), which would make a benchmark of N workers reading N ranges of one object measure moto.
This server answers ``HEAD`` and ``GET`` (with ``Range``) on ``/<bucket>/<key>`` from
``<root>/<bucket>/<key>`` the way S3 does for these two calls, streaming the range from disk.

    python -m bench.s3_files --root DIR --port PORT
"""

from __future__ import annotations

import argparse
import hashlib
import re
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    root: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        return

    def _path(self) -> Path | None:
        path = (self.root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        return path if path.is_file() and self.root in path.parents else None

    def _headers(self, path: Path, length: int, status: int, extra: dict[str, str]) -> None:
        stat = path.stat()
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(
            "ETag", '"' + hashlib.md5(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest() + '"'
        )
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _missing(self) -> None:
        body = b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code><Message>missing</Message></Error>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/xml")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = self._path()
        if path is None:
            self._missing()
            return
        self._headers(path, path.stat().st_size, 200, {})

    def do_GET(self) -> None:
        path = self._path()
        if path is None:
            self._missing()
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status, extra = 200, {}
        match = _RANGE.match(self.headers.get("Range", ""))
        if match:
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:
                start, end = max(0, size - int(last)), size - 1
            status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{size}"}
        self._headers(path, end - start + 1, status, extra)
        with path.open("rb") as source:
            source.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    Handler.root = Path(args.root).resolve()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
