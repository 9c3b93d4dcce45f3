"""What starts work, along the one-directional flow SAP -> snapshots -> alerts -> notifications -> delivery
status -> SAP audit. Runs are launched for change, never for time alone:

- `b1_change_sensor` asks B1 a small question per watched entity (see `change_detection`) and requests a
  run only for the windows that changed: their snapshots, every alert evaluation downstream and the
  notification plan, in one run. A window that saw changes is read once more after it closes.
- Declarative automation does the rest of the asset-to-asset work: the open-invoice and stock state is
  refreshed on its cron (and at first start), and alerts follow their inputs when those were updated
  outside a change run (a backfill, a refresh); overdue reminders are also re-evaluated after midnight,
  when an invoice becomes overdue without any change in B1.
- `notification_sensor` launches the notification run for whatever is due in the ledger;
  `delivery_status_sensor` reconciles statuses and writes receipts while anything waits for one.

Sensor bodies ask B1 only small, bounded questions and never send anything; the runs do the work.
Everything defaults to RUNNING and can be switched off in the UI.
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from b1twilio_pipeline.alerts.assets import ALERTS_GROUP
from b1twilio_pipeline.b1.change_detection import OVERLAP, Change, probe_new, probe_stamped
from b1twilio_pipeline.b1.client import SapB1Resource
from b1twilio_pipeline.b1.snapshots import SNAPSHOT_GROUP, STATE_GROUP, EntitySpec, snapshot_key
from b1twilio_pipeline.b1.windows import CALENDAR_CRON, PollingSettings
from b1twilio_pipeline.core.sql import utcnow
from b1twilio_pipeline.core.store_resource import StoreResource
from b1twilio_pipeline.notifications.deliveries import AUDIT_KEY, DELIVERIES_KEY
from b1twilio_pipeline.notifications.send import TAG_PREFIX, notify_job

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

RUNNING = dg.DefaultSensorStatus.RUNNING
AC = dg.AutomationCondition
MAX_BATCH = 1000  # notifications per notification run
KIND = f"{TAG_PREFIX}/kind"
WINDOW = f"{TAG_PREFIX}/window"
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
# A run that has not moved for this long is a dead worker's (the default launcher cannot tell): ignore it.
STALE_RUN = timedelta(minutes=10)
RETRY_BUCKET_S = 300  # a change whose run failed is asked for again after at most this long

state_refresh_job = dg.define_asset_job(
    "state_refresh_job", selection=dg.AssetSelection.groups(STATE_GROUP),
    description="Full refresh of open invoices and stock levels (state that changes without UpdateDate).")
alerts_job = dg.define_asset_job(
    "alerts_job", selection=dg.AssetSelection.groups(ALERTS_GROUP),
    description="Evaluate every rule over the snapshots and plan notifications for new alerts.")
delivery_job = dg.define_asset_job(
    "delivery_job", selection=dg.AssetSelection.assets(DELIVERIES_KEY, AUDIT_KEY),
    description="Reconcile delivery statuses with Twilio and write receipts to the B1 audit table.",
    tags={KIND: "delivery"})


def build_snapshot_jobs(partitions_def: dg.PartitionsDefinition) -> list["UnresolvedAssetJobDefinition"]:
    """`snapshot_job` reads windows (backfills from the UI or CLI); `b1_change_job` is what the change
    sensor launches: a window's snapshots together with the evaluations that depend on them."""
    return [
        dg.define_asset_job(
            "snapshot_job", selection=dg.AssetSelection.groups(SNAPSHOT_GROUP), partitions_def=partitions_def,
            description="Read what changed in B1 in a window; backfill missed windows from the UI or CLI."),
        dg.define_asset_job(
            "b1_change_job", selection=dg.AssetSelection.groups(SNAPSHOT_GROUP, ALERTS_GROUP),
            partitions_def=partitions_def, tags={KIND: "change"},
            description="Read the windows B1 changed in, evaluate the rules that depend on them and plan "
                        "the notifications (launched by b1_change_sensor)."),
    ]


def runs_in_flight(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str] | None = None) -> int:
    """Unfinished runs of a job that were updated lately: launching another would only pile up."""
    return instance.get_runs_count(dg.RunsFilter(
        job_name=job_name, statuses=UNFINISHED, tags=tags or {}, updated_after=datetime.now(UTC) - STALE_RUN))


# --- declarative automation -----------------------------------------------------------------------------

def refresh_condition(polling: PollingSettings) -> dg.AutomationCondition:
    """State assets: on their cron, and once at first start."""
    first_start = AC.missing() & AC.initial_evaluation()
    return ((AC.cron_tick_passed(polling.refresh_cron, polling.timezone).since_last_handled() | first_start)
            & ~AC.in_progress())


def follow_condition(calendar_timezone: str | None = None) -> dg.AutomationCondition:
    """Evaluations: when an input was updated by a run that did not evaluate them already (with a
    calendar time zone: also after midnight there)."""
    trigger = AC.any_deps_updated()
    if calendar_timezone is not None:
        trigger = trigger | AC.cron_tick_passed(CALENDAR_CRON, calendar_timezone)
    with_inputs = AC.any_deps_match(AC.will_be_requested())  # in the same run as a refresh, even the first
    return (trigger.since_last_handled() | with_inputs) & ~AC.any_deps_in_progress() & ~AC.in_progress()


def automation_sensor(polling: PollingSettings) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "automation_condition_sensor", target=dg.AssetSelection.groups(STATE_GROUP, ALERTS_GROUP),
        default_status=RUNNING, minimum_interval_seconds=max(30, polling.change_check_seconds),
        run_tags={KIND: "refresh"},
        description="Refreshes the open-invoice and stock state on its cron, re-evaluates overdue "
                    "reminders after midnight, and evaluates alerts whose inputs a backfill updated.")


# --- change detection -----------------------------------------------------------------------------------

def downstream_of(assets: Sequence[dg.AssetsDefinition], roots: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """Every asset that depends, directly or not, on one of `roots`."""
    deps = {key: set(dep_keys) for a in assets for key, dep_keys in a.asset_deps.items()}
    found: set[dg.AssetKey] = set()
    frontier = set(roots)
    while frontier:
        frontier = {key for key, inputs in deps.items() if inputs & frontier} - found
        found |= frontier
    return found


class _Cursor:
    """Per entity: where the next question starts; and the windows that saw changes (closing reads)."""

    @staticmethod
    def load(raw: str | None) -> dict:
        return json.loads(raw) if raw else {}

    @staticmethod
    def dump(value: dict) -> str:
        return json.dumps(value, sort_keys=True)


def build_change_sensor(polling: PollingSettings, partitions_def: dg.TimeWindowPartitionsDefinition,
                        watched: Sequence[EntitySpec], assets: Sequence[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """The sensor for `watched` (the entities the enabled rules read)."""
    follow = {spec.entity: sorted(downstream_of(assets, {snapshot_key(spec)}) | {snapshot_key(spec)})
              for spec in watched}
    window_length = timedelta(minutes=polling.window_minutes)

    def window_of(moment: datetime) -> str | None:
        first = partitions_def.time_window_for_partition_key(partitions_def.get_first_partition_key() or "").start
        if moment < first:
            return None
        return partitions_def.get_partition_key_for_timestamp(min(moment, datetime.now(UTC)).timestamp())

    def closed(window: str, now: datetime) -> bool:
        """Closed a minute ago: changes stamped in its last minute are visible by now."""
        return partitions_def.time_window_for_partition_key(window).end + OVERLAP <= now

    def request(window: str, entities: set[str], run_key: str, trigger: str) -> dg.RunRequest:
        keys = sorted({key for entity in entities for key in follow[entity]})
        return dg.RunRequest(run_key=run_key, partition_key=window, asset_selection=keys,
                             tags={WINDOW: window, f"{TAG_PREFIX}/trigger": trigger})

    @dg.sensor(name="b1_change_sensor", job_name="b1_change_job", default_status=RUNNING,
               minimum_interval_seconds=polling.change_check_seconds,
               description=f"Asks B1 every {polling.change_check_seconds} s what changed (one small request per "
                           f"entity: {', '.join(s.entity for s in watched)}) and reads only the windows that "
                           "changed; a window that saw changes is read once more after it closes.")
    def b1_change_sensor(context: dg.SensorEvaluationContext, sap: SapB1Resource,
                         store: StoreResource) -> dg.SensorResult:
        cursor = _Cursor.load(context.cursor)
        session, snapshots, now = sap.probe_session(), store.snapshots(), datetime.now(UTC)
        changes: list[Change] = []
        for spec in watched:
            if spec.by_doc_date:
                after = cursor.get(spec.entity)
                probe = probe_new(session, snapshots, spec, int(after) if after else None, now, window_of)
            else:
                since = cursor.get(spec.entity) or (now - window_length).isoformat()
                probe = probe_stamped(session, snapshots, spec, datetime.fromisoformat(since), window_of)
            changes += probe.changes
            cursor[spec.entity] = probe.cursor
        closing: dict[str, list[str]] = cursor.get("closing", {})
        by_window: dict[str, set[str]] = {}
        for change in changes:
            by_window.setdefault(change.window, set()).add(change.entity)
        requests = []
        bucket = int(now.timestamp() // RETRY_BUCKET_S)
        for window, entities in sorted(by_window.items()):
            if not closed(window, now):  # a closed window's read is its closing read already
                closing[window] = sorted(set(closing.get(window, [])) | entities)
            if runs_in_flight(context.instance, "b1_change_job", {WINDOW: window}):
                continue  # its run is reading the window now; what it misses stays pending
            digest = hashlib.sha256(json.dumps(sorted((c.entity, c.key, c.stamp) for c in changes
                                                      if c.window == window)).encode()).hexdigest()[:12]
            requests.append(request(window, entities, f"change:{window}:{digest}:{bucket}", "change"))
        for window, entities in sorted(closing.items()):
            if closed(window, now):
                requests.append(request(window, set(entities), f"closing:{window}", "closing-read"))
                del closing[window]
        cursor["closing"] = closing
        skip = None if requests else f"no change in B1 ({len(watched)} entities asked)"
        return dg.SensorResult(run_requests=requests, cursor=_Cursor.dump(cursor), skip_reason=skip)

    return b1_change_sensor


# --- notifications and delivery -------------------------------------------------------------------------

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
def notification_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    now = utcnow()
    ledger = store.ledger()
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
