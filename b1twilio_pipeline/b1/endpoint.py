"""Checks of where the Service Layer is and how it is trusted, made once when a session is created, so
a wrong setting fails at start with a sentence naming the setting instead of at the first request."""

from __future__ import annotations

import os
import ssl
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from b1twilio_pipeline.b1.errors import one_line
from b1twilio_pipeline.core.settings import ConfigurationError


def check_base_url(url: str) -> str:
    url = url.rstrip("/")
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ConfigurationError(f"B1_SERVICE_LAYER_URL {url!r} is not an http(s) URL: "
                                 "use e.g. https://b1.example.com:50000/b1s/v1")
    if not split.path.endswith(("/b1s/v1", "/b1s/v2")):
        raise ConfigurationError(f"B1_SERVICE_LAYER_URL {url!r} must end with /b1s/v1 or /b1s/v2, "
                                 "e.g. https://b1.example.com:50000/b1s/v1")
    return url


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"B1_TIMEZONE {name!r} is not a time zone: use an IANA name such as "
                                 "'Europe/Berlin'") from None
    return name


def tls_verification(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """Certificate verification, never off: the system trust store, or a CA bundle for self-signed B1."""
    if not ca_bundle:
        return True
    if not os.path.isfile(ca_bundle):
        raise ConfigurationError(f"B1_CA_BUNDLE {ca_bundle!r} does not exist: point it at a PEM file with "
                                 "the CA certificate of the B1 server")
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"B1_CA_BUNDLE {ca_bundle!r} is not a readable PEM CA bundle: "
                                 f"{one_line(str(exc))}") from None


def tls_advice(base_url: str, ca_bundle: str | None, detail: str) -> str:
    """What to fix when the server's certificate is refused: the host name, or the trust."""
    host = urlsplit(base_url).hostname
    if "mismatch" in detail.lower() or "not valid for" in detail.lower():
        return (f"SAP B1 Service Layer at {base_url}: its TLS certificate is not valid for host "
                f"'{host}' ({detail}); use the host name the certificate names in B1_SERVICE_LAYER_URL")
    if ca_bundle:
        return (f"SAP B1 Service Layer at {base_url}: its TLS certificate is not trusted by B1_CA_BUNDLE "
                f"{ca_bundle} ({detail}); put the CA that signed the B1 server's certificate in that file")
    return (f"SAP B1 Service Layer at {base_url}: its TLS certificate is not trusted ({detail}); "
            "set B1_CA_BUNDLE to the PEM CA bundle of the B1 server")
