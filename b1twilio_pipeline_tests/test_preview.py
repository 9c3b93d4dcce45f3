"""The dry run: `b1twilio preview` and the `rules_preview` asset list what the demo rules would send on the
demo data, with masked numbers and quiet hours applied, without a single request to Twilio and without
writing to the store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.notifications.preview_asset import rules_preview
from b1twilio_sim.demo import RULES_FILE
from b1twilio_sim.sap_b1 import SapB1Simulator
from b1twilio_sim.twilio import TwilioSimulator

SCRIPT = Path(sys.executable).parent / "b1twilio"


@pytest.fixture
def twilio() -> Iterator[TwilioSimulator]:
    sim = TwilioSimulator(port=0).start_background()
    yield sim
    sim.stop()


def _environment(sap: SapB1Simulator, twilio: TwilioSimulator, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B1_", "B1TWILIO_", "TWILIO_", "PHONE_"))}
    env.update(B1_SERVICE_LAYER_URL=sap.base_url, B1_COMPANY_DB=sap.company_db, B1_USERNAME=sap.username,
               B1_PASSWORD=sap.password, B1_TIMEZONE=sap.timezone, TWILIO_ACCOUNT_SID=twilio.account_sid,
               TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_FROM_NUMBER="+15005550006",
               TWILIO_API_BASE_URL=twilio.url, B1TWILIO_DATABASE_URL=f"sqlite:///{store}",
               B1TWILIO_SECRETS_FILE=str(store.with_name("no-secrets.enc")))
    return env


def test_preview_lists_the_demo_alerts_and_sends_nothing(sap_sim: SapB1Simulator, twilio: TwilioSimulator,
                                                         tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]
    done = subprocess.run([*command, "preview", "--rules", str(RULES_FILE)], capture_output=True, text=True,
                          timeout=120, env=_environment(sap_sim, twilio, store), check=False)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "notification(s) would be sent" in lines[0] and "nothing was sent or written" in lines[0]
    listed = "\n".join(lines[1:])
    for expected in ("New supplier invoice", "days overdue", "Low stock", "ap-new-supplier-invoice", "overdue-30"):
        assert expected in listed, listed
    assert "+44*******101" in listed and "+447700900101" not in done.stdout + done.stderr
    assert twilio.api_requests() == []  # not one request to Twilio
    assert not store.exists()  # nothing written to the store
    assert sap_sim.count_requests(method="GET") > 0 and sap_sim.logins == 1


def test_the_preview_asset_puts_the_table_in_its_metadata(sap_sim: SapB1Simulator, sap_resource: SapB1Resource,
                                                          tmp_path: Path) -> None:
    result = dg.materialize(
        [rules_preview], resources={"sap": sap_resource,
                                    "database": DatabaseResource(database_url=f"sqlite:///{tmp_path / 's.db'}")},
        run_config={"ops": {"notifications__rules_preview": {"config": {"rules_path": str(RULES_FILE)}}}})

    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["would_send"].value > 0 and metadata["b1_records_read"].value > 0
    assert "New supplier invoice" in metadata["notifications"].value
    assert sap_sim.logins == 1
