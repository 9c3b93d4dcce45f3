"""The dry run from the UI: materialize `notifications/rules_preview` with the rules file to try as config;
the table of what would be sent is its materialization's metadata. Nothing is sent or written (see
`preview`); the asset is never materialized by automation."""

from datetime import date

import dagster as dg
from pydantic import Field

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.markdown import markdown_table
from b1twilio_pipeline.notifications.preview import default_since, preview

PREVIEW_KEY = asset_key("notifications", "rules_preview")


class PreviewConfig(dg.Config):
    rules_path: str | None = Field(None, description="the rules file to try (default: B1TWILIO_CONFIG)")
    since: str | None = Field(None, description="YYYY-MM-DD: documents changed since then (default: 3 days ago)")
    offline: bool = Field(False, description="evaluate the snapshot store instead of reading B1")


@dg.asset(key=PREVIEW_KEY, group_name="notifications", kinds={"python"},
          description="Dry run of a rules file on the current B1 data: what would be sent, to whom (masked), "
                      "on which channel and when. Sends nothing, writes nothing: materialize it with the "
                      "rules file to try as config before deploying it.")
def rules_preview(context: dg.AssetExecutionContext, config: PreviewConfig, sap: SapB1Resource,
                  database: DatabaseResource) -> dg.MaterializeResult:
    rules = load_rules(config.rules_path)
    since = date.fromisoformat(config.since) if config.since else default_since()
    rows, read = preview(rules, since=since, offline=config.offline, sap=sap, database_url=database.database_url)
    context.log.info(f"{len(rows)} notification(s) would be sent by {rules.source} (nothing was sent)")
    return dg.MaterializeResult(metadata={
        "rules_file": str(rules.source), "would_send": len(rows), "b1_records_read": read,
        "notifications": dg.MetadataValue.md(markdown_table(rows, empty="Nothing would be sent."))})
