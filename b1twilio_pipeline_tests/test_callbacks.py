"""The status callback receiver over real HTTP: signatures, idempotency, ordering, the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from b1twilio_pipeline.notifications.receiver import create_app, public_request_url
from b1twilio_pipeline.notifications.receiver_server import start_background
from b1twilio_pipeline.notifications.statuses import StatusEvent, should_advance

TOKEN = "test-auth-token-0123456789abcdef"
MSG_SID = "SM" + "0123456789abcdef" * 2
CALL_SID = "CA" + "fedcba9876543210" * 2
PHONE = "+4915112345678"


class FakeLedger:
    """In-memory double of the notification ledger: latest status per SID, ordered by should_advance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status: dict[str, str] = {}
        self.recorded: list[StatusEvent] = []

    def apply_status(self, event: StatusEvent) -> bool:
        with self._lock:
            if not should_advance(event.channel, self.status.get(event.sid), event.status):
                return False
            self.status[event.sid] = event.status
            self.recorded.append(event)
            return True


@dataclass
class Receiver:
    local_url: str  # where the test actually sends
    public_url: str  # what Twilio would sign
    ledger: FakeLedger
    changes: list[StatusEvent] = field(default_factory=list)

    def post(self, params: dict[str, str], *, sign_url: str | None = None, query: str = "") -> httpx.Response:
        """POST a callback signed for `sign_url` (default: the public URL with `query`)."""
        signed_for = sign_url or public_request_url(self.public_url, query)
        signature = RequestValidator(TOKEN).compute_signature(signed_for, params)
        url = self.local_url + ("?" + query if query else "")
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=5)


PUBLIC_URL = "https://alerts.example.com/twilio/status"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Receiver behind a (pretend) TLS proxy: Twilio calls and signs PUBLIC_URL, the proxy forwards here.

    The command-line test covers the no-proxy default, where the public URL is the local one.
    """
    ledger = FakeLedger()
    changes: list[StatusEvent] = []
    app = create_app(auth_token=TOKEN, status_url=PUBLIC_URL, sink=ledger, on_change=changes.append)
    base, stop = start_background(app)
    try:
        yield Receiver(base + "/twilio/status", PUBLIC_URL, ledger, changes)
    finally:
        stop()


def message(status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": MSG_SID,
        "SmsSid": MSG_SID,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "1" * 32,
        "From": "+15005550006",
        "To": PHONE,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def call(status: str, sequence: int, **extra: str) -> dict[str, str]:
    return {
        "CallSid": CALL_SID,
        "AccountSid": "AC" + "1" * 32,
        "From": "+15005550006",
        "To": PHONE,
        "CallStatus": status,
        "ApiVersion": "2010-04-01",
        "Direction": "outbound-api",
        "CallbackSource": "call-progress-events",
        "Timestamp": "Tue, 03 Mar 2026 10:00:00 +0000",
        "SequenceNumber": str(sequence),
        **extra,
    }


def test_valid_message_callback_is_recorded(receiver: Receiver) -> None:
    response = receiver.post(message("delivered", RawDlrDoneDate="2603031000", SomeFutureField="x"))
    assert response.status_code == 204
    assert receiver.ledger.status == {MSG_SID: "delivered"}
    [event] = receiver.ledger.recorded
    assert (event.channel, event.source, event.error_code) == ("sms", "callback", None)
    assert event.received_at.utcoffset() is not None
    assert receiver.changes == [event]


def test_error_code_is_parsed(receiver: Receiver) -> None:
    assert receiver.post(message("undelivered", ErrorCode="30003")).status_code == 204
    assert receiver.ledger.recorded[0].error_code == 30003


def test_replay_is_idempotent(receiver: Receiver) -> None:
    params = message("sent")
    for _ in range(3):
        assert receiver.post(params).status_code == 204
    assert len(receiver.ledger.recorded) == 1
    assert len(receiver.changes) == 1


def test_out_of_order_keeps_delivered(receiver: Receiver) -> None:
    assert receiver.post(message("delivered")).status_code == 204
    assert receiver.post(message("sent")).status_code == 204
    assert receiver.post(message("undelivered", ErrorCode="30008")).status_code == 204
    assert receiver.ledger.status[MSG_SID] == "delivered"
    assert [e.status for e in receiver.changes] == ["delivered"]


def test_tampered_body_is_rejected(receiver: Receiver) -> None:
    params = message("sent")
    signature = RequestValidator(TOKEN).compute_signature(receiver.public_url, params)
    tampered = {**params, "MessageStatus": "delivered"}
    response = httpx.post(receiver.local_url, data=tampered, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert len(response.content) < 100
    assert receiver.ledger.recorded == []
    assert receiver.changes == []


def test_signature_for_another_url_is_rejected(receiver: Receiver) -> None:
    response = receiver.post(message("sent"), sign_url="http://other.example/twilio/status")
    assert response.status_code == 403
    assert receiver.ledger.recorded == []


def test_signature_with_another_token_is_rejected(receiver: Receiver) -> None:
    params = message("sent")
    signature = RequestValidator("not-the-token").compute_signature(receiver.public_url, params)
    response = httpx.post(receiver.local_url, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert receiver.ledger.recorded == []


def test_missing_signature_is_rejected(receiver: Receiver) -> None:
    response = httpx.post(receiver.local_url, data=message("sent"))
    assert response.status_code == 403
    assert receiver.ledger.recorded == []


def test_proxy_public_url_is_what_counts(receiver: Receiver) -> None:
    assert receiver.post(message("sent"), sign_url=receiver.local_url).status_code == 403
    assert receiver.ledger.recorded == []
    assert receiver.post(message("sent")).status_code == 204
    assert receiver.ledger.status == {MSG_SID: "sent"}


def test_query_string_is_part_of_the_signed_url(receiver: Receiver) -> None:
    assert receiver.post(message("sent"), query="tenant=eu&n=1").status_code == 204
    wrong = public_request_url(receiver.public_url, "tenant=us&n=1")
    assert receiver.post(message("delivered"), query="tenant=eu&n=1", sign_url=wrong).status_code == 403
    assert receiver.ledger.status == {MSG_SID: "sent"}


# twilio-python's own test vector (tests/unit/test_request_validator.py). Note: the signature belongs to
# the URL *with* these five parameters; for the URL alone it is zYQTYrRWXE7LtzbG4PfP7/bkkGo=.
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_test_vector_through_the_receiver() -> None:
    """Token 12345, the vector's public URL and query, posted to the local receiver."""
    ledger = FakeLedger()
    app = create_app(auth_token="12345", status_url="https://mycompany.com/myapp.php", sink=ledger)
    base, stop = start_background(app)
    headers = {"X-Twilio-Signature": VECTOR_SIGNATURE}
    try:
        good = httpx.post(base + "/twilio/status?foo=1&bar=2", data=VECTOR_PARAMS, headers=headers)
        other_query = httpx.post(base + "/twilio/status?foo=1&bar=3", data=VECTOR_PARAMS, headers=headers)
        no_params = httpx.post(base + "/twilio/status?foo=1&bar=2", headers=headers)
        url_only = httpx.post(
            base + "/twilio/status?foo=1&bar=2",
            headers={"X-Twilio-Signature": "zYQTYrRWXE7LtzbG4PfP7/bkkGo="},
        )
    finally:
        stop()
    # The signature passes; the vector's CallSid is not a real 34-character SID, so then 400, not 403.
    assert good.status_code == 400
    assert "CallSid" in good.text
    assert other_query.status_code == 403
    assert no_params.status_code == 403
    assert url_only.status_code == 400  # signed, but no SID at all
    assert ledger.recorded == []


def test_malformed_but_signed_is_400(receiver: Receiver) -> None:
    assert receiver.post(message("sent", MessageSid="SMnothex", SmsSid="SMnothex")).status_code == 400
    assert receiver.post(message("sent", ErrorCode="thirty")).status_code == 400
    assert receiver.post({"AccountSid": "AC" + "1" * 32}).status_code == 400
    assert receiver.post(call("", 0)).status_code == 400
    assert receiver.ledger.recorded == []


def test_call_callbacks_with_sequence_numbers(receiver: Receiver) -> None:
    # Twilio does not guarantee order: completed (seq 3) arrives before ringing (seq 1).
    assert receiver.post(call("initiated", 0)).status_code == 204
    assert receiver.post(call("completed", 3, CallDuration="42")).status_code == 204
    assert receiver.post(call("ringing", 1)).status_code == 204
    assert receiver.post(call("in-progress", 2)).status_code == 204
    assert receiver.ledger.status == {CALL_SID: "completed"}
    assert [(e.status, e.sequence) for e in receiver.ledger.recorded] == [("initiated", 0), ("completed", 3)]
    completed = receiver.ledger.recorded[-1]
    assert (completed.channel, completed.duration_s) == ("voice", 42)


def test_healthz(receiver: Receiver) -> None:
    response = httpx.get(receiver.local_url.replace("/twilio/status", "/healthz"))
    assert response.status_code == 200
    assert response.text == "ok"


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "B1TWILIO_"))}
    env.update(PYTHONUNBUFFERED="1", B1TWILIO_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}", **extra)
    return env


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "b1twilio_pipeline.cli", "receiver", "--host", "127.0.0.1", "--port", "0"],
        env=_cli_env(tmp_path, TWILIO_AUTH_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base = line.removeprefix("listening on ")
        assert not base.endswith(":0")
        assert httpx.get(base + "/healthz", timeout=5).text == "ok"
        params = message("delivered")
        signature = RequestValidator(TOKEN).compute_signature(base + "/twilio/status", params)
        for _ in range(2):
            response = httpx.post(
                base + "/twilio/status", data=params, headers={"X-Twilio-Signature": signature}, timeout=5
            )
            assert response.status_code == 204
        assert httpx.post(base + "/twilio/status", data=params, timeout=5).status_code == 403
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out
    logs = out + err
    assert TOKEN not in logs
    assert PHONE not in logs
    assert "+49" in logs and PHONE[-3:] in logs  # the masked number is there
    assert MSG_SID in logs  # the accepted callback was logged, with the number masked


def test_cli_without_auth_token_says_what_to_set(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "b1twilio_pipeline.cli", "receiver", "--port", "0"],
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_oversized_chunked_body_is_refused_while_it_streams() -> None:
    """300 MiB sent chunked (no Content-Length) with a bad signature: refused after the first chunks,
    never read into memory whole."""
    app = create_app(auth_token=TOKEN, status_url=PUBLIC_URL, sink=FakeLedger())
    chunk = b"x" * 65536
    total_chunks = 300 * 16
    pulled = 0
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < total_chunks}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/twilio/status", "raw_path": b"/twilio/status",
             "query_string": b"", "headers": [(b"x-twilio-signature", b"forged"),
                                               (b"transfer-encoding", b"chunked")],
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "root_path": "",
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 413
    assert pulled <= 2  # 64 KiB is the limit: the second chunk already crosses it
