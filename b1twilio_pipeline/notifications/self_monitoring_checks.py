"""Self-monitoring in the UI: asset checks that are red while their incident is open (see `self_monitoring`).

The notification sensor reports their evaluations itself, as runless events in the tick an incident opens
or closes (Dagster 1.13 takes `AssetCheckEvaluation`s in `SensorResult.asset_events`): no run is launched
for them, and a quiet pipeline writes no events. Dagster shows a check only when the code location
declares it, and a declared check must be executable: executing these from the UI reads which incidents
are open in the store, the state the sensor reports, so both always agree.

The B1 checks sit on `b1/service_layer`, an external asset standing for B1 itself, not on the snapshot
assets: Dagster puts the checks of the assets a job selects into its runs, so checks on the snapshots
would add a step to every change run, the path from a change in B1 to the SMS.

- on `b1/service_layer`: `b1_reachable` (B1 answered the change sensor within
  B1TWILIO_BLIND_AFTER_MINUTES) and `polled_<snapshot>` per watched entity (its own question was answered
  within that time, while B1 answers the others);
- on `notifications/sent_notifications`: `twilio_accepts_credentials` and `no_stuck_notifications`.
"""


from collections.abc import Iterator, Sequence

import dagster as dg

from b1twilio_pipeline.b1.entities import EntitySpec
from b1twilio_pipeline.core import milestones
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.settings import current
from b1twilio_pipeline.notifications.self_monitoring import (
    B1_CHECK,
    POLL_CHECK,
    STUCK_CHECK,
    TWILIO_CHECK,
    incident_of,
)
from b1twilio_pipeline.notifications.send import NOTIFICATIONS_KEY

SERVICE_LAYER_KEY = asset_key("b1", "service_layer")
SELF_MONITORING_GROUP = "self_monitoring"

service_layer = dg.AssetSpec(
    SERVICE_LAYER_KEY, group_name=SELF_MONITORING_GROUP, kinds={"sap"},
    description="SAP Business One's Service Layer as the change sensor sees it. Never materialized: it stands "
                "for B1 itself, and its checks turn red when B1, or one entity's question, goes unanswered.")


def check_specs(watched: Sequence[EntitySpec]) -> list[dg.AssetCheckSpec]:
    minutes = current().b1twilio_blind_after_minutes
    return [
        dg.AssetCheckSpec(B1_CHECK, asset=SERVICE_LAYER_KEY,
                          description=f"B1 answered the change sensor within the last {minutes} minutes "
                                      "(B1TWILIO_BLIND_AFTER_MINUTES): it is reachable and accepts the login."),
        *(dg.AssetCheckSpec(f"{POLL_CHECK}{spec.asset_name}", asset=SERVICE_LAYER_KEY,
                            description=f"B1 answered the change sensor's question about {spec.entity} within "
                                        f"the last {minutes} minutes, or answers nothing at all ({B1_CHECK})."
                            ) for spec in watched),
        dg.AssetCheckSpec(TWILIO_CHECK, asset=NOTIFICATIONS_KEY,
                          description="Twilio accepts the pipeline's credentials (no HTTP 401 or error 20003 "
                                      "since the last request it authenticated)."),
        dg.AssetCheckSpec(STUCK_CHECK, asset=NOTIFICATIONS_KEY,
                          description=f"No notification has been due for {minutes} minutes without going out "
                                      "(the notification runs take what is due within seconds)."),
    ]


def build_self_monitoring_checks(watched: Sequence[EntitySpec]) -> dg.AssetChecksDefinition:
    """The checks, with a question per entity of `watched` (those the change sensor asks B1 about)."""

    @dg.multi_asset_check(specs=check_specs(watched), name="self_monitoring", can_subset=True,
                          description="Which self-monitoring incidents are open now (the notification sensor "
                                      "reports each as it opens and closes).")
    def self_monitoring(context: dg.AssetCheckExecutionContext,
                        database: DatabaseResource) -> Iterator[dg.AssetCheckResult]:
        opened = milestones.read_all(database.engine)
        for key in sorted(context.selected_asset_check_keys):
            incident = incident_of(key.name)
            at = opened.get(incident) if incident else None
            yield dg.AssetCheckResult(
                asset_key=key.asset_key, check_name=key.name, passed=at is None,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"Incident open since {at:%Y-%m-%d %H:%M} UTC." if at else "No incident open.")

    return self_monitoring
