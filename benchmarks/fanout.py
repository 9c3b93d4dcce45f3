"""Benchmark 3: fan-out of N SMS (default 1,000) within Twilio's concurrency limit.

The Twilio simulator answers 429 (code 20429) beyond 4 requests in flight and adds per-request latency
(default 20 ms). Optimized: `TwilioResource.send_many` with `max_concurrency=4` (bounded thread pool, 429
retried with backoff). Baseline: the same resource sending one message at a time. Each variant gets a fresh
simulator, so "accepted exactly once" is counted at the simulator per message body.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks._common import BenchResult, Row, count, row, seconds

DEFAULT_NOTIFICATIONS = 1000
DEFAULT_LATENCY_S = 0.020
TWILIO_LIMIT = 4
FROM_NUMBER = "+15005550006"


def _items(n: int) -> list[tuple[str, str, str]]:
    """Distinct recipients (fictional +1 500 555 range) and distinct bodies, so duplicates are visible."""
    return [("sms", f"+1500555{i % 10000:04d}", f"Benchmark alert {i}: supplier invoice {7000 + i}")
            for i in range(n)]


class SimulatorProcess:
    """The Twilio simulator in its own process (`python -m b1twilio_sim.twilio --port 0`),
    driven through its admin API, so the client under test does not share a CPU or GIL with the fake Twilio."""

    def __init__(self) -> None:
        from b1twilio_sim.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN

        self.account_sid, self.auth_token = DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN
        env = {**os.environ, "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN}
        env.pop("TWILIO_API_KEY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "b1twilio_sim.twilio", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the Twilio simulator did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        self.admin = httpx.Client(base_url=f"{self.url}/_admin", timeout=30)

    def call(self, method: str, operation: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.admin.request(method, f"/{operation}", json=payload)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "admin"):
            self.admin.close()


def measure_variant(variant: str, n: int, latency_s: float, limit: int = TWILIO_LIMIT) -> dict[str, Any]:
    from b1twilio_pipeline.resources.twilio import TwilioResource, TwilioSendError

    sim = SimulatorProcess()
    try:
        sim.call("POST", "auto_advance", {"enabled": False})  # messages stay 'queued': no background work
        resource = TwilioResource(account_sid=sim.account_sid, auth_token=sim.auth_token, from_number=FROM_NUMBER,
                                  api_base_url=sim.url, status_callback_url="", max_concurrency=limit)
        resource.send_many([])  # build the client outside the timing
        sim.call("POST", "rate_limit", {"max_concurrency": limit})
        sim.call("POST", "latency", {"seconds": latency_s})
        items = _items(n)
        started = time.perf_counter()
        if variant == "optimized":
            results: list[Any] = list(resource.send_many(items))
        else:
            results = []
            for _channel, to, body in items:
                try:
                    results.append(resource.send_sms(to, body))
                except TwilioSendError as exc:
                    results.append(exc)
        wall = time.perf_counter() - started
        bodies = Counter(message["body"] for message in sim.call("GET", "messages")["messages"])
        wanted = {body for _c, _t, body in items}
        return {
            "wall_s": wall,
            "requests": len(sim.call("GET", "requests")["requests"]),
            "rejected_429": int(sim.call("GET", "state")["rejected_429"]),
            "accepted": sum(bodies.values()),
            "accepted_once": sum(1 for body in wanted if bodies.get(body) == 1),
            "duplicates": sum(c - 1 for c in bodies.values() if c > 1),
            "errors": sum(1 for r in results if isinstance(r, TwilioSendError)),
            "throughput_per_s": n / wall if wall else 0.0,
        }
    finally:
        sim.stop()


def run(notifications: int = DEFAULT_NOTIFICATIONS, latency_s: float = DEFAULT_LATENCY_S,
        limit: int = TWILIO_LIMIT) -> BenchResult:
    optimized = measure_variant("optimized", notifications, latency_s, limit)
    baseline = measure_variant("baseline", notifications, latency_s, limit)
    rows = [
        row("wall time", baseline["wall_s"], optimized["wall_s"], seconds),
        Row("messages per second", f"{baseline['throughput_per_s']:.1f}", f"{optimized['throughput_per_s']:.1f}",
            f"{optimized['throughput_per_s'] / max(baseline['throughput_per_s'], 1e-9):.2f}x (higher is better)"),
        Row("HTTP requests to Twilio (incl. 429 retries)", count(baseline["requests"]),
            count(optimized["requests"]), "-"),
        Row("429 answers seen", count(baseline["rejected_429"]), count(optimized["rejected_429"]), "-"),
        Row("accepted exactly once (counted at the simulator)", f"{baseline['accepted_once']:,} / {notifications:,}",
            f"{optimized['accepted_once']:,} / {notifications:,}", "-"),
        Row("duplicates / errors", f"{baseline['duplicates']} / {baseline['errors']}",
            f"{optimized['duplicates']} / {optimized['errors']}", "-"),
    ]
    notes = [
        f"Twilio simulator with {latency_s * 1000:g} ms latency per request and a limit of {limit} concurrent "
        "requests (429 / 20429 beyond it), running in its own process (port 0); official `twilio` client through "
        "`TwilioResource` with its default backoff.",
        f"Optimized: `TwilioResource.send_many` with max_concurrency={limit}. Baseline: `send_sms` in a loop, "
        "one message at a time. A 429 can only come from a race between the simulator freeing a slot and the "
        "next request arriving: the client's semaphore holds the same limit.",
        f"Ideal speed-up is the concurrency limit ({limit}x) when latency dominates; the rest is the client's "
        "own CPU time per request (official client, one process).",
    ]
    facts = {"optimized": optimized, "baseline": baseline, "notifications": notifications, "limit": limit}
    return BenchResult(f"3. Fan-out of {notifications:,} SMS within a concurrency limit of {limit}", rows, notes,
                       facts)


__all__ = ["run"]
