"""What a simulator saw and what it must get wrong: the request log and injected faults.

Both are pure ASGI middleware around a simulator's Starlette app, so every request is logged exactly as it
arrived (path with its query string, headers, body) and faults hit the protocol endpoints the same way,
whatever route answers them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LOGGED = "b1twilio_sim.logged_request"  # scope key: the request's LoggedRequest, for the fault layer


class Headers(dict[str, str]):
    """Request headers by lower-case name; lookups ignore case, as HTTP header names do."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass
class LoggedRequest:
    """One request as the simulator saw it, for tests and benchmarks to count and inspect. `path` carries
    the query string as sent; `status` is the answer's (-1 for a dropped connection, 0 while unanswered)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class Faults:
    """Faults injected through the admin API: latency on every request, a number of 5xx answers
    (or all of them, or all those to one resource: `fail_resource`, the last segment of the path, e.g.
    `Items`, one service broken while the rest answers), a number of connections dropped without an
    answer, and a number of creates that take effect but are answered with `fail_status` (a gateway
    timeout after the service accepted)."""

    latency_s: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    fail_all: bool = False
    fail_resource: str = ""
    drop_next: int = 0
    accept_then_fail_next: int = 0


class Traffic:
    """The request log and the fault switchboard of one simulator. `lock` guards both and is only ever
    held for a few statements, so the event loop may take it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []

    def log_request_entry(self, entry: LoggedRequest) -> None:
        with self.lock:
            self.requests.append(entry)

    def take_fault(self, path: str) -> str | None:
        """Consume the next injected fault for a request to `path`: "drop", "fail" or None. A drop wins
        over a failure, which then stays pending for the next request."""
        with self.lock:
            faults = self.faults
            if faults.drop_next > 0:
                faults.drop_next -= 1
                return "drop"
            resource = path.rstrip("/").rsplit("/", 1)[-1]
            if faults.fail_all or (faults.fail_resource and resource == faults.fail_resource):
                return "fail"
            if faults.fail_next > 0:
                faults.fail_next -= 1
                return "fail"
            return None

    def take_accept_then_fail(self) -> bool:
        """True (once per injected fault) when a create that just took effect must be answered with
        `faults.fail_status` instead of its result."""
        with self.lock:
            if self.faults.accept_then_fail_next <= 0:
                return False
            self.faults.accept_then_fail_next -= 1
            return True


class RequestLog:
    """Reads each request's body, logs the request through `traffic.log_request_entry`, hands the body on
    to the app and records the status of the answer."""

    def __init__(self, app: ASGIApp, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client left before its request was complete: there is nobody to answer
            return
        entry = LoggedRequest(scope["method"], _target(scope), _headers(scope), body)
        self.traffic.log_request_entry(entry)
        scope[_LOGGED] = entry
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        await self.app(scope, replay, send_recorded)


class FaultInjection:
    """Applies the injected faults to the requests `applies(path)` selects: latency first (without holding
    up other requests), then a dropped connection or a failure answered by `answer(status)`."""

    def __init__(self, app: ASGIApp, traffic: Traffic, applies: Callable[[str], bool],
                 answer: Callable[[int], Response]) -> None:
        self.app = app
        self.traffic = traffic
        self.applies = applies
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        latency = self.traffic.faults.latency_s
        if latency:
            await asyncio.sleep(latency)
        fault = self.traffic.take_fault(scope["path"])
        if fault == "drop":
            await _drop(send)
            if _LOGGED in scope:
                scope[_LOGGED].status = -1
        elif fault == "fail":
            await self.answer(self.traffic.faults.fail_status)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# An ASGI app cannot close its connection. A dropped connection is an answer that announces more body than
# it sends before the app returns: uvicorn then closes the connection, and the client sees a transport error
# (httpx RemoteProtocolError, requests ChunkedEncodingError) as it would from a server that went away.
# uvicorn logs such an unfinished answer as an application error; the filter keeps the ones made on purpose
# (marked in the request's context) out of the log.
_UNFINISHED = "ASGI callable returned without completing response."
_dropping: ContextVar[bool] = ContextVar("b1twilio_sim_dropping", default=False)


async def _drop(send: Send) -> None:
    _dropping.set(True)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
    await send({"type": "http.response.body", "body": b'{"', "more_body": True})


class _DroppedOnPurpose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _UNFINISHED and _dropping.get())


_DROP_FILTER = _DroppedOnPurpose()


def quiet_dropped_connections() -> None:
    """Install the filter on uvicorn's error logger (idempotent; call after uvicorn configured logging)."""
    logging.getLogger("uvicorn.error").addFilter(_DROP_FILTER)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _target(scope: Scope) -> str:
    """The request target as the client sent it: raw path and query string."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def _headers(scope: Scope) -> Headers:
    headers = Headers()
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
