"""SAP Business One Service Layer client (`SapB1Session`); its Dagster resource is `resource.SapB1Resource`.

The session logs in lazily and once (under a lock: parallel logins fail on a real Service Layer), sends
the B1SESSION and ROUTEID cookies on every call, renews an expired session exactly once per call (also in
the middle of a paged read, continuing with the same next link), never retries a rejected login, retries
5xx answers and dropped connections with bounded exponential backoff, and follows relative next links
while asking for large pages. Messages never contain the password.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Iterator
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from b1twilio_pipeline.core.settings import ConfigurationError

RETRY_STATUSES = frozenset({500, 502, 503, 504})


class SapB1Error(Exception):
    """A Service Layer call failed. `status` is the HTTP status, `code` B1's error code (an int when
    numeric: v2 sends it as a string), `b1_message` B1's message text."""

    def __init__(self, message: str, *, status: int | None = None, code: int | str | None = None,
                 b1_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.b1_message = b1_message

    @property
    def already_exists(self) -> bool:
        """True for B1's "this entry already exists" answer (a repeated create of a table, field or record),
        which idempotent writers treat as success."""
        return self.code == -2035 or "already exist" in (self.b1_message or "").lower()


class SapB1AuthError(SapB1Error):
    """The Service Layer rejected the login (wrong user, password or company database). Not retried."""


class SapB1Unavailable(SapB1Error):
    """The Service Layer kept answering 5xx or dropping connections after the whole retry budget."""


def parse_b1_error(response: httpx.Response) -> tuple[int | str | None, str]:
    """(code, message) from a v1 or v2 error body; the raw text when the body is not B1's JSON."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        text = " ".join(response.text.split())[:200]
        return None, text or response.reason_phrase
    code: int | str | None = error.get("code")
    if isinstance(code, str):
        code = int(code) if code.lstrip("-").isdigit() else code
    message = error.get("message")
    if isinstance(message, dict):
        message = message.get("value")
    return code, " ".join(str(message or "").split())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class SapB1Session:
    """A Service Layer session over one `httpx.Client`; thread-safe; usable outside Dagster (CLI, tests).

    POST requests are retried like the others after a 5xx or a dropped connection: the pipeline's writes
    are idempotent by design (user-table records keyed by a deterministic Code; a repeat answers
    "already exists", see `SapB1Error.already_exists`).
    """

    def __init__(self, base_url: str, company_db: str, username: str, password: str, *,
                 ca_bundle: str | None = None, page_size: int = 1000, max_retries: int = 4,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0, timeout_s: float = 30.0,
                 renew_on_5002: bool = True, timezone: str = "UTC", logger: Any = None) -> None:
        self.base_url = _check_base_url(base_url)
        self.company_db = company_db
        self.username = username
        self._password = password
        self.page_size = page_size
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.renew_on_5002 = renew_on_5002
        self.timezone = _check_timezone(timezone)
        self.ca_bundle = ca_bundle
        self.session_timeout_min: int | None = None
        self._log = logger or logging.getLogger(__name__)
        self._client = httpx.Client(timeout=timeout_s, verify=_verify(ca_bundle))
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._cookie: str | None = None
        self._generation = 0
        self._auth_error: SapB1AuthError | None = None
        self.requests_made = 0
        self.logins = 0
        self.renewals = 0

    # ------------------------------------------------------------------------ public API

    @property
    def logged_in(self) -> bool:
        return self._cookie is not None

    def get_all(self, entity: str, *, filter: str | None = None,
                select: str | list[str] | tuple[str, ...] | None = None, orderby: str | None = None,
                top: int | None = None) -> Iterator[dict]:
        """Every record of a collection, following relative next links until a page carries none (or is
        empty), asking for `page_size` records per page. A session that expires mid-walk is renewed and
        the same page is requested again, so no record is lost or repeated by the client."""
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if select:
            params["$select"] = select if isinstance(select, str) else ",".join(select)
        if orderby:
            params["$orderby"] = orderby
        if top is not None:
            params["$top"] = str(top)
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"}
        url: str | None = self._url(entity)
        query: dict[str, str] | None = params
        seen_links: set[str] = set()
        while url is not None:
            payload = self._json(self._call("GET", url, params=query, headers=headers))
            rows = payload.get("value") if isinstance(payload, dict) else None
            if not isinstance(rows, list):
                raise SapB1Error(f"SAP B1 GET {entity}: the answer has no 'value' list", status=200)
            yield from rows
            link = payload.get("odata.nextLink") or payload.get("@odata.nextLink")
            if not link or not rows:
                return
            if link in seen_links:
                raise SapB1Error(f"SAP B1 GET {entity}: the server repeated next link {link!r}")
            seen_links.add(link)
            url, query = urljoin(self.base_url + "/", link), None
            if _origin(url) != _origin(self.base_url):  # the session cookie must never leave for elsewhere
                raise SapB1Error(f"SAP B1 GET {entity}: the next link points to {_origin(url)}, not to the "
                                 f"Service Layer at {_origin(self.base_url)}: not followed (check the proxy or "
                                 "load balancer in front of B1)")

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """One GET: the decoded JSON, or the text of a plain-text answer (`Entity/$count`)."""
        response = self._call("GET", self._url(path), params=params)
        if "json" in response.headers.get("content-type", ""):
            return self._json(response)
        return response.text

    def count(self, entity: str, filter: str | None = None) -> int:
        """`GET Entity/$count` with an optional filter."""
        text = self.get(f"{entity}/$count", params={"$filter": filter} if filter else None)
        return int(str(text).strip())

    def post(self, path: str, json: dict[str, Any]) -> dict | None:
        """POST a JSON body; the created entity, or None for an empty answer."""
        response = self._call("POST", self._url(path), json=json)
        return self._json(response) if response.content else None

    def patch(self, path: str, json: dict[str, Any]) -> None:
        self._call("PATCH", self._url(path), json=json)

    def delete(self, path: str) -> None:
        self._call("DELETE", self._url(path))

    def logout(self) -> None:
        """End the session on the server (one attempt; a failure is only logged, since the session will
        time out anyway). Safe to call when not logged in."""
        with self._lock:
            cookie, self._cookie = self._cookie, None
        if cookie is None:
            return
        try:
            response = self._send("POST", self._url("Logout"), headers={"Cookie": cookie}, retries=0)
            if response.is_error:
                code, message = parse_b1_error(response)
                self._log.warning(f"SAP B1 logout answered HTTP {response.status_code} ({code}: {message})")
        except SapB1Unavailable as exc:
            self._log.warning(f"SAP B1 logout failed: {exc}")

    def close(self) -> None:
        """Log out and release the connection pool."""
        try:
            self.logout()
        finally:
            self._client.close()

    def __enter__(self) -> SapB1Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SapB1Session({self.base_url!r}, company_db={self.company_db!r}, username={self.username!r})"

    # ------------------------------------------------------------------------ session

    def _ensure_session(self) -> tuple[int, str]:
        generation = self._generation  # read before the cookie: a stale pair can only skip a renewal
        cookie = self._cookie
        if cookie is not None:
            return generation, cookie
        with self._lock:
            if self._cookie is None:
                self._login_locked()
            assert self._cookie is not None
            return self._generation, self._cookie

    def _renew(self, generation: int) -> None:
        """Log in again unless another thread already did since `generation` failed."""
        with self._lock:
            if self._generation == generation:
                self._cookie = None
                self.renewals += 1
                self._log.info(f"SAP B1 session expired; logging in again as '{self.username}'")
                self._login_locked()

    def _login_locked(self) -> None:
        if self._auth_error is not None:
            raise self._auth_error
        credentials = {"CompanyDB": self.company_db, "UserName": self.username, "Password": self._password}
        with self._counter_lock:
            self.logins += 1
        response = self._send("POST", self._url("Login"), json=credentials, is_login=True)
        if response.is_error:
            code, message = parse_b1_error(response)
            error_class = SapB1AuthError if response.status_code in (400, 401, 403) else SapB1Error
            error = error_class(self._redact(
                f"SAP B1 login failed for user '{self.username}' on company database '{self.company_db}' at "
                f"{self.base_url}: HTTP {response.status_code}, code {code}: {message}; check B1_USERNAME, "
                f"B1_PASSWORD and B1_COMPANY_DB"), status=response.status_code, code=code,
                b1_message=self._redact(message))
            if isinstance(error, SapB1AuthError):
                self._auth_error = error
            raise error
        cookies = _set_cookies(response)
        payload = self._json(response)
        if not isinstance(payload, dict):
            payload = {}
        session_id = cookies.get("B1SESSION") or payload.get("SessionId")
        if not session_id:
            raise SapB1Error(f"SAP B1 login at {self.base_url} answered without a session id",
                             status=response.status_code)
        parts = [f"B1SESSION={session_id}"]
        if cookies.get("ROUTEID"):
            parts.append(f"ROUTEID={cookies['ROUTEID']}")
        self._cookie = "; ".join(parts)
        self._generation += 1
        if isinstance(payload.get("SessionTimeout"), int | float):
            self.session_timeout_min = int(payload["SessionTimeout"])

    def _session_expired(self, response: httpx.Response) -> bool:
        if response.status_code == 401:
            return True
        if self.renew_on_5002 and response.status_code >= 400:
            code, message = parse_b1_error(response)
            return code == -5002 and "session" in message.lower()
        return False

    # ------------------------------------------------------------------------ transport

    def _call(self, method: str, url: str, *, params: dict[str, str] | None = None,
              json: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """One logical call: ensure a session, send (with retries), renew once on session expiry."""
        renewed = False
        while True:
            generation, cookie = self._ensure_session()
            response = self._send(method, url, params=params, json=json,
                                  headers={**(headers or {}), "Cookie": cookie})
            if self._session_expired(response):
                if renewed:
                    raise self._error(method, url, response, "rejected again right after a fresh login")
                self._renew(generation)
                renewed = True
                continue
            if response.is_error:
                raise self._error(method, url, response)
            return response

    def _send(self, method: str, url: str, *, params: dict[str, str] | None = None,
              json: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
              retries: int | None = None, is_login: bool = False) -> httpx.Response:
        """Send with bounded exponential backoff on 500/502/503/504 and connection errors."""
        budget = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            attempt += 1
            with self._counter_lock:
                self.requests_made += 1
            try:
                response = self._client.request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {_one_line(str(exc)) or 'connection failed'}"
                if "CERTIFICATE_VERIFY_FAILED" in last:  # configuration, not an outage: retrying cannot help
                    raise SapB1Unavailable(self._tls_advice(last)) from None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                code, message = parse_b1_error(response)
                last = f"HTTP {response.status_code}, code {code}: {message}"
            if attempt > budget:
                what = "login" if is_login else f"{method} {_path(url)}"
                raise SapB1Unavailable(self._redact(
                    f"SAP B1 Service Layer at {self.base_url} unavailable: {what} failed {attempt} times; "
                    f"last error: {last}"))
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2
            self._log.warning(self._redact(
                f"SAP B1 {method} {_path(url)} attempt {attempt} failed ({last}); retrying in {delay:.2f}s"))
            time.sleep(delay)

    def _tls_advice(self, detail: str) -> str:
        """What to fix when the server's certificate is refused: the host name, or the trust."""
        host = urlsplit(self.base_url).hostname
        if "mismatch" in detail.lower() or "not valid for" in detail.lower():
            return (f"SAP B1 Service Layer at {self.base_url}: its TLS certificate is not valid for host "
                    f"'{host}' ({detail}); use the host name the certificate names in B1_SERVICE_LAYER_URL")
        if self.ca_bundle:
            return (f"SAP B1 Service Layer at {self.base_url}: its TLS certificate is not trusted by B1_CA_BUNDLE "
                    f"{self.ca_bundle} ({detail}); put the CA that signed the B1 server's certificate in that file")
        return (f"SAP B1 Service Layer at {self.base_url}: its TLS certificate is not trusted ({detail}); "
                "set B1_CA_BUNDLE to the PEM CA bundle of the B1 server")

    def _error(self, method: str, url: str, response: httpx.Response, note: str = "") -> SapB1Error:
        code, message = parse_b1_error(response)
        text = f"SAP B1 {method} {_path(url)} failed: HTTP {response.status_code}, code {code}: {message}"
        return SapB1Error(self._redact(text + (f" ({note})" if note else "")), status=response.status_code,
                          code=code, b1_message=self._redact(message))

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise SapB1Error(f"SAP B1 answered {_path(str(response.url))} with invalid JSON",
                             status=response.status_code) from None

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if len(self._password) >= 3 else text


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _path(url: str) -> str:
    """The resource path without query, for messages (queries can be long)."""
    return urlsplit(url).path


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        cookies.update({name: morsel.value for name, morsel in jar.items()})
    return cookies


def _check_base_url(url: str) -> str:
    url = url.rstrip("/")
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ConfigurationError(f"B1_SERVICE_LAYER_URL {url!r} is not an http(s) URL: "
                                 "use e.g. https://b1.example.com:50000/b1s/v1")
    if not split.path.endswith(("/b1s/v1", "/b1s/v2")):
        raise ConfigurationError(f"B1_SERVICE_LAYER_URL {url!r} must end with /b1s/v1 or /b1s/v2, "
                                 "e.g. https://b1.example.com:50000/b1s/v1")
    return url


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"B1_TIMEZONE {name!r} is not a time zone: use an IANA name such as "
                                 "'Europe/Berlin'") from None
    return name


def _verify(ca_bundle: str | None) -> ssl.SSLContext | bool:
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
                                 f"{_one_line(str(exc))}") from None


__all__ = ["SapB1AuthError", "SapB1Error", "SapB1Session", "SapB1Unavailable", "parse_b1_error"]
