"""The HTTP layer under the official Twilio client: a base-URL override applied inside the client (so a
simulator or proxy sees exactly the requests production sends to Twilio), and the one place requests are
retried.

Retries are urllib3's, and retry only what provably did not take effect: a refused or timed-out connect
(the request never left), a 429 (Twilio refused it), and for reads also a 5xx or a dropped connection.
A create that met a 5xx or lost its connection after sending is NOT retried here: Twilio may have accepted
it, so the resource looks it up before making another (see `TwilioResource.deliver`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from requests.adapters import HTTPAdapter
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from urllib3.util.retry import Retry

READS = frozenset({"GET", "HEAD"})


class TwilioRetry(Retry):
    """429 is retried whatever the method; 5xx and read errors only for reads."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429:
            return True
        return super().is_retry(method, status_code, has_retry_after)


def retry_policy(retries: int, backoff_s: float, backoff_max_s: float) -> TwilioRetry:
    return TwilioRetry(total=retries, connect=retries, read=retries, status=retries, other=0,
                       allowed_methods=READS, status_forcelist=frozenset({429, 500, 502, 503, 504}),
                       backoff_factor=backoff_s, backoff_max=backoff_max_s, backoff_jitter=backoff_s,
                       raise_on_status=False, respect_retry_after_header=True)


class BaseUrlHttpClient(TwilioHttpClient):
    """The official HTTP client, with scheme and host of every URL replaced by `base_url` (and its path
    prepended). Region/edge host rewriting happens before this, so the override always wins."""

    def __init__(self, base_url: str | None, *, timeout: float | None, pool_size: int, retry: Retry) -> None:
        super().__init__(timeout=timeout)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
        if self.session is not None:
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None

    def rewrite(self, url: str) -> str:
        if self.base is None:
            return url
        parts = urlsplit(url)
        return urlunsplit((self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query,
                           parts.fragment))

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False, **kwargs: Any) -> Response:
        return super().request(method, self.rewrite(url), params=params, data=data, headers=headers,
                               auth=auth, timeout=timeout, allow_redirects=allow_redirects)
