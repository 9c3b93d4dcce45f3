"""Receiver of Twilio status callbacks.

`POST /twilio/status` accepts Twilio's form-encoded callbacks for messages and calls. The
`X-Twilio-Signature` is checked with twilio's own `RequestValidator` against the PUBLIC URL Twilio
called (configured, because behind a proxy the local URL differs and `request.url` cannot be
trusted); anything unsigned or mis-signed gets 403 and is not recorded. Valid events go to a
`StatusSink` (the delivery log), which decides with `statuses.should_advance` whether
anything changed, so replays and out-of-order callbacks are harmless.

Run it: `python -m b1twilio_pipeline.notifications.receiver --host 127.0.0.1 --port 8788`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.core.settings import ConfigurationError, current
from b1twilio_pipeline.notifications.statuses import StatusEvent, channel_of

log = logging.getLogger(__name__)

STATUS_PATH = "/twilio/status"
MAX_BODY_BYTES = 64 * 1024  # Twilio's callbacks are well under 2 KiB; refuse floods early
_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_STATUS = re.compile(r"^[a-z][a-z_-]{0,39}$")


class StatusSink(Protocol):
    """Where valid status events go: the delivery log (`notifications.delivery_log.DeliveryLog`)."""

    def apply_status(self, event: StatusEvent) -> bool:
        """Record `event` if it advances the SID's status; True when the ledger changed."""
        ...


class MalformedCallback(ValueError):
    """A signed callback whose fields cannot be understood (answered with 400)."""


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes: a chunked body without Content-Length is
    counted while it streams in, never read whole into memory first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


def public_request_url(public_url: str, raw_query: str) -> str:
    """The URL Twilio signed: the configured public URL with the query string this request carried."""
    if not raw_query:
        return public_url
    scheme, netloc, path, _query, _fragment = urlsplit(public_url)
    return urlunsplit((scheme, netloc, path, raw_query, ""))


def _optional_int(form: ImmutableMultiDict, name: str) -> int | None:
    value = (form.get(name) or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise MalformedCallback(f"{name} must be an integer") from None


def _status_field(form: ImmutableMultiDict, *names: str) -> str:
    for name in names:
        value = (form.get(name) or "").strip()
        if value:
            if not _STATUS.match(value):
                raise MalformedCallback(f"{name} is not a status word")
            return value
    raise MalformedCallback(f"{names[0]} is missing")


def parse_status_callback(form: ImmutableMultiDict, received_at: datetime | None = None) -> StatusEvent:
    """A StatusEvent from a message or call callback's fields; unknown extra fields are ignored."""
    received_at = received_at or datetime.now(UTC)
    message_sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    call_sid = (form.get("CallSid") or "").strip()
    if message_sid:
        if not _MESSAGE_SID.match(message_sid):
            raise MalformedCallback("MessageSid is not a message SID (SM/MM + 32 hex digits)")
        status = _status_field(form, "MessageStatus", "SmsStatus")
        return StatusEvent(
            sid=message_sid,
            channel=channel_of(message_sid),
            status=status,
            error_code=_optional_int(form, "ErrorCode"),
            source="callback",
            received_at=received_at,
        )
    if call_sid:
        if not _CALL_SID.match(call_sid):
            raise MalformedCallback("CallSid is not a call SID (CA + 32 hex digits)")
        return StatusEvent(
            sid=call_sid,
            channel=channel_of(call_sid),
            status=_status_field(form, "CallStatus"),
            error_code=_optional_int(form, "ErrorCode"),
            source="callback",
            received_at=received_at,
            sequence=_optional_int(form, "SequenceNumber"),
            duration_s=_optional_int(form, "CallDuration"),
        )
    raise MalformedCallback("neither MessageSid nor CallSid is present")


def create_app(
    *,
    auth_token: str,
    public_url: str,
    sink: StatusSink,
    on_change: Callable[[StatusEvent], None] | None = None,
) -> Starlette:
    """The ASGI app: `POST /twilio/status` (signed Twilio callbacks) and `GET /healthz`."""
    if not auth_token:
        raise ConfigurationError("the status callback receiver needs TWILIO_AUTH_TOKEN to check signatures")
    if urlsplit(public_url).scheme not in ("http", "https"):
        raise ConfigurationError(
            f"TWILIO_STATUS_CALLBACK_URL {public_url!r} is not an http(s) URL: set the public URL "
            "Twilio calls, e.g. https://alerts.example.com/twilio/status"
        )
    validator = RequestValidator(auth_token)

    async def status(request: Request) -> Response:
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return PlainTextResponse("body too large", status_code=413)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            log.warning("status callback rejected: no %s header", SIGNATURE_HEADER)
            return PlainTextResponse("missing signature", status_code=403)
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        text = body.decode("utf-8", errors="replace")
        form = ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))
        # JSON-bodied webhooks sign the URL (which carries bodySHA256) and the validator checks the raw body.
        params: object = text if "bodySHA256" in parse_qs(raw_query) else form
        url = public_request_url(public_url, raw_query)
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        if not validator.validate(url, params, signature, algorithm):
            log.warning("status callback rejected: signature does not match %s", url)
            return PlainTextResponse("invalid signature", status_code=403)
        try:
            event = parse_status_callback(form)
        except MalformedCallback as exc:
            log.warning("signed status callback rejected as malformed: %s", exc)
            return PlainTextResponse(f"malformed callback: {exc}", status_code=400)
        changed = await run_in_threadpool(sink.apply_status, event)
        log.info(
            "status callback %s %s to %s: %s",
            event.sid,
            event.status,
            mask_phone(form.get("To")),
            "recorded" if changed else "no change",
        )
        if changed and on_change is not None:
            try:
                await run_in_threadpool(on_change, event)
            except Exception:  # the ledger already holds the event; a reporting hiccup must not fail it
                log.exception("on_change failed for %s %s", event.sid, event.status)
        return Response(status_code=204)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route(STATUS_PATH, status, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn server that prints the listening line once it really accepts connections."""

    def __init__(self, config: uvicorn.Config, banner: str | None = None) -> None:
        super().__init__(config)
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._banner:
            print(self._banner, flush=True)


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def start_background(
    app: Starlette, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve `app` with uvicorn in a daemon thread; returns (base URL, stop). For tests and the demo."""
    sock = _bound_socket(host, port)
    url = _base_url(host, sock)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="callbacks")
    thread.start()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    if not server.started:
        sock.close()
        raise RuntimeError(f"status callback receiver did not start on {url}")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return url, stop


def _sink_from_settings() -> StatusSink:
    """The notification ledger on B1TWILIO_DATABASE_URL (the same database the pipeline uses)."""
    from b1twilio_pipeline.core.database import engine_for
    from b1twilio_pipeline.notifications.delivery_log import DeliveryLog

    return DeliveryLog(engine_for())


def dagster_reporter() -> Callable[[StatusEvent], None] | None:
    """Report each status change to Dagster as an observation of the deliveries asset, when a Dagster
    instance is configured (DAGSTER_HOME); the delivery sensor then reconciles and audits it."""
    if not os.environ.get("DAGSTER_HOME"):
        log.info("DAGSTER_HOME is not set: statuses go to the ledger only")
        return None
    import dagster as dg

    from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY

    instance = dg.DagsterInstance.get()

    def report(event: StatusEvent) -> None:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=DELIVERIES_KEY, description=f"{event.status} ({event.source})",
            metadata={"sid": event.sid, "status": event.status, "channel": event.channel,
                      "error_code": event.error_code or 0, "source": event.source}))

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve the receiver until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m b1twilio_pipeline.notifications.receiver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8788, help="port to bind, 0 for a free one (default 8788)"
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="URL Twilio calls (signatures cover it); default TWILIO_STATUS_CALLBACK_URL, "
        "else http://HOST:PORT/twilio/status",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        configured = current()
        auth_token = configured.require("twilio_auth_token", "checks the signature of Twilio status callbacks")
        sock = _bound_socket(args.host, args.port)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"error: cannot listen on {args.host}:{args.port} ({exc.strerror}): choose another --port",
            file=sys.stderr,
        )
        return 2
    url = _base_url(args.host, sock)
    public_url = args.public_url or configured.twilio_status_callback_url or url + STATUS_PATH
    try:
        app = create_app(auth_token=auth_token, public_url=public_url, sink=_sink_from_settings(),
                         on_change=dagster_reporter())
    except ConfigurationError as exc:
        sock.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("signatures are checked against %s", public_url)
    server = _Server(uvicorn.Config(app, log_level="info", lifespan="off"), banner=f"listening on {url}")
    # uvicorn re-raises the stop signal after its graceful shutdown; neutral handlers make that a clean exit.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
