"""The rules file as a whole: the company time zone, recipient groups and rules (a union discriminated on
`kind`), and `RulesConfig`, what the pipeline asks of it (who is told, in which order, what a rule
does in words)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from b1twilio_pipeline.alerts.rules.base import NEXT_RECIPIENT, EscalationStep, Rule
from b1twilio_pipeline.alerts.rules.fields import GroupName, LocaleName, TimeZoneName
from b1twilio_pipeline.alerts.rules.kinds import KINDS, RULE_KINDS
from b1twilio_pipeline.alerts.rules.money import DEFAULT_LOCALE
from b1twilio_pipeline.alerts.rules.recipients import Recipient

# Built from RULE_KINDS, so a new kind is in the file format (and its JSON Schema) once it is listed there.
AnyRule = Annotated[Union[RULE_KINDS], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007


class RulesFile(BaseModel):
    """The YAML file users edit (`B1TWILIO_CONFIG`). Unknown keys are errors: a typo must not silently
    switch an alert off."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="b1twilio rules and recipients")

    timezone: TimeZoneName = Field(description="company time zone: due dates, quiet hours, reminders")
    locale: LocaleName = Field(
        default=DEFAULT_LOCALE,
        description=f"company locale (default {DEFAULT_LOCALE}): how amounts read in messages, e.g. {{DocTotalText}} "
                    "is $1,200.00 in en-US and 1.200,00 € in de-DE (number format and where the currency goes); "
                    "a recipient's own locale overrides it")
    recipients: dict[GroupName, Annotated[list[Recipient], Field(min_length=1)]] = Field(
        description="groups of people; a phone is inline (development) or a reference into the secrets store")
    rules: list[AnyRule]


@dataclass(frozen=True)
class RulesConfig:
    """The loaded file: company time zone and locale, recipient groups (each person's locale filled in)
    and rules (each rule's time zone filled in)."""

    timezone: str
    recipients: dict[str, list[Recipient]]
    rules: list[Rule]
    source: Path
    locale: str = DEFAULT_LOCALE

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def enabled_rules(self, kind: str | None = None) -> list[Rule]:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown rule kind {kind!r} (kinds: {', '.join(KINDS)})")
        return [r for r in self.rules if r.enabled and (kind is None or r.kind == kind)]

    def find_rule(self, rule_id: str) -> Rule | None:
        return next((candidate for candidate in self.rules if candidate.id == rule_id), None)

    def rule(self, rule_id: str) -> Rule:
        found = self.find_rule(rule_id)
        if found is None:
            raise KeyError(rule_id)
        return found

    def person(self, key: str) -> Recipient | None:
        """The recipient whose `Recipient.key` is `key`, in whatever group."""
        return next((p for group in self.recipients.values() for p in group if p.key == key), None)

    def recipients_for(self, rule: Rule) -> list[Recipient]:
        """Everyone the rule names, groups expanded, de-duplicated by number or reference, order kept."""
        seen: set[tuple[str, str]] = set()
        result: list[Recipient] = []
        for name in rule.recipients:
            for person in self._expand(name):
                if person.identity not in seen:
                    seen.add(person.identity)
                    result.append(person)
        return result

    def initial_recipients(self, rule: Rule) -> list[Recipient]:
        """Who is notified first: everyone, or only the head of an on-call chain (`next_recipient`, as a
        switch or a policy step)."""
        everyone = self.recipients_for(rule)
        return everyone[:1] if rule.escalation.chain else everyone

    def step_recipients(self, rule: Rule, step: EscalationStep, chain_position: int) -> list[Recipient]:
        """Who a policy step notifies; `chain_position` is how many people of the chain were notified
        before it (a `next_recipient` step takes the one after them, nobody past the end)."""
        if step.to is None:
            return self.initial_recipients(rule)
        if step.to == NEXT_RECIPIENT:
            return self.recipients_for(rule)[chain_position:chain_position + 1]
        return list(self.recipients.get(step.to, []))

    def next_recipient(self, rule: Rule, failed: Recipient) -> Recipient | None:
        """The chain's next person after `failed`, or None (end of chain, or the rule has no chain)."""
        if not rule.escalation.next_recipient:
            return None
        keys = [r.key for r in self.recipients_for(rule)]
        if failed.key not in keys:
            return None
        position = keys.index(failed.key)
        chain = self.recipients_for(rule)
        return chain[position + 1] if position + 1 < len(chain) else None

    def describe_rule(self, rule: Rule) -> str:
        return rule.describe([self._label(person) for person in self.recipients_for(rule)])

    def describe(self) -> str:
        """Markdown table of the rules for Dagster UI metadata (phones masked)."""
        lines = [f"Rules from `{self.source.name}` (time zone {self.timezone}, locale {self.locale})", "",
                 "| rule | kind | enabled | when | channel | recipients | parameters | quiet hours | template |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for rule in self.rules:
            quiet = f"{rule.quiet_hours} {rule.timezone}" if rule.quiet_hours else ""
            if rule.urgent:
                quiet = (quiet + " (urgent)").strip()
            parameters = "; ".join(f"{k}={v}" for k, v in rule.parameters().items() if v is not None)
            people = ", ".join(self._label(p) for p in self.recipients_for(rule))
            if rule.escalation.next_recipient:
                people = f"one at a time, the next if delivery fails: {people}"
            cells = [rule.id, rule.kind, "yes" if rule.enabled else "no", rule.trigger(), rule.channel_text(),
                     people, parameters, quiet, rule.template]
            lines.append("| " + " | ".join(" ".join(c.replace("|", "\\|").split()) for c in cells) + " |")
        return "\n".join(lines)

    def _label(self, person: Recipient) -> str:
        """Name and masked phone, and the person's locale where it is not the company's."""
        own = f" ({person.locale})" if person.locale and person.locale != self.locale else ""
        return person.label() + own

    def _expand(self, name: str) -> list[Recipient]:
        if name in self.recipients:
            return list(self.recipients[name])
        return [p for group in self.recipients.values() for p in group if p.name == name][:1]
