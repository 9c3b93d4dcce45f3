"""The code location: the stages' definitions along the flow SAP -> snapshots -> alerts -> notifications ->
delivery status -> SAP audit, merged into one `defs`, with what ties them together (the change job that
reads a window and evaluates what depends on it in one run, and declarative automation).

The rules file is read here (not a secret) so the UI shows the rules, the change sensor watches only what
the enabled rules need, and a broken file is refused when the code location loads; secrets are only read
when a run starts or a sensor asks B1.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from b1twilio_pipeline.alerts.assets import ALERTS_GROUP
from b1twilio_pipeline.alerts.definitions import alerts_definitions
from b1twilio_pipeline.alerts.resource import RulesResource
from b1twilio_pipeline.alerts.rules import KIND_BY_NAME, load_rules
from b1twilio_pipeline.alerts.rules.kinds import reads_by_entity
from b1twilio_pipeline.b1.definitions import b1_definitions, read_specs, snapshot_assets
from b1twilio_pipeline.b1.entities import snapshot_key
from b1twilio_pipeline.b1.first_start import first_start
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.b1.sensors import CHANGE_JOB
from b1twilio_pipeline.b1.snapshots import SNAPSHOT_GROUP
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core import settings
from b1twilio_pipeline.core.automation import KIND, RUNNING, STATE_GROUP
from b1twilio_pipeline.core.companies import companies_path
from b1twilio_pipeline.core.company_scope import company_tags, served_company
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.housekeeping.definitions import housekeeping_definitions
from b1twilio_pipeline.notifications.definitions import notifications_definitions
from b1twilio_pipeline.notifications.plan import notification_plan
from b1twilio_pipeline.notifications.self_monitoring_checks import build_self_monitoring_checks, service_layer
from b1twilio_pipeline.notifications.twilio_resource import TwilioResource
from b1twilio_pipeline.reporting.definitions import reporting_definitions

# What declarative automation has to do waits for a cron or a backfill (a state refresh every hour,
# reminders after midnight): a tick every five minutes is soon enough, and each tick costs the daemon an
# evaluation of the whole asset graph and a tick row in the instance's storage, all day long.
AUTOMATION_SECONDS = 300


def downstream_of(assets: Iterable[dg.AssetsDefinition], root: dg.AssetKey) -> set[dg.AssetKey]:
    """Every asset among `assets` that depends, directly or not, on `root`."""
    deps = {key: set(inputs) for asset in assets for key, inputs in asset.asset_deps.items()}
    found: set[dg.AssetKey] = set()
    frontier = {root}
    while frontier:
        frontier = {key for key, inputs in deps.items() if inputs & frontier} - found
        found |= frontier
    return found


def build_definitions(rules_path: str | None = None,
                      resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """`defs` for the code location; tests pass their own rules file and resources aimed at simulators."""
    rules = load_rules(rules_path)
    polling = PollingSettings.from_settings()
    database = (resources or {}).get("database") or DatabaseResource()
    assert isinstance(database, DatabaseResource)
    partitions_def = polling.partitions_def(
        None if polling.partitions_start else first_start(database))
    alerts = alerts_definitions(rules)
    reporting = reporting_definitions(rules.timezone)
    # The alerts group: everything a change run may evaluate after reading its window.
    evaluations = [*alerts.assets, notification_plan, *reporting.assets]
    specs = read_specs(reads_by_entity())
    watched = sorted({name for rule in rules.enabled_rules() for name in KIND_BY_NAME[rule.kind].WATCHES})
    snapshots = snapshot_assets(specs, partitions_def)
    follow = {specs[name].entity: sorted(downstream_of([*snapshots, *evaluations], snapshot_key(specs[name]))
                                         | {snapshot_key(specs[name])}) for name in watched}
    glue = dg.Definitions(
        jobs=[dg.define_asset_job(
            CHANGE_JOB, selection=dg.AssetSelection.groups(SNAPSHOT_GROUP, ALERTS_GROUP),
            tags={KIND: "change", **company_tags()},
            description="Read the windows B1 changed in, evaluate the rules that depend on them and plan the "
                        "notifications, in one run (launched by b1_change_sensor, and by b1_webhook_sensor "
                        "for the records B1's webhooks name).")],
        sensors=[dg.AutomationConditionSensorDefinition(
            "automation_condition_sensor", target=dg.AssetSelection.groups(STATE_GROUP, ALERTS_GROUP),
            default_status=RUNNING, minimum_interval_seconds=max(AUTOMATION_SECONDS, polling.change_check_seconds),
            run_tags={KIND: "refresh", **company_tags()},
            description="Refreshes the open-invoice and stock state on its cron, evaluates the alerts that read "
                        "it when a refresh found it changed, re-evaluates overdue reminders after midnight, and "
                        "evaluates alerts whose inputs a backfill updated.")],
        # Steps are small and wait on HTTP: one process per run, not per step (a fresh Python per step
        # costs seconds of CPU each). Scale-out comes from the run launcher, not the executor.
        assets=[service_layer],
        asset_checks=[build_self_monitoring_checks([specs[name] for name in watched])],
        executor=dg.in_process_executor,
        resources={
            "sap": SapB1Resource(),
            "twilio": TwilioResource(),
            "database": database,
            "rules": RulesResource(path=rules_path),
            **(resources or {}),
        },
    )
    ledger_checks = settings.current().b1twilio_notification_check_seconds
    return dg.Definitions.merge(b1_definitions(polling, partitions_def, specs, watched, follow), alerts,
                                notifications_definitions(ledger_checks), reporting,
                                housekeeping_definitions(polling.timezone), glue)


def _one_company() -> None:
    """With a companies file, each company has its own code location (`company_location`); loading this
    module as the one-company location would silently watch only the company of the B1_ settings."""
    if (companies := companies_path()) is not None and served_company() is None:
        raise ConfigurationError(f"B1TWILIO_COMPANIES={companies} is set: load one code location per company "
                                 "(`b1twilio workspace` writes the workspace.yaml), or unset it to watch the one "
                                 "company of the B1_ settings")


_one_company()
defs = build_definitions()
