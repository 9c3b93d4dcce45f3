"""The Service Layer protocol over HTTP: sessions, envelopes, paging headers and errors of v1 and v2.

One route takes every request under `/b1s/v1` (or v2), because OData resource paths (`Items('A00001')`,
`Invoices/$count`, `U_B1TW_AUDIT('k1')`) are parsed here rather than by Starlette. The work (queries over
100,000 records, JSON encoding, injected login latency) runs in Starlette's thread pool, never on the
event loop.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from b1twilio_sim.sap_b1_data import ENTITIES
from b1twilio_sim.sap_b1_errors import B1Failure, bad_request, error_body, not_found, unrecognized_path
from b1twilio_sim.sap_b1_odata import parse_select
from b1twilio_sim.sap_b1_webhooks import ENTITY_SET as EVENT_SUBSCRIPTIONS

if TYPE_CHECKING:
    from b1twilio_sim.sap_b1 import SapB1Simulator

DEFAULT_PAGE_SIZE = 20
CONTENT_TYPES = {
    "v1": "application/json;odata=minimalmetadata;charset=utf-8",
    "v2": "application/json;odata.metadata=minimal;charset=utf-8",
}
METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT"]
_PATH = re.compile(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<key>.*)\))?(?P<count>/\$count)?$")
_MAXPAGESIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")


def b1_reply(version: str, status: int, payload: Any = None, *, content_type: str | None = None,
             headers: Iterable[tuple[str, str]] = (), raw: bytes | None = None) -> Response:
    """An answer with the headers of a Service Layer of `version` (`OData-Version: 4.0` for v2,
    `DataServiceVersion: 3.0` for v1); `headers` may repeat a name (two Set-Cookie lines)."""
    data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    response = Response(data, status_code=status)
    if data:
        response.headers["content-type"] = content_type or CONTENT_TYPES[version]
    if version == "v2":
        response.headers.append("OData-Version", "4.0")
    else:
        response.headers.append("DataServiceVersion", "3.0")
    for name, value in headers:
        response.headers.append(name, value)
    return response


def b1_error(version: str, failure: B1Failure) -> Response:
    return b1_reply(version, failure.status, error_body(version, failure.code, failure.message))


def json_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; anything else is a B1 400."""
    try:
        value = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise bad_request(f"Invalid JSON body: {exc.msg}") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object")
    return value


def _parse_key(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"Invalid key '{text}'") from None


@dataclass(frozen=True)
class B1Call:
    """One Service Layer request: the resource path after `/b1s/vN/`, percent-decoded."""

    method: str
    resource: str
    query: dict[str, str]
    headers: Headers
    body: bytes

    def session_id(self) -> str | None:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("cookie") or "")
        except CookieError:
            return None
        morsel = cookie.get("B1SESSION")
        return None if morsel is None else morsel.value


class ServiceLayer:
    """Answers Service Layer requests from the simulator's sessions and company database."""

    def __init__(self, sim: SapB1Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        async def serve(request: Request) -> Response:
            call = B1Call(request.method, request.path_params["resource"], dict(request.query_params),
                          request.headers, await request.body())
            return await run_in_threadpool(self.handle, call)

        return [Route(f"{self.sim.prefix}/{{resource:path}}", serve, methods=METHODS)]

    # ----------------------------------------------------------------------- answers

    def reply(self, status: int, payload: Any = None, **options: Any) -> Response:
        return b1_reply(self.sim.version, status, payload, **options)

    def error(self, failure: B1Failure) -> Response:
        return b1_error(self.sim.version, failure)

    def fault(self, status: int) -> Response:
        """An injected 5xx in B1's shape; a 500 is the failing-node error (code 407)."""
        code, message = (407, "Service is unavailable on this node") if status == 500 else \
            (status, "Service Unavailable (injected fault)")
        return self.error(B1Failure(status, code, message))

    async def unknown_path(self, _request: Request) -> Response:
        return self.error(unrecognized_path())

    def _metadata(self, fragment: str) -> dict[str, str]:
        key = "odata.metadata" if self.sim.version == "v1" else "@odata.context"
        return {key: f"{self.sim.base_url}/$metadata#{fragment}"}

    def _entity(self, name: str) -> dict[str, str]:
        """The metadata of a single entity (`/@Element` in v1, `/$entity` in v2)."""
        return self._metadata(name + ("/@Element" if self.sim.version == "v1" else "/$entity"))

    # ----------------------------------------------------------------------- routing

    def handle(self, call: B1Call) -> Response:
        try:
            return self._service(call)
        except B1Failure as failure:
            return self.error(failure)
        except Exception as exc:  # a simulator bug must answer, not hang the client
            return self.error(B1Failure(500, -1, f"Internal simulator error: {type(exc).__name__}: {exc}"))

    def _service(self, call: B1Call) -> Response:
        sim, method = self.sim, call.method
        if call.resource == "Login" and method == "POST":
            return self._login(call)
        match = _PATH.match(call.resource)
        known = ("Logout", "UserTablesMD", "UserFieldsMD", *ENTITIES,
                 *((EVENT_SUBSCRIPTIONS,) if sim.webhooks.support != "absent" else ()))
        if match is None or not (match["set"] in known or match["set"].startswith("U_")):
            raise unrecognized_path()
        session = sim.use_session(call.session_id())
        if call.resource == "Logout" and method == "POST":
            sim.logout(session)
            return self.reply(204)
        name, key_text, count = match["set"], match["key"], match["count"]
        key = None if key_text is None else _parse_key(key_text)
        if name in ("UserTablesMD", "UserFieldsMD"):
            return self._metadata_tables(call, name, key)
        if name == EVENT_SUBSCRIPTIONS and not count:
            return self._event_subscriptions(call, key)
        if name in ENTITIES or (name.startswith("U_") and name[2:] in sim.user_tables):
            if key is None and method == "GET":
                return self._collection(call, name, bool(count))
            if key is None and method == "POST":
                return self._create(call, name)
            if key is not None and not count:
                return self._single(call, name, key)
            raise B1Failure(405, -1000, f"Method {method} is not allowed on {call.resource}")
        if name.startswith("U_"):
            raise unrecognized_path(f"{name} (the user table does not exist)")
        raise unrecognized_path()

    def _login(self, call: B1Call) -> Response:
        sim = self.sim
        credentials = json_body(call.body)
        session = sim.login(credentials.get("CompanyDB"), credentials.get("UserName"), credentials.get("Password"))
        payload = {**self._entity("B1Sessions"), "SessionId": session.session_id, "Version": "1000110",
                   "SessionTimeout": max(1, math.ceil(sim.session_timeout_s / 60))}
        return self.reply(200, payload, headers=[("Set-Cookie", f"B1SESSION={session.session_id}; HttpOnly"),
                                                 ("Set-Cookie", f"ROUTEID={sim.route_id}; path=/b1s")])

    def _collection(self, call: B1Call, name: str, count_only: bool) -> Response:
        sim = self.sim
        if count_only:
            options = {"$inlinecount": "allpages", **({"$filter": call.query["$filter"]}
                                                       if "$filter" in call.query else {})}
            _page, _link, count = sim.query(name, options, 1)
            return self.reply(200, raw=str(count).encode(), content_type="text/plain;charset=utf-8")
        page_size, applied = self._page_size(call.headers)
        page, link, count = sim.query(name, call.query, page_size)
        v1 = sim.version == "v1"
        payload: dict[str, Any] = self._metadata(name)
        if count is not None:
            payload["odata.count" if v1 else "@odata.count"] = count
        payload["value"] = page
        if link is not None:
            payload["odata.nextLink" if v1 else "@odata.nextLink"] = sim.next_link_base + link
        headers = [("Preference-Applied", f"odata.maxpagesize={page_size}")] if applied else []
        return self.reply(200, payload, headers=headers)

    @staticmethod
    def _page_size(headers: Headers) -> tuple[int, bool]:
        """`Prefer: odata.maxpagesize=N` (acknowledged with Preference-Applied), else `B1S-PageSize: N`,
        else 20 rows a page; 0 turns paging off."""
        match = _MAXPAGESIZE.search(headers.get("prefer") or "")
        if match:
            return int(match.group(1)), True
        header = headers.get("b1s-pagesize")
        if header and header.strip().isdigit():
            return int(header), False
        return DEFAULT_PAGE_SIZE, False

    def _create(self, call: B1Call, name: str) -> Response:
        sim = self.sim
        values = json_body(call.body)
        if name.startswith("U_"):
            return self.reply(201, {**self._entity(name), **sim.create_udt_row(name[2:], values)})
        try:
            record = sim.add_document(name, values)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return self.reply(201, {**self._entity(name), **sim.render(record, ENTITIES[name].fields, None)})

    def _single(self, call: B1Call, name: str, key: Any) -> Response:
        sim, method = self.sim, call.method
        if name.startswith("U_"):
            return self._udt_single(call, name[2:], str(key))
        spec = ENTITIES[name]
        if method == "GET":
            select = parse_select(call.query["$select"], spec.fields, name) if call.query.get("$select") else None
            record = sim.get_record(name, key)
            if record is None:
                raise not_found()
            return self.reply(200, {**self._entity(name), **sim.render(record, spec.fields, select)})
        if method == "PATCH":
            if sim.get_record(name, key) is None:
                raise not_found()
            try:
                sim.update_document(name, key, json_body(call.body))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            return self.reply(204)
        raise B1Failure(405, -1000, f"Method {method} is not allowed on {name}({key!r})")

    def _udt_single(self, call: B1Call, table: str, code: str) -> Response:
        sim, method = self.sim, call.method
        if method == "GET":
            return self.reply(200, {**self._entity(f"U_{table}"), **sim.udt_row(table, code)})
        if method == "PATCH":
            sim.update_udt_row(table, code, json_body(call.body))
            return self.reply(204)
        if method == "DELETE":
            sim.delete_udt_row(table, code)
            return self.reply(204)
        sim.udt_row(table, code)  # a missing row is a 404 whatever the method
        raise B1Failure(405, -1000, f"Method {method} is not allowed on U_{table}")

    def _event_subscriptions(self, call: B1Call, key: Any) -> Response:
        """Create, list, read, change and delete webhook subscriptions (`sap_b1_webhooks`)."""
        hooks, method = self.sim.webhooks, call.method
        if key is None and method == "POST":
            return self.reply(201, {**self._entity(EVENT_SUBSCRIPTIONS), **hooks.create(json_body(call.body))})
        if key is None and method == "GET":
            return self.reply(200, {**self._metadata(EVENT_SUBSCRIPTIONS), "value": hooks.resources()})
        if key is not None and method == "GET":
            return self.reply(200, {**self._entity(EVENT_SUBSCRIPTIONS), **hooks.resource(str(key))})
        if key is not None and method == "PATCH":
            hooks.update(str(key), json_body(call.body))
            return self.reply(204)
        if key is not None and method == "DELETE":
            hooks.delete(str(key))
            return self.reply(204)
        raise B1Failure(405, -1000, f"Method {method} is not allowed on {call.resource}")

    def _metadata_tables(self, call: B1Call, name: str, key: Any) -> Response:
        sim = self.sim
        if call.method == "POST" and key is None:
            values = json_body(call.body)
            meta = sim.create_user_table(values) if name == "UserTablesMD" else sim.create_user_field(values)
            return self.reply(201, {**self._entity(name), **meta})
        if call.method != "GET":
            raise B1Failure(405, -1000, f"Method {call.method} is not allowed on {name}")
        rows, key_field = sim.metadata_rows(name)
        if key is None:
            return self.reply(200, {**self._metadata(name), "value": rows})
        found = [row for row in rows if row[key_field] == key]
        if not found:
            raise not_found()
        return self.reply(200, {**self._entity(name), **found[0]})
