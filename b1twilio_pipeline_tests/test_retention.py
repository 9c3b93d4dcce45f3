"""The retention job deletes finished runs (and their events) past their period, keeps notification runs
for their longer period and never touches an unfinished run; the shipped instance files bound tick history."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from b1twilio_pipeline.core.automation import KIND, SENT
from b1twilio_pipeline.definitions import defs
from b1twilio_sim.deployment import SQLITE_INSTANCE

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgres


@dg.op
def work(context: dg.OpExecutionContext) -> None:
    context.log.info("some work")


def _runs_of(kind: str, instance: dg.DagsterInstance, count: int, sent: int | None = None) -> list[str]:
    tags = {KIND: kind, **({SENT: str(sent)} if sent is not None else {})}
    job = dg.GraphDefinition(f"{kind}_work", node_defs=[work]).to_job(tags=tags)
    return [job.execute_in_process(instance=instance).run_id for _ in range(count)]


def _retention(instance: dg.DagsterInstance, **config: int) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("retention_job")
    return job.execute_in_process(instance=instance, run_config={"ops": {"delete_old_runs": {"config": config}}})


def test_old_runs_go_notification_history_stays_longer(fresh_pg_instance: dg.DagsterInstance,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    instance = fresh_pg_instance
    changes = _runs_of("change", instance, 3)
    # Notification runs, and a change run that sent what it planned at once: notification history.
    notifications = _runs_of("notification", instance, 2, sent=4) + _runs_of("change", instance, 1, sent=2)
    waiting = instance.create_run_for_job(dg.GraphDefinition("queued_work", node_defs=[work]).to_job(),
                                          tags={KIND: "change"}).run_id
    assert instance.all_logs(changes[0])

    monkeypatch.setenv("B1TWILIO_RETENTION_DAYS", "1")  # every run above is younger: nothing goes
    kept_all = _retention(instance)
    assert kept_all.output_for_node("delete_old_runs") == 0

    first = _retention(instance, operational_days=0)  # notification runs: B1TWILIO_NOTIFICATION_RETENTION_DAYS
    assert first.output_for_node("delete_old_runs") == 3 + 1  # the change runs and the first retention run
    for run_id in changes:
        assert instance.get_run_by_id(run_id) is None
        assert not instance.all_logs(run_id)  # the run's events went with it
    assert all(instance.get_run_by_id(run_id) for run_id in notifications)
    assert instance.get_run_by_id(waiting) is not None  # never started: not finished, never deleted
    assert instance.get_run_by_id(first.run_id) is not None  # a run does not delete itself

    second = _retention(instance, operational_days=0, notification_days=0)
    assert second.output_for_node("delete_old_runs") == 3 + 1
    assert not any(instance.get_run_by_id(run_id) for run_id in [*notifications, first.run_id])
    assert instance.get_run_by_id(waiting) is not None


def test_retention_runs_nightly_by_default() -> None:
    schedule = defs.resolve_schedule_def("retention_schedule")
    assert schedule.job_name == "retention_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


@pytest.mark.parametrize("text", [(ROOT / "dagster.yaml").read_text(), SQLITE_INSTANCE], ids=["production", "loopback"])
def test_shipped_instances_bound_tick_history(text: str) -> None:
    retention = yaml.safe_load(text)["retention"]
    sensor = retention["sensor"]["purge_after_days"]
    assert 0 < sensor["skipped"] <= 7 and 0 < sensor["failure"] <= 90 and 0 < sensor["success"] <= 90
    assert 0 < retention["schedule"]["purge_after_days"] <= 90
