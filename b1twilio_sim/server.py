"""Serving a simulator: a Starlette app run by uvicorn on a socket bound when the simulator is built.

Both simulators are real HTTP servers so the pipeline's clients talk to them through the same code paths
they use in production; only the base URL differs. The socket is bound in the constructor, so `url` is
known (and can be handed to a client or a configuration) before `start_background()` serves it. uvicorn
runs in a daemon thread; `start_background()` returns once it really accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from b1twilio_sim.traffic import Traffic, quiet_dropped_connections

StrPath = str | os.PathLike[str]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0 picks a free port), as uvicorn would bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn whose main loop wakes as soon as `stop()` asks, instead of at its next 0.1 s poll, so tests
    that start and stop a simulator each time stay quick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def exit_soon(self) -> None:
        """Ask the server (running in another thread) to shut down now."""
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing left to wake
                self._loop.call_soon_threadsafe(self._wake.set)


class SimulatorServer(Traffic):
    """Base of both simulators: the request log and faults (`Traffic`), and the uvicorn server.

    Subclasses build their Starlette app in `build_app()`. With `ssl_certfile` and `ssl_keyfile` the server
    speaks HTTPS (a Service Layer behind its load balancer often has a self-signed certificate) and `url`
    starts with https://.
    """

    def __init__(self, host: str, port: int, *, ssl_certfile: StrPath | None = None,
                 ssl_keyfile: StrPath | None = None) -> None:
        super().__init__()
        if (ssl_certfile is None) != (ssl_keyfile is None):
            raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile")
        self.host = host
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self._socket = bind_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """`http://HOST:PORT` (https with a certificate), without a trailing slash."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_certfile else 'http'}://{shown}:{self.port}"

    def build_app(self) -> ASGIApp:
        raise NotImplementedError

    def start_background(self) -> Self:
        """Serve from a daemon thread; returns self once the server accepts connections."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        config = uvicorn.Config(
            self.build_app(), log_level="warning", access_log=False, lifespan="off", server_header=False,
            # Pooled client connections stay usable between the pauses of a test or a demo.
            timeout_keep_alive=60, timeout_graceful_shutdown=5,
            ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
        )
        quiet_dropped_connections()  # after uvicorn.Config, which configures uvicorn's loggers
        self._server = _Uvicorn(config)
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.005)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start on {self.url}: {self._failure!r}")
        return self

    def _serve(self) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start_background (e.g. an unreadable certificate)
            self._failure = exc

    def stop(self) -> None:
        """Stop serving (in-flight answers get a few seconds to finish) and release the port."""
        if self._server is not None and self._thread is not None:
            self._server.exit_soon()
            self._thread.join(timeout=10)
        self._socket.close()


def run_cli(description: str, build: Callable[[argparse.Namespace], SimulatorServer],
            add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            argv: list[str] | None = None) -> None:
    """Parse --host/--port, build the simulator, serve it, print `listening on URL` once it accepts
    connections, and stop cleanly (exit status 0) on SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks any free port")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        simulator = build(args)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror})", file=sys.stderr)
        raise SystemExit(2) from None
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stopping.set())
    simulator.start_background()
    print(f"listening on {simulator.url}", flush=True)
    stopping.wait()
    simulator.stop()
