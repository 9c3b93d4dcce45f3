"""`b1twilio receiver`: the receiver's app for this deployment, served until SIGINT/SIGTERM.

With one company, the app of `receiver.create_app` on the store and rules of the settings. With a companies
file (B1TWILIO_COMPANIES), one such app per company mounted at `/companies/<id>`: each checks signatures
against its own public URLs (the ones that company's code location hands Twilio and B1), writes to its own
store and reads its own rules, so a callback can only ever touch the company it was sent for. SMS replies
to a number the companies share arrive at the root (`/twilio/sms`) and go to the company whose alert they
acknowledge (`inbound.SharedNumber`).
Each status change and acknowledgement is also reported to Dagster as an observation of that company's
deliveries asset, when a Dagster instance is configured (DAGSTER_HOME).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.core.companies import Company, companies_path, load_companies
from b1twilio_pipeline.core.database import company_database_url, database_url, engine_for
from b1twilio_pipeline.core.settings import ConfigurationError, Settings, current
from b1twilio_pipeline.notifications.acknowledgements import Acknowledgement
from b1twilio_pipeline.notifications.b1_events import B1Events
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.inbound import Inbound, SharedNumber
from b1twilio_pipeline.notifications.ledger import Notification
from b1twilio_pipeline.notifications.public_urls import (
    B1_EVENTS_PATH,
    COMPANY_PATH,
    STATUS_PATH,
    company_public_url,
    join,
)
from b1twilio_pipeline.notifications.receiver import create_app
from b1twilio_pipeline.notifications.receiver_server import BannerServer, base_url, bound_socket
from b1twilio_pipeline.notifications.statuses import StatusEvent

if TYPE_CHECKING:
    import dagster as dg

log = logging.getLogger(__name__)

Reporter = tuple[Callable[[StatusEvent], None] | None, Callable[[Acknowledgement, Notification], None] | None]


def dagster_reporter(company: str | None = None) -> Reporter:
    """Report each status change and each acknowledgement to Dagster as an observation of the (company's)
    deliveries asset, when a Dagster instance is configured; the notification sensor then reconciles and
    audits them."""
    if not os.environ.get("DAGSTER_HOME"):
        log.info("DAGSTER_HOME is not set: statuses and acknowledgements go to the ledger only")
        return None, None
    import dagster as dg

    from b1twilio_pipeline.core.company_scope import asset_key
    from b1twilio_pipeline.notifications.deliveries import DELIVERIES_PATH

    instance, key = _dagster_instance(), asset_key(*DELIVERIES_PATH, company=company)

    def report(event: StatusEvent) -> None:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=key, description=f"{event.status} ({event.source})",
            metadata={"sid": event.sid, "status": event.status, "channel": event.channel,
                      "error_code": event.error_code or 0, "source": event.source}))

    def acknowledged(ack: Acknowledgement, n: Notification) -> None:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=key, description=f"{n.document} acknowledged by {ack.who} ({ack.via})",
            metadata={"acknowledged_by": ack.who, "via": ack.via, "rule": n.rule_id, "document": n.document,
                      "sid": n.sid or "", "status": "acknowledged"}))

    return report, acknowledged


@functools.cache
def _dagster_instance() -> dg.DagsterInstance:
    """One instance (and connection pool) for every company's reports; Dagster is imported only when used."""
    import dagster as dg

    return dg.DagsterInstance.get()


def one_company_app(configured: Settings, auth_token: str, public_url: str) -> Starlette:
    """The receiver of a one-company deployment: the store and rules of the settings, at the root."""
    engine = engine_for()
    on_change, on_acknowledged = dagster_reporter()
    status_url = configured.twilio_status_callback_url or join(public_url, STATUS_PATH)
    log.info("signatures are checked against %s (status callbacks: %s)", public_url, status_url)
    return create_app(auth_token=auth_token, status_url=status_url, sink=DeliveryLog(engine), on_change=on_change,
                      inbound=Inbound(engine, lambda: load_rules(configured.b1twilio_config), on_acknowledged),
                      public_url=public_url, b1_events=B1Events.from_settings(engine, configured))


def companies_app(configured: Settings, auth_token: str, public_url: str, companies: list[Company],
                  companies_file: Path) -> Starlette:
    """One company's app per company under `/companies/<id>`, and at the root what a number the companies
    share receives: SMS replies (and `/healthz`)."""
    routes: list[Mount] = []
    inbounds: list[Inbound] = []
    for company in companies:
        engine = engine_for(company_database_url(database_url(), company.id))
        public = company_public_url(public_url, company.id)
        rules = str(company.rules_path(companies_file))
        on_change, on_acknowledged = dagster_reporter(company.id)
        inbounds.append(Inbound(engine, lambda path=rules: load_rules(path), on_acknowledged))
        routes.append(Mount(COMPANY_PATH.format(company.id), app=create_app(
            auth_token=auth_token, status_url=join(public, STATUS_PATH), sink=DeliveryLog(engine),
            on_change=on_change, inbound=inbounds[-1], public_url=public,
            b1_events=B1Events.from_settings(engine, configured))))
        log.info("company %s: signatures are checked against %s", company.id, public)
    shared = create_app(auth_token=auth_token, status_url=join(public_url, STATUS_PATH), sink=None,
                        inbound=SharedNumber(inbounds), public_url=public_url)
    return Starlette(routes=[*routes, Mount("/", app=shared)])


def receiver_command(args: argparse.Namespace) -> int:
    """`b1twilio receiver --host H --port N [--public-url URL]`: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configured = current()
    auth_token = configured.require("twilio_auth_token", "checks the signature of every Twilio request")
    companies_file = companies_path()
    try:
        sock = bound_socket(args.host, args.port)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}): choose another "
                                 "--port") from None
    url = base_url(args.host, sock)
    public_url = args.public_url or configured.b1twilio_public_url or url
    try:
        app = one_company_app(configured, auth_token, public_url) if companies_file is None else companies_app(
            configured, auth_token, public_url, load_companies(companies_file), companies_file)
    except ConfigurationError:
        sock.close()
        raise
    log.info("B1 webhooks: %s", join(public_url, B1_EVENTS_PATH) if configured.b1_webhook_username else "off")
    server = BannerServer(uvicorn.Config(app, log_level="info", lifespan="off"), banner=f"listening on {url}")
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
