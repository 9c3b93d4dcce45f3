"""SapB1Resource: the Dagster resource wrapping a Service Layer session (`client.SapB1Session`).

Every field may stay unset: it is then read at run time from the settings (environment, then the
encrypted secrets store), never at import.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.settings import Settings, current, named_value

_probe_sessions: dict[tuple[str | None, ...], SapB1Session] = {}
_probe_lock = threading.Lock()


def password_of(settings: Settings, purpose: str) -> str:
    """B1_PASSWORD, or the variable or stored secret B1_PASSWORD_REF names (a company of the companies file
    names its password, read afresh like any secret, so a changed password needs no restart)."""
    reference = settings.b1_password_ref
    if reference is None:
        return settings.require("b1_password", purpose)
    password = named_value(reference)
    if password is None:
        raise ConfigurationError(f"{reference} is not set: the B1 password of company "
                                 f"{settings.b1twilio_company or '?'} (its password_ref); set the environment "
                                 f"variable or store it with `b1twilio secrets set {reference} --force` ({purpose})")
    return password


class SapB1Resource(dg.ConfigurableResource):
    """Dagster resource for the B1 Service Layer: one lazily-logged-in `SapB1Session` per run.

    Every field may stay unset: it is then read at run time from the settings contract (env var, then the
    encrypted secrets store): B1_SERVICE_LAYER_URL, B1_COMPANY_DB, B1_USERNAME, B1_PASSWORD, B1_CA_BUNDLE,
    B1_TIMEZONE (default UTC). The first call makes the run's session and logs in, and
    `teardown_after_execution` logs out. Assets call `sap_b1.session()` or the
    delegating `get_all` / `get` / `count` / `post` / `patch` / `delete`.
    """

    service_layer_url: str | None = None
    company_db: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    ca_bundle: str | None = None
    timezone: str | None = None
    page_size: int = 1000
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 30.0
    renew_on_5002: bool = True
    # How long the sensors' long-lived session waits before logging in again after B1 refused the login
    # (a run's session never repeats a refused login: the run fails and says why).
    retry_refused_login_after_s: float = 300.0

    _session: SapB1Session | None = PrivateAttr(default=None)
    _logger: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """The session is made on first use: a sensor tick, which uses `probe_session`, pays nothing for a
        run's session (an HTTP client with its TLS context costs tens of milliseconds, every tick)."""
        self._logger = getattr(context, "log", None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def settings(self) -> Settings:
        """The fields that are set, the settings contract for the others, all through the same checks."""
        return current(b1_service_layer_url=self.service_layer_url, b1_company_db=self.company_db,
                       b1_username=self.username, b1_password=self.password, b1_ca_bundle=self.ca_bundle,
                       b1_timezone=self.timezone)

    def resolved_timezone(self) -> str:
        """The B1 server's time zone (UpdateDate/UpdateTime are local to it)."""
        return self.settings().b1_timezone

    def create_session(self, logger: Any = None, retry_refused_login_after_s: float | None = None) -> SapB1Session:
        """A new session from the fields, falling back to the settings contract for unset ones."""
        now, purpose = self.settings(), "SAP B1 Service Layer login"
        return SapB1Session(
            now.require("b1_service_layer_url", "SAP B1 Service Layer URL"),
            now.require("b1_company_db", purpose), now.require("b1_username", purpose),
            password_of(now, purpose), ca_bundle=now.b1_ca_bundle, page_size=self.page_size,
            max_retries=self.max_retries, backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s, timeout_s=self.timeout_s, renew_on_5002=self.renew_on_5002,
            timezone=now.b1_timezone, logger=logger, retry_refused_login_after_s=retry_refused_login_after_s,
        )

    def probe_session(self) -> SapB1Session:
        """A session kept for the life of this process, for sensors' small questions: the code server
        evaluates sensors for weeks, and logging in on every tick would cost B1 two extra requests each
        time. Short timeout and no retries, so a tick never waits long on an unreachable B1. A refused login
        is tried again every `retry_refused_login_after_s`: B1's admin can fix the user without the
        pipeline's settings changing, and the sensors must see it (self-monitoring tells the recovery)."""
        options = self.model_copy(update={"max_retries": 0, "timeout_s": min(self.timeout_s, 5.0)})
        now = options.settings()
        password = password_of(now, "SAP B1 Service Layer login")
        key = (now.b1_service_layer_url, now.b1_company_db, now.b1_username,
               hashlib.sha256(password.encode()).hexdigest(), now.b1_ca_bundle, now.b1_timezone)
        with _probe_lock:
            session = _probe_sessions.get(key)
            if session is None:
                session = _probe_sessions[key] = options.create_session(
                    retry_refused_login_after_s=self.retry_refused_login_after_s)
            return session

    def session(self) -> SapB1Session:
        """The run's session, made on first use (outside a Dagster run the caller closes it)."""
        if self._session is None:
            self._session = self.create_session(logger=self._logger)
        return self._session

    def get_all(self, entity: str, **kwargs: Any) -> Iterator[dict]:
        return self.session().get_all(entity, **kwargs)

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.session().get(path, params)

    def count(self, entity: str, filter: str | None = None) -> int:
        return self.session().count(entity, filter)

    def post(self, path: str, json: dict[str, Any]) -> dict | None:
        return self.session().post(path, json)

    def patch(self, path: str, json: dict[str, Any]) -> None:
        self.session().patch(path, json)

    def delete(self, path: str) -> None:
        self.session().delete(path)

    @property
    def requests_made(self) -> int:
        return 0 if self._session is None else self._session.requests_made

    @property
    def logins(self) -> int:
        return 0 if self._session is None else self._session.logins
