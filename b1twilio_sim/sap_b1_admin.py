"""The Service Layer simulator's admin API over HTTP, for a simulator running in another process (the
demo, benchmarks): the same operations as its Python methods, as JSON under `/_admin/...`.

Admin calls are the test harness talking, not the client: they are neither logged nor hit by faults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from b1twilio_sim.sap_b1_app import METHODS, b1_error, json_body
from b1twilio_sim.sap_b1_errors import B1Failure
from b1twilio_sim.sap_b1_webhooks import SUPPORT

if TYPE_CHECKING:
    from b1twilio_sim.sap_b1 import SapB1Simulator

ADMIN_ENDPOINTS = [
    "GET /_admin/info",
    "POST /_admin/documents/{Entity}[?apply_payment=false] {fields}",
    "GET|PATCH|DELETE /_admin/documents/{Entity}/{key}",
    "POST /_admin/corrupt/{Entity}/{key} {raw fields, unchecked}",
    "POST /_admin/stock {item_code, warehouse, in_stock}",
    "GET|POST /_admin/clock {advance_s}",
    "POST /_admin/expire_sessions",
    "POST /_admin/password {password}",
    "GET|POST /_admin/faults {latency_s, fail_next, fail_status, fail_all, fail_resource, drop_next}",
    "GET|DELETE /_admin/requests",
    "POST /_admin/generate_invoices {count, entity}",
    "GET /_admin/udt/{TABLE}",
    "GET|POST /_admin/webhooks {support: on|absent|disabled, batch_delay_s}",
    "POST /_admin/webhooks/wait {timeout_s}",
]


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json")


def _key(entity: str, text: str) -> Any:
    """Items are keyed by ItemCode, every other entity by its integer DocEntry."""
    return text if entity == "Items" else int(text)


Action = Callable[[dict[str, Any], dict[str, str], dict[str, Any]], Any]


def admin_routes(sim: SapB1Simulator) -> list[BaseRoute]:
    """Routes under `/_admin/`; an unknown one answers 404 with the list of endpoints."""

    def endpoint(action: Action) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            body = await request.body()
            try:
                values = json_body(body) if body else {}
                result = await run_in_threadpool(action, request.path_params, dict(request.query_params), values)
            except B1Failure as failure:
                return b1_error(sim.version, failure)
            except (ValueError, TypeError) as exc:
                return _json(400, {"error": str(exc)})
            except KeyError as exc:
                return _json(404, {"error": str(exc.args[0]) if exc.args else "not found"})
            except Exception as exc:  # a simulator bug must answer, not hang the harness
                return b1_error(sim.version, B1Failure(500, -1, f"Internal simulator error: "
                                                                f"{type(exc).__name__}: {exc}"))
            return _json(200, result)

        return serve

    def get_document(params: dict[str, Any], _query: dict[str, str], _values: dict[str, Any]) -> Any:
        entity, key = params["entity"], params["key"]
        record = sim.get_record(entity, _key(entity, key))
        if record is None:
            raise KeyError(f"{entity}({key}) does not exist")
        return record

    def delete_document(params: dict[str, Any], _query: dict[str, str], _values: dict[str, Any]) -> Any:
        sim.delete_record(params["entity"], _key(params["entity"], params["key"]))
        return {"deleted": True}

    def clock(*_args: Any) -> Any:
        now = sim.clock.now()
        return {"now": now.isoformat(), "date": now.date().isoformat(), "time": now.strftime("%H:%M:%S"),
                "timezone": sim.timezone}

    def advance_clock(_params: dict[str, Any], _query: dict[str, str], values: dict[str, Any]) -> Any:
        sim.advance_clock(float(values.get("advance_s", 0)))
        return clock()

    def reset_requests(*_args: Any) -> Any:
        sim.reset_requests()
        return {"reset": True}

    def info(*_args: Any) -> Any:
        return {"base_url": sim.base_url, "version": sim.version, "company_db": sim.company_db,
                "username": sim.username, "timezone": sim.timezone, "expiry_mode": sim.expiry_mode,
                "session_timeout_s": sim.session_timeout_s,
                "records": {name: len(rows) for name, rows in sim.data.items()}}

    def webhooks(*_args: Any) -> Any:
        hooks = sim.webhooks
        return {"support": hooks.support, "batch_delay_s": hooks.batch_delay_s,
                "subscriptions": hooks.resources(), "deliveries": list(hooks.deliveries)}

    def set_webhooks(_params: dict[str, Any], _query: dict[str, str], values: dict[str, Any]) -> Any:
        """`support`: "on", "absent" (a B1 older than 10.0 FP 2602) or "disabled" (webhooks not enabled)."""
        support = values.get("support", sim.webhooks.support)
        if support not in SUPPORT:
            raise ValueError(f"support must be one of {', '.join(SUPPORT)}, got {support!r}")
        sim.webhooks.support = support
        sim.webhooks.batch_delay_s = float(values.get("batch_delay_s", sim.webhooks.batch_delay_s))
        return webhooks()

    async def unknown(request: Request) -> Response:
        return _json(404, {"error": f"no admin endpoint {request.method} /_admin/{request.path_params['rest']}",
                           "endpoints": ADMIN_ENDPOINTS})

    def route(path: str, action: Action, *methods: str) -> Route:
        return Route(f"/_admin/{path}", endpoint(action), methods=list(methods))

    return [
        route("info", info, "GET"),
        route("documents/{entity}", lambda p, q, v: sim.add_document(
            p["entity"], v, apply_payment=q.get("apply_payment") != "false"), "POST"),
        route("documents/{entity}/{key}", get_document, "GET"),
        route("documents/{entity}/{key}", lambda p, q, v: sim.update_document(
            p["entity"], _key(p["entity"], p["key"]), v), "PATCH"),
        route("documents/{entity}/{key}", delete_document, "DELETE"),
        route("corrupt/{entity}/{key}", lambda p, q, v: sim.corrupt_record(
            p["entity"], _key(p["entity"], p["key"]), v), "POST"),
        route("stock", lambda p, q, v: sim.set_item_stock(
            str(v["item_code"]), str(v["warehouse"]), float(v["in_stock"])), "POST"),
        route("clock", clock, "GET"),
        route("clock", advance_clock, "POST"),
        route("expire_sessions", lambda p, q, v: {"expired": sim.expire_sessions()}, "POST"),
        route("password", lambda p, q, v: {"sessions_ended": sim.change_password(str(v.get("password", "")))},
              "POST"),
        route("faults", lambda p, q, v: asdict(sim.faults), "GET"),
        route("faults", lambda p, q, v: sim.set_faults(**v), "POST"),
        route("requests", lambda p, q, v: {"total": len(sim.requests), "logins": sim.logins,
                                           "logouts": sim.logouts, "counts": sim.request_counts()}, "GET"),
        route("requests", reset_requests, "DELETE", "POST"),
        route("generate_invoices", lambda p, q, v: sim.generate_invoices(
            int(v.get("count", 0)), str(v.get("entity", "Invoices"))), "POST"),
        route("udt/{table}", lambda p, q, v: {"table": p["table"], "rows": sim.udt_rows(p["table"])}, "GET"),
        route("webhooks", webhooks, "GET"),
        route("webhooks", set_webhooks, "POST"),
        route("webhooks/wait", lambda p, q, v: {"idle": sim.webhooks.wait_idle(float(v.get("timeout_s", 10)))},
              "POST"),
        Route("/_admin/{rest:path}", unknown, methods=METHODS),
    ]
