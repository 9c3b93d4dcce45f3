"""What starts work, evaluated for real: the change sensor against the B1 simulator, declarative
automation against a PostgreSQL instance, the notification and delivery sensors against the ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import dagster as dg
import pytest

from b1twilio_pipeline.b1.first_start import first_start
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.settings import ConfigurationError
from b1twilio_pipeline.definitions import build_definitions
from b1twilio_pipeline_tests.fixtures_pipeline import Pipeline, PipelineFactory

K = dg.AssetKey


def _supplier_invoice(pipeline: Pipeline) -> dict:
    return pipeline.sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 10}]})


def _window_of(pipeline: Pipeline, doc: dict) -> str:
    stamp = pipeline.sap.clock.now().replace(hour=int(doc["UpdateTime"][:2]), minute=int(doc["UpdateTime"][3:5]))
    return pipeline.defs.resolve_job_def("snapshot_job").partitions_def.get_partition_key_for_timestamp(
        stamp.timestamp())


@pytest.mark.postgres
def test_an_idle_b1_costs_one_small_request_per_watched_entity_and_no_run(pipeline: Pipeline) -> None:
    pipeline.tick("b1_change_sensor")
    pipeline.sap.reset_requests()
    result = pipeline.tick("b1_change_sensor")
    assert not result.run_requests and "no change in B1" in result.skip_reason.skip_message
    # the test rules watch purchase invoices, purchase orders, sales invoices, payments and stock
    gets = [r for r in pipeline.sap.requests if r.method == "GET"]
    assert len(gets) == 5 and pipeline.sap.logins == 0  # the probe session is kept between ticks
    assert all("$select=" in unquote(r.path) and "$top=200" in unquote(r.path) for r in gets)


@pytest.mark.postgres
def test_a_change_asks_for_its_window_with_everything_downstream_once(pipeline: Pipeline) -> None:
    pipeline.tick("b1_change_sensor")
    invoice = _supplier_invoice(pipeline)

    first = pipeline.tick("b1_change_sensor")
    again = pipeline.tick("b1_change_sensor")  # not read yet: asked again under the same run key

    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.partition_key == _window_of(pipeline, invoice)
    assert set(request.asset_selection) == {K(["b1", "purchase_invoices"]), K(["alerts", "purchase_invoice_alerts"]),
                                            K(["alerts", "notification_plan"])}
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    pipeline.detect()  # the run reads the window: the change is stored
    assert not pipeline.tick("b1_change_sensor").run_requests


@pytest.mark.postgres
def test_a_window_that_saw_changes_is_read_once_more_after_it_closes(pipeline: Pipeline) -> None:
    partitions = pipeline.defs.resolve_job_def("snapshot_job").partitions_def
    closed = partitions.get_partition_key_for_timestamp((pipeline.sap.clock.now() - timedelta(hours=1)).timestamp())
    pipeline.tick("b1_change_sensor")
    cursor = json.loads(pipeline.cursors["b1_change_sensor"])
    pipeline.cursors["b1_change_sensor"] = json.dumps({**cursor, "closing": {closed: ["PurchaseInvoices"]}})

    first = pipeline.tick("b1_change_sensor")
    second = pipeline.tick("b1_change_sensor")

    assert [(r.partition_key, r.tags["b1twilio/trigger"]) for r in first.run_requests] == [(closed, "closing-read")]
    assert not second.run_requests


@pytest.mark.postgres
def test_declarative_automation_refreshes_state_and_follows_only_new_inputs(
        pipeline_factory: PipelineFactory, fresh_pg_instance: dg.DagsterInstance) -> None:
    pipeline = pipeline_factory(instance=fresh_pg_instance)
    instance, defs = pipeline.instance, pipeline.defs

    def requested(cursor: object) -> tuple[set[str], object]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        keys = {node.key.path[-1] for node in defs.resolve_asset_graph().asset_nodes
                if result.get_num_requested(node.key)}
        return keys, result.cursor

    followers = {"payment_overdue_alerts", "stock_alerts", "overdue_receivables", "notification_plan"}
    first, cursor = requested(None)
    assert first == {"open_invoices_state", "stock_levels_state"} | followers  # full sync at first start
    pipeline.refresh_state()
    pipeline.evaluate()  # what that run does
    idle, cursor = requested(cursor)
    assert idle == set()
    pipeline.refresh_state()  # a refresh that found the state as it was: nothing to evaluate again
    unchanged, cursor = requested(cursor)
    assert unchanged == set()
    pipeline.sap.add_document("Items", {"ItemCode": "B200", "ItemWarehouseInfoCollection": [
        {"WarehouseCode": "01", "InStock": 2, "MinimalStock": 20}]})
    pipeline.refresh_state()  # a refresh that found stock changed: what reads stock follows, nothing else
    after_refresh, cursor = requested(cursor)
    assert after_refresh == {"stock_alerts", "notification_plan"}
    pipeline.evaluate()
    idle, cursor = requested(cursor)
    assert idle == set()
    pipeline.refresh_state()  # the changed stock read again, as it now is: the state is what it was
    quiet, cursor = requested(cursor)
    assert quiet == set()
    invoice = pipeline.sap.add_document("Invoices", {"CardCode": "C20000", "DocTotal": 100.0})
    pipeline.refresh_state()
    pipeline.evaluate()
    _, cursor = requested(cursor)
    pipeline.sap.update_document("Invoices", invoice["DocEntry"], {"DocumentStatus": "bost_Close"})
    pipeline.refresh_state()  # the invoice is no longer open: what reads open invoices follows, once
    after_close, cursor = requested(cursor)
    assert after_close == {"payment_overdue_alerts", "overdue_receivables", "notification_plan"}
    pipeline.evaluate()
    idle, cursor = requested(cursor)
    assert idle == set()
    pipeline.refresh_state()
    again, cursor = requested(cursor)
    assert again == set()

    _supplier_invoice(pipeline)
    pipeline.detect()  # snapshots, alerts and plan in one run: nothing left for automation
    after_change, cursor = requested(cursor)
    assert after_change == set()

    pipeline.poll()  # a window read alone (a backfill): the alerts downstream follow
    after_backfill, _ = requested(cursor)
    assert "purchase_invoice_alerts" in after_backfill and "notification_plan" in after_backfill


@pytest.mark.postgres
def test_an_hourly_refresh_that_finds_nothing_new_changes_no_evaluation_but_its_own(
        pipeline_factory: PipelineFactory, fresh_pg_instance: dg.DagsterInstance) -> None:
    """Dagster stores an asset's evaluation on every tick it changed: an idle hour's refresh must not
    change the evaluations of what reads the state, or each refresh stores them all, twice."""
    pipeline = pipeline_factory(instance=fresh_pg_instance)
    start = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)

    def evaluations(at: datetime, cursor: object) -> tuple[dict[str, str], set[str], object]:
        result = dg.evaluate_automation_conditions(defs=pipeline.defs, instance=pipeline.instance,
                                                   evaluation_time=at, cursor=cursor)
        hashes = {r.key.path[-1]: r.value_hash for r in result.results}
        return hashes, {key for key in hashes if result.get_num_requested(K(["b1", key]))}, result.cursor

    _, _, cursor = evaluations(start, None)  # first start: the full sync
    pipeline.refresh_state()
    pipeline.evaluate()
    _, _, cursor = evaluations(start + timedelta(minutes=5), cursor)  # sees that run
    before, _, cursor = evaluations(start + timedelta(minutes=10), cursor)  # idle
    after, refreshed, _ = evaluations(start + timedelta(minutes=55), cursor)  # the hourly cron passed

    assert refreshed == {"open_invoices_state", "stock_levels_state"}
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"open_invoices_state", "stock_levels_state"}


def test_window_size_and_refresh_cadence_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1TWILIO_WINDOW_MINUTES", "5")
    partitions = PollingSettings.from_settings().partitions_def()
    window = partitions.time_window_for_partition_key("2026-11-25-10:05")
    assert window.end - window.start == timedelta(minutes=5)
    monkeypatch.setenv("B1TWILIO_WINDOW_MINUTES", "7")
    with pytest.raises(ConfigurationError, match="B1TWILIO_WINDOW_MINUTES='7' is not allowed: use one of 1, 2"):
        PollingSettings.from_settings()
    monkeypatch.setenv("B1TWILIO_WINDOW_MINUTES", "15")
    monkeypatch.setenv("B1TWILIO_STATE_REFRESH_MINUTES", "120")
    assert PollingSettings.from_settings().refresh_cron == "0 */2 * * *"
    monkeypatch.setenv("B1TWILIO_PARTITIONS_START", "2026-11-01")
    with pytest.raises(ConfigurationError, match="B1TWILIO_PARTITIONS_START='2026-11-01' is not a window start"):
        PollingSettings.from_settings()


def test_partitions_follow_the_company_time_zone_not_the_rules_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """B1TWILIO_TIMEZONE (default B1_TIMEZONE) cuts the windows: editing the rules file's zone must not
    change a single partition key."""
    monkeypatch.delenv("B1TWILIO_TIMEZONE", raising=False)
    monkeypatch.setenv("B1_TIMEZONE", "America/New_York")
    rules = tmp_path / "rules.yaml"
    text = (Path(__file__).parents[1] / "b1twilio_pipeline" / "alerts" / "default_rules.yaml").read_text()
    rules.write_text(text.replace("timezone: Europe/Berlin", "timezone: Asia/Tokyo", 1))
    assert "Asia/Tokyo" in rules.read_text()

    def partitions_timezone() -> str:
        job = build_definitions(str(rules)).resolve_job_def("b1_change_job")
        partitions = job.partitions_def
        assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
        return partitions.timezone

    assert partitions_timezone() == "America/New_York"
    monkeypatch.setenv("B1TWILIO_TIMEZONE", "Europe/Lisbon")
    assert partitions_timezone() == "Europe/Lisbon"
    monkeypatch.setenv("B1TWILIO_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigurationError, match="B1TWILIO_TIMEZONE='Mars/Olympus' is not a time zone"):
        partitions_timezone()


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, **resources: object) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(name)
    return sensor(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources))


def test_the_notification_sensor_sleeps_while_the_ledger_is_quiet(tmp_path: Path) -> None:
    defs = build_definitions()
    database = DatabaseResource(database_url=f"sqlite:///{tmp_path}/store.sqlite")
    with dg.instance_for_test() as instance:
        result = _tick(defs, "notification_sensor", instance, database=database, rules=defs.resources["rules"])
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason is not None
    assert result.skip_reason.skip_message == "no notification is due and no message or call waits for a status"


@pytest.mark.postgres
def test_partitions_begin_at_the_first_start_recorded_in_the_store(
        monkeypatch: pytest.MonkeyPatch, pg_store_url: str) -> None:
    """No B1TWILIO_PARTITIONS_START: windows before the deployment first started are not partitions, so
    the UI shows none of them as missing; every process (webserver, daemon, code server) agrees."""
    monkeypatch.delenv("B1TWILIO_PARTITIONS_START")
    database = DatabaseResource(database_url=pg_store_url)
    before = datetime.now(UTC)

    def first_key() -> str | None:
        job = build_definitions(resources={"database": database}).resolve_job_def("b1_change_job")
        assert job.partitions_def is not None
        return job.partitions_def.get_first_partition_key()

    first = first_key()
    polling = PollingSettings.from_settings()
    assert first in {polling.window_start(before), polling.window_start(datetime.now(UTC))}
    assert first_key() == first  # recorded once: a later load starts at the same window
    assert first_start(database) <= datetime.now(UTC)


@pytest.mark.postgres
def test_windows_without_change_are_recorded_not_read_and_launch_nothing(
        pipeline_factory: PipelineFactory, fresh_pg_instance: dg.DagsterInstance) -> None:
    pipeline = pipeline_factory(instance=fresh_pg_instance)
    instance, defs = pipeline.instance, pipeline.defs
    partitions = defs.resolve_job_def("b1_change_job").partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    watched = {K(["b1", name]) for name in ("purchase_invoices", "purchase_orders", "sales_invoices",
                                             "incoming_payments", "item_stock")}

    first = pipeline.tick("b1_change_sensor")
    assert not first.asset_events  # what happened before the sensor first asked is not known
    now = datetime.now(UTC)
    hour_ago = partitions.get_partition_key_for_timestamp((now - timedelta(hours=1)).timestamp())
    closed = [key for key in partitions.get_partition_keys(current_time=now)
              if key >= hour_ago and partitions.time_window_for_partition_key(key).end + timedelta(minutes=1) <= now]
    cursor = json.loads(pipeline.cursors["b1_change_sensor"])
    pipeline.cursors["b1_change_sensor"] = json.dumps(
        {**cursor, "quiet_from": hour_ago, "closing": {closed[0]: ["PurchaseInvoices"]}})

    result = pipeline.tick("b1_change_sensor")

    recorded = {(event.asset_key, event.partition) for event in result.asset_events}
    assert recorded == {(key, window) for window in closed for key in watched} - {
        (K(["b1", "purchase_invoices"]), closed[0])}  # that window saw a change: its closing read reads it
    assert [r.partition_key for r in result.run_requests] == [closed[0]]
    assert not pipeline.tick("b1_change_sensor").asset_events  # each window once

    def requested(cursor: object) -> tuple[set[str], object]:
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return {node.key.path[-1] for node in defs.resolve_asset_graph().asset_nodes
                if evaluation.get_num_requested(node.key)}, evaluation.cursor

    _, cursor = requested(None)
    pipeline.refresh_state()
    pipeline.evaluate()
    idle, cursor = requested(cursor)
    assert idle == set()
    for event in result.asset_events:  # what the daemon does with a sensor's asset events
        instance.report_runless_asset_event(event)
    after_quiet_windows, _ = requested(cursor)
    assert after_quiet_windows == set()  # a record of no change evaluates nothing
    materialized = instance.get_materialized_partitions(K(["b1", "item_stock"]))
    assert set(closed) <= materialized  # the UI shows those windows as done, not missing
