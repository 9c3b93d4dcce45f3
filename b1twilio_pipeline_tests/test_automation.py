"""The poll schedule and the sensors, evaluated for real against a Dagster instance."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from b1twilio_pipeline.assets.snapshots import OPEN_INVOICES_KEY, STOCK_LEVELS_KEY
from b1twilio_pipeline.automation import CLOSING_READ, poll_requests
from b1twilio_pipeline.definitions import build_definitions
from b1twilio_pipeline.polling import PollingSettings
from b1twilio_pipeline.resources.store import StoreResource
from b1twilio_pipeline.settings import ConfigurationError


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _partitions() -> dg.TimeWindowPartitionsDefinition:
    return PollingSettings.from_settings("Europe/Berlin").partitions_def()


def test_poll_reads_the_open_window_every_tick_and_the_closed_one_once(instance: dg.DagsterInstance) -> None:
    partitions = _partitions()
    now = datetime(2026, 11, 25, 9, 16, 20, tzinfo=UTC)  # 10:16 in Berlin: window 10:15 is open

    first = poll_requests(partitions, now, instance)
    assert [(r.partition_key, r.tags["b1twilio/poll"]) for r in first] == [
        ("2026-11-25-10:00", CLOSING_READ), ("2026-11-25-10:15", "open-window")]
    # the closing read ran (a run with its key exists): later ticks ask only for the open window
    instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), run_id=None,
                                tags={"dagster/run_key": first[0].run_key})
    later = poll_requests(partitions, now + timedelta(minutes=1), instance)
    assert [r.partition_key for r in later] == ["2026-11-25-10:15"]
    assert later[0].run_key != first[1].run_key


def test_poll_does_not_pile_up_behind_a_running_poll(instance: dg.DagsterInstance) -> None:
    partitions = _partitions()
    now = datetime.now(UTC)
    open_key = partitions.get_partition_key_for_timestamp(now.timestamp())
    running = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), run_id=None, tags={
        "dagster/partition": open_key, "b1twilio/poll": "open-window"}, status=dg.DagsterRunStatus.STARTED)
    assert open_key not in [r.partition_key for r in poll_requests(partitions, now, instance)]
    instance.report_run_canceled(running)
    assert open_key in [r.partition_key for r in poll_requests(partitions, now, instance)]


def test_window_size_and_cadence_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1TWILIO_WINDOW_MINUTES", "5")
    partitions = _partitions()
    window = partitions.time_window_for_partition_key("2026-11-25-10:05")
    assert window.end - window.start == timedelta(minutes=5)
    monkeypatch.setenv("B1TWILIO_WINDOW_MINUTES", "7")
    with pytest.raises(ConfigurationError, match="B1TWILIO_WINDOW_MINUTES=7 is not allowed"):
        _partitions()


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None = None,
          **resources: object) -> dg.SensorResult | dg.SkipReason:
    sensor = defs.resolve_sensor_def(name)
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources))


def test_state_refresh_runs_at_first_start_then_only_when_stale(instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    first = _tick(defs, "state_refresh_sensor", instance)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    for key in (OPEN_INVOICES_KEY, STOCK_LEVELS_KEY):
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    assert isinstance(_tick(defs, "state_refresh_sensor", instance), dg.SkipReason)


def test_alert_evaluation_follows_new_snapshots(instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    first = _tick(defs, "alert_evaluation_sensor", instance)
    assert isinstance(first, dg.SensorResult)  # first tick: the calendar alone is reason enough
    idle = _tick(defs, "alert_evaluation_sensor", instance, cursor=first.cursor)
    assert isinstance(idle, dg.SkipReason)
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(["b1", "purchase_invoices"])))
    after = _tick(defs, "alert_evaluation_sensor", instance, cursor=first.cursor)
    assert isinstance(after, dg.SensorResult) and after.run_requests[0].run_key.startswith("evaluate:")
    instance.create_run_for_job(dg.GraphDefinition("alerts_job").to_job(), run_id=None,
                                status=dg.DagsterRunStatus.STARTED)
    busy = _tick(defs, "alert_evaluation_sensor", instance, cursor=first.cursor)
    assert isinstance(busy, dg.SkipReason)  # no pile-up behind a running evaluation


def test_delivery_sensor_sleeps_while_nothing_waits_for_a_status(instance: dg.DagsterInstance,
                                                                 tmp_path: Path) -> None:
    defs = build_definitions()
    store = StoreResource(database_url=f"sqlite:///{tmp_path}/store.sqlite")
    assert isinstance(_tick(defs, "delivery_status_sensor", instance, store=store), dg.SkipReason)
    result = _tick(defs, "notification_sensor", instance, store=store)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason is not None and "no notification is due" in result.skip_reason.skip_message
