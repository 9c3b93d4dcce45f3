"""Alert rules and recipients: the YAML file users edit (SPEC sections 2 and 10), checked at load time.

Every mistake is refused with ONE line naming the file, the rule (or recipient group) and the field, because
a typo that silently disabled an alert would only be noticed when the overdue customer was never called.
Hand-written validation (not a schema library) keeps those messages precise and friendly.

Phones: inline `phone` (dev/demo) or `phone_ref: sam`, resolved at send time from setting `PHONE_SAM`
(environment variable, else the encrypted secrets store: `b1twilio secrets set PHONE_SAM`). The secret
name is `PHONE_` + the reference upper-cased with `-` turned into `_`.

Templates are `str.format` templates over the fields in `TEMPLATE_FIELDS[kind]`; the pipeline passes those
fields as a dict to `Rule.render`.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from b1twilio_pipeline.alerts.quiet_hours import QuietHours
from b1twilio_pipeline.core.phones import is_e164, mask_phone
from b1twilio_pipeline.core.settings import ConfigurationError, setting

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNEL",
    "DEFAULT_TEMPLATES",
    "KINDS",
    "TEMPLATE_FIELDS",
    "Escalation",
    "QuietHours",
    "Recipient",
    "Rule",
    "RulesConfig",
    "RulesConfigError",
    "default_rules_path",
    "load_rules",
    "parse_rules",
    "phone_secret_name",
    "rules_path",
]

KINDS = (
    "purchase_invoice_received",
    "sales_invoice_created",
    "payment_overdue",
    "payment_received",
    "purchase_order_changed",
    "stock_below_reorder",
)
CHANNELS = ("sms", "voice", "sms_then_voice")
DEFAULT_CHANNEL = {
    "purchase_invoice_received": "sms",
    "sales_invoice_created": "sms",
    "payment_overdue": "voice",
    "payment_received": "sms",
    "purchase_order_changed": "sms",
    "stock_below_reorder": "voice",
}

_DOCUMENT_FIELDS: dict[str, type] = {
    "DocEntry": int,
    "DocNum": int,
    "DocDate": str,
    "DocDueDate": str,
    "CardCode": str,
    "CardName": str,
    "NumAtCard": str,
    "DocTotal": float,
    "DocCurrency": str,
    "PaidToDate": float,
    "Comments": str,
}
# The contract with the pipeline: field name -> Python type of the value it passes to `Rule.render`.
# Dates are "YYYY-MM-DD" strings; amounts and quantities floats; DocEntry/DocNum ints (as B1 returns them).
TEMPLATE_FIELDS: dict[str, dict[str, type]] = {
    "purchase_invoice_received": dict(_DOCUMENT_FIELDS),
    "sales_invoice_created": dict(_DOCUMENT_FIELDS),
    "payment_overdue": {**_DOCUMENT_FIELDS, "days_overdue": int, "open_amount": float},
    "purchase_order_changed": {**_DOCUMENT_FIELDS, "change": str},
    "payment_received": {
        "DocEntry": int,
        "DocNum": int,
        "DocDate": str,
        "CardCode": str,
        "CardName": str,
        "DocCurrency": str,
        "amount": float,
        "invoices": str,
    },
    "stock_below_reorder": {
        "ItemCode": str,
        "ItemName": str,
        "WarehouseCode": str,
        "InStock": float,
        "MinimalStock": float,
    },
}
_SAMPLE_VALUES: dict[str, Any] = {
    "DocEntry": 4711,
    "DocNum": 1001,
    "DocDate": "2026-11-24",
    "DocDueDate": "2026-12-24",
    "CardCode": "V10000",
    "CardName": "Acme Supplies Ltd",
    "NumAtCard": "INV-778",
    "DocTotal": 1234.5,
    "DocCurrency": "EUR",
    "PaidToDate": 0.0,
    "Comments": "",
    "days_overdue": 31,
    "open_amount": 1234.5,
    "change": "DocTotal 100.00 -> 120.00",
    "amount": 500.0,
    "invoices": "1001, 1002",
    "ItemCode": "A00001",
    "ItemName": "Printer paper A4",
    "WarehouseCode": "01",
    "InStock": 3.0,
    "MinimalStock": 10.0,
}
DEFAULT_TEMPLATES = {
    "purchase_invoice_received": (
        "New supplier invoice {DocNum} from {CardName}: {DocTotal:,.2f} {DocCurrency}, due {DocDueDate}"
    ),
    "sales_invoice_created": "Sales invoice {DocNum} created for {CardName}: {DocTotal:,.2f} {DocCurrency}",
    "payment_overdue": (
        "{CardName} is {days_overdue} days overdue on invoice {DocNum}: "
        "{open_amount:,.2f} {DocCurrency} open, due {DocDueDate}."
    ),
    "payment_received": (
        "Payment {DocNum} received from {CardName}: {amount:,.2f} {DocCurrency} for {invoices}"
    ),
    "purchase_order_changed": (
        "Purchase order {DocNum} for {CardName} ({DocTotal:,.2f} {DocCurrency}): {change}"
    ),
    "stock_below_reorder": (
        "Stock of {ItemCode} {ItemName} in {WarehouseCode} is {InStock:g}, "
        "below reorder point {MinimalStock:g}."
    ),
}
_DOCUMENT_KINDS = (
    "purchase_invoice_received",
    "sales_invoice_created",
    "payment_overdue",
    "purchase_order_changed",
)
_COMMON_RULE_KEYS = (
    "id", "kind", "enabled", "channel", "recipients", "template", "quiet_hours", "timezone", "urgent",
    "escalation",
)  # fmt: skip
_KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "min_amount": (*_DOCUMENT_KINDS, "payment_received"),
    "days_overdue": ("payment_overdue",),
    "renotify_every_days": ("payment_overdue",),
    "warehouses": ("stock_below_reorder",),
    "items": ("stock_below_reorder",),
}
_TOP_KEYS = ("timezone", "recipients", "rules")
MAX_AMOUNT = 1e12  # far above any real threshold, far below where float arithmetic stops being exact
MAX_DAYS = 36500
MAX_FORMAT_WIDTH = 200  # a template's width/precision; a huge one would exhaust memory rendering it
_PERSON_KEYS = ("name", "phone", "phone_ref", "timezone")
_ESCALATION_KEYS = ("to_voice_after_failed_sms", "next_recipient")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PHONE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


class RulesConfigError(ConfigurationError):
    """The rules file is invalid; the message is one line naming file, rule or group, and field."""


def phone_secret_name(phone_ref: str) -> str:
    """Setting that holds the number for `phone_ref` (`sam` -> `PHONE_SAM`, `dana-k` -> `PHONE_DANA_K`)."""
    return "PHONE_" + phone_ref.upper().replace("-", "_")


@dataclass(frozen=True)
class Recipient:
    """A person to notify. Exactly one of `phone` (inline) and `phone_ref` (secrets store) is set."""

    name: str
    phone: str | None = None
    phone_ref: str | None = None
    timezone: str | None = None
    group: str | None = None

    @property
    def tz(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None

    @property
    def secret_name(self) -> str | None:
        return phone_secret_name(self.phone_ref) if self.phone_ref else None

    @property
    def key(self) -> str:
        """Stable identifier for notification ids, run keys and tags. It is derived from the reference or
        the person's place in the file, never from the number: a hash of a phone number is reversible by
        trying every number."""
        if self.phone_ref:
            return f"ref:{self.phone_ref.lower()}"
        return f"person:{self.group}/{self.name}"

    @property
    def identity(self) -> tuple[str, str]:
        """Who this is for de-duplication (the same number in two groups is one person). Never shown."""
        if self.phone_ref:
            return ("ref", self.phone_ref.lower())
        return ("tel", self.phone or "")

    @property
    def masked(self) -> str:
        """What may be shown in logs, tags and the UI."""
        if self.phone:
            return mask_phone(self.phone)
        return f"[{self.secret_name}]"

    def resolve_phone(self) -> str:
        """The E.164 number to dial; for `phone_ref` read at send time from setting PHONE_<REF>."""
        if self.phone:
            return self.phone
        name = self.secret_name or ""
        value = setting(name)
        if value is None:
            raise ConfigurationError(
                f"recipient {self.name}: phone_ref '{self.phone_ref}' has no number: store it with "
                f"`b1twilio secrets set {name}` (or set the environment variable {name})"
            )
        value = value.strip()
        if not is_e164(value):
            raise ConfigurationError(
                f"recipient {self.name}: {name} = '{mask_phone(value)}' is not an E.164 number "
                f"(+ country code and number, no spaces): fix it with `b1twilio secrets set {name}`"
            )
        return value

    def label(self) -> str:
        return f"{self.name} {self.masked}"


@dataclass(frozen=True)
class Escalation:
    """What happens when delivery fails.

    `to_voice_after_failed_sms`: an SMS that ends undelivered/failed is followed by a voice call (the same
    as channel `sms_then_voice`). `next_recipient`: the rule's recipients form an on-call chain: only the
    first is notified, and the next one when delivery fails or the call is not answered.
    """

    to_voice_after_failed_sms: bool = False
    next_recipient: bool = False


@dataclass(frozen=True)
class Rule:
    """One alert rule; parameters that do not apply to its kind are None."""

    id: str
    kind: str
    enabled: bool
    channel: str
    recipients: tuple[str, ...]
    template: str
    timezone: str
    quiet_hours: QuietHours | None = None
    urgent: bool = False
    escalation: Escalation = field(default_factory=Escalation)
    min_amount: float | None = None
    days_overdue: int | None = None
    renotify_every_days: int | None = None
    warehouses: tuple[str, ...] | None = None
    items: tuple[str, ...] | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def first_channel(self) -> str:
        """The channel of the first attempt: `sms` or `voice`."""
        return "sms" if self.channel == "sms_then_voice" else self.channel

    @property
    def escalates_to_voice(self) -> bool:
        return self.channel == "sms_then_voice" or self.escalation.to_voice_after_failed_sms

    @property
    def fields(self) -> dict[str, type]:
        """The template fields this kind provides (name -> type)."""
        return TEMPLATE_FIELDS[self.kind]

    def render(self, fields: Mapping[str, Any]) -> str:
        """The message text. Missing or None fields render empty rather than losing the alert."""
        values = _prepare_fields(self.kind, fields)
        try:
            return self.template.format_map(values)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"rule '{self.id}': cannot render template: {exc}") from None

    def hold_until(
        self, now: datetime, recipient_tz: ZoneInfo | None = None, channel: str | None = None
    ) -> datetime | None:
        """None when sending on `channel` (default: the first attempt's) is allowed now, else the aware
        datetime when quiet hours end. Quiet hours are in the recipient's zone if set, else the rule's;
        an urgent rule's voice calls ring anyway, its SMS are still held."""
        if self.quiet_hours is None:
            return None
        chosen = channel or self.first_channel
        if chosen not in ("sms", "voice"):
            raise ValueError(f"channel must be 'sms' or 'voice', got {chosen!r}")
        if chosen == "voice" and self.urgent:
            return None
        tz = recipient_tz or self.tz
        if not self.quiet_hours.contains(now, tz):
            return None
        return self.quiet_hours.next_end(now, tz)

    def describe(self, recipients: Sequence[Recipient] | None = None) -> str:
        """One line: what this rule would do (phones masked)."""
        names = [r.label() for r in recipients] if recipients is not None else list(self.recipients)
        who = ", ".join(names)
        if self.escalation.next_recipient:
            who = f"{who} (one at a time, next on failure)"
        state = "" if self.enabled else " (disabled)"
        text = f"{self.id}{state}: {_trigger_text(self)} -> {_channel_text(self)} to {who}"
        if self.quiet_hours is not None:
            text += f"; quiet hours {self.quiet_hours} ({self.timezone} unless the recipient has a zone)"
            text += ": SMS held" + (", calls ring anyway (urgent)" if self.urgent else ", calls deferred")
        elif self.urgent:
            text += "; urgent"
        return text


@dataclass(frozen=True)
class RulesConfig:
    """The loaded file: company time zone, recipient groups and rules."""

    timezone: str
    recipients: dict[str, list[Recipient]]
    rules: list[Rule]
    source: Path

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def enabled_rules(self, kind: str | None = None) -> list[Rule]:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown rule kind {kind!r} (kinds: {', '.join(KINDS)})")
        return [r for r in self.rules if r.enabled and (kind is None or r.kind == kind)]

    def rule(self, rule_id: str) -> Rule:
        found = self.find_rule(rule_id)
        if found is None:
            raise KeyError(rule_id)
        return found

    def find_rule(self, rule_id: str) -> Rule | None:
        return next((candidate for candidate in self.rules if candidate.id == rule_id), None)

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
        """Who is notified first: everyone, or only the head of an on-call chain (`next_recipient`)."""
        everyone = self.recipients_for(rule)
        return everyone[:1] if rule.escalation.next_recipient else everyone

    def next_recipient(self, rule: Rule, failed: Recipient) -> Recipient | None:
        """The chain's next person after `failed`, or None (end of chain, or the rule has no chain)."""
        if not rule.escalation.next_recipient:
            return None
        chain = self.recipients_for(rule)
        keys = [r.key for r in chain]
        if failed.key not in keys:
            return None
        position = keys.index(failed.key)
        return chain[position + 1] if position + 1 < len(chain) else None

    def describe_rule(self, rule: Rule) -> str:
        return rule.describe(self.recipients_for(rule))

    def describe(self) -> str:
        """Markdown table of the rules for Dagster UI metadata (phones masked)."""
        lines = [
            f"Rules from `{self.source.name}` (time zone {self.timezone})",
            "",
            "| rule | kind | enabled | channel | recipients | parameters | quiet hours | template |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for rule in self.rules:
            people = ", ".join(r.label() for r in self.recipients_for(rule))
            quiet = f"{rule.quiet_hours} {rule.timezone}" if rule.quiet_hours else ""
            if rule.urgent:
                quiet = (quiet + " (urgent)").strip()
            cells = [
                rule.id, rule.kind, "yes" if rule.enabled else "no", _channel_text(rule), people,
                _params_text(rule), quiet, rule.template,
            ]  # fmt: skip
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines)

    def _expand(self, name: str) -> list[Recipient]:
        if name in self.recipients:
            return list(self.recipients[name])
        return [p for group in self.recipients.values() for p in group if p.name == name][:1]


def default_rules_path() -> Path:
    """The rules file shipped with the package (demo recipients, every kind)."""
    return Path(__file__).with_name("default_rules.yaml")


def rules_path() -> Path:
    """`B1TWILIO_CONFIG` if set (environment or secrets store), else the shipped default file."""
    configured = setting("B1TWILIO_CONFIG")
    return Path(configured).expanduser() if configured else default_rules_path()


def load_rules(path: str | Path | None = None) -> RulesConfig:
    """Read and validate a rules file; RulesConfigError (one line) on any problem."""
    source = Path(path).expanduser() if path is not None else rules_path()
    label = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesConfigError(
            f"{label}: rules file not found: check B1TWILIO_CONFIG or the path given"
        ) from None
    except OSError as exc:
        raise RulesConfigError(f"{label}: cannot read rules file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RulesConfigError(f"{label}: rules file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesConfigError(f"{label}: {_yaml_error_text(exc)}") from None
    return parse_rules(data, source)


def parse_rules(data: Any, source: str | Path = "<rules>") -> RulesConfig:
    """Validate already-parsed YAML (a mapping) into a RulesConfig; `source` names it in errors."""
    return _Parser(Path(source)).parse(data)


# --- parsing ---------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.label = str(source)

    def fail(self, where: str | None, field_name: str | None, message: str) -> RulesConfigError:
        parts = [self.label]
        if where:
            parts.append(where)
        if field_name:
            parts.append(f"field '{field_name}'")
        parts.append(message)
        return RulesConfigError(": ".join(parts))

    def parse(self, data: Any) -> RulesConfig:
        if data is None:
            raise self.fail(None, None, "the file is empty: it needs timezone, recipients and rules")
        if not isinstance(data, dict):
            raise self.fail(None, None, "the top level must be a mapping with timezone, recipients and rules")
        self.check_keys(data, _TOP_KEYS, None, "top-level key")
        for required in _TOP_KEYS:
            if required not in data:
                raise self.fail(None, required, "is required")
        timezone = self.timezone(data["timezone"], None, "timezone")
        groups = self.recipient_groups(data["recipients"])
        raw_rules = data["rules"]
        if not isinstance(raw_rules, list):
            raise self.fail(None, "rules", "must be a list of rules (each item starts with '- id: ...')")
        rules: list[Rule] = []
        seen_ids: set[str] = set()
        for position, raw in enumerate(raw_rules, start=1):
            rule = self.rule(raw, position, timezone, groups)
            if rule.id in seen_ids:
                raise self.fail(f"rule '{rule.id}'", "id", "is used by another rule: ids must be unique")
            seen_ids.add(rule.id)
            rules.append(rule)
        return RulesConfig(timezone=timezone, recipients=groups, rules=rules, source=self.source)

    def check_keys(
        self, data: dict[Any, Any], allowed: Sequence[str], where: str | None, what: str, prefix: str = ""
    ) -> None:
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"did you mean '{hint[0]}'? " if hint else ""
                raise self.fail(
                    where, f"{prefix}{key}", f"unknown {what} ({suggestion}allowed: {', '.join(allowed)})"
                )

    def timezone(self, value: Any, where: str | None, field_name: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, field_name, "must be an IANA time zone name such as Europe/Berlin")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(
                where, field_name, f"unknown time zone '{value}' (use an IANA name such as Europe/Berlin)"
            ) from None
        return value

    # recipients

    def recipient_groups(self, raw: Any) -> dict[str, list[Recipient]]:
        if not isinstance(raw, dict):
            raise self.fail(None, "recipients", "must be a mapping of group name -> list of people")
        groups: dict[str, list[Recipient]] = {}
        for group, people in raw.items():
            where = f"recipient group '{group}'"
            if not isinstance(group, str) or not group.strip():
                raise self.fail(where, None, "group names must be non-empty text")
            if not isinstance(people, list) or not people:
                raise self.fail(where, None, "must be a non-empty list of people {name: ..., phone: ...}")
            groups[group] = [self.person(p, group, i) for i, p in enumerate(people, start=1)]
        return groups

    def person(self, raw: Any, group: str, position: int) -> Recipient:
        group_where = f"recipient group '{group}'"
        if not isinstance(raw, dict):
            raise self.fail(f"{group_where}: person #{position}", None, "must be a mapping {name, phone}")
        name = raw.get("name")
        who = f"person '{name}'" if isinstance(name, str) else f"person #{position}"
        where = f"{group_where}: {who}"
        self.check_keys(raw, _PERSON_KEYS, where, "key")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(where, "name", "is required (non-empty text)")
        phone, ref = raw.get("phone"), raw.get("phone_ref")
        if (phone is None) == (ref is None):
            raise self.fail(where, "phone", "give exactly one of phone (E.164) and phone_ref (secrets store)")
        if phone is not None:
            phone = self.phone(phone, where)
        if ref is not None and (not isinstance(ref, str) or not _PHONE_REF.match(ref)):
            raise self.fail(where, "phone_ref", "must be a short name of letters, digits, '-', '_' like sam")
        tz = self.timezone(raw["timezone"], where, "timezone") if raw.get("timezone") is not None else None
        return Recipient(name=name, phone=phone, phone_ref=ref, timezone=tz, group=group)

    def phone(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(
                where, "phone", f"'{mask_phone(str(value))}' must be a quoted string like \"+49...\" "
                "(unquoted, YAML reads it as a number and drops the +)",
            )
        if not is_e164(value):
            raise self.fail(
                where, "phone", f"'{mask_phone(value)}' is not an E.164 number: '+', country code and "
                "number, 8 to 15 digits, no spaces or dashes",
            )
        return value

    # rules

    def rule(self, raw: Any, position: int, default_tz: str, groups: dict[str, list[Recipient]]) -> Rule:
        if not isinstance(raw, dict):
            raise self.fail(f"rule #{position}", None, "must be a mapping starting with id and kind")
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            shown = f"'{rule_id}'" if rule_id is not None else "missing"
            raise self.fail(
                f"rule #{position}", "id", f"{shown}: every rule needs a stable id of lower-case letters, "
                "digits, '-' or '_' (at most 64), e.g. overdue-30",
            )
        where = f"rule '{rule_id}'"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise self.fail(where, "kind", f"'{kind}' is not a rule kind (kinds: {', '.join(KINDS)})")
        self.rule_keys(raw, kind, where)
        channel = raw.get("channel") if raw.get("channel") is not None else DEFAULT_CHANNEL[kind]
        if channel not in CHANNELS:
            raise self.fail(where, "channel", f"'{channel}' is not a channel: sms, voice or sms_then_voice")
        template = raw.get("template") if raw.get("template") is not None else DEFAULT_TEMPLATES[kind]
        self.template(template, kind, where)
        escalation = self.escalation(raw.get("escalation"), channel, where)
        rule = Rule(
            id=rule_id,
            kind=kind,
            enabled=self.boolean(raw, "enabled", where, default=True),
            channel=channel,
            recipients=self.rule_recipients(raw.get("recipients"), groups, where),
            template=template,
            timezone=self.timezone(raw["timezone"], where, "timezone") if raw.get("timezone") else default_tz,
            quiet_hours=self.quiet_hours(raw.get("quiet_hours"), where),
            urgent=self.boolean(raw, "urgent", where, default=False),
            escalation=escalation,
            min_amount=self.amount(raw.get("min_amount"), where),
            days_overdue=self.days(raw.get("days_overdue"), where, "days_overdue"),
            renotify_every_days=self.days(raw.get("renotify_every_days"), where, "renotify_every_days"),
            warehouses=self.codes(raw.get("warehouses"), where, "warehouses", "warehouse"),
            items=self.codes(raw.get("items"), where, "items", "item"),
        )
        if kind == "payment_overdue" and rule.days_overdue is None:
            raise self.fail(where, "days_overdue", "is required for payment_overdue (e.g. days_overdue: 30)")
        return rule

    def rule_keys(self, raw: dict[Any, Any], kind: str, where: str) -> None:
        allowed = [*_COMMON_RULE_KEYS, *(p for p, kinds in _KIND_PARAMS.items() if kind in kinds)]
        for key in raw:
            if key in _KIND_PARAMS and key not in allowed:
                raise self.fail(
                    where, key, f"does not apply to kind {kind} (only to {', '.join(_KIND_PARAMS[key])})"
                )
        self.check_keys(raw, allowed, where, "key")

    def boolean(self, raw: dict[Any, Any], key: str, where: str, *, default: bool) -> bool:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(where, key, f"must be true or false, got '{value}'")
        return value

    def rule_recipients(self, value: Any, groups: dict[str, list[Recipient]], where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(
                where, "recipients", "must be a non-empty list of group or person names, e.g. [ap_team]"
            )
        people: dict[str, set[tuple[str, str]]] = {}
        for group in groups.values():
            for person in group:
                people.setdefault(person.name, set()).add(person.identity)
        for name in value:
            if name in groups:
                continue
            if name not in people:
                known = ", ".join(groups) or "none"
                raise self.fail(
                    where, "recipients", f"unknown recipient '{name}': not a group or person under "
                    f"recipients (groups: {known})",
                )
            if len(people[name]) > 1:
                raise self.fail(
                    where, "recipients", f"'{name}' names several people with different numbers: use a group "
                    "or give them distinct names",
                )
        return tuple(value)

    def template(self, template: Any, kind: str, where: str) -> None:
        if not isinstance(template, str) or not template.strip():
            raise self.fail(where, "template", "must be non-empty text such as \"Invoice {DocNum} ...\"")
        provided = TEMPLATE_FIELDS[kind]
        try:
            references = list(_template_fields(template))
        except ValueError as exc:
            raise self.fail(where, "template", f"is not a valid template: {exc}") from None
        for name, spec, conversion in references:
            if name == "" or name.isdigit():
                raise self.fail(
                    where, "template", "positional {} fields are not allowed: name a field like {DocNum}"
                )
            if not re.fullmatch(r"\w+", name):
                raise self.fail(
                    where, "template", f"'{{{name}}}': only plain field names are allowed (no . or [])"
                )
            if name not in provided:
                hint = difflib.get_close_matches(name, provided, n=1)
                suggestion = f"did you mean '{hint[0]}'? " if hint else ""
                raise self.fail(
                    where, "template", f"unknown field '{{{name}}}' for kind {kind} ({suggestion}fields: "
                    f"{', '.join(provided)})",
                )
            sample = _SAMPLE_VALUES[name]
            too_wide = [int(n) for n in re.findall(r"\d+", spec) if int(n) > MAX_FORMAT_WIDTH]
            if too_wide:
                raise self.fail(
                    where, "template", f"'{{{name}:{spec}}}': width or precision {too_wide[0]} is too large "
                    f"(at most {MAX_FORMAT_WIDTH})",
                )
            if "{" in spec:
                continue  # nested spec: checked by the whole-template render below
            try:
                value = sample if conversion is None else (repr(sample) if conversion == "r" else str(sample))
                format(value, spec)
            except (ValueError, TypeError) as exc:
                raise self.fail(
                    where, "template", f"'{{{name}:{spec}}}': format '{spec}' does not fit {name} "
                    f"({provided[name].__name__}): {exc}",
                ) from None
        try:
            template.format_map({n: _SAMPLE_VALUES[n] for n in provided})
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise self.fail(where, "template", f"cannot be rendered with sample values: {exc}") from None

    def escalation(self, raw: Any, channel: str, where: str) -> Escalation:
        if raw is None:
            return Escalation()
        if not isinstance(raw, dict):
            raise self.fail(where, "escalation", "must be a mapping like {to_voice_after_failed_sms: true}")
        self.check_keys(raw, _ESCALATION_KEYS, where, "key", prefix="escalation.")
        values = {}
        for key in _ESCALATION_KEYS:
            value = raw.get(key, False)
            if not isinstance(value, bool):
                raise self.fail(where, f"escalation.{key}", f"must be true or false, got '{value}'")
            values[key] = value
        if values["to_voice_after_failed_sms"] and channel == "voice":
            raise self.fail(
                where, "escalation.to_voice_after_failed_sms", "only applies when the channel sends SMS"
            )
        return Escalation(**values)

    def quiet_hours(self, raw: Any, where: str) -> QuietHours | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.fail(where, "quiet_hours", "must be a mapping like {start: \"20:00\", end: \"07:00\"}")
        self.check_keys(raw, ("start", "end"), where, "key", prefix="quiet_hours.")
        start = self.clock(raw.get("start"), where, "quiet_hours.start")
        end = self.clock(raw.get("end"), where, "quiet_hours.end")
        if start == end:
            raise self.fail(where, "quiet_hours", "start and end are equal: the window would be empty")
        return QuietHours(start, end)

    def clock(self, value: Any, where: str, field_name: str) -> time:
        if isinstance(value, int) and not isinstance(value, bool):
            raise self.fail(
                where, field_name, "must be a quoted \"HH:MM\" string (unquoted, YAML reads 20:00 as number)"
            )
        match = _HHMM.match(value) if isinstance(value, str) else None
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise self.fail(where, field_name, f"'{value}' must be a time \"HH:MM\" between 00:00 and 23:59")
        return time(int(match[1]), int(match[2]))

    def amount(self, value: Any, where: str) -> float | None:
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or not 0 <= value <= MAX_AMOUNT):
            raise self.fail(where, "min_amount", f"must be a number from 0 to {MAX_AMOUNT:,.0f}, got '{value}'")
        return float(value)

    def days(self, value: Any, where: str, field_name: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            raise self.fail(where, field_name, f"must be a whole number of days from 1 to {MAX_DAYS}, got '{value}'")
        return value

    def codes(self, value: Any, where: str, field_name: str, what: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.fail(
                where, field_name, f"must be a non-empty list of {what} codes (omit the key to include all)"
            )
        for code in value:
            if not isinstance(code, str) or not code.strip():
                raise self.fail(
                    where, field_name, f"{what} code {code!r} must be quoted text, e.g. [\"01\"] "
                    "(unquoted, YAML reads 01 as the number 1)",
                )
        return tuple(value)


def _template_fields(template: str) -> list[tuple[str, str, str | None]]:
    """(field name, format spec, conversion) of every replacement field, nested specs included."""
    found: list[tuple[str, str, str | None]] = []
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        found.append((name, spec or "", conversion))
        if spec and "{" in spec:
            found.extend(_template_fields(spec))
    return found


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {problem}"
    return f"YAML syntax error: {problem}"


class _Blank:
    """Stands in for a missing field: formats to empty text whatever the format spec."""

    def __format__(self, spec: str) -> str:
        return ""

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return ""


def _prepare_fields(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Values for rendering: numbers given as text become numbers, ISO midnights become dates."""
    values: dict[str, Any] = dict(fields)
    for name, kind_type in TEMPLATE_FIELDS[kind].items():
        value = fields.get(name)
        if value is None:
            values[name] = _Blank()
        elif kind_type in (int, float) and isinstance(value, str):
            try:
                values[name] = kind_type(float(value)) if kind_type is int else float(value)
            except ValueError:
                values[name] = value
        elif name in ("DocDate", "DocDueDate") and isinstance(value, str) and value.endswith("T00:00:00Z"):
            values[name] = value[:10]
    return values


def _trigger_text(rule: Rule) -> str:
    amount = f" of at least {rule.min_amount:,.2f}" if rule.min_amount else ""
    if rule.kind == "purchase_invoice_received":
        return f"when a supplier invoice{amount} arrives"
    if rule.kind == "sales_invoice_created":
        return f"when a sales invoice{amount} is created"
    if rule.kind == "payment_overdue":
        again = (
            f", again every {rule.renotify_every_days} days while overdue"
            if rule.renotify_every_days
            else ", once"
        )
        return f"when a customer invoice{amount} is {rule.days_overdue}+ days past due{again}"
    if rule.kind == "payment_received":
        return f"when a customer payment{amount} arrives"
    if rule.kind == "purchase_order_changed":
        return f"when a purchase order{amount} is created or changed"
    where = f"warehouses {', '.join(rule.warehouses)}" if rule.warehouses else "any warehouse (MinInventory)"
    items = f", items {', '.join(rule.items)}" if rule.items else ""
    return f"when stock falls below the reorder point in {where}{items} (again only after recovery)"


def _channel_text(rule: Rule) -> str:
    if rule.escalates_to_voice:
        return "SMS, then a voice call if the SMS fails"
    return "SMS" if rule.channel == "sms" else "voice call"


def _params_text(rule: Rule) -> str:
    params = {
        "days_overdue": rule.days_overdue,
        "renotify_every_days": rule.renotify_every_days,
        "min_amount": rule.min_amount,
        "warehouses": ", ".join(rule.warehouses) if rule.warehouses else None,
        "items": ", ".join(rule.items) if rule.items else None,
        "next_recipient": True if rule.escalation.next_recipient else None,
    }
    return "; ".join(f"{k}={v}" for k, v in params.items() if v is not None)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")
