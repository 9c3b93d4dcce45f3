"""What every rule has, whatever its kind: an id, recipients, a channel and template, quiet hours, urgency and
escalation. A kind (see `kinds`) adds its parameters and declares what it needs from B1 and what its
template may use, so adding a kind is writing one class here and one evaluator (see `alerts.evaluators`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from b1twilio_pipeline.alerts.quiet_hours import QuietHours
from b1twilio_pipeline.alerts.rules.digest import Digest
from b1twilio_pipeline.alerts.rules.fields import Flag, RuleId, TimeZoneName, fail
from b1twilio_pipeline.alerts.rules.templates import check_template, render
from b1twilio_pipeline.core.settings import current

RULE_CHANNELS = ("sms", "voice", "sms_then_voice")
NEXT_RECIPIENT = "next_recipient"
MAX_STEP_MINUTES = 7 * 24 * 60
# Fields of a marketing document (supplier and customer invoices, purchase orders) as B1 names them: what
# the evaluators read and pass on.
DOCUMENT_FIELDS: dict[str, type] = {
    "DocEntry": int, "DocNum": int, "DocDate": str, "DocDueDate": str, "CardCode": str, "CardName": str,
    "NumAtCard": str, "DocTotal": float, "DocCurrency": str, "PaidToDate": float, "Comments": str,
}
# What a template of a document kind may use: those, and the amounts with their currency as the recipient's
# locale writes them (`templates.AMOUNT_TEXTS`), computed when the message is rendered.
DOCUMENT_TEMPLATE_FIELDS: dict[str, type] = {**DOCUMENT_FIELDS, "DocTotalText": str, "PaidToDateText": str}


def _channel(value: Any) -> str:
    if value not in RULE_CHANNELS:
        raise fail(f"'{value}' is not a channel: sms, voice or sms_then_voice")
    return str(value)


def _recipient_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise fail("must be a non-empty list of group or person names, e.g. [ap_team]")
    return tuple(value)


Channel = Annotated[Literal["sms", "voice", "sms_then_voice"], BeforeValidator(_channel)]
RecipientNames = Annotated[tuple[str, ...], BeforeValidator(_recipient_names)]


class EscalationStep(BaseModel):
    """One step of an escalation policy: `after_minutes` after the first notice, while nobody has
    acknowledged the alert, notify `to` (the same people when unset; `next_recipient`: the next person of
    the rule's group, in order; or a recipients group by name) by `channel` (the rule's first channel when
    unset). Quiet hours apply unless the rule is urgent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_minutes: Annotated[int, Field(ge=1, le=MAX_STEP_MINUTES)]
    channel: Literal["sms", "voice"] | None = None
    to: str | None = Field(None, description="next_recipient, or a recipients group; default the same people")

    @model_validator(mode="after")
    def _does_something(self) -> EscalationStep:
        if self.channel is None and self.to is None:
            raise fail("says neither `channel` nor `to`: write e.g. `channel: voice` (the same people by call) "
                       "or `to: next_recipient`")
        return self

    def text(self) -> str:
        who = {None: "the same people", NEXT_RECIPIENT: "the next in line"}.get(self.to, f"group {self.to}")
        return f"after {self.after_minutes} min unacknowledged: {who}" + (f" by {self.channel}" if self.channel else "")


class Escalation(BaseModel):
    """What happens when delivery fails, and when nobody acknowledges.

    Written as a mapping, the switches: `to_voice_after_failed_sms` (an SMS that ends undelivered or failed
    is followed by a voice call, as channel `sms_then_voice`) and `next_recipient` (the rule's recipients
    form an on-call chain: only the first is notified, the next one when delivery fails or the call is not
    answered). Written as a list, a policy of timed steps (`EscalationStep`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_voice_after_failed_sms: Flag = False
    next_recipient: Flag = False
    steps: tuple[EscalationStep, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        return {"steps": value} if isinstance(value, list) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """For editors: the mapping of switches, or the list of steps."""
        return {"anyOf": [handler(schema), {"type": "array", "items": EscalationStep.model_json_schema()}]}

    @property
    def chain(self) -> bool:
        """Only the first person is notified at first: the others are the on-call chain."""
        return self.next_recipient or any(step.to == NEXT_RECIPIENT for step in self.steps)


class Rule(BaseModel):
    """One alert rule. Subclasses are the kinds; their class variables say what the kind is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What a kind declares (see `kinds`).
    TEMPLATE_FIELDS: ClassVar[Mapping[str, type]]  # name -> type of the value the evaluator passes
    READS: ClassVar[Mapping[str, Sequence[str]]]  # B1 entity -> the fields its evaluator reads
    INPUTS: ClassVar[Sequence[str]]  # snapshot or state assets (`b1/<name>`) it evaluates over
    WATCHES: ClassVar[Sequence[str]]  # snapshot assets whose changes make it alert at once
    CALENDAR: ClassVar[bool] = False  # it can become true with the calendar alone (re-evaluated at night)
    ASSET: ClassVar[str]  # its evaluation asset, `alerts/<name>`

    id: RuleId
    kind: str
    enabled: Flag = True
    channel: Channel = "sms"
    recipients: RecipientNames
    template: str
    timezone: TimeZoneName | None = None
    quiet_hours: QuietHours | None = None
    urgent: Flag = False
    escalation: Escalation = Escalation()
    digest: Digest | None = None

    @field_validator("template")
    @classmethod
    def _template_fits_the_kind(cls, template: str) -> str:
        return check_template(template, cls.model_fields["kind"].default, cls.TEMPLATE_FIELDS)

    @field_validator("escalation")
    @classmethod
    def _escalation_fits_the_channel(cls, escalation: Escalation, info: ValidationInfo) -> Escalation:
        if escalation.to_voice_after_failed_sms and info.data.get("channel") == "voice":
            raise fail("only applies when the channel sends SMS", field="to_voice_after_failed_sms")
        return escalation

    @field_validator("digest")
    @classmethod
    def _digest_is_an_sms(cls, digest: Digest | None, info: ValidationInfo) -> Digest | None:
        if digest is not None and info.data.get("channel") != "sms":
            raise fail("gathers alerts into one SMS: the rule's channel must be sms")
        escalation = info.data.get("escalation")
        if digest is not None and escalation is not None and escalation.steps:
            raise fail("and an escalation policy do not go together yet: a digest is one SMS for many alerts; "
                       "use the switches (`escalation: {to_voice_after_failed_sms: true}`) or no digest")
        return digest

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    @property
    def first_channel(self) -> str:
        """The channel of the first attempt: `sms` or `voice`."""
        return "sms" if self.channel == "sms_then_voice" else self.channel

    @property
    def escalates_to_voice(self) -> bool:
        return self.channel == "sms_then_voice" or self.escalation.to_voice_after_failed_sms

    @property
    def fields(self) -> Mapping[str, type]:
        return self.TEMPLATE_FIELDS

    def render(self, fields: Mapping[str, Any], locale: str | None = None) -> str:
        """The message text for a reader of `locale` (the recipient's; default en-US): amount fields such
        as {DocTotalText} follow it; it names the company when this process serves one of
        several. Missing or None fields render empty rather than losing the alert."""
        try:
            return render(self.template, self.TEMPLATE_FIELDS, fields, locale, current().b1twilio_company_name)
        except ValueError as exc:
            raise ValueError(f"rule '{self.id}': {exc}") from None

    def hold_until(self, now: datetime, recipient_tz: ZoneInfo | None = None,
                   channel: str | None = None) -> datetime | None:
        """None when sending on `channel` (default: the first attempt's) is allowed now, else when quiet
        hours end. Quiet hours are in the recipient's zone if set, else the rule's; an urgent rule's calls
        ring anyway, its SMS are still held."""
        if self.quiet_hours is None:
            return None
        chosen = channel or self.first_channel
        if chosen not in ("sms", "voice"):
            raise ValueError(f"channel must be 'sms' or 'voice', got {chosen!r}")
        if chosen == "voice" and self.urgent:
            return None
        tz = recipient_tz or self.tz
        return self.quiet_hours.next_end(now, tz) if self.quiet_hours.contains(now, tz) else None

    # -- how the rule shows itself (check-config, the UI) ----------------------------------------------
    def trigger(self) -> str:
        """When the rule alerts, in words."""
        raise NotImplementedError

    def parameters(self) -> dict[str, object]:
        """The rule's parameters (those of its kind, the on-call chain, the escalation policy), for the
        rules table."""
        chain = {"next_recipient": True} if self.escalation.next_recipient else {}
        steps = self.escalation.steps
        return {**chain, **({"escalation": "; ".join(step.text() for step in steps)} if steps else {})}

    def channel_text(self) -> str:
        if self.escalates_to_voice:
            return "SMS, then a voice call if the SMS fails"
        return "SMS" if self.channel == "sms" else "voice call"

    def describe(self, people: Sequence[str] | None = None) -> str:
        """One line: what this rule would do (phones masked), e.g. "overdue-30: when ... -> Sam by voice
        call; if that fails, the next in line: Jo; quiet hours ..."."""
        people = list(people if people is not None else self.recipients)
        state = "" if self.enabled else " (disabled)"
        if self.escalation.next_recipient and len(people) > 1:
            who = f"{people[0]} by {self.channel_text()}; if that fails, the next in line: {', '.join(people[1:])}"
        elif self.escalation.chain and len(people) > 1:
            who = f"{people[0]} by {self.channel_text()} (then, in order: {', '.join(people[1:])})"
        else:
            who = f"{_and(people)} by {self.channel_text()}"
        text = f"{self.id}{state}: {self.trigger()} -> {who}"
        if self.escalation.steps:
            text += "; " + "; ".join(step.text() for step in self.escalation.steps)
        if self.digest is not None:
            text += f"; {self.digest.text()}"
        if self.quiet_hours is not None:
            text += f"; quiet hours {self.quiet_hours} ({self.timezone} unless the recipient has a zone)"
            text += ": SMS held" + (", calls ring anyway (urgent)" if self.urgent else ", calls deferred")
        elif self.urgent:
            text += "; urgent"
        return text


def _and(names: Sequence[str]) -> str:
    """"Dana", "Dana and Max", "Dana, Max and Lee"."""
    if len(names) < 2:
        return names[0] if names else "nobody"
    return f"{', '.join(names[:-1])} and {names[-1]}"


def amount_text(minimum: float | None) -> str:
    return f" of at least {minimum:,.2f}" if minimum else ""
