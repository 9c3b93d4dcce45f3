"""The Twilio settings one resource runs with: each field as given, else the setting of the same name
(environment, then the encrypted secrets store), resolved when a run starts, never at import. A missing or
malformed setting is a one-line ConfigurationError naming the variable to set."""

from __future__ import annotations

from dataclasses import dataclass

from b1twilio_pipeline.core.settings import current
from b1twilio_pipeline.notifications.public_urls import STATUS_PATH, VOICE_PATH, join


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
    public_url: str | None  # the receiver's public base: people can acknowledge only when it is set

    @property
    def keypress_url(self) -> str | None:
        """Where a call's "press 1 to acknowledge" goes."""
        return join(self.public_url, VOICE_PATH) if self.public_url else None


def resolve(*, account_sid: str | None, auth_token: str | None, api_key: str | None, api_secret: str | None,
            from_number: str | None, messaging_service_sid: str | None, voice_from_number: str | None,
            region: str | None, edge: str | None, api_base_url: str | None,
            status_callback_url: str | None, public_url: str | None) -> TwilioConfig:
    """The fields that are set, the settings for the others, all through the settings' checks.
    `status_callback_url=""` turns callbacks off even when TWILIO_STATUS_CALLBACK_URL is set; without it,
    callbacks go to the receiver at B1TWILIO_PUBLIC_URL when that is set. `public_url=""` means no
    receiver at all (no callbacks, nothing to acknowledge with)."""
    now = current(twilio_account_sid=account_sid, twilio_auth_token=auth_token, twilio_api_key=api_key,
                  twilio_api_secret=api_secret, twilio_from_number=from_number,
                  twilio_messaging_service_sid=messaging_service_sid, twilio_voice_from_number=voice_from_number,
                  twilio_region=region, twilio_edge=edge, twilio_api_base_url=api_base_url,
                  twilio_status_callback_url=status_callback_url or None, b1twilio_public_url=public_url or None)
    sid = now.require("twilio_account_sid", "your Account SID, AC..., from the Twilio console")
    if api_key is not None or (auth_token is None and now.twilio_api_key):
        username = now.require("twilio_api_key", "an API key SID, SK...")
        password = now.require("twilio_api_secret", "required with TWILIO_API_KEY")
    else:
        username, password = sid, now.require("twilio_auth_token", "or TWILIO_API_KEY and TWILIO_API_SECRET")
    public = None if public_url == "" else now.b1twilio_public_url
    return TwilioConfig(
        account_sid=sid, username=username, password=password, from_number=now.twilio_from_number,
        messaging_service_sid=now.twilio_messaging_service_sid,
        voice_from_number=now.twilio_voice_from_number or now.twilio_from_number, region=now.twilio_region,
        edge=now.twilio_edge, api_base_url=now.twilio_api_base_url,
        status_callback_url=None if status_callback_url == "" else (
            now.twilio_status_callback_url or (join(public, STATUS_PATH) if public else None)),
        public_url=public,
    )
