"""One evaluation asset per rule kind: it runs the kind's evaluator (see `evaluators`) for every enabled rule
of that kind over the snapshots the kind declares as its inputs."""

import dagster as dg

from b1twilio_pipeline.alerts.evaluators import EVALUATORS, AlertConfig
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import Rule
from b1twilio_pipeline.alerts.store import AlertStore
from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource

ALERTS_GROUP = "alerts"


def alert_key(kind: type[Rule]) -> dg.AssetKey:
    return asset_key("alerts", kind.ASSET)


def build_alert_asset(kind: type[Rule], rules_markdown: str) -> dg.AssetsDefinition:
    name = kind.model_fields["kind"].default
    evaluate = EVALUATORS[name]

    @dg.asset(
        key=alert_key(kind),
        deps=[asset_key("b1", source) for source in kind.INPUTS],
        group_name=ALERTS_GROUP,
        kinds={"python", "sql"},
        description=f"Alert candidates of the enabled `{name}` rules, recorded once per event. {kind.__doc__}",
        metadata={"rules": dg.MetadataValue.md(rules_markdown)},
    )
    def _alerts(context: dg.AssetExecutionContext, config: AlertConfig, rules: RulesResource,
                database: DatabaseResource) -> dg.MaterializeResult:
        snapshots, alerts = SnapshotStore(database.engine), AlertStore(database.engine)
        per_rule = {rule.id: evaluate(rule, snapshots, alerts, config) for rule in rules.load().enabled_rules(name)}
        total = sum(per_rule.values())
        context.log.info(f"{name}: {total} new alert(s) {per_rule}")
        return dg.MaterializeResult(metadata={
            "new_alerts": total, "rules_evaluated": len(per_rule),
            "new_alerts_per_rule": dg.MetadataValue.json(per_rule),
        })

    return _alerts
