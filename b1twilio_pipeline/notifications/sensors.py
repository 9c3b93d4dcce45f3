"""`notification_sensor` launches the run that sends whatever is due in the ledger; `delivery_status_sensor`
launches the run that reconciles statuses, decides escalations and writes receipts to B1, while anything
waits for one. Both read only our own database (and Dagster's run list), never Twilio."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from b1twilio_pipeline.core.automation import KIND, RUNNING, TAG_PREFIX, UNFINISHED, runs_in_flight
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.b1_audit import AUDIT_KEY
from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.ledger import Ledger
from b1twilio_pipeline.notifications.send import notify_job

MAX_BATCH = 1000  # notifications per notification run

delivery_job = dg.define_asset_job(
    "delivery_job", selection=dg.AssetSelection.assets(DELIVERIES_KEY, AUDIT_KEY),
    description="Reconcile delivery statuses with Twilio and write receipts to the B1 audit table.",
    tags={KIND: "delivery"})


def _in_flight_notifications(instance: dg.DagsterInstance, within: timedelta) -> dict[str, int]:
    """Notification id -> claim count as handed to a notification run that is queued or running and was
    created within `within` (the lease): such a run will claim the row itself. A run older than that
    whose rows are still unclaimed is presumed dead (the default run launcher cannot tell)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=notify_job.name, statuses=UNFINISHED,
                                                     created_after=datetime.now(UTC) - within))
    carried: dict[str, int] = {}
    for record in records:
        config = record.dagster_run.run_config.get("ops", {}).get("send_notifications", {}).get("config", {})
        carried.update((item["notification_id"], item["attempts"]) for item in config.get("notifications", []))
    return carried


@dg.sensor(job=notify_job, minimum_interval_seconds=10, default_status=RUNNING,
           description="Launches one run for the notifications that are due: new ones, ones whose quiet "
                       "hours or retry backoff ended, and ones a dead worker left behind. The ledger's "
                       "compare-and-set claims make a duplicate run harmless.")
def notification_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    now = utcnow()
    ledger = Ledger(database.engine)
    carried = _in_flight_notifications(context.instance, ledger.policy.lease)
    due = [n for n in ledger.due(now, limit=MAX_BATCH) if carried.get(n.notification_id) != n.attempts]
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
                           database: DatabaseResource) -> dg.SensorResult | dg.SkipReason:
    work = DeliveryLog(database.engine).pending_work(utcnow())
    cursor = json.loads(context.cursor) if context.cursor else {}
    changed = work["version"] != cursor.get("version", 0)
    if not changed and not any(work[k] for k in ("poll_due", "unreported", "unaudited", "undecided")):
        return dg.SkipReason("no message or call waiting for a status")
    if runs_in_flight(context.instance, delivery_job.name):
        return dg.SkipReason("a delivery run is in progress")
    bucket = int(datetime.now(UTC).timestamp() // 15)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"deliveries:{work['version']}:{bucket}")],
                           cursor=json.dumps({"version": work["version"]}))
