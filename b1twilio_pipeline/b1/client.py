"""SAP Business One Service Layer client (`SapB1Session`); its Dagster resource is `resource.SapB1Resource`.

The session logs in lazily and once (under a lock: parallel logins fail on a real Service Layer), sends
the B1SESSION and ROUTEID cookies on every call, renews an expired session exactly once per call (also in
the middle of a paged read, continuing with the same next link), does not repeat a rejected login (B1
locks a user after a few failed logins) until `retry_refused_login_after_s` has passed, if ever, retries
5xx answers and dropped connections with bounded, jittered exponential backoff (tenacity), and follows
relative next links while asking for large pages. Messages never contain the password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import tenacity

from b1twilio_pipeline.b1.errors import SapB1AuthError, SapB1Error, SapB1Unavailable, one_line, parse_b1_error
from b1twilio_pipeline.b1.tls import tls_advice, tls_verification
from b1twilio_pipeline.core.settings import check_service_layer_url, check_timezone

RETRY_STATUSES = frozenset({500, 502, 503, 504})


class SapB1Session:
    """A Service Layer session over one `httpx.Client`; thread-safe; usable outside Dagster (CLI, tests).

    POST requests are retried like the others after a 5xx or a dropped connection: the pipeline's writes
    are idempotent by design (user-table records keyed by a deterministic Code; a repeat answers
    "already exists", see `SapB1Error.already_exists`).
    """

    def __init__(self, base_url: str, company_db: str, username: str, password: str, *,
                 ca_bundle: str | None = None, page_size: int = 1000, max_retries: int = 4,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0, timeout_s: float = 30.0,
                 renew_on_5002: bool = True, timezone: str = "UTC", logger: Any = None,
                 retry_refused_login_after_s: float | None = None) -> None:
        self.base_url = check_service_layer_url(base_url)
        self.company_db = company_db
        self.username = username
        self._password = password
        self.page_size = page_size
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.renew_on_5002 = renew_on_5002
        self.timezone = check_timezone(timezone)
        self.ca_bundle = ca_bundle
        self.session_timeout_min: int | None = None
        self._log = logger or logging.getLogger(__name__)
        self._client = httpx.Client(timeout=timeout_s, verify=tls_verification(ca_bundle))
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._cookie: str | None = None
        self._generation = 0
        self._auth_error: SapB1AuthError | None = None
        self._auth_error_at = 0.0
        self.retry_refused_login_after_s = retry_refused_login_after_s
        self.requests_made = 0
        self.logins = 0
        self.renewals = 0

    # ------------------------------------------------------------------------ public API

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
            wait = self.retry_refused_login_after_s
            if wait is None or time.monotonic() - self._auth_error_at < wait:
                raise self._auth_error
            self._auth_error = None  # the B1 admin may have fixed the user meanwhile: one more try
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
                self._auth_error, self._auth_error_at = error, time.monotonic()
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
        """Send, retrying 500/502/503/504 answers and dropped connections with jittered exponential
        backoff (tenacity); any other answer is returned for the caller to judge."""

        def attempt() -> httpx.Response:
            with self._counter_lock:
                self.requests_made += 1
            try:
                response = self._client.request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {one_line(str(exc)) or 'connection failed'}"
                if "CERTIFICATE_VERIFY_FAILED" in detail:  # configuration, not an outage: retrying cannot help
                    raise SapB1Unavailable(tls_advice(self.base_url, self.ca_bundle, detail)) from None
                raise _Transient(detail) from None
            if response.status_code in RETRY_STATUSES:
                code, message = parse_b1_error(response)
                raise _Transient(f"HTTP {response.status_code}, code {code}: {message}")
            return response

        def log_retry(state: tenacity.RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            self._log.warning(self._redact(
                f"SAP B1 {method} {_path(url)} attempt {state.attempt_number} failed "
                f"({state.outcome.exception()}); retrying in {state.next_action.sleep:.2f}s"))

        budget = self.max_retries if retries is None else retries
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_after_attempt(budget + 1),
            wait=tenacity.wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s),
            before_sleep=log_retry, reraise=True)
        try:
            return retrying(attempt)
        except _Transient as exc:
            what = "login" if is_login else f"{method} {_path(url)}"
            raise SapB1Unavailable(self._redact(
                f"SAP B1 Service Layer at {self.base_url} unavailable: {what} failed {budget + 1} times; "
                f"last error: {exc}")) from None

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


class _Transient(Exception):
    """An outage-like failure (5xx, dropped connection) that the next attempt may not meet."""


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


__all__ = ["SapB1Session"]
