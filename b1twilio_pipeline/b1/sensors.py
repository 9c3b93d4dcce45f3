"""`b1_change_sensor`: asks B1 a small question per watched entity (see `change_detection`) and requests a
run only for the windows that changed, with every evaluation downstream of them in the same run. A window
that saw changes is read once more after it closes (a change stamped in its last minute, committed late).
The sensor never reads documents itself: the runs do.

A window that closes with no change of an entity needs no read, but the UI would show it as missing, as
if something had been skipped. The sensor records it instead: a materialization of that entity's snapshot
partition, without a run, saying nothing changed in B1. Those records trigger no evaluation (see
`core.automation.follow_condition`), so a quiet hour still launches no run.

Every tick also records what B1 answered, for self-monitoring (`probe_health`): an entity B1 fails on is
asked again next tick while the others go on, and B1 not answering at all fails the tick.
"""

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from b1twilio_pipeline.b1.change_detection import OVERLAP, Change, Probe, probe_new, probe_stamped
from b1twilio_pipeline.b1.entities import EntitySpec, snapshot_key
from b1twilio_pipeline.b1.probe_health import probe_each
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.automation import RUNNING, TAG_PREFIX, runs_in_flight
from b1twilio_pipeline.core.database_resource import DatabaseResource

WINDOW = f"{TAG_PREFIX}/window"
CHANGE_JOB = "b1_change_job"
RETRY_BUCKET_S = 300  # a change whose run failed is asked for again after at most this long
# A change run reads one window in seconds: one that has not moved for this long is presumed dead (the
# default run launcher cannot tell) and no longer holds its window back. A second run of a window that was
# alive after all is harmless: reads and alert ids are idempotent, and the ledger's claims send once.
CHANGE_RUN_STALE = timedelta(minutes=2)
QUIET_WINDOWS_PER_TICK = 96
# The daemon's sign of life, written by every tick of this sensor (`b1twilio watchdog` reads it).
HEARTBEAT = "heartbeat"  # after a long stop the quiet windows are recorded a day per tick


class _Cursor:
    """Per entity: where the next question starts; and the windows that saw changes (closing reads)."""

    @staticmethod
    def load(raw: str | None) -> dict:
        return json.loads(raw) if raw else {}

    @staticmethod
    def dump(value: dict) -> str:
        return json.dumps(value, sort_keys=True)


def build_change_sensor(polling: PollingSettings, partitions_def: dg.TimeWindowPartitionsDefinition,
                        watched: Sequence[EntitySpec],
                        follow: Mapping[str, Sequence[dg.AssetKey]]) -> dg.SensorDefinition:
    """The sensor for `watched` (the entities the enabled rules read); `follow[entity]` are the assets a run
    for a change of `entity` materializes (its snapshot and every evaluation downstream of it)."""
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

    def quiet_windows(start: str | None, now: datetime, read: Mapping[str, set[str]],
                      answered: Collection[str]) -> tuple[list[dg.AssetMaterialization], str | None]:
        """Records of the windows closed since `start` for the `answered` entities that did not change in
        them (those that did are read by a run), and where to start next time. The first tick starts at its
        own window: what happened before the sensor first asked is not known, so it is not recorded; nor is
        a window of an entity B1 did not answer about (it shows as missing: a gap, see the README)."""
        window = start or window_of(now)
        events: list[dg.AssetMaterialization] = []
        for _ in range(QUIET_WINDOWS_PER_TICK):
            if window is None or not closed(window, now):
                break
            events += [dg.AssetMaterialization(
                asset_key=snapshot_key(spec), partition=window,
                description="Nothing changed in B1 in this window: there was nothing to read.",
                metadata={"changes_in_b1": 0, "recorded_by": "b1_change_sensor"})
                for spec in watched if spec.entity in answered and spec.entity not in read.get(window, set())]
            window = partitions_def.get_next_partition_key(window)
        return events, window

    @dg.sensor(name="b1_change_sensor", job_name=CHANGE_JOB, default_status=RUNNING,
               minimum_interval_seconds=polling.change_check_seconds,
               description=f"Asks B1 every {polling.change_check_seconds} s what changed (one small request per "
                           f"entity: {', '.join(s.entity for s in watched)}) and reads only the windows that "
                           "changed; a window that saw changes is read once more after it closes.")
    def b1_change_sensor(context: dg.SensorEvaluationContext, sap: SapB1Resource,
                         database: DatabaseResource) -> dg.SensorResult:
        cursor = _Cursor.load(context.cursor)
        now = datetime.now(UTC)
        milestones.touch(database.engine, HEARTBEAT, now)  # before B1 is asked: the daemon ticks, whatever B1 says
        snapshots = SnapshotStore(database.engine)

        def ask(spec: EntitySpec) -> Probe:
            session = sap.probe_session()  # the process's own: a B1 that is not configured counts as unanswered
            if spec.by_doc_date:
                after = cursor.get(spec.entity)
                return probe_new(session, snapshots, spec, int(after) if after else None, now, window_of)
            since = cursor.get(spec.entity) or (now - window_length).isoformat()
            return probe_stamped(session, snapshots, spec, datetime.fromisoformat(since), window_of)

        answers = probe_each(database.engine, now, watched, ask, context.log)
        changes: list[Change] = [change for probe in answers.values() for change in probe.changes]
        cursor.update({entity: probe.cursor for entity, probe in answers.items()})
        closing: dict[str, list[str]] = cursor.get("closing", {})
        by_window: dict[str, set[str]] = {}
        for change in changes:
            by_window.setdefault(change.window, set()).add(change.entity)
        read = {window: by_window.get(window, set()) | set(closing.get(window, [])) for window in
                {*by_window, *closing}}
        quiet, cursor["quiet_from"] = quiet_windows(cursor.get("quiet_from"), now, read, answers)
        requests, waiting = [], []
        bucket = int(now.timestamp() // RETRY_BUCKET_S)
        for window, entities in sorted(by_window.items()):
            if not closed(window, now):  # a closed window's read is its closing read already
                closing[window] = sorted(set(closing.get(window, [])) | entities)
            if runs_in_flight(context.instance, CHANGE_JOB, {WINDOW: window}, stale=CHANGE_RUN_STALE):
                waiting.append(window)  # its run is reading the window now; what it misses stays pending
                continue
            digest = hashlib.sha256(json.dumps(sorted((c.entity, c.key, c.stamp) for c in changes
                                                      if c.window == window)).encode()).hexdigest()[:12]
            requests.append(request(window, entities, f"change:{window}:{digest}:{bucket}", "change"))
        for window, entities in sorted(closing.items()):
            if closed(window, now):
                requests.append(request(window, set(entities), f"closing:{window}", "closing-read"))
                del closing[window]
        cursor["closing"] = closing
        skip = None if requests else (f"changes in window {', '.join(waiting)} wait for the run reading it"
                                      if waiting else f"no change in B1 ({len(watched)} entities asked)")
        return dg.SensorResult(run_requests=requests, cursor=_Cursor.dump(cursor), skip_reason=skip,
                               asset_events=quiet)

    return b1_change_sensor
