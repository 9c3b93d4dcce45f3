"""Twilio fixtures: a simulator per test, a TwilioResource pointed at it, and a tiny status-callback sink.

`twilio_resource` passes everything through constructor fields (never the environment), with tiny
backoffs so retry tests stay fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_sim.twilio import TwilioSimulator

SIM_FROM_NUMBER = "+15005550006"


@dataclass
class ReceivedCallback:
    """One callback as the sink received it."""

    path: str
    params: dict[str, str]
    signature: str | None
    at: float = field(default_factory=time.monotonic)


class CallbackSink(ThreadingHTTPServer):
    """Loopback endpoint that records every POST (form-encoded) and answers `answer_status`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.received: list[ReceivedCallback] = []
        self.answer_status = 200
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/twilio/status"

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedCallback]:
        """Wait until `count` callbacks arrived (or the timeout) and return what arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    break
            time.sleep(0.01)
        with self.lock:
            return list(self.received)


class _SinkHandler(BaseHTTPRequestHandler):
    server: CallbackSink

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        entry = ReceivedCallback(self.path, {key: values[0] for key, values in form.items()},
                                 self.headers.get("X-Twilio-Signature"))
        with self.server.lock:
            self.server.received.append(entry)
        self.send_response(self.server.answer_status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def twilio_sim() -> Iterator[TwilioSimulator]:
    """A Twilio simulator on a free loopback port, fast lifecycles, stopped after the test."""
    sim = TwilioSimulator(port=0, status_delay_s=0.05).start_background()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def twilio_resource(twilio_sim: TwilioSimulator) -> TwilioResource:
    """A TwilioResource aimed at `twilio_sim` with tiny backoffs; no status callback unless asked."""
    return TwilioResource(
        account_sid=twilio_sim.account_sid,
        auth_token=twilio_sim.auth_token,
        from_number=SIM_FROM_NUMBER,
        api_base_url=twilio_sim.url,
        status_callback_url="",
        backoff_base_s=0.001,
        backoff_max_s=0.01,
        timeout_s=5.0,
    )


@pytest.fixture
def callback_sink() -> Iterator[CallbackSink]:
    """A loopback HTTP endpoint recording the status callbacks it receives."""
    sink = CallbackSink()
    sink._thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
