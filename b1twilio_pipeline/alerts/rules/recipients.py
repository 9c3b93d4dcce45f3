"""A person to notify, as the rules file names them: an inline E.164 number (development, the demo) or a
reference into the encrypted secrets store (`phone_ref: sam` reads setting PHONE_SAM at send time), so
production rules files hold no phone numbers."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from b1twilio_pipeline.alerts.rules.fields import LocaleName, Name, Phone, PhoneRef, TimeZoneName, fail
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.phones import is_e164, mask_phone
from b1twilio_pipeline.core.settings import named_value


def phone_secret_name(phone_ref: str) -> str:
    """Setting that holds the number for `phone_ref` (`sam` -> `PHONE_SAM`, `dana-k` -> `PHONE_DANA_K`)."""
    return "PHONE_" + phone_ref.upper().replace("-", "_")


class Recipient(BaseModel):
    """Exactly one of `phone` (inline) and `phone_ref` (secrets store) is set; `group` is the recipients
    group the person is listed under (set when the file loads, never written in it). `locale` is the
    person's own, else filled in with the company's when the file loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    phone_ref: PhoneRef | None = None
    phone: Phone | None = Field(default=None, validate_default=True)  # checked last: exactly one of the two
    timezone: TimeZoneName | None = Field(default=None, description="quiet hours in this zone, not the rule's")
    locale: LocaleName | None = Field(
        default=None, description="amounts in this person's messages read as in this locale (e.g. de-DE: "
                                  "1.200,00 €), not the company's (the top-level locale)")
    group: SkipJsonSchema[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_group_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "group" in data:
            raise fail("'group' is not a key of a person: list the person under the group instead")
        return data

    @field_validator("phone")
    @classmethod
    def _exactly_one_number(cls, phone: str | None, info: ValidationInfo) -> str | None:
        if (phone is None) == (info.data.get("phone_ref") is None):
            raise fail("give exactly one of phone (E.164) and phone_ref (secrets store)")
        return phone

    @property
    def tz(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None

    @property
    def secret_name(self) -> str | None:
        return phone_secret_name(self.phone_ref) if self.phone_ref else None

    @property
    def key(self) -> str:
        """Stable identifier for notification ids and the ledger. Derived from the reference or the person's
        place in the file, never from the number: a hash of a phone number is reversible by trying every
        number."""
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
        return mask_phone(self.phone) if self.phone else f"[{self.secret_name}]"

    def label(self) -> str:
        return f"{self.name} {self.masked}"

    def resolve_phone(self) -> str:
        """The E.164 number to dial; for `phone_ref` read at send time from setting PHONE_<REF>."""
        if self.phone:
            return self.phone
        name = self.secret_name or ""
        value = named_value(name)
        if value is None:
            raise ConfigurationError(
                f"recipient {self.name}: phone_ref '{self.phone_ref}' has no number: store it with "
                f"`b1twilio secrets set {name}` (or set the environment variable {name})")
        value = value.strip()
        if not is_e164(value):
            raise ConfigurationError(
                f"recipient {self.name}: {name} = '{mask_phone(value)}' is not an E.164 number (+ country code and "
                f"number, no spaces): fix it with `b1twilio secrets set {name}`")
        return value
