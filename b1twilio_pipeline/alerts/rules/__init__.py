"""The rules and recipients file users edit: pydantic models, one class per rule kind, checked when the
file loads (see `loading` for the one-line errors) and described in the UI."""

from b1twilio_pipeline.alerts.quiet_hours import QuietHours
from b1twilio_pipeline.alerts.rules.base import RULE_CHANNELS, Escalation, Rule
from b1twilio_pipeline.alerts.rules.config import RulesConfig, RulesFile
from b1twilio_pipeline.alerts.rules.kinds import KIND_BY_NAME, KINDS, RULE_KINDS
from b1twilio_pipeline.alerts.rules.loading import (
    RulesConfigError,
    default_rules_path,
    load_rules,
    parse_rules,
    rules_path,
    rules_schema,
    rules_schema_text,
)
from b1twilio_pipeline.alerts.rules.recipients import Recipient, phone_secret_name

__all__ = [
    "KINDS", "KIND_BY_NAME", "RULE_CHANNELS", "RULE_KINDS", "Escalation", "QuietHours", "Recipient", "Rule",
    "RulesConfig", "RulesConfigError", "RulesFile", "default_rules_path", "load_rules", "parse_rules",
    "phone_secret_name", "rules_path", "rules_schema", "rules_schema_text",
]
