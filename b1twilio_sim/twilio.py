"""Twilio REST API simulator (Messages and Calls of API 2010-04-01) on a loopback port.

The official `twilio` client talks to it unchanged (only the base URL differs), so the resource's
production code paths are what the tests exercise. Lifecycles, status callbacks (signed like Twilio's),
failure rules, opt-outs, a concurrency limit answering 429 and latency are controlled through an admin
API: Python methods on `TwilioSimulator`, and the same operations as JSON under `/_admin/...`. The admin API
also plays the recipients' handsets: an SMS reply reaches our number's messaging webhook (`sms_url`), a
keypress the call's `<Gather action>` (`reply()`, `press()`, or the rules `reply` and `press`).

Run: `python -m b1twilio_sim.twilio --host 127.0.0.1 --port 0`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from b1twilio_sim.server import SimulatorServer, run_cli
from b1twilio_sim.traffic import FaultInjection, LoggedRequest, RequestLog
from b1twilio_sim.twilio_admin import admin_routes
from b1twilio_sim.twilio_api import ConcurrencyGate, TwilioApi, TwilioError, fault_response
from b1twilio_sim.twilio_inbound import InboundError
from b1twilio_sim.twilio_state import TwilioState

DEMO_ACCOUNT_SID = "AC" + "b1" * 16
DEMO_AUTH_TOKEN = "c0ffee" * 5 + "00"


class TwilioSimulator(SimulatorServer):
    """The simulated Twilio account behind an HTTP server; admin methods are for tests and the demo."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, account_sid: str = DEMO_ACCOUNT_SID,
                 auth_token: str = DEMO_AUTH_TOKEN, api_keys: dict[str, str] | None = None,
                 status_delay_s: float = 0.2, max_concurrency: int | None = None, next_429: int = 0,
                 latency_s: float = 0.0, auto_advance: bool = True, callback_timeout_s: float = 2.0,
                 sms_url: str | None = None) -> None:
        super().__init__(host, port)
        self.state = TwilioState(account_sid, auth_token, status_delay_s=status_delay_s,
                                 auto_advance=auto_advance, callback_timeout_s=callback_timeout_s,
                                 sms_url=sms_url)
        self.api_keys = dict(api_keys or {})
        self.max_concurrency = max_concurrency
        self.next_429 = next_429
        self.in_flight = 0
        self.rejected_429 = 0
        self.faults.latency_s = latency_s
        self._slots = threading.Lock()

    @property
    def account_sid(self) -> str:
        return self.state.account_sid

    @property
    def auth_token(self) -> str:
        return self.state.auth_token

    def build_app(self) -> ASGIApp:
        api = TwilioApi(self)
        return Starlette(
            routes=[*admin_routes(self), *api.routes()],
            middleware=[
                Middleware(RequestLog, traffic=self),
                Middleware(ConcurrencyGate, sim=self),
                Middleware(FaultInjection, traffic=self, applies=lambda path: not path.startswith("/_admin/"),
                           answer=fault_response),
            ],
        )

    def start_background(self) -> TwilioSimulator:
        """Serve from a daemon thread, with the lifecycle worker running."""
        self.state.start()
        return super().start_background()

    def stop(self) -> None:
        super().stop()
        self.state.stop()

    # ----- concurrency limit -------------------------------------------------------------------------

    def acquire_slot(self) -> bool:
        """Take an in-flight slot; False (answer 429) when forced or when the limit is reached."""
        with self._slots:
            if self.next_429 > 0:
                self.next_429 -= 1
                self.rejected_429 += 1
                return False
            if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
                self.rejected_429 += 1
                return False
            self.in_flight += 1
            return True

    def release_slot(self) -> None:
        with self._slots:
            self.in_flight -= 1

    # ----- admin (Python) ----------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """Every message, oldest first, with `status_history` and `callbacks` sent."""
        return [record.as_admin_dict() for record in reversed(self.state.listing("message"))]

    def calls(self) -> list[dict[str, Any]]:
        return [record.as_admin_dict() for record in reversed(self.state.listing("call"))]

    def record(self, sid: str) -> dict[str, Any] | None:
        found = self.state.get(sid)
        return None if found is None else found.as_admin_dict()

    def api_requests(self) -> list[LoggedRequest]:
        """The REST requests received (admin calls excluded), in arrival order."""
        with self.lock:
            logged = list(self.requests)
        return [entry for entry in logged if not entry.path.startswith("/_admin/")]

    def set_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        """Per-number outcomes, e.g. `{"+15005550009": {"message": "undelivered", "error_code": 30003}}`
        or `{"+1...": {"call": "no-answer"}}` or `{"+1...": {"reject": 21614}}`; and what the handset
        does: `{"+1...": {"reply": "OK"}}` (replies once to each message delivered to it, through
        `sms_url`) or `{"+1...": {"press": "1"}}` (presses keys in each call it answers)."""
        self.state.set_rules(rules)

    def clear_rules(self) -> None:
        with self.state.lock:
            self.state.rules.clear()

    def opt_out(self, *numbers: str, opted_out: bool = True) -> None:
        """Mark recipients as having replied STOP: SMS to them answers 21610."""
        with self.state.lock:
            if opted_out:
                self.state.opted_out.update(numbers)
            else:
                self.state.opted_out.difference_update(numbers)

    def set_auth_token(self, auth_token: str) -> None:
        """Rotate the account's Auth Token, as an admin does in the Twilio console: a client still using
        the old one is answered 401 with code 20003, and callbacks are signed with the new one."""
        if not auth_token:
            raise ValueError("auth_token must not be empty")
        self.state.set_auth_token(auth_token)

    def set_latency(self, seconds: float) -> None:
        self.faults.latency_s = seconds

    def set_rate_limit(self, max_concurrency: int | None = None, next_429: int = 0) -> None:
        """Answer 429 (20429) beyond `max_concurrency` requests in flight and to the next `next_429`."""
        with self._slots:
            self.max_concurrency = max_concurrency
            self.next_429 = next_429

    def set_faults(self, fail_next: int = 0, fail_status: int = 503, fail_all: bool = False,
                   drop_next: int = 0, accept_then_fail_next: int = 0) -> None:
        with self.lock:
            self.faults.fail_next, self.faults.fail_status = fail_next, fail_status
            self.faults.fail_all, self.faults.drop_next = fail_all, drop_next
            self.faults.accept_then_fail_next = accept_then_fail_next

    def set_callback_mode(self, *modes: str) -> None:
        """`normal`, or any of `fail` (callbacks dropped), `duplicate` (each sent twice), `out_of_order`
        (final status first, intermediate ones after it)."""
        self.state.set_callback_modes(modes)

    def set_auto_advance(self, enabled: bool) -> None:
        """Pause (False) or resume the background lifecycle; `tick()`/`advance()` work either way."""
        self.state.auto_advance = enabled

    def advance(self) -> int:
        """Push every message and call to its final status now; returns the number of status changes."""
        return self.state.advance()

    def tick(self) -> int:
        return self.state.tick()

    def wait_callbacks(self, timeout_s: float = 5.0) -> bool:
        """Wait until the handset's webhooks (rules `reply`/`press`) and the status callbacks went out."""
        return self.state.wait_callbacks(timeout_s)

    # ----- the handset's side ------------------------------------------------------------------------

    @property
    def sms_url(self) -> str | None:
        return self.state.handset.sms_url

    def set_sms_url(self, url: str | None) -> None:
        """Point our number's messaging webhook (Twilio console: "A message comes in") at `url`."""
        self.state.handset.set_sms_url(url)

    def reply(self, from_: str, body: str) -> dict[str, Any]:
        """The handset `from_` replies `body` to the latest SMS sent to it: an inbound message, the signed
        webhook to `sms_url` and any `<Message>` it answers sent back. Raises `InboundError` (404: no SMS
        to that number, 409: no `sms_url`)."""
        return self.state.handset.reply(from_, body).as_dict()

    def press(self, to: str | None = None, digits: str = "1", call_sid: str | None = None) -> dict[str, Any]:
        """Press `digits` in call `call_sid`, or in the latest call to `to` whose TwiML has a
        `<Gather action>`, and POST them there. Raises `InboundError` (404: no call, 409: no Gather)."""
        return self.state.handset.press(to, digits, call_sid).as_dict()

    def inbound(self) -> list[dict[str, Any]]:
        """Every webhook the handsets caused (replies and keypresses), oldest first, with the answers."""
        with self.state.lock:
            return [exchange.as_dict() for exchange in self.state.handset.exchanges]

    def reset(self) -> None:
        """Forget messages, calls, rules, opt-outs, faults, limits, handset webhooks and the request log;
        `sms_url` stays (it is our number's configuration, not traffic)."""
        self.state.reset()
        self.set_rate_limit(None, 0)
        self.set_faults()
        self.set_latency(0.0)
        with self.lock:
            self.requests.clear()

    def admin_state(self) -> dict[str, Any]:
        with self.state.lock:
            return {"account_sid": self.account_sid,
                    "rules": {number: rule.as_dict() for number, rule in self.state.rules.items()},
                    "opted_out": sorted(self.state.opted_out),
                    "callback_modes": sorted(self.state.callbacks.modes) or ["normal"],
                    "max_concurrency": self.max_concurrency, "next_429": self.next_429,
                    "rejected_429": self.rejected_429, "latency_s": self.faults.latency_s,
                    "auto_advance": self.state.auto_advance, "sms_url": self.sms_url,
                    "messages": len(self.state.listing("message")), "calls": len(self.state.listing("call"))}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status-delay", type=float, default=1.0,
                        help="seconds between status changes (default 1)")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="answer 429 beyond this many requests in flight (default: no limit)")
    parser.add_argument("--sms-url", default=None,
                        help="our number's messaging webhook: where SMS replies from handsets are POSTed")


def _build(args: argparse.Namespace) -> TwilioSimulator:
    """Credentials from TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN when set; else the printed demo ones."""
    account_sid = os.environ.get("TWILIO_ACCOUNT_SID") or ""
    auth_token = os.environ.get("TWILIO_AUTH_TOKEN") or ""
    api_keys = {}
    if os.environ.get("TWILIO_API_KEY") and os.environ.get("TWILIO_API_SECRET"):
        api_keys[os.environ["TWILIO_API_KEY"]] = os.environ["TWILIO_API_SECRET"]
    if account_sid and (auth_token or api_keys):
        print(f"using TWILIO_ACCOUNT_SID={account_sid} and the credentials from the environment",
              file=sys.stderr, flush=True)
    else:
        account_sid, auth_token = account_sid or DEMO_ACCOUNT_SID, auth_token or DEMO_AUTH_TOKEN
        print(f"demo credentials: TWILIO_ACCOUNT_SID={account_sid} TWILIO_AUTH_TOKEN={DEMO_AUTH_TOKEN}",
              file=sys.stderr, flush=True)
    return TwilioSimulator(args.host, args.port, account_sid=account_sid, auth_token=auth_token,
                           api_keys=api_keys, status_delay_s=args.status_delay,
                           max_concurrency=args.max_concurrency, sms_url=args.sms_url)


def main(argv: list[str] | None = None) -> None:
    run_cli("Twilio REST API simulator (Messages, Calls, status callbacks)", _build, _add_arguments, argv)


__all__ = ["DEMO_ACCOUNT_SID", "DEMO_AUTH_TOKEN", "InboundError", "TwilioError", "TwilioSimulator", "main"]

if __name__ == "__main__":
    main()
