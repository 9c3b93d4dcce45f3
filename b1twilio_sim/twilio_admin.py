"""The Twilio simulator's admin API over HTTP (`/_admin/<operation>`), for a simulator running in another
process (the demo): the operations of its Python admin methods, as JSON. Admin calls are logged with the
rest (`TwilioSimulator.api_requests()` leaves them out) but never limited, delayed or failed.

The handset's side: `POST /_admin/webhooks {"sms_url"}` (GET reads it), `POST /_admin/reply {"from",
"body"}`, `POST /_admin/press {"to" | "call_sid", "digits"}` (answer: the webhook exchange; 404 when there
is nothing to answer, 409 when there is nowhere to send it), `GET /_admin/inbound` (every exchange).

The account's side: `POST /_admin/credentials {"auth_token"}` rotates the Auth Token (the old one gets 401,
code 20003)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from b1twilio_sim.twilio_api import METHODS
from b1twilio_sim.twilio_inbound import InboundError

if TYPE_CHECKING:
    from b1twilio_sim.twilio import TwilioSimulator


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload).encode(), status, media_type="application/json")


def _modes(payload: dict[str, Any]) -> list[str]:
    modes = payload.get("modes", payload.get("mode", "normal"))
    return [modes] if isinstance(modes, str) else list(modes)


def _set_sms_url(sim: TwilioSimulator, url: str | None) -> dict[str, Any]:
    sim.set_sms_url(url)
    return {"sms_url": sim.sms_url}


def admin_operation(sim: TwilioSimulator, method: str, operation: str, payload: dict[str, Any]) -> Any:
    """Run one admin operation; None means there is no such operation."""
    getters: dict[str, Callable[[], Any]] = {
        "messages": lambda: {"messages": sim.messages()},
        "calls": lambda: {"calls": sim.calls()},
        "state": sim.admin_state,
        "requests": lambda: {"requests": [
            {"method": entry.method, "path": entry.path, "status": entry.status, "at": entry.at}
            for entry in sim.api_requests()]},
        "webhooks": lambda: {"sms_url": sim.sms_url},
        "inbound": lambda: {"inbound": sim.inbound()},
    }
    if method == "GET" and operation in getters:
        return getters[operation]()
    if method == "DELETE" and operation == "rules":
        sim.clear_rules()
        return {"ok": True}
    setters: dict[str, Callable[[], Any]] = {
        "rules": lambda: sim.set_rules(payload),
        "credentials": lambda: sim.set_auth_token(str(payload["auth_token"])),
        "opt_out": lambda: sim.opt_out(*payload["numbers"], opted_out=payload.get("opted_out", True)),
        "latency": lambda: sim.set_latency(float(payload["seconds"])),
        "rate_limit": lambda: sim.set_rate_limit(payload.get("max_concurrency"), int(payload.get("next_429", 0))),
        "faults": lambda: sim.set_faults(**payload),
        "callbacks": lambda: sim.set_callback_mode(*_modes(payload)),
        "reset": sim.reset,
        "auto_advance": lambda: sim.set_auto_advance(bool(payload["enabled"])),
    }
    if method == "POST" and operation in ("advance", "tick"):
        return {"moved": sim.advance() if operation == "advance" else sim.tick()}
    handset: dict[str, Callable[[], Any]] = {
        "webhooks": lambda: _set_sms_url(sim, payload["sms_url"]),
        "reply": lambda: sim.reply(payload["from"], payload["body"]),
        "press": lambda: sim.press(payload.get("to"), str(payload.get("digits", "1")), payload.get("call_sid")),
    }
    if method == "POST" and operation in handset:
        return handset[operation]()
    if method == "POST" and operation in setters:
        setters[operation]()
        return {"ok": True, "state": sim.admin_state()}
    return None


def admin_routes(sim: TwilioSimulator) -> list[BaseRoute]:
    async def serve(request: Request) -> Response:
        body = await request.body()
        try:
            payload = json.loads(body) if body else {}
            answer = await run_in_threadpool(admin_operation, sim, request.method,
                                             request.path_params["operation"].strip("/"), payload)
        except InboundError as exc:
            return _json(exc.status, {"error": str(exc)})
        except (ValueError, TypeError, KeyError) as exc:
            return _json(400, {"error": str(exc)})
        except Exception as exc:  # a simulator bug must answer, not hang the harness
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})
        if answer is None:
            return _json(404, {"error": f"no admin operation {request.method} {request.url.path}"})
        return _json(200, answer)

    return [Route("/_admin/{operation:path}", serve, methods=METHODS)]
