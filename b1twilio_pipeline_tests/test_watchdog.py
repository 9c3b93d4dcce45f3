"""Loud when the daemon is gone: every tick of the change sensor writes a heartbeat; `b1twilio watchdog`, run
from a timer outside Dagster, texts the admins exactly once when it goes stale and once when it recovers.
While Twilio refuses the credentials (no text can tell of it) it fails, for the timer's OnFailure= unit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from b1twilio_pipeline.b1.sensors import HEARTBEAT
from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.database import engine_for
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline
from b1twilio_sim.twilio import TwilioSimulator

SCRIPT = Path(sys.executable).parent / "b1twilio"
ADMIN = "+15005550199"
RULES = f"""
timezone: UTC
recipients:
  admins: [{{name: Ops, phone: "{ADMIN}"}}]
rules:
  - id: ap
    kind: purchase_invoice_received
    recipients: [admins]
    template: "{{DocNum}}"
"""
INVOICE = {"CardCode": "V10000", "CardName": "Acme Components GmbH",
           "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "Price": 50}]}


@pytest.fixture
def twilio() -> Iterator[TwilioSimulator]:
    sim = TwilioSimulator(port=0).start_background()
    yield sim
    sim.stop()


def _watchdog(twilio: TwilioSimulator, tmp_path: Path, store_url: str) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "watchdog-rules.yaml"  # (not the pipeline's rules file)
    rules.write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B1_", "B1TWILIO_", "TWILIO_", "PHONE_"))}
    env.update(B1TWILIO_DATABASE_URL=store_url, B1TWILIO_CONFIG=str(rules),
               B1TWILIO_SECRETS_FILE=str(tmp_path / "none.enc"), TWILIO_ACCOUNT_SID=twilio.account_sid,
               TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_FROM_NUMBER="+15005550006",
               TWILIO_API_BASE_URL=twilio.url)
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]
    return subprocess.run([*command, "watchdog", "--stale-minutes", "5"], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


@pytest.mark.postgres
def test_the_admins_hear_once_when_the_daemon_stops_and_once_when_it_is_back(twilio: TwilioSimulator,
                                                                            tmp_path: Path, pg_store_url: str) -> None:
    engine = engine_for(pg_store_url)
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC) - timedelta(minutes=1))
    fresh = _watchdog(twilio, tmp_path, pg_store_url)
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC) - timedelta(minutes=6))  # the daemon stopped
    silent, still_silent = _watchdog(twilio, tmp_path, pg_store_url), _watchdog(twilio, tmp_path, pg_store_url)
    told_down = [m["body"] for m in twilio.messages()]
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC))  # it ticks again
    back, still_back = _watchdog(twilio, tmp_path, pg_store_url), _watchdog(twilio, tmp_path, pg_store_url)

    assert [run.returncode for run in (fresh, silent, still_silent, back, still_back)] == [0] * 5
    assert fresh.stdout.startswith("daemon ticking") and "admins were told already" in still_silent.stdout
    assert len(told_down) == 1 and "has not run its sensors since" in told_down[0]
    bodies = [m["body"] for m in twilio.messages()]
    assert len(bodies) == 2 and "runs again" in bodies[1] and "told" in back.stdout
    assert {m["to"] for m in twilio.messages()} == {ADMIN} and still_back.stdout.startswith("daemon ticking")


@pytest.mark.postgres
def test_every_change_sensor_tick_writes_the_heartbeat(pipeline: Pipeline) -> None:
    before = datetime.now(UTC)
    pipeline.tick("b1_change_sensor")
    beat = milestones.read(pipeline.database.engine, HEARTBEAT)
    assert beat is not None and beat >= before - timedelta(seconds=1)


@pytest.mark.postgres
def test_when_twilio_refuses_the_credentials_the_watchdog_fails_once_with_one_line(pipeline: Pipeline,
                                                                               tmp_path: Path) -> None:
    token, url = pipeline.twilio.auth_token, pipeline.database.database_url
    httpx.post(f"{pipeline.twilio.url}/_admin/credentials", json={"auth_token": "rotated-in-the-console"},
               timeout=10).raise_for_status()
    pipeline.sap.add_document("PurchaseInvoices", INVOICE)
    pipeline.detect()  # the heartbeat is fresh; the invoice's SMS is refused
    refused, still_refused = _watchdog(pipeline.twilio, tmp_path, url), _watchdog(pipeline.twilio, tmp_path, url)
    httpx.post(f"{pipeline.twilio.url}/_admin/credentials", json={"auth_token": token}, timeout=10).raise_for_status()
    pipeline.make_due()
    pipeline.notify()  # Twilio accepts again: the SMS goes out
    accepted = _watchdog(pipeline.twilio, tmp_path, url)

    assert refused.returncode == 3 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: Twilio refuses the pipeline's credentials since")
    assert pipeline.twilio.auth_token not in refused.stdout + refused.stderr
    # The next timer run says it again, but fails no more: OnFailure= tells once per incident, not every run.
    assert still_refused.returncode == 0 and still_refused.stderr == refused.stderr
    assert accepted.returncode == 0 and accepted.stderr == "" and accepted.stdout.startswith("daemon ticking")
