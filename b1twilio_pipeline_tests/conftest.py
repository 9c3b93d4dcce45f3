"""Shared fixtures: each area keeps its own fixture module, re-exported here."""

import os
from pathlib import Path

import pytest

# The tests replay windows from November 2026, so the first partition is fixed (a deployment's default is
# the window of its first start, which the tests of that behaviour ask for by unsetting this).
os.environ.setdefault("B1TWILIO_PARTITIONS_START", "2026-11-01-00:00")

from b1twilio_pipeline_tests.fixtures_pipeline import *  # noqa: F403
from b1twilio_pipeline_tests.fixtures_sap import *  # noqa: F403
from b1twilio_pipeline_tests.fixtures_twilio import *  # noqa: F403


@pytest.fixture(autouse=True)
def no_personal_secrets_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own encrypted store (~/.config/b1twilio) never reaches a test: every test starts with
    a store path that does not exist (tests of the store set their own)."""
    monkeypatch.setenv("B1TWILIO_SECRETS_FILE", str(Path(tmp_path_factory.mktemp("secrets")) / "none.enc"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault suite restarts PostgreSQL and kills processes: it runs after everything else."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)
