"""Jobs, the polling schedule and the sensors that move work along the one-directional flow
SAP -> snapshots -> alert candidates -> notifications -> delivery status -> SAP audit.

Sensor bodies never call SAP or Twilio (a sensor tick times out after 60 s): they read Dagster's event
log or our own database and launch runs; the runs do the slow work. Everything defaults to RUNNING and
can be switched off in the UI.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from b1twilio_pipeline.assets.alerts import ALERTS_GROUP
from b1twilio_pipeline.assets.deliveries import AUDIT_KEY, DELIVERIES_KEY
from b1twilio_pipeline.assets.snapshots import (
    ENTITIES,
    OPEN_INVOICES_KEY,
    SNAPSHOT_GROUP,
    STATE_GROUP,
    STOCK_LEVELS_KEY,
    snapshot_key,
)
from b1twilio_pipeline.notify import TAG_PREFIX, notify_job
from b1twilio_pipeline.polling import PollingSettings
from b1twilio_pipeline.resources.store import StoreResource
from b1twilio_pipeline.sql import utcnow

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

RUNNING = dg.DefaultSensorStatus.RUNNING
MAX_BATCH = 1000  # notifications per notification run
STATE_KEYS = (OPEN_INVOICES_KEY, STOCK_LEVELS_KEY)
SNAPSHOT_KEYS = (*(snapshot_key(spec) for spec in ENTITIES), *STATE_KEYS)

state_refresh_job = dg.define_asset_job(
    "state_refresh_job", selection=dg.AssetSelection.groups(STATE_GROUP),
    description="Full refresh of open invoices and stock levels (state that changes without UpdateDate).")
alerts_job = dg.define_asset_job(
    "alerts_job", selection=dg.AssetSelection.groups(ALERTS_GROUP),
    description="Evaluate every rule over the snapshots and plan notifications for new alerts.")
delivery_job = dg.define_asset_job(
    "delivery_job", selection=dg.AssetSelection.assets(DELIVERIES_KEY, AUDIT_KEY),
    description="Reconcile delivery statuses with Twilio and write receipts to the B1 audit table.")


def build_snapshot_job(partitions_def: dg.PartitionsDefinition) -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        "snapshot_job", selection=dg.AssetSelection.groups(SNAPSHOT_GROUP), partitions_def=partitions_def,
        description="Poll B1 for what changed in a window; backfill a missed window from the UI or CLI.")


UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
# A run that has not moved for this long is a dead worker's (the default launcher cannot tell): ignore it.
STALE_RUN = timedelta(minutes=10)


def runs_in_flight(instance: dg.DagsterInstance, job_name: str) -> int:
    """Unfinished runs of a job that were updated lately: launching another would only pile up."""
    return instance.get_runs_count(dg.RunsFilter(
        job_name=job_name, statuses=UNFINISHED, updated_after=datetime.now(UTC) - STALE_RUN))


CLOSING_READ = "closing-read"


def poll_requests(partitions_def: dg.TimeWindowPartitionsDefinition, now: datetime,
                  instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """The still-open window on every tick (low latency), unless its previous poll is still running; the
    window that just closed once more, so a change stamped in its last minute is not missed. A schedule
    only dedupes run keys within one tick, so the closing read is asked for only while no run carries
    its run key yet."""
    open_key = partitions_def.get_partition_key_for_timestamp(now.timestamp())
    open_start = partitions_def.time_window_for_partition_key(open_key).start
    closed_key = partitions_def.get_partition_key_for_timestamp((open_start - timedelta(seconds=1)).timestamp())
    requests = []
    if not instance.get_runs_count(dg.RunsFilter(
            statuses=UNFINISHED, updated_after=now - STALE_RUN,
            tags={"dagster/partition": open_key, "b1twilio/poll": "open-window"})):
        requests.append(dg.RunRequest(partition_key=open_key,
                                      run_key=f"{open_key}@{now.astimezone(UTC):%Y%m%dT%H%M}",
                                      tags={"b1twilio/poll": "open-window"}))
    closing_key = f"{closed_key}:{CLOSING_READ}"
    if not instance.get_runs_count(dg.RunsFilter(tags={"dagster/run_key": closing_key})):
        requests.insert(0, dg.RunRequest(partition_key=closed_key, run_key=closing_key,
                                         tags={"b1twilio/poll": CLOSING_READ}))
    return requests


def build_poll_schedule(polling: PollingSettings, partitions_def: dg.TimeWindowPartitionsDefinition,
                        snapshot_job: "UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    @dg.schedule(
        name="snapshot_poll_schedule", cron_schedule=polling.poll_cron, job=snapshot_job,
        execution_timezone=polling.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-reads the open polling window every tick (low latency) and the just-closed window "
                    "once more (nothing on the edge is missed).",
    )
    def snapshot_poll_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        requests = poll_requests(partitions_def, context.scheduled_execution_time, context.instance)
        return requests or dg.SkipReason("the open window's previous poll is still running")

    return snapshot_poll_schedule


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    records = instance.fetch_materializations(key, limit=1, ascending=False).records
    return records[0].storage_id if records else 0


def build_state_refresh_sensor(polling: PollingSettings) -> dg.SensorDefinition:
    @dg.sensor(job=state_refresh_job, minimum_interval_seconds=30, default_status=RUNNING,
               description=f"Full sync at first start, then a refresh every {polling.refresh_minutes} min.")
    def state_refresh_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        ages = []
        for key in STATE_KEYS:
            event = context.instance.get_latest_materialization_event(key)
            ages.append(None if event is None else datetime.now(UTC).timestamp() - event.timestamp)
        if all(age is not None and age < polling.refresh_minutes * 60 for age in ages):
            return dg.SkipReason("state is fresh")
        bucket = int(datetime.now(UTC).timestamp() // (polling.refresh_minutes * 60))
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"state-refresh:{bucket}")])

    return state_refresh_sensor


class _Cursor:
    """Small JSON cursors, so a sensor restart resumes where it was."""

    @staticmethod
    def load(raw: str | None) -> dict[str, float]:
        return json.loads(raw) if raw else {}

    @staticmethod
    def dump(value: dict[str, float]) -> str:
        return json.dumps(value, sort_keys=True)


@dg.sensor(job=alerts_job, minimum_interval_seconds=15, default_status=RUNNING,
           description="Evaluates the rules after every new snapshot materialization, and at least every "
                       "15 minutes (an invoice becomes overdue when the calendar moves on).")
def alert_evaluation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cursor = _Cursor.load(context.cursor)
    latest = max(_latest_storage_id(context.instance, key) for key in SNAPSHOT_KEYS)
    now = datetime.now(UTC).timestamp()
    calendar_due = now - cursor.get("evaluated_at", 0) >= 15 * 60
    if latest <= cursor.get("storage_id", 0) and not calendar_due:
        return dg.SkipReason("no new snapshot since the last evaluation")
    if runs_in_flight(context.instance, alerts_job.name):
        return dg.SkipReason("an evaluation is in progress; the next tick picks up what it missed")
    run_key = f"evaluate:{latest}" if latest > cursor.get("storage_id", 0) else f"evaluate:clock:{int(now)}"
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key)],
                           cursor=_Cursor.dump({"storage_id": latest, "evaluated_at": now}))


def _in_flight_notifications(instance: dg.DagsterInstance) -> set[str]:
    """Notification ids carried by notification runs that are queued or running (and alive)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=notify_job.name, statuses=UNFINISHED,
                                           updated_after=datetime.now(UTC) - STALE_RUN))
    carried: set[str] = set()
    for run in runs:
        config = run.run_config.get("ops", {}).get("send_notifications", {}).get("config", {})
        carried.update(item.get("notification_id", "") for item in config.get("notifications", []))
    return carried


@dg.sensor(job=notify_job, minimum_interval_seconds=10, default_status=RUNNING,
           description="Launches one run for the notifications that are due: new ones, ones whose quiet "
                       "hours or retry backoff ended, and ones a dead worker left behind. The ledger's "
                       "compare-and-set claims make a duplicate run harmless.")
def notification_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    now = utcnow()
    carried = _in_flight_notifications(context.instance)
    due = [n for n in store.ledger().due(now, limit=MAX_BATCH) if n.notification_id not in carried]
    if not due:
        return dg.SensorResult(skip_reason="no notification is due")
    batch = [{"notification_id": n.notification_id, "attempts": n.attempts} for n in due]
    digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()[:12]
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"notify:{now:%Y%m%dT%H%M%S}:{digest}",
        run_config={"ops": {"send_notifications": {"config": {"notifications": batch}}}},
        tags={f"{TAG_PREFIX}/notifications": str(len(batch))},
    )])


@dg.sensor(job=delivery_job, minimum_interval_seconds=15, default_status=RUNNING,
           description="Reconciles message and call status with Twilio while anything is not final, "
                       "reports new statuses, decides escalations and writes receipts to B1.")
def delivery_status_sensor(context: dg.SensorEvaluationContext,
                           store: StoreResource) -> dg.SensorResult | dg.SkipReason:
    work = store.ledger().pending_work(utcnow())
    cursor = _Cursor.load(context.cursor)
    changed = work["version"] != cursor.get("version", 0)
    if not changed and not any(work[k] for k in ("poll_due", "unreported", "unaudited", "undecided")):
        return dg.SkipReason("no message or call waiting for a status")
    if runs_in_flight(context.instance, delivery_job.name):
        return dg.SkipReason("a delivery run is in progress")
    bucket = int(datetime.now(UTC).timestamp() // 15)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"deliveries:{work['version']}:{bucket}")],
                           cursor=_Cursor.dump({"version": work["version"]}))
