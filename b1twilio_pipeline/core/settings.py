"""Every setting the pipeline reads, in one model: its environment variable, default and check.

A setting comes from its environment variable; when that is unset or empty, from the encrypted secrets
store (`core.secrets_store`); else the default. `current()` resolves them afresh on every call (at run
time, never at import), so a changed environment or a `b1twilio secrets set` reaches the next run
without a restart. A malformed value is a one-line ConfigurationError naming the variable and what to
put there; secrets are never echoed in it and phone numbers only masked.

Two variables configure the store itself and so can only come from the environment:
B1TWILIO_SECRETS_FILE and B1TWILIO_SECRET_KEY. Recipients' numbers (`PHONE_<REF>`) are named by the rules
file, not by this model: `named_value` reads them from the same two places.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.phones import is_e164, mask_phone
from b1twilio_pipeline.core.secrets_store import KEY_ENV, SecretsStoreError, read_secrets

__all__ = ["ConfigurationError", "Settings", "check_service_layer_url", "check_storable", "check_timezone",
           "current", "is_phone_setting", "named_value"]

WINDOW_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)
REFRESH_MINUTES = (5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)

STORABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
# A company's id: short and stable, it becomes part of asset keys, run tags, store names and audit Codes.
COMPANY_ID = r"^[a-z][a-z0-9]{1,7}$"
Problem = Callable[[Any], str | None]  # what is wrong with a value, or None


def _service_layer_problem(url: str) -> str | None:
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        return "is not an http(s) URL: use e.g. https://b1.example.com:50000/b1s/v1"
    if not split.path.endswith(("/b1s/v1", "/b1s/v2")):
        return "must end with /b1s/v1 or /b1s/v2, e.g. https://b1.example.com:50000/b1s/v1"
    return None


def _zone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "is not a time zone: use an IANA name such as 'Europe/Berlin'"
    return None


def _url_problem(url: str) -> str | None:
    split = urlsplit(url)
    return None if split.scheme in ("http", "https") and split.netloc else "is not an http(s) URL"


def _phone_problem(number: str) -> str | None:
    return None if is_e164(number) else "is not an E.164 number: '+', country code and number, no spaces"


def _basic_user_problem(name: str) -> str | None:
    """HTTP Basic carries `user:password`: a colon in the user would split it wrongly."""
    if ":" in name or not name.isprintable() or len(name) > 64:
        return "must be at most 64 printable characters without ':' (HTTP Basic authentication)"
    return None


def _window_start_problem(text: str) -> str | None:
    try:
        datetime.strptime(text, "%Y-%m-%d-%H:%M")
    except ValueError:
        return "is not a window start: use YYYY-MM-DD-HH:MM, e.g. 2026-11-01-00:00"
    return None


def _sid_problem(prefix: str, where: str) -> Problem:
    def problem(sid: str) -> str | None:
        shaped = len(sid) == 34 and sid.startswith(prefix) and all(c in "0123456789abcdefABCDEF" for c in sid[2:])
        return None if shaped else f"must look like {prefix} followed by 32 hex digits: copy it from {where}"
    return problem


def _one_of(choices: tuple[int, ...]) -> Problem:
    return lambda value: None if value in choices else f"is not allowed: use one of {', '.join(map(str, choices))}"


def _checked(problem_of: Problem) -> AfterValidator:
    """A pydantic validator from a function that names the problem of a value."""

    def check(value: Any) -> Any:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value
    return AfterValidator(check)


def check_service_layer_url(url: str) -> str:
    """The Service Layer root without a trailing slash (also for a URL given in resource config)."""
    url = url.rstrip("/")
    problem = _service_layer_problem(url)
    if problem:
        raise ConfigurationError(f"B1_SERVICE_LAYER_URL={url!r} {problem}")
    return url


def check_timezone(name: str, setting: str = "B1_TIMEZONE") -> str:
    problem = _zone_problem(name)
    if problem:
        raise ConfigurationError(f"{setting}={name!r} {problem}")
    return name


ServiceLayerUrl = Annotated[str, AfterValidator(lambda url: url.rstrip("/")), _checked(_service_layer_problem)]
TimeZone = Annotated[str, _checked(_zone_problem)]
HttpUrl = Annotated[str, _checked(_url_problem)]
Phone = Annotated[str, _checked(_phone_problem)]
Count = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """The settings contract (the README's settings table explains each to operators)."""

    model_config = SettingsConfigDict(case_sensitive=False, env_ignore_empty=True, extra="ignore", frozen=True)

    # SAP Business One Service Layer
    b1_service_layer_url: ServiceLayerUrl | None = None
    b1_company_db: str | None = None
    b1_username: str | None = None
    b1_password: SecretStr | None = None
    b1_password_ref: Annotated[str, Field(pattern=STORABLE_NAME.pattern)] | None = Field(
        None, description="the variable or stored secret holding the password, instead of B1_PASSWORD")
    b1_ca_bundle: str | None = Field(None, description="PEM CA bundle when B1 uses a self-signed certificate")
    b1_timezone: TimeZone = Field("UTC", description="the B1 server's zone: UpdateDate/UpdateTime are local")
    b1_webhook_username: Annotated[str, _checked(_basic_user_problem)] | None = Field(
        None, description="Basic user B1's webhooks authenticate with; unset: no webhooks, polling only")
    b1_webhook_password: SecretStr | None = None
    # Twilio
    twilio_account_sid: Annotated[str, _checked(_sid_problem("AC", "the Twilio console"))] | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_key: Annotated[str, _checked(_sid_problem("SK", "API keys in the Twilio console"))] | None = None
    twilio_api_secret: SecretStr | None = None
    twilio_from_number: Phone | None = Field(None, description="SMS sender, unless a Messaging Service is set")
    twilio_messaging_service_sid: Annotated[
        str, _checked(_sid_problem("MG", "Messaging > Services in the Twilio console"))] | None = None
    twilio_voice_from_number: Phone | None = Field(None, description="caller ID; default TWILIO_FROM_NUMBER")
    twilio_region: str | None = None
    twilio_edge: str | None = None
    twilio_api_base_url: HttpUrl | None = Field(None, description="another Twilio API root (tests, proxies)")
    twilio_status_callback_url: HttpUrl | None = Field(
        None, description="public URL of the status receiver; default {B1TWILIO_PUBLIC_URL}/twilio/status")
    # The pipeline
    b1twilio_config: str | None = Field(None, description="the alert rules file")
    b1twilio_companies: str | None = Field(
        None, description="the companies file, for many B1 companies; unset: one, from the B1_ settings")
    b1twilio_company: Annotated[str, Field(pattern=COMPANY_ID)] | None = Field(
        None, description="the company a code location serves: prefixes its asset keys, tags its runs")
    b1twilio_company_name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="the company's name for messages ({company}); set with B1TWILIO_COMPANY")
    b1twilio_public_url: HttpUrl | None = Field(
        None, description="public base URL of `b1twilio receiver` (statuses, SMS replies, keypresses)")
    b1twilio_database_url: str | None = Field(None, description="the store; default a SQLite file")
    b1twilio_timezone: TimeZone | None = Field(None, description="zone the partitions are cut in")
    b1twilio_window_minutes: Annotated[int, _checked(_one_of(WINDOW_MINUTES))] = 15
    b1twilio_partitions_start: Annotated[str, _checked(_window_start_problem)] | None = Field(
        None, description="first window; default the window of the deployment's first start")
    b1twilio_state_refresh_minutes: Annotated[int, _checked(_one_of(REFRESH_MINUTES))] = 60
    b1twilio_change_check_seconds: Count = 30
    b1twilio_notification_check_seconds: Count = 120
    b1twilio_send_max_attempts: Count = 8
    b1twilio_send_retry_seconds: Count = 30
    b1twilio_send_lease_seconds: Count = 600
    b1twilio_receipt_max_hours: Count = 72
    b1twilio_admin_group: str = "admins"
    b1twilio_blind_after_minutes: Count = Field(
        15, description="how long B1 may not answer, or an entity go unpolled, before the admins are told")
    b1twilio_retention_days: Count = 14
    b1twilio_notification_retention_days: Count = 400

    @property
    def company_timezone(self) -> str:
        """The zone partitions are cut in: B1TWILIO_TIMEZONE, else the B1 server's (never the rules file's,
        so editing alert rules cannot change a partition key)."""
        return self.b1twilio_timezone or self.b1_timezone

    def require(self, field: str, purpose: str) -> str:
        """The value of `field`, or a ConfigurationError saying how to set it."""
        value = getattr(self, field)
        if value is None:
            name = field.upper()
            raise ConfigurationError(f"{name} is not set: set the environment variable or store it with "
                                     f"`b1twilio secrets set {name}` ({purpose})")
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every variable name the model reads."""
        return tuple(field.upper() for field in cls.model_fields)

    @classmethod
    def names_of(cls, kind: object) -> tuple[str, ...]:
        """The variables of one type (`Phone`, `SecretStr`)."""
        return tuple(name.upper() for name, info in cls.model_fields.items() if kind in get_args(info.annotation))

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SecretsStoreSource(settings_cls)


class _SecretsStoreSource(PydanticBaseSettingsSource):
    """The encrypted store (decrypted once per file version), for the settings it holds."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return read_secrets().get(field_name.upper()), field_name, False

    def __call__(self) -> dict[str, Any]:
        stored = read_secrets()
        return {name: stored[name.upper()] for name in self.settings_cls.model_fields if stored.get(name.upper())}


_built: dict[tuple[Any, ...], Settings] = {}
_built_lock = threading.Lock()
_serving: dict[str, str] = {}  # see `serve`


def serve(values: dict[str, str]) -> None:
    """Make this process one company's (`company_location.company_settings`): its values stand in for the
    environment's from now on. A code location's process serves one company for its whole life; asking it
    to serve another is a bug that would mix two companies' data, and is refused."""
    with _built_lock:
        if _serving and _serving != values:
            raise ConfigurationError(f"this process serves company {_serving.get('b1twilio_company')!r} already: "
                                     "each company needs its own code location")
        _serving.update(values)
        _built.clear()


def current(**given: Any) -> Settings:
    """The settings now: `given` values (resource config; None or "" means not given, as an empty variable
    does), then the company's this process serves (`serve`), the environment, the store and the defaults,
    all through the same checks.

    Building the model costs milliseconds, and sensors ask several times a tick all day long: a model is
    reused while what it was built from (the given values, the variables, the store's content) is the same,
    so a changed variable or stored secret still shows at the next call."""
    given = {**_serving, **{name: value for name, value in given.items() if value not in (None, "")}}
    names = _setting_names()
    key = (tuple(sorted((name, repr(value)) for name, value in given.items())),
           tuple(sorted((name.upper(), value) for name, value in os.environ.items() if name.upper() in names)),
           tuple(sorted(read_secrets().items())))
    with _built_lock:
        if (found := _built.get(key)) is not None:
            return found
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigurationError(_one_line(exc)) from None
    with _built_lock:
        if len(_built) >= 64:  # resources with different overrides, changed settings: a few at a time
            _built.clear()
        _built[key] = settings
    return settings


@functools.cache
def _setting_names() -> frozenset[str]:
    return frozenset(Settings.names())


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors()
    name = str(errors[0]["loc"][0]).upper() if errors[0]["loc"] else "a setting"
    message = str(errors[0]["msg"])
    if errors[0]["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    else:  # pydantic's own words ("Input should be a valid integer, ...")
        message = f"is not valid: {message[:1].lower()}{message[1:]}"
    value = errors[0].get("input")
    if name in Settings.names_of(Phone) and isinstance(value, str):
        shown = f"={mask_phone(value)!r}"
    elif isinstance(value, str | int) and name not in Settings.names_of(SecretStr):
        shown = f"={value!r}"
    else:
        shown = ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}{shown} {message}{more}"


def named_value(name: str) -> str | None:
    """Environment variable `name`, else the store's value: for names the rules file makes (PHONE_<REF>)."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    return read_secrets().get(name) or None


def is_phone_setting(name: str) -> bool:
    """Whether the value is a phone number: masked when shown, checked as E.164 when stored."""
    return name.startswith("PHONE_") or name in Settings.names_of(Phone)


def check_storable(name: str, value: str, *, allow_unknown: bool = False) -> None:
    """Refuse to store a name nothing reads (a typo would silently leave a setting unset) or a malformed
    number."""
    if name == KEY_ENV:
        raise SecretsStoreError(f"{KEY_ENV} cannot be kept in the store it unlocks: export it or use the keyring")
    if not STORABLE_NAME.match(name):
        raise SecretsStoreError(f"'{name}' is not a setting name: use A-Z, 0-9 and _ like B1_PASSWORD")
    known = Settings.names()
    if not (allow_unknown or name in known or (name.startswith("PHONE_") and len(name) > 6)):
        raise SecretsStoreError(f"{name} is not a setting the pipeline reads (known: {', '.join(known)}, "
                                "PHONE_<REF>); use --force to store it anyway")
    if not value:
        raise SecretsStoreError(f"the value for {name} is empty")
    if is_phone_setting(name) and not is_e164(value):
        raise SecretsStoreError(f"{name}: '{mask_phone(value)}' {_phone_problem(value)}")
