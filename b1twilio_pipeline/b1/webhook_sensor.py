"""`b1_webhook_sensor`: the fast path. B1's webhook events (kept by the receiver in `webhook_inbox`) name
the records that changed; the sensor asks for one run of the change job that reads exactly those records,
by key, and evaluates what depends on them, the same snapshot -> alert -> notification path a poll takes.

The run's partition is the window of now, its assets are the `follow` assets of the named entity sets,
and the keys reach each snapshot step as its config (`snapshots.SnapshotConfig`). It carries no window
tag: it does not read the window, so the change sensor need not wait for it before reading that window.
The snapshot store keeps what it read under the record's key and change stamp, so the change sensor's
next poll finds those records unchanged and nothing is read or sent twice. Polling stays the source of
truth: a lost event, or a run that fails before its read, leaves the change for the next poll to find; a
run that fails after it leaves the evaluation to declarative automation, as any change run does.

The waiting events are marked handled with the run key in the same tick. The run key is derived from the
event ids, so a tick evaluated again before that mark was saved asks for the same run, which Dagster
launches once. Idle, a tick is one indexed query of the store; without webhook credentials the sensor
is stopped and costs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import dagster as dg

from b1twilio_pipeline.b1.entities import ENTITIES, snapshot_key
from b1twilio_pipeline.b1.sensors import CHANGE_JOB
from b1twilio_pipeline.b1.webhook_inbox import WebhookInbox
from b1twilio_pipeline.core.automation import RUNNING, TAG_PREFIX
from b1twilio_pipeline.core.database_resource import DatabaseResource

WEBHOOK_TICK_SECONDS = 3  # how soon after B1's event the read starts, at the cost of an idle query a tick
STOPPED_TICK_SECONDS = 60  # started by hand without B1_WEBHOOK_USERNAME: no event can arrive, ask rarely
EVENTS_PER_TICK = 500  # more wait for the next tick: one run stays a short read
NOT_WATCHED = "not watched: no enabled rule reads this entity set"


def build_webhook_sensor(enabled: bool, partitions_def: dg.TimeWindowPartitionsDefinition,
                         follow: Mapping[str, Sequence[dg.AssetKey]]) -> dg.SensorDefinition:
    """The sensor, running by default only when `enabled` (B1_WEBHOOK_USERNAME is set); `follow[entity]`
    are the assets a run for a change of `entity` materializes."""
    snapshot_step = {spec.entity: snapshot_key(spec).to_python_identifier() for spec in ENTITIES}

    @dg.sensor(name="b1_webhook_sensor", job_name=CHANGE_JOB,
               default_status=RUNNING if enabled else dg.DefaultSensorStatus.STOPPED,
               minimum_interval_seconds=WEBHOOK_TICK_SECONDS if enabled else STOPPED_TICK_SECONDS,
               description="Reads the records B1's webhook events name (the receiver's /b1/events), by key, and "
                           "evaluates them at once; polling by b1_change_sensor stays the source of truth. "
                           "Stopped unless B1_WEBHOOK_USERNAME is set.")
    def b1_webhook_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
        inbox = WebhookInbox(database.engine)
        events = inbox.pending(EVENTS_PER_TICK)
        if not events:
            return dg.SensorResult(skip_reason="no B1 webhook event waiting")
        watched = [event for event in events if event.entity in follow]
        inbox.mark_handled((event.event_id for event in events if event.entity not in follow), NOT_WATCHED)
        if not watched:
            return dg.SensorResult(skip_reason=f"{len(events)} B1 webhook event(s), none of a watched entity set")
        keys: dict[str, set[str]] = {}
        for event in watched:
            keys.setdefault(event.entity, set()).add(event.key)
        ids = sorted(event.event_id for event in watched)
        run_key = "webhook:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]
        window = partitions_def.get_last_partition_key()  # the open window (end_offset=1): the window of now
        request = dg.RunRequest(
            run_key=run_key, partition_key=window,
            asset_selection=sorted({key for entity in keys for key in follow[entity]}),
            run_config={"ops": {snapshot_step[entity]: {"config": {"keys": sorted(named)}}
                                for entity, named in keys.items()}},
            tags={f"{TAG_PREFIX}/trigger": "webhook"})
        inbox.mark_handled(ids, run_key)
        context.log.info(f"{len(ids)} B1 webhook event(s) -> {run_key}: "
                         + ", ".join(f"{entity} {sorted(named)[:10]}" for entity, named in sorted(keys.items())))
        return dg.SensorResult(run_requests=[request])

    return b1_webhook_sensor
