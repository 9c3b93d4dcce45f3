"""RulesResource: the rules and recipients file, loaded (and validated) when a run starts so an edited
file takes effect on the next run."""

from __future__ import annotations

import dagster as dg

from b1twilio_pipeline.alerts.rules import RulesConfig, load_rules


class RulesResource(dg.ConfigurableResource):
    """`path` None means B1TWILIO_CONFIG, else the shipped default rules."""

    path: str | None = None

    def load(self) -> RulesConfig:
        return load_rules(self.path)
