"""Shared plumbing of the simulators: a threaded stdlib HTTP server, JSON replies, a request log,
fault injection and the command-line runner that prints `listening on http://HOST:PORT`.

Both simulators are real HTTP servers so the pipeline's clients talk to them through the same code
paths they use in production; only the base URL differs.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class LoggedRequest:
    """One request as the simulator saw it, for tests and benchmarks to count and inspect."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class Faults:
    """Faults injected through the admin API: latency on every request, a number of 5xx answers
    (or all of them), a number of connections dropped without an answer, and a number of creates that
    take effect but are answered with `fail_status` (a gateway timeout after the service accepted)."""

    latency_s: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    fail_all: bool = False
    drop_next: int = 0
    accept_then_fail_next: int = 0


class SimulatorHandler(BaseHTTPRequestHandler):
    """Base request handler: subclasses implement `route(method, path, query, body)`."""

    protocol_version = "HTTP/1.1"
    server: SimulatorHTTPServer

    def setup(self) -> None:
        """No Nagle delay: headers and body are written separately, and keep-alive clients would otherwise
        wait for a delayed ACK (~40 ms) on every request."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr line; the request log replaces it."""

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        entry = LoggedRequest(self.command, self.path, dict(self.headers.items()), body)
        self.server.log_request_entry(entry)
        self._current = entry
        self.route(self.command, self.path, body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

    def route(self, method: str, path: str, body: bytes) -> None:
        raise NotImplementedError

    def reply(self, status: int, payload: Any = None, *, content_type: str = "application/json",
              headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self._current.status = status
        self.send_response(status)
        if data or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def apply_faults(self) -> bool:
        """Apply injected faults; True when the request was answered (or dropped) by a fault."""
        faults = self.server.faults
        if faults.latency_s:
            time.sleep(faults.latency_s)
        with self.server.lock:
            drop = faults.drop_next > 0
            if drop:
                faults.drop_next -= 1
            fail = faults.fail_all or faults.fail_next > 0
            if faults.fail_next > 0 and not drop:
                faults.fail_next -= 1
        if drop:
            self._current.status = -1
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if fail:
            self.reply_fault(faults.fail_status)
            return True
        return False

    def reply_fault(self, status: int) -> None:
        self.reply(status, {"error": "injected fault"})


class SimulatorHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server with a request log and a fault switchboard shared by its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[SimulatorHandler]) -> None:
        super().__init__(address, handler)
        self.lock = threading.RLock()
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-answer (killed, timed out) is part of the faults we simulate: no
        traceback for it; anything else is printed as the stdlib would."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def log_request_entry(self, entry: LoggedRequest) -> None:
        with self.lock:
            self.requests.append(entry)

    def take_accept_then_fail(self) -> bool:
        """True (once per injected fault) when a create that just took effect must be answered with
        `faults.fail_status` instead of its result."""
        with self.lock:
            if self.faults.accept_then_fail_next <= 0:
                return False
            self.faults.accept_then_fail_next -= 1
            return True

    def start_background(self) -> SimulatorHTTPServer:
        """Serve from a daemon thread (tests, the demo) and return self."""
        # A short poll interval keeps `stop()` quick in tests.
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_cli(description: str, build: Callable[[argparse.Namespace], SimulatorHTTPServer],
            add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            argv: list[str] | None = None) -> None:
    """Parse --host/--port, build the server, print `listening on URL`, stop cleanly on SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks any free port")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    server = build(args)
    stopping = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server.start_background()
    print(f"listening on {server.url}", flush=True)
    stopping.wait()
    server.stop()
