"""How the Service Layer's certificate is trusted (never not at all), and what to fix when it is refused."""

from __future__ import annotations

import os
import ssl
from urllib.parse import urlsplit

from b1twilio_pipeline.b1.errors import one_line
from b1twilio_pipeline.core.settings import ConfigurationError


def tls_verification(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """Certificate verification, never off: the system trust store, or a CA bundle for self-signed B1."""
    if not ca_bundle:
        return True
    if not os.path.isfile(ca_bundle):
        raise ConfigurationError(f"B1_CA_BUNDLE={ca_bundle!r} does not exist: point it at a PEM file with "
                                 "the CA certificate of the B1 server")
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"B1_CA_BUNDLE={ca_bundle!r} is not a readable PEM CA bundle: "
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
