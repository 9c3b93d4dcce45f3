"""Loading the rules file: YAML, then the pydantic models, then what needs the whole file (unique ids,
recipients that exist). Every mistake is ONE line naming the file, the rule (or recipient group and
person) and the field, because a typo that silently disabled an alert would only be noticed when the
overdue customer was never called."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from b1twilio_pipeline.alerts.rules.base import NEXT_RECIPIENT, Escalation, EscalationStep
from b1twilio_pipeline.alerts.rules.config import RulesConfig, RulesFile
from b1twilio_pipeline.alerts.rules.fields import _RULE_ID
from b1twilio_pipeline.alerts.rules.kinds import KIND_BY_NAME, KINDS, RULE_KINDS
from b1twilio_pipeline.alerts.rules.recipients import Recipient
from b1twilio_pipeline.core.errors import FileConfigError
from b1twilio_pipeline.core.settings import current
from b1twilio_pipeline.core.yaml_file import read_yaml, too_deeply_nested

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "rules.schema.json"
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")  # models say the first, dataclasses the second
_SHAPES = {
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "too_short": "must not be empty",
}


class RulesConfigError(FileConfigError):
    """The rules file is invalid; the message is one line naming file, rule or group, and field."""


def default_rules_path() -> Path:
    """The rules file shipped with the package, used when B1TWILIO_CONFIG is unset: every kind, fictional
    numbers."""
    return Path(__file__).resolve().parents[1] / "default_rules.yaml"


def rules_path() -> Path:
    """`B1TWILIO_CONFIG` if set (environment or secrets store), else the shipped default file."""
    configured = current().b1twilio_config
    return Path(configured).expanduser() if configured else default_rules_path()


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of the rules file, for editors (`b1twilio rules-schema`)."""
    return RulesFile.model_json_schema()


def rules_schema_text() -> str:
    return json.dumps(rules_schema(), indent=2, sort_keys=True) + "\n"


def load_rules(path: str | Path | None = None) -> RulesConfig:
    """Read and validate a rules file; RulesConfigError (one line) on any problem."""
    source = Path(path).expanduser() if path is not None else rules_path()
    data = read_yaml(source, "rules file", "check B1TWILIO_CONFIG or the path given", RulesConfigError)
    try:
        return parse_rules(data, source)
    except RecursionError:
        raise RulesConfigError(too_deeply_nested(source, "rules file")) from None


def parse_rules(data: Any, source: str | Path = "<rules>") -> RulesConfig:
    """Validate already-parsed YAML (a mapping) into a RulesConfig; `source` names it in errors."""
    label = str(source)
    if data is None:
        raise RulesConfigError(f"{label}: the file is empty: it needs timezone, recipients and rules")
    if not isinstance(data, dict):
        raise RulesConfigError(f"{label}: the top level must be a mapping with timezone, recipients and rules")
    try:
        parsed = RulesFile.model_validate(data)
    except ValidationError as exc:
        # A key that is not known explains a key that is missing (a typo): report it first.
        first = sorted(exc.errors(), key=lambda error: error["type"] not in _UNKNOWN_KEY)[0]
        where, field, message = _explain(first, data)
        raise RulesConfigError(": ".join([label, *filter(None, [where, field and f"field '{field}'"]), message])) \
            from None
    groups = {name: [person.model_copy(update={"group": name, "locale": person.locale or parsed.locale})
                     for person in people]
              for name, people in parsed.recipients.items()}
    _check_across(parsed, groups, label)
    rules = [rule if rule.timezone else rule.model_copy(update={"timezone": parsed.timezone}) for rule in parsed.rules]
    return RulesConfig(timezone=parsed.timezone, recipients=groups, rules=rules, source=Path(source),
                       locale=parsed.locale)


def _check_across(parsed: RulesFile, groups: dict[str, list[Recipient]], label: str) -> None:
    """What no single rule can check: unique ids, and recipients that name a group or one person."""
    people: dict[str, set[tuple[str, str]]] = {}
    for group in groups.values():
        for person in group:
            people.setdefault(person.name, set()).add(person.identity)
    seen: set[str] = set()
    for rule in parsed.rules:
        where = f"{label}: rule '{rule.id}'"
        if rule.id in seen:
            raise RulesConfigError(f"{where}: field 'id': is used by another rule: ids must be unique")
        seen.add(rule.id)
        for number, step in enumerate(rule.escalation.steps, start=1):
            if step.to not in (None, NEXT_RECIPIENT, *groups):
                raise RulesConfigError(f"{where}: field 'escalation': step {number}: `to: {step.to}` is not a group "
                                       f"or next_recipient (groups: {', '.join(groups) or 'none'})")
        for name in rule.recipients:
            if name in groups:
                continue
            if name not in people:
                raise RulesConfigError(f"{where}: field 'recipients': unknown recipient '{name}': not a group or "
                                       f"person under recipients (groups: {', '.join(groups) or 'none'})")
            if len(people[name]) > 1:
                raise RulesConfigError(f"{where}: field 'recipients': '{name}' names several people with different "
                                       "numbers: use a group or give them distinct names")


def _explain(error: ErrorDetails, data: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(where, field, message) of a validation error, in the words of the file."""
    rest = [*error["loc"], *filter(None, [(error.get("ctx") or {}).get("field")])]
    where: str | None = None
    model: type[BaseModel] = RulesFile
    if rest[:1] == ["recipients"] and len(rest) >= 2:
        group, rest = rest[1], rest[2:]
        where, model = f"recipient group '{group}'", Recipient
        if rest and isinstance(rest[0], int):
            person = data["recipients"][group][rest[0]]
            name = person.get("name") if isinstance(person, dict) else None
            where += f": person '{name}'" if isinstance(name, str) and name.strip() else f": person #{rest[0] + 1}"
            rest = rest[1:]
    elif rest[:1] == ["rules"] and len(rest) >= 2 and isinstance(rest[1], int):
        raw = data["rules"][rest[1]]
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        valid = isinstance(rule_id, str) and _RULE_ID.match(rule_id)
        where = f"rule '{rule_id}'" if valid else f"rule #{rest[1] + 1}"
        rest = rest[2:]
        if rest and rest[0] in KINDS:
            model, rest = KIND_BY_NAME[str(rest[0])], rest[1:]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            given = raw.get("kind") if isinstance(raw, dict) else None
            if given is None:
                return where, "kind", f"is required (kinds: {', '.join(KINDS)})"
            return where, "kind", f"'{given}' is not a rule kind (kinds: {', '.join(KINDS)})"
        if error["type"] == "model_attributes_type":
            return where, None, "must be a mapping starting with id and kind"
    if rest == ["[key]"]:
        rest = []  # the group's name itself
    if rest[:1] in (["escalation"], ["quiet_hours"]) and len(rest) == 2:
        model = Escalation if rest[0] == "escalation" else model
    if rest[:2] == ["escalation", "steps"] and len(rest) >= 3 and isinstance(rest[2], int):
        # A policy is written as a list: name its step as the reader counts, not pydantic's path.
        model, rest = EscalationStep, [f"escalation step {rest[2] + 1}", *rest[3:]]
    field = ".".join(str(part) for part in rest) or None
    return where, field, _message(error, model, rest, data)


def _message(error: ErrorDetails, model: type[BaseModel], rest: list[Any], data: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind in _UNKNOWN_KEY:
        key = str(rest[-1])
        owners = [k.model_fields["kind"].default for k in RULE_KINDS if key in k.model_fields]
        if model in RULE_KINDS and owners:
            return f"does not apply to kind {model.model_fields['kind'].default} (only to {', '.join(owners)})"
        allowed = [name for name, info in model.model_fields.items() if name != "group" and info.exclude is not True]
        if rest[:1] == ["quiet_hours"]:
            allowed = ["start", "end"]
        hint = difflib.get_close_matches(key, allowed, n=1)
        what = "top-level key" if model is RulesFile and len(rest) == 1 else "key"
        suggestion = f"did you mean '{hint[0]}'? " if hint else ""
        return f"unknown {what} ({suggestion}allowed: {', '.join(allowed)})"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if kind in _SHAPES:
        return _SHAPES[kind]
    return error["msg"]
