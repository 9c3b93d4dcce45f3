"""The Twilio settings one resource runs with: each field as given, else the setting of the same name
(environment, then the encrypted secrets store), resolved when a run starts, never at import. A missing or
malformed setting is a one-line ConfigurationError naming the variable to set."""

from __future__ import annotations

import re
from dataclasses import dataclass

from b1twilio_pipeline.core.errors import ConfigurationError
from b1twilio_pipeline.core.settings import setting

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class TwilioConfig:
    """Never logged: holds the credential (`password`: the Auth Token or the API key's secret)."""

    account_sid: str
    username: str
    password: str
    from_number: str | None
    messaging_service_sid: str | None
    voice_from_number: str | None
    region: str | None
    edge: str | None
    api_base_url: str | None
    status_callback_url: str | None


def _pick(value: str | None, name: str) -> str | None:
    return value if value is not None else setting(name)


def resolve(*, account_sid: str | None, auth_token: str | None, api_key: str | None, api_secret: str | None,
            from_number: str | None, messaging_service_sid: str | None, voice_from_number: str | None,
            region: str | None, edge: str | None, api_base_url: str | None,
            status_callback_url: str | None) -> TwilioConfig:
    """`status_callback_url=""` turns callbacks off even when TWILIO_STATUS_CALLBACK_URL is set."""
    sid = _pick(account_sid, "TWILIO_ACCOUNT_SID")
    if not sid:
        raise ConfigurationError("TWILIO_ACCOUNT_SID is not set: set it (env or `b1twilio secrets set "
                                 "TWILIO_ACCOUNT_SID`) to your Account SID (AC...)")
    if not _ACCOUNT_SID.match(sid):
        raise ConfigurationError("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits: copy the "
                                 "Account SID from the Twilio console")
    username, password = _credentials(sid, auth_token, api_key, api_secret)
    service = _pick(messaging_service_sid, "TWILIO_MESSAGING_SERVICE_SID") or None
    if service and not _SERVICE_SID.match(service):
        raise ConfigurationError("TWILIO_MESSAGING_SERVICE_SID must look like MG followed by 32 hex digits: copy "
                                 "it from Messaging > Services in the Twilio console")
    sender = _pick(from_number, "TWILIO_FROM_NUMBER") or None
    return TwilioConfig(
        account_sid=sid, username=username, password=password, from_number=sender, messaging_service_sid=service,
        voice_from_number=_pick(voice_from_number, "TWILIO_VOICE_FROM_NUMBER") or sender,
        region=_pick(region, "TWILIO_REGION") or None, edge=_pick(edge, "TWILIO_EDGE") or None,
        api_base_url=_pick(api_base_url, "TWILIO_API_BASE_URL") or None,
        status_callback_url=_pick(status_callback_url, "TWILIO_STATUS_CALLBACK_URL") or None,
    )


def _credentials(account_sid: str, auth_token: str | None, api_key: str | None,
                 api_secret: str | None) -> tuple[str, str]:
    """API key + secret (fields first) or Account SID + Auth Token."""
    if api_key is not None or (auth_token is None and setting("TWILIO_API_KEY")):
        key = _pick(api_key, "TWILIO_API_KEY") or ""
        secret = _pick(api_secret, "TWILIO_API_SECRET")
        if not _API_KEY_SID.match(key):
            raise ConfigurationError("TWILIO_API_KEY must look like SK followed by 32 hex digits")
        if not secret:
            raise ConfigurationError("TWILIO_API_SECRET is not set: it is required with TWILIO_API_KEY (env or "
                                     "`b1twilio secrets set TWILIO_API_SECRET`)")
        return key, secret
    token = _pick(auth_token, "TWILIO_AUTH_TOKEN")
    if not token:
        raise ConfigurationError("TWILIO_AUTH_TOKEN is not set: set it, or TWILIO_API_KEY and TWILIO_API_SECRET "
                                 "(env or `b1twilio secrets set ...`)")
    return account_sid, token
