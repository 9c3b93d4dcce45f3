"""A loopback simulator of the SAP Business One Service Layer.

It speaks the protocol the pipeline's client speaks to a real Service Layer (Login/Logout, B1SESSION and
ROUTEID cookies, idle session timeout, v1/v2 envelopes and error bodies, OData `$filter`/`$select`/
`$orderby`/`$top`/`$skip`, server-driven paging with relative next links, user-defined tables, webhook
subscriptions and the batches they post: `sap_b1_webhooks`), so tests exercise the real client code
paths. Tests and the demo change data (stamped by a simulated clock in the B1 server's time zone) and
inject faults through the Python methods of `SapB1Simulator`, or through the same admin API over HTTP under
`/_admin/...`.

Run: `python -m b1twilio_sim.sap_b1 --host 127.0.0.1 --port 0 [--version v1|v2]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp

from b1twilio_sim.sap_b1_admin import admin_routes
from b1twilio_sim.sap_b1_app import METHODS, ServiceLayer
from b1twilio_sim.sap_b1_errors import SESSION_MESSAGE, B1Failure
from b1twilio_sim.sap_b1_model import CompanyDatabase
from b1twilio_sim.sap_b1_webhooks import WebhookMessenger
from b1twilio_sim.server import SimulatorServer, StrPath, run_cli
from b1twilio_sim.traffic import FaultInjection, LoggedRequest, RequestLog

DEMO_COMPANY_DB = "SBODEMOUS"
DEMO_USERNAME = "manager"
DEMO_PASSWORD = "manager"


@dataclass
class Session:
    session_id: str
    last_used: datetime


class SapB1Simulator(CompanyDatabase, SimulatorServer):
    """The Service Layer simulator: a company database served over HTTP, with sessions and an admin API.

    `expiry_mode` "301" answers an expired session with HTTP 401 / code 301 (real SL); "5002" with HTTP 400 /
    code -5002 and a message about the session (how a customer described it). `next_link_on_full_page`
    makes every full page carry a next link even when nothing follows (allowed by real SL: the end is a
    page without a link). `login_latency_s` and `reject_parallel_logins` reproduce 500/299 "SAML Login
    Failed" for logins that overlap. With `ssl_certfile` and `ssl_keyfile` it serves HTTPS, as a Service
    Layer behind its load balancer does (often with a self-signed certificate).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, version: str = "v1", *,
                 company_db: str = DEMO_COMPANY_DB, username: str = DEMO_USERNAME,
                 password: str = DEMO_PASSWORD,
                 session_timeout_s: float = 1800, expiry_mode: str = "301", seed: bool = True,
                 clock: Callable[[], datetime] | None = None, timezone: str = "UTC",
                 next_link_on_full_page: bool = False, login_latency_s: float = 0.0,
                 reject_parallel_logins: bool = True, route_id: str = ".node1",
                 ssl_certfile: StrPath | None = None, ssl_keyfile: StrPath | None = None) -> None:
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        if expiry_mode not in ("301", "5002"):
            raise ValueError(f"expiry_mode must be '301' or '5002', got {expiry_mode!r}")
        CompanyDatabase.__init__(self, version=version, timezone=timezone, clock=clock, seed=seed,
                                 next_link_on_full_page=next_link_on_full_page)
        SimulatorServer.__init__(self, host, port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        self.prefix = f"/b1s/{version}"
        self.company_db = company_db
        self.username = username
        self.password = password
        self.session_timeout_s = session_timeout_s
        self.expiry_mode = expiry_mode
        # A misconfigured proxy in front of B1 can hand out absolute next links to another host: this
        # prefix makes the simulator do the same (the client must not follow them with its session).
        self.next_link_base = ""
        self.login_latency_s = login_latency_s
        self.reject_parallel_logins = reject_parallel_logins
        self.route_id = route_id
        self.sessions: dict[str, Session] = {}
        self._session_lock = threading.Lock()
        self._logins_in_flight = 0
        self.webhooks = WebhookMessenger(self.clock.now, lambda: self.base_url)
        self.on_change = self.webhooks.record_change

    @property
    def base_url(self) -> str:
        """The Service Layer root the client is configured with, e.g. `http://127.0.0.1:50000/b1s/v1`."""
        return self.url + self.prefix

    def build_app(self) -> ASGIApp:
        layer = ServiceLayer(self)
        return Starlette(
            routes=[*admin_routes(self), *layer.routes(), Route("/{path:path}", layer.unknown_path, methods=METHODS)],
            middleware=[
                Middleware(RequestLog, traffic=self),
                Middleware(FaultInjection, traffic=self, applies=lambda path: path.startswith(self.prefix + "/"),
                           answer=layer.fault),
            ],
        )

    def stop(self) -> None:
        self.webhooks.close()
        super().stop()

    def log_request_entry(self, entry: LoggedRequest) -> None:
        """Admin calls are the test harness talking, not the client: keep them out of the log."""
        if not entry.path.startswith("/_admin"):
            super().log_request_entry(entry)

    # ------------------------------------------------------------------------- sessions

    def login(self, company_db: Any, username: Any, password: Any) -> Session:
        """A new session for valid credentials (401 -306 for an unknown CompanyDB, -304 for a wrong user or
        password). A login overlapping another fails with 500/299 when `reject_parallel_logins`."""
        with self._session_lock:
            overlapping = self._logins_in_flight > 0
            self._logins_in_flight += 1
        try:
            if self.login_latency_s:
                time.sleep(self.login_latency_s)
            if overlapping and self.reject_parallel_logins:
                raise B1Failure(500, 299, "SAML Login Failed")
            if company_db != self.company_db:
                raise B1Failure(401, -306, "Fail to get DB Credentials from SLD.")
            if username != self.username or password != self.password:
                raise B1Failure(401, -304, "Fail to NONE-SSO login from SLD.")
            session = Session(str(uuid.uuid4()), self.clock.now())
            with self._session_lock:
                self.sessions[session.session_id] = session
            return session
        finally:
            with self._session_lock:
                self._logins_in_flight -= 1

    def use_session(self, session_id: str | None) -> Session:
        """Validate and renew (the timeout is idle time) a session; an expired or unknown one answers per
        `expiry_mode`."""
        with self._session_lock:
            session = self.sessions.get(session_id or "")
            now = self.clock.now()
            if session is not None and (now - session.last_used).total_seconds() > self.session_timeout_s:
                del self.sessions[session.session_id]
                session = None
            if session is None:
                if self.expiry_mode == "5002":
                    raise B1Failure(400, -5002, "Session timeout: " + SESSION_MESSAGE)
                raise B1Failure(401, 301, SESSION_MESSAGE)
            session.last_used = now
            return session

    def logout(self, session: Session) -> None:
        with self._session_lock:
            self.sessions.pop(session.session_id, None)

    def expire_sessions(self) -> int:
        """Forget every session, as a server restart or an idle timeout would."""
        with self._session_lock:
            count = len(self.sessions)
            self.sessions.clear()
            return count

    def change_password(self, password: str) -> int:
        """The B1 administrator gives the user a new password: every session ends, and a login with the old
        one is refused (401 -304) until the pipeline is configured with the new one. Returns the sessions
        ended."""
        if not password:
            raise ValueError("password must not be empty")
        self.password = password
        return self.expire_sessions()

    # ------------------------------------------------------------------------- requests and faults

    def request_counts(self) -> dict[str, int]:
        """Requests per "METHOD /path" (query stripped), admin calls excluded."""
        with self.lock:
            logged = list(self.requests)
        return dict(Counter(f"{entry.method} {urlsplit(entry.path).path}" for entry in logged))

    def count_requests(self, method: str | None = None, resource: str | None = None) -> int:
        """How many requests the client made, optionally of one method and one resource (e.g. "Invoices",
        "Login"; the collection path, so every page of a walk counts)."""
        wanted = None if resource is None else f"{self.prefix}/{resource}"
        with self.lock:
            logged = list(self.requests)
        return sum(1 for entry in logged
                   if (method is None or entry.method == method)
                   and (wanted is None or unquote(urlsplit(entry.path).path) == wanted))

    @property
    def logins(self) -> int:
        return self.count_requests("POST", "Login")

    @property
    def logouts(self) -> int:
        return self.count_requests("POST", "Logout")

    def reset_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change some faults (latency_s, fail_next, fail_status, fail_all, drop_next,
        accept_then_fail_next); returns them all."""
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.faults, name):
                    raise ValueError(f"unknown fault {name!r}: use {', '.join(asdict(self.faults))}")
                setattr(self.faults, name, type(getattr(self.faults, name))(value))
            return asdict(self.faults)


# ------------------------------------------------------------------------------------------- CLI


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", choices=["v1", "v2"], default="v1", help="Service Layer version")
    parser.add_argument("--session-timeout-min", type=float, default=30.0, help="idle session timeout")
    parser.add_argument("--expiry-mode", choices=["301", "5002"], default="301",
                        help="how an expired session answers: 401/301 (real SL) or the -5002 form")
    parser.add_argument("--timezone", default="UTC", help="the simulated B1 server's time zone")
    parser.add_argument("--no-seed", action="store_true", help="start without demo data")


def _build(args: argparse.Namespace) -> SapB1Simulator:
    """Credentials from B1_COMPANY_DB / B1_USERNAME / B1_PASSWORD when set, else the demo ones; a password
    from the environment is never printed."""
    company_db = os.environ.get("B1_COMPANY_DB") or DEMO_COMPANY_DB
    username = os.environ.get("B1_USERNAME") or DEMO_USERNAME
    password = os.environ.get("B1_PASSWORD") or DEMO_PASSWORD
    shown = "(from B1_PASSWORD)" if os.environ.get("B1_PASSWORD") else f"{DEMO_PASSWORD} (demo)"
    print(f"B1 credentials: CompanyDB={company_db} UserName={username} Password={shown}", file=sys.stderr,
          flush=True)
    return SapB1Simulator(args.host, args.port, args.version, company_db=company_db, username=username,
                          password=password, session_timeout_s=args.session_timeout_min * 60,
                          expiry_mode=args.expiry_mode, timezone=args.timezone, seed=not args.no_seed)


def main(argv: list[str] | None = None) -> None:
    run_cli("SAP Business One Service Layer simulator", _build, _add_arguments, argv)


if __name__ == "__main__":
    main()
