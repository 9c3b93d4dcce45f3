"""Loud when the daemon is gone: every tick of the change sensor writes a heartbeat; `b1twilio watchdog`, run
from a timer outside Dagster, texts the admins exactly once when it goes stale and once when it recovers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


@pytest.fixture
def twilio() -> Iterator[TwilioSimulator]:
    sim = TwilioSimulator(port=0).start_background()
    yield sim
    sim.stop()


def _watchdog(twilio: TwilioSimulator, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B1_", "B1TWILIO_", "TWILIO_", "PHONE_"))}
    env.update(B1TWILIO_DATABASE_URL=f"sqlite:///{tmp_path / 'store.sqlite'}", B1TWILIO_CONFIG=str(rules),
               B1TWILIO_SECRETS_FILE=str(tmp_path / "none.enc"), TWILIO_ACCOUNT_SID=twilio.account_sid,
               TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_FROM_NUMBER="+15005550006",
               TWILIO_API_BASE_URL=twilio.url)
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]
    return subprocess.run([*command, "watchdog", "--stale-minutes", "5"], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_the_admins_hear_once_when_the_daemon_stops_and_once_when_it_is_back(twilio: TwilioSimulator,
                                                                            tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'store.sqlite'}")
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC) - timedelta(minutes=1))
    fresh = _watchdog(twilio, tmp_path)
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC) - timedelta(minutes=6))  # the daemon stopped
    silent, still_silent = _watchdog(twilio, tmp_path), _watchdog(twilio, tmp_path)
    told_down = [m["body"] for m in twilio.messages()]
    milestones.touch(engine, HEARTBEAT, datetime.now(UTC))  # it ticks again
    back, still_back = _watchdog(twilio, tmp_path), _watchdog(twilio, tmp_path)

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
