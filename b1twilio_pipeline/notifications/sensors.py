"""`notification_sensor`: the one sensor that watches the ledger. It launches the run that sends whatever
became due (`notify_job`) and, while any message or call waits for a status, the run that reconciles
statuses, decides escalations and writes receipts to B1 (`delivery_job`). It reads only our own database
(and Dagster's run list), never Twilio, and each tick also runs self-monitoring (`self_monitoring`).

It ticks every B1TWILIO_NOTIFICATION_CHECK_SECONDS (60): a new alert's notifications are sent by the run
that planned them (see `plan`), so what waits for this sensor is later by nature (a quiet-hours hold, an
escalation step, a retry after backoff, a status). One sensor rather than two because each tick is paid
for by the daemon and the code server all day long, whatever the sensor finds.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.core.automation import KIND, RUNNING, SENT, UNFINISHED, runs_in_flight
from b1twilio_pipeline.core.company_scope import company_tags
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.notifications.b1_audit import AUDIT_KEY
from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY
from b1twilio_pipeline.notifications.delivery_log import DeliveryLog
from b1twilio_pipeline.notifications.ledger import Ledger, Notification
from b1twilio_pipeline.notifications.self_monitoring import watch
from b1twilio_pipeline.notifications.send import notify_job

MAX_BATCH = 1000  # notifications per notification run

delivery_job = dg.define_asset_job(
    "delivery_job", selection=dg.AssetSelection.assets(DELIVERIES_KEY, AUDIT_KEY),
    description="Reconcile delivery statuses with Twilio and write receipts to the B1 audit table.",
    tags={KIND: "delivery", **company_tags()})


def _in_flight_notifications(instance: dg.DagsterInstance, within: timedelta) -> dict[str, int]:
    """Notification id -> claim count as handed to a notification run that is queued or running and was
    created within `within` (the lease): such a run will claim the row itself. A run older than that
    whose rows are still unclaimed is presumed dead (the default run launcher cannot tell)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=notify_job.name, statuses=UNFINISHED, tags=company_tags(),
                                                     created_after=datetime.now(UTC) - within))
    carried: dict[str, int] = {}
    for record in records:
        config = record.dagster_run.run_config.get("ops", {}).get("send_notifications", {}).get("config", {})
        carried.update((item["notification_id"], item["attempts"]) for item in config.get("notifications", []))
    return carried


def _sending(instance: dg.DagsterInstance, ledger: Ledger, due: list[Notification],
             now: datetime) -> list[dg.RunRequest]:
    """A notification run for the `due` rows that no run in flight carries already."""
    if due:  # the run list is asked only when there is work: most ticks find none
        carried = _in_flight_notifications(instance, ledger.policy.lease)
        due = [n for n in due if carried.get(n.notification_id) != n.attempts]
    if not due:
        return []
    batch = [{"notification_id": n.notification_id, "attempts": n.attempts} for n in due]
    digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()[:12]
    return [dg.RunRequest(
        job_name=notify_job.name, run_key=f"notify:{now:%Y%m%dT%H%M%S}:{digest}",
        run_config={"ops": {"send_notifications": {"config": {"notifications": batch}}}},
        tags={SENT: str(len(batch))})]


def _reconciling(instance: dg.DagsterInstance, deliveries: DeliveryLog, cursor: dict[str, int],
                 now: datetime, bucket_seconds: int) -> list[dg.RunRequest]:
    """A delivery run while anything waits for a status, a report, a receipt or an escalation decision,
    or the ledger changed since the last one (`cursor` keeps its version); none while one is running."""
    work = deliveries.pending_work(now)
    changed = work["version"] != cursor.get("version", 0)
    if not changed and not any(work[k] for k in ("poll_due", "unreported", "unaudited", "undecided")):
        return []
    if runs_in_flight(instance, delivery_job.name):
        return []
    cursor["version"] = work["version"]
    bucket = int(now.timestamp() // bucket_seconds)
    return [dg.RunRequest(job_name=delivery_job.name, run_key=f"deliveries:{work['version']}:{bucket}")]


def build_notification_sensor(check_seconds: int) -> dg.SensorDefinition:
    """The ledger's sensor, ticking every `check_seconds`."""

    @dg.sensor(name="notification_sensor", jobs=[notify_job, delivery_job], minimum_interval_seconds=check_seconds,
               default_status=RUNNING,
               description="Launches one run for the notifications that are due (quiet hours or a retry "
                           "backoff ended, an escalation step's time came, a dead worker left them) and, while "
                           "a message or call waits for a status, the run that reconciles statuses with Twilio, "
                           "decides escalations and writes receipts to B1. The ledger's compare-and-set claims "
                           "make a duplicate run harmless.")
    def notification_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource,
                            rules: RulesResource) -> dg.SensorResult:
        now = utcnow()
        ledger = Ledger(database.engine)
        due = ledger.due(now, limit=MAX_BATCH)
        checks = watch(context, ledger, rules.load, due, now)  # self-monitoring rides on this tick
        cursor = json.loads(context.cursor) if context.cursor else {}
        requests = [*_sending(context.instance, ledger, due, now),
                    *_reconciling(context.instance, DeliveryLog(database.engine), cursor, now, check_seconds)]
        skip = None if requests else "no notification is due and no message or call waits for a status"
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor), skip_reason=skip,
                               asset_events=checks)

    return notification_sensor
