"""Rules file: the shipped default loads, every mistake is one line naming file/rule/field, quiet hours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml

from b1twilio_pipeline.alerts.rules import (
    KINDS,
    QuietHours,
    RulesConfigError,
    default_rules_path,
    load_rules,
    rules_path,
)
from b1twilio_pipeline.core.company_scope import pipeline_name
from b1twilio_pipeline.core.phones import mask_phone
from b1twilio_pipeline.core.settings import ConfigurationError

BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")

BASE = """\
timezone: Europe/Berlin
recipients:
  ap_team:
    - {name: Dana, phone: "+4915112345678"}
    - {name: Max, phone: "+4915112345679"}
  credit_control:
    - {name: Sam, phone_ref: sam, timezone: Europe/London}
    - {name: Dana, phone: "+4915112345678"}
  warehouse_north:
    - {name: Lee, phone: "+4915187654321"}
rules:
"""

GOOD_RULES = """\
  - id: ap-new
    kind: purchase_invoice_received
    recipients: [ap_team]
    template: "Invoice {DocNum} from {CardName}: {DocTotal:,.2f} {DocCurrency}, due {DocDueDate}"
  - id: overdue-30
    kind: payment_overdue
    days_overdue: 30
    renotify_every_days: 7
    recipients: [credit_control, ap_team, Lee]
    quiet_hours: {start: "20:00", end: "07:00"}
    escalation: {next_recipient: true}
  - id: reorder-north
    kind: stock_below_reorder
    urgent: true
    warehouses: ["01"]
    quiet_hours: {start: "20:00", end: "07:00"}
    recipients: [warehouse_north]
  - id: po
    kind: purchase_order_changed
    channel: sms_then_voice
    enabled: false
    recipients: [Max]
"""


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real secrets store or rules path from the developer's machine leaks into these tests."""
    monkeypatch.setenv("B1TWILIO_SECRETS_FILE", str(tmp_path / "no-store.enc"))
    for name in ("B1TWILIO_CONFIG", "PHONE_SAM", "B1TWILIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RulesConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(str(path) + ": "), message
    assert isinstance(caught.value, ConfigurationError)
    return message


# --- the shipped default -----------------------------------------------------------------------------------


def test_default_file_loads_with_every_kind_and_spec_defaults() -> None:
    config = load_rules()
    assert config.source == default_rules_path()
    assert config.timezone == "Europe/Berlin"
    assert {r.kind for r in config.rules} == set(KINDS)
    disabled = {r.kind for r in config.rules if not r.enabled}
    assert disabled == {"sales_invoice_created", "payment_received"}
    stock = config.enabled_rules("stock_below_reorder")
    assert any(r.urgent and r.warehouses == ("01",) for r in stock)
    assert any(r.warehouses is None for r in stock)
    overdue = config.enabled_rules("payment_overdue")[0]
    assert overdue.channel == "voice" and overdue.quiet_hours == QuietHours(time(20), time(7))
    assert overdue.days_overdue == 30
    for rule in config.rules:
        people = config.recipients_for(rule)
        assert people and all(p.phone and p.phone.startswith("+447700900") for p in people)


def test_config_path_comes_from_b1twilio_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE + GOOD_RULES, "mine.yaml")
    monkeypatch.setenv("B1TWILIO_CONFIG", str(path))
    assert rules_path() == path
    assert [r.id for r in load_rules().rules] == ["ap-new", "overdue-30", "reorder-north", "po"]


def test_defaults_per_kind_and_enabled_rules(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    overdue = config.rule("overdue-30")
    assert overdue.channel == "voice"  # default channel of payment_overdue
    assert "{days_overdue}" in overdue.template  # default template of the kind
    assert config.rule("ap-new").channel == "sms"
    assert config.rule("reorder-north").channel == "voice"
    assert [r.id for r in config.enabled_rules()] == ["ap-new", "overdue-30", "reorder-north"]
    assert [r.id for r in config.enabled_rules("purchase_order_changed")] == []
    assert config.rule("po").escalates_to_voice and config.rule("po").first_channel == "sms"
    assert overdue.tz == BERLIN
    with pytest.raises(ValueError):
        config.enabled_rules("no_such_kind")


def test_recipients_expand_groups_and_people_deduplicated_in_order(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    overdue = config.rule("overdue-30")
    names = [p.name for p in config.recipients_for(overdue)]
    assert names == ["Sam", "Dana", "Max", "Lee"]  # Dana appears in two groups: once
    assert [p.name for p in config.initial_recipients(overdue)] == ["Sam"]
    chain = config.recipients_for(overdue)
    assert config.next_recipient(overdue, chain[0]) == chain[1]
    assert config.next_recipient(overdue, chain[-1]) is None
    ap = config.rule("ap-new")
    assert [p.name for p in config.initial_recipients(ap)] == ["Dana", "Max"]
    assert config.next_recipient(ap, config.recipients_for(ap)[0]) is None
    assert [p.name for p in config.recipients_for(config.rule("po"))] == ["Max"]


def test_describe_masks_phones(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    table = config.describe()
    assert "| overdue-30 | payment_overdue | yes | when a customer invoice is 30+ days past due" in table
    assert mask_phone("+4915112345678") in table and "[PHONE_SAM]" in table
    assert "+4915112345678" not in table
    line = config.describe_rule(config.rule("reorder-north"))
    assert "\n" not in line and "warehouse 01" in line and "urgent" in line
    assert "+4915187654321" not in line and mask_phone("+4915187654321") in line
    assert "(disabled)" in config.describe_rule(config.rule("po"))


def test_descriptions_name_the_people_then_how_they_are_told(tmp_path: Path) -> None:
    """"-> Max by SMS, then a voice call if the SMS fails", never "-> SMS, then ... fails to Max"."""
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    dana, max_, lee = (mask_phone(n) for n in ("+4915112345678", "+4915112345679", "+4915187654321"))
    described = {rule.id: config.describe_rule(rule) for rule in config.rules}
    assert described["ap-new"] == f"ap-new: when a supplier invoice arrives -> Dana {dana} and Max {max_} by SMS"
    assert described["po"] == (f"po (disabled): when a purchase order is created or changed -> Max {max_} by SMS, "
                               "then a voice call if the SMS fails")
    assert described["overdue-30"].startswith(
        "overdue-30: when a customer invoice is 30+ days past due, again every 7 days while overdue -> "
        f"Sam [PHONE_SAM] by voice call; if that fails, the next in line: Dana {dana}, Max {max_}, Lee {lee}; "
        "quiet hours 20:00-07:00")
    assert described["reorder-north"].startswith(
        "reorder-north: when an item's stock in warehouse 01 falls below the reorder point (MinimalStock), again "
        f"only after it recovered -> Lee {lee} by voice call; quiet hours")
    for line in described.values():  # the channel phrase never runs into the people
        assert " fails to " not in line and " to Sam" not in line and "\n" not in line
    table = config.describe().splitlines()
    assert table[2].startswith("| rule | kind | enabled | when | channel | recipients |")
    po_row = next(row for row in table if row.startswith("| po |"))
    assert f"| SMS, then a voice call if the SMS fails | Max {max_} |" in po_row
    overdue_row = next(row for row in table if row.startswith("| overdue-30 |"))
    assert "| voice call | one at a time, the next if delivery fails: Sam [PHONE_SAM], " in overdue_row


def test_phone_ref_resolved_at_send_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    sam = config.recipients_for(config.rule("overdue-30"))[0]
    assert sam.secret_name == "PHONE_SAM" and sam.tz == LONDON
    with pytest.raises(ConfigurationError) as caught:
        sam.resolve_phone()
    assert "b1twilio secrets set PHONE_SAM" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setenv("PHONE_SAM", "+44 7700 900123")
    with pytest.raises(ConfigurationError) as caught:
        sam.resolve_phone()
    assert "7700 900123" not in str(caught.value) and "E.164" in str(caught.value)
    monkeypatch.setenv("PHONE_SAM", "+447700900123")
    assert sam.resolve_phone() == "+447700900123"
    assert sam.key == "ref:sam" and "+447700900123" not in sam.key


def test_render_uses_typed_fields_and_tolerates_missing_ones(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    rule = config.rule("ap-new")
    text = rule.render(
        {"DocNum": 1001, "CardName": "Acme", "DocTotal": 1234.5, "DocCurrency": "EUR",
         "DocDueDate": "2026-12-24T00:00:00Z"}
    )  # fmt: skip
    assert text == "Invoice 1001 from Acme: 1,234.50 EUR, due 2026-12-24"
    text = rule.render({"DocNum": 7, "CardName": "Acme", "DocTotal": "99.5", "DocCurrency": None})
    assert text == "Invoice 7 from Acme: 99.50 , due "


def test_a_company_of_several_is_named_where_the_template_says_else_in_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    placed = GOOD_RULES.replace('"Invoice {DocNum}', '"[{company}] Invoice {DocNum}')
    fields = {"DocNum": 7, "CardName": "Acme", "DocTotal": 99.5, "DocCurrency": "EUR"}
    assert load_rules(write(tmp_path, BASE + placed)).rule("ap-new").render(fields).startswith("[] Invoice 7")
    monkeypatch.setenv("B1TWILIO_COMPANY_NAME", "Muster GmbH")  # a code location of the companies file
    assert load_rules(write(tmp_path, BASE + placed)).rule("ap-new").render(fields).startswith(
        "[Muster GmbH] Invoice 7 from Acme")
    assert load_rules(write(tmp_path, BASE + GOOD_RULES)).rule("ap-new").render(fields).startswith(
        "Muster GmbH: Invoice 7 from Acme")
    assert pipeline_name() == "b1twilio (Muster GmbH)"  # what the pipeline tells the admins itself


# --- one line per mistake, naming file, rule or group, field -----------------------------------------------


def rule_text(body: str) -> str:
    return BASE + textwrap.indent(textwrap.dedent(body), "  ")


ERROR_CASES = [
    (
        "unknown key in rule",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 30
          renotify_every_day: 7
          recipients: [credit_control]
        """),
        ["rule 'overdue-30'", "field 'renotify_every_day'", "did you mean 'renotify_every_days'"],
    ),
    (
        "days_overdue not a whole number",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 0
          recipients: [credit_control]
        """),
        ["rule 'overdue-30': field 'days_overdue': must be a whole number of days from 1 to 36500"],
    ),
    (
        "days_overdue absurdly large",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 100000000000000000000000
          recipients: [credit_control]
        """),
        ["rule 'overdue-30': field 'days_overdue': must be a whole number of days from 1 to 36500"],
    ),
    (
        "min_amount not a number",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          min_amount: .nan
          recipients: [ap_team]
        """),
        ["rule 'ap-new': field 'min_amount': must be a number from 0 to", "got 'nan'"],
    ),
    (
        "min_amount infinite",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          min_amount: .inf
          recipients: [ap_team]
        """),
        ["rule 'ap-new': field 'min_amount'", "got 'inf'"],
    ),
    (
        "template width that would exhaust memory",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "{DocNum:>99999999999}"
        """),
        ["rule 'ap-new': field 'template'", "width or precision 99999999999 is too large (at most 200)"],
    ),
    (
        "days_overdue missing",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          recipients: [credit_control]
        """),
        ["rule 'overdue-30'", "field 'days_overdue'", "required"],
    ),
    (
        "parameter of another kind",
        rule_text("""\
        - id: reorder
          kind: stock_below_reorder
          days_overdue: 30
          recipients: [warehouse_north]
        """),
        ["rule 'reorder'", "field 'days_overdue'", "does not apply to kind stock_below_reorder"],
    ),
    (
        "bad channel",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          channel: email
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'channel'", "'email'"],
    ),
    (
        "unknown recipient",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_teem]
        """),
        ["rule 'ap-new'", "field 'recipients'", "unknown recipient 'ap_teem'"],
    ),
    (
        "unknown template field",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice {DocNum} of {CardNmae}"
        """),
        ["rule 'ap-new'", "field 'template'", "unknown field '{CardNmae}'", "did you mean 'CardName'"],
    ),
    (
        "computed field of another kind",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "{CardName} is {days_overdue} days late"
        """),
        ["rule 'ap-new'", "field 'template'", "unknown field '{days_overdue}'"],
    ),
    (
        "number format on text field",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice from {CardName:,.2f}"
        """),
        ["rule 'ap-new'", "field 'template'", "CardName", "str"],
    ),
    (
        "positional template field",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice {} arrived"
        """),
        ["rule 'ap-new'", "field 'template'", "positional"],
    ),
    (
        "attribute access in template",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice {CardName.__class__}"
        """),
        ["rule 'ap-new'", "field 'template'", "plain field names"],
    ),
    (
        "broken template braces",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice {DocNum"
        """),
        ["rule 'ap-new'", "field 'template'", "not a valid template"],
    ),
    (
        "duplicate id",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
        - id: ap-new
          kind: sales_invoice_created
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'id'", "unique"],
    ),
    (
        "bad rule id",
        rule_text("""\
        - id: "AP New"
          kind: purchase_invoice_received
          recipients: [ap_team]
        """),
        ["rule #1", "field 'id'", "'AP New'"],
    ),
    (
        "unknown kind",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'kind'", "purchase_invoice_received"],
    ),
    (
        "unquoted quiet hours",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 30
          recipients: [credit_control]
          quiet_hours: {start: 20:00, end: "07:00"}
        """),
        ["rule 'overdue-30'", "field 'quiet_hours.start'", "quoted"],
    ),
    (
        "impossible quiet hour",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 30
          recipients: [credit_control]
          quiet_hours: {start: "25:00", end: "07:00"}
        """),
        ["rule 'overdue-30'", "field 'quiet_hours.start'", "'25:00'"],
    ),
    (
        "unknown key in quiet hours",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 30
          recipients: [credit_control]
          quiet_hours: {start: "20:00", stop: "07:00"}
        """),
        ["rule 'overdue-30'", "field 'quiet_hours.stop'", "unknown key"],
    ),
    (
        "unquoted warehouse code",
        rule_text("""\
        - id: reorder
          kind: stock_below_reorder
          warehouses: [01]
          recipients: [warehouse_north]
        """),
        ["rule 'reorder'", "field 'warehouses'", "quoted"],
    ),
    (
        "escalation to voice on a voice rule",
        rule_text("""\
        - id: reorder
          kind: stock_below_reorder
          channel: voice
          escalation: {to_voice_after_failed_sms: true}
          recipients: [warehouse_north]
        """),
        ["rule 'reorder'", "field 'escalation.to_voice_after_failed_sms'"],
    ),
    (
        "enabled not a boolean",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          enabled: "no"
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'enabled'", "true or false"],
    ),
    (
        "negative min_amount",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          min_amount: -5
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'min_amount'"],
    ),
    (
        "bad rule time zone",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          timezone: Europe/Berlim
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'timezone'", "Europe/Berlim"],
    ),
    (
        "kind missing",
        rule_text("""\
        - id: ap-new
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'kind': is required (kinds: purchase_invoice_received"],
    ),
    (
        "line break in a quoted value stays visible, on one line",
        rule_text("""\
        - id: ap-new
          kind: "purchase_invoice\\nreceived"
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'kind'", "'purchase_invoice\\nreceived' is not a rule kind"],
    ),
    (
        "line break in an unknown key",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          "min\\namount": 5
          recipients: [ap_team]
        """),
        ["rule 'ap-new'", "field 'min\\namount'", "unknown key"],
    ),
    (
        "line break in a time",
        rule_text("""\
        - id: overdue-30
          kind: payment_overdue
          days_overdue: 30
          recipients: [credit_control]
          quiet_hours: {start: "20:\\n00", end: "07:00"}
        """),
        ["field 'quiet_hours.start'", "'20:\\n00' must be a time"],
    ),
    (
        "key given twice",
        rule_text("""\
        - id: ap-new
          kind: purchase_invoice_received
          recipients: [ap_team]
          template: "Invoice {DocNum}"
          template: "Invoice {DocNum} from {CardName}"
        """),
        ["line 16, column 5", "key 'template' is given twice"],
    ),
    (
        "recipient group given twice",
        BASE.replace("rules:\n", "  ap_team:\n    - {name: Robin, phone: \"+4915112345670\"}\nrules:\n  []\n"),
        ["key 'ap_team' is given twice"],
    ),
    (
        "nested thousands of levels deep",
        BASE + "  - " + "[" * 3000 + "]" * 3000 + "\n",
        ["nested too deeply"],
    ),
    (
        "person name on two lines",
        BASE.replace("{name: Max,", "{name: \"Max\\nMustermann\",", 1) + "  []\n",
        ["person 'Max\\nMustermann': field 'name'", "one line of text"],
    ),
    (
        "group name that is a number",
        BASE.replace("warehouse_north:", "42:", 1) + "  []\n",
        ["recipient group '42'", "not a group name"],
    ),
    (
        "unknown top-level key",
        BASE.replace("timezone:", "time_zone:", 1) + "  []\n",
        ["field 'time_zone'", "unknown top-level key", "did you mean 'timezone'"],
    ),
    (
        "missing rules",
        BASE.replace("rules:\n", ""),
        ["field 'rules'", "required"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_invalid_rules_give_one_line_naming_file_rule_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    message = load_error(tmp_path, text)
    for part in expected:
        assert part in message, message


RECIPIENT_CASES = [
    ('{name: Dana, phone: "+49 151 1234 5678"}', ["person 'Dana'", "field 'phone'", "E.164"], "1234 5678"),
    ('{name: Dana, phone: "+0491511234567"}', ["person 'Dana'", "field 'phone'", "E.164"], "0491511234567"),
    ('{name: Dana, phone: "+4915"}', ["person 'Dana'", "field 'phone'", "E.164"], None),
    ("{name: Dana, phone: +4915112345678}", ["person 'Dana'", "field 'phone'", "quoted"], "4915112345678"),
    ('{name: Dana, fone: "+4915112345678"}', ["person 'Dana'", "field 'fone'", "did you mean 'phone'"], None),
    ("{name: Dana}", ["person 'Dana'", "field 'phone'", "exactly one"], None),
    ('{name: Dana, phone: "+4915112345678", phone_ref: dana}', ["field 'phone'", "exactly one"], None),
    ('{name: Dana, phone_ref: "dana k"}', ["person 'Dana'", "field 'phone_ref'"], None),
    ('{name: Dana, phone: "+4915112345678", timezone: Mars/Base}', ["field 'timezone'", "Mars/Base"], None),
    ('{phone: "+4915112345678"}', ["person #1", "field 'name'", "required"], "+4915112345678"),
    ('{name: ' + "D" * 121 + ', phone: "+4915112345678"}', ["field 'name'", "longer than 120 characters"], None),
]


@pytest.mark.parametrize(("person", "expected", "must_not_show"), RECIPIENT_CASES)
def test_invalid_recipients_name_group_person_field_and_mask_phone(
    tmp_path: Path, person: str, expected: list[str], must_not_show: str | None
) -> None:
    text = f"""\
timezone: Europe/Berlin
recipients:
  ap_team:
    - {person}
rules: []
"""
    message = load_error(tmp_path, text)
    assert "recipient group 'ap_team'" in message, message
    for part in expected:
        assert part in message, message
    if must_not_show:
        assert must_not_show not in message, message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "  - id: x\n    kind: [unclosed\n")
    assert "line " in message and "YAML" in message


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RulesConfigError) as caught:
        load_rules(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(caught.value) and "not found" in str(caught.value)


def test_ambiguous_person_name_is_refused(tmp_path: Path) -> None:
    text = BASE.replace('{name: Max, phone: "+4915112345679"}', '{name: Lee, phone: "+4915112345679"}')
    message = load_error(tmp_path, text + "  - {id: a, kind: sales_invoice_created, recipients: [Lee]}\n")
    assert "rule 'a'" in message and "field 'recipients'" in message and "several people" in message


# --- quiet hours -------------------------------------------------------------------------------------------


def at(text: str, tz: ZoneInfo = BERLIN, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold)


def test_overnight_window_contains_and_ends_next_morning() -> None:
    quiet = QuietHours(time(20), time(7))
    assert quiet.contains(at("2026-06-10 20:00"), BERLIN)
    assert quiet.contains(at("2026-06-11 06:59"), BERLIN)
    assert not quiet.contains(at("2026-06-11 07:00"), BERLIN)
    assert not quiet.contains(at("2026-06-10 19:59"), BERLIN)
    assert quiet.next_end(at("2026-06-10 23:30"), BERLIN) == at("2026-06-11 07:00")
    assert quiet.next_end(at("2026-06-11 02:00"), BERLIN) == at("2026-06-11 07:00")
    outside = at("2026-06-10 12:00")
    assert quiet.next_end(outside, BERLIN) == outside
    # judged on the wall clock of the zone given, whatever zone the instant is expressed in
    assert quiet.contains(datetime(2026, 6, 10, 18, 30, tzinfo=UTC), BERLIN)  # 20:30 CEST
    assert not quiet.contains(datetime(2026, 6, 10, 18, 30, tzinfo=UTC), LONDON)  # 19:30 BST


def test_daytime_window() -> None:
    lunch = QuietHours(time(12), time(13, 30))
    assert lunch.contains(at("2026-06-10 12:15"), BERLIN)
    assert not lunch.contains(at("2026-06-10 13:30"), BERLIN)
    assert lunch.next_end(at("2026-06-10 12:15"), BERLIN) == at("2026-06-10 13:30")


def test_night_of_dst_end_in_berlin_is_an_hour_longer() -> None:
    quiet = QuietHours(time(20), time(7))
    start = at("2026-10-24 21:00")  # Saturday before the last Sunday of October, CEST (UTC+2)
    end = quiet.next_end(start, BERLIN)
    assert end.astimezone(UTC) == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 07:00 CET (UTC+1)
    assert (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() == 11 * 3600


def test_ambiguous_end_time_at_dst_end_takes_the_instant_after_now() -> None:
    quiet = QuietHours(time(1), time(2, 30))
    second_pass = at("2026-10-25 02:15", fold=1)  # 01:15 UTC, after the first 02:30 (00:30 UTC)
    assert quiet.contains(second_pass, BERLIN)
    end = quiet.next_end(second_pass, BERLIN)
    assert end.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    first_pass = at("2026-10-25 02:15", fold=0)
    assert quiet.next_end(first_pass, BERLIN).astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_end_inside_spring_forward_gap_is_after_the_gap() -> None:
    quiet = QuietHours(time(22), time(2, 30))  # 02:30 does not exist on 2026-03-29 in Berlin
    end = quiet.next_end(at("2026-03-28 23:00"), BERLIN)
    assert end.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert not quiet.contains(end, BERLIN)


def test_naive_datetime_and_empty_window_are_refused() -> None:
    with pytest.raises(ValueError):
        QuietHours(time(20), time(7)).contains(datetime(2026, 6, 10, 21), BERLIN)
    with pytest.raises(ValueError):
        QuietHours(time(7), time(7))


def test_hold_until_voice_sms_urgent_and_recipient_zone(tmp_path: Path) -> None:
    config = load_rules(write(tmp_path, BASE + GOOD_RULES))
    overdue, reorder, ap = config.rule("overdue-30"), config.rule("reorder-north"), config.rule("ap-new")
    night = datetime(2026, 1, 14, 19, 30, tzinfo=UTC)  # 20:30 in Berlin, 19:30 in London
    assert overdue.hold_until(night) == at("2026-01-15 07:00")
    assert overdue.hold_until(night, LONDON) is None  # Sam's own evening has not reached 20:00
    late = datetime(2026, 1, 14, 21, 0, tzinfo=UTC)
    assert overdue.hold_until(late, LONDON) == at("2026-01-15 07:00", LONDON)
    assert reorder.hold_until(night) is None  # urgent voice rings anyway
    assert reorder.hold_until(night, channel="sms") == at("2026-01-15 07:00")  # urgent SMS still held
    assert ap.hold_until(night) is None  # no quiet hours
    assert overdue.hold_until(datetime(2026, 1, 14, 12, 0, tzinfo=UTC)) is None


# --- the JSON Schema for editors ----------------------------------------------------------------------------


def test_rules_schema_validates_the_shipped_files_and_is_up_to_date() -> None:
    root = Path(__file__).resolve().parents[1]
    printed = subprocess.run([sys.executable, "-m", "b1twilio_pipeline.cli", "rules-schema"], capture_output=True,
                             text=True, timeout=120, cwd=root)
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    shipped = root / "b1twilio_pipeline" / "alerts" / "rules.schema.json"
    assert json.loads(shipped.read_text()) == schema, "regenerate it: b1twilio rules-schema > " + str(shipped)
    for rules_file in (default_rules_path(), root / "b1twilio_sim" / "demo_rules.yaml"):
        first_line = rules_file.read_text().splitlines()[0]
        assert first_line.startswith("# yaml-language-server: $schema=")
        assert (rules_file.parent / first_line.split("=", 1)[1]).resolve() == shipped
        jsonschema.validate(yaml.safe_load(rules_file.read_text()), schema)
    broken = yaml.safe_load(default_rules_path().read_text())
    broken["rules"][0]["chanel"] = "sms"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_the_readme_rules_excerpt_is_the_shipped_file() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    marker = r"<!-- an excerpt of b1twilio_pipeline/alerts/default_rules.yaml[^>]*-->"
    [excerpt] = re.findall(marker + r"\s*```yaml\n(.*?)```", readme, re.S)
    shipped = default_rules_path().read_text().splitlines()
    missing = [line for line in excerpt.splitlines() if line.strip() and line not in shipped]
    assert not missing, f"README lines not in default_rules.yaml: {missing}"


POLICY = """
timezone: UTC
recipients:
  on_call: [{name: Sam, phone: "+447700900103"}, {name: Jo, phone: "+447700900104"}]
  admins: [{name: Kim, phone: "+447700900107"}]
rules:
  - id: overdue-30
    kind: payment_overdue
    days_overdue: 30
    channel: sms
    recipients: [on_call]
    escalation:
      - {after_minutes: 10, channel: voice}
      - {after_minutes: 20, to: next_recipient}
      - {after_minutes: 40, to: admins}
"""


def test_an_escalation_policy_is_a_list_of_steps_and_says_what_it_does(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(POLICY)
    config = load_rules(path)
    [rule] = config.rules

    assert [(s.after_minutes, s.channel, s.to) for s in rule.escalation.steps] == [
        (10, "voice", None), (20, None, "next_recipient"), (40, None, "admins")]
    assert [p.name for p in config.initial_recipients(rule)] == ["Sam"]  # a next_recipient step: a chain
    assert [p.name for p in config.step_recipients(rule, rule.escalation.steps[1], 1)] == ["Jo"]
    assert [p.name for p in config.step_recipients(rule, rule.escalation.steps[2], 2)] == ["Kim"]
    described = config.describe_rule(rule)
    assert "after 10 min unacknowledged: the same people by voice" in described
    assert "after 40 min unacknowledged: group admins" in described
    jsonschema.validate(yaml.safe_load(POLICY), json.loads((Path(__file__).parents[1] / "b1twilio_pipeline" /
                                                             "alerts" / "rules.schema.json").read_text()))


@pytest.mark.parametrize(("step", "message"), [
    ("{after_minutes: 10, to: nobody}", "step 1: `to: nobody` is not a group or next_recipient"),
    ("{after_minutes: 0, channel: voice}", "field 'escalation step 1.after_minutes'"),
    ("{after_minutes: 5}", "says neither `channel` nor `to`"),
    ("{after_minutes: 5, channel: voice, then: sms}", "field 'escalation step 1.then': unknown key"),
])
def test_a_wrong_escalation_step_is_one_line_naming_the_step(tmp_path: Path, step: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(POLICY.replace("      - {after_minutes: 10, channel: voice}", f"      - {step}"))
    with pytest.raises(RulesConfigError) as raised:
        load_rules(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


PLAIN = POLICY.split("    escalation:")[0]


@pytest.mark.parametrize(("digest", "message"), [
    ('{every_minutes: 30, at: "08:30"}', "needs exactly one of `every_minutes`"),
    ("{max_items: 5}", "needs exactly one of `every_minutes`"),
    ("{every_minutes: 0}", "field 'digest.every_minutes'"),
])
def test_a_wrong_digest_is_one_line(tmp_path: Path, digest: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(PLAIN + f"    digest: {digest}\n")
    with pytest.raises(RulesConfigError) as raised:
        load_rules(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_digest_reads_as_what_it_does_and_fits_only_sms(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(PLAIN + '    digest: {at: "08:30", max_items: 10}\n')
    [rule] = load_rules(path).rules
    assert "one digest SMS daily at 08:30 (up to 10 documents listed)" in rule.describe()
    path.write_text(PLAIN.replace("channel: sms", "channel: voice") + "    digest: {every_minutes: 30}\n")
    with pytest.raises(RulesConfigError, match="the rule's channel must be sms"):
        load_rules(path)


def test_a_daily_digest_goes_out_at_its_next_time_of_day(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(PLAIN + '    digest: {at: "08:30"}\n')
    [rule] = load_rules(path).rules
    assert rule.digest is not None
    berlin = ZoneInfo("Europe/Berlin")
    before, after = datetime(2026, 11, 25, 6, 0, tzinfo=UTC), datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert rule.digest.until(before, berlin) == datetime(2026, 11, 25, 8, 30, tzinfo=berlin)
    assert rule.digest.until(after, berlin) == datetime(2026, 11, 26, 8, 30, tzinfo=berlin)
