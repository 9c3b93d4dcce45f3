"""Benchmark 1: initial sync of N sales invoices (default 100,000) from the B1 simulator into SQLite.

Optimized: `SapB1Session` asking for 1,000-record pages (`Prefer: odata.maxpagesize`) with a `$select` of the
fields the snapshots need, streamed into `SnapshotStore.upsert` (chunked bulk upserts).
Baseline: a naive httpx client written here: logs in once, follows next links at the server's default page
size (20, no Prefer header), no `$select`, collects every record in a list, then stores them row by row.

Each variant runs in its own subprocess, so its peak memory (ru_maxrss) is its own and not the simulator's
(which lives in this process) nor the other variant's. Each variant gets a fresh simulator with the same
generated data, so no query cache carries over. Injected latency applies to every request, login included.

Run one worker by hand: `python -m benchmarks.initial_sync --worker optimized|baseline BASE_URL DB_URL`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks._common import (
    REPO_ROOT,
    BenchResult,
    Row,
    count,
    current_rss_kib,
    megabytes,
    peak_rss_kib,
    row,
    seconds,
)

ENTITY = "Invoices"
DEFAULT_INVOICES = 100_000
DEFAULT_LATENCY_S = 0.005
OPTIMIZED_PAGE_SIZE = 1000
WORKER_TIMEOUT_S = 3600


# ------------------------------------------------------------------------------------- the two clients


def sync_optimized(base_url: str, db_url: str, password: str, page_size: int = OPTIMIZED_PAGE_SIZE,
                   company_db: str = "SBODEMOUS", username: str = "manager") -> dict[str, Any]:
    """The pipeline's way: big pages, `$select`, streamed into chunked bulk upserts."""
    from b1twilio_pipeline.b1.client import SapB1Session
    from b1twilio_pipeline.b1.snapshot_store import SnapshotStore
    from b1twilio_pipeline.core.database import engine_for

    spec = _invoice_spec()
    engine = engine_for(db_url)
    rss_before = current_rss_kib()
    started = time.perf_counter()
    session = SapB1Session(base_url, company_db, username, password, page_size=page_size)
    try:
        counts = SnapshotStore(engine).upsert(
            spec.entity, spec.key, session.get_all(spec.entity, select=spec.select, orderby=spec.key))
    finally:
        session.close()  # logs out, like the naive client
    wall = time.perf_counter() - started
    engine.dispose()
    return {"wall_s": wall, "rows": counts.fetched, "new": counts.new, "client_requests": session.requests_made,
            "rss_before_kib": rss_before, "peak_rss_kib": peak_rss_kib()}


def sync_naive(base_url: str, db_url: str, password: str, company_db: str = "SBODEMOUS",
               username: str = "manager") -> dict[str, Any]:
    """The naive way: default pages, every field, everything in a list, then one statement per row."""
    from urllib.parse import urljoin

    import httpx
    from sqlalchemy.dialects import sqlite

    from b1twilio_pipeline.b1.client import SapB1Session  # noqa: F401

    # Same imports as the optimized worker, so both start from a comparable resident size.
    from b1twilio_pipeline.b1.entities import EntitySpec  # noqa: F401
    from b1twilio_pipeline.b1.snapshot_store import content_hash
    from b1twilio_pipeline.core.database import engine_for
    from b1twilio_pipeline.core.schema import snapshots
    from b1twilio_pipeline.core.sql import utcnow

    engine = engine_for(db_url)
    rss_before = current_rss_kib()
    started = time.perf_counter()
    requests = 0
    with httpx.Client(timeout=60) as client:
        login = client.post(f"{base_url}/Login",
                            json={"CompanyDB": company_db, "UserName": username, "Password": password})
        login.raise_for_status()
        requests += 1
        rows: list[dict[str, Any]] = []
        url: str | None = f"{base_url}/{ENTITY}"
        while url is not None:
            response = client.get(url)
            response.raise_for_status()
            requests += 1
            page = response.json()
            rows.extend(page["value"])
            link = page.get("odata.nextLink") or page.get("@odata.nextLink")
            url = urljoin(base_url + "/", link) if link else None
        fetched = time.perf_counter()
        insert = sqlite.insert(snapshots)
        upsert = insert.on_conflict_do_update(
            index_elements=[snapshots.c.entity, snapshots.c.key],
            set_={name: insert.excluded[name] for name in ("payload", "content_hash", "updated_at")})
        with engine.begin() as conn:
            for record in rows:
                now = utcnow()
                conn.execute(upsert, {"entity": ENTITY, "key": str(record["DocEntry"]),
                                      "payload": json.dumps(record, default=str), "previous_payload": None,
                                      "content_hash": content_hash(record), "first_seen_at": now,
                                      "updated_at": now})
        client.post(f"{base_url}/Logout")
        requests += 1
    done = time.perf_counter()
    engine.dispose()
    return {"wall_s": done - started, "fetch_s": fetched - started, "store_s": done - fetched,
            "rows": len(rows), "new": len(rows), "client_requests": requests, "rss_before_kib": rss_before,
            "peak_rss_kib": peak_rss_kib()}


# ----------------------------------------------------------------------------------------- the harness


def _run_worker(variant: str, base_url: str, db_url: str, password: str, page_size: int, *,
                company_db: str, username: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                      os.environ.get("PYTHONPATH")])),
           "BENCH_B1_PASSWORD": password}
    command = [sys.executable, "-m", "benchmarks.initial_sync", "--worker", variant, base_url, db_url,
               "--page-size", str(page_size), "--company-db", company_db, "--username", username]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"initial sync worker '{variant}' failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stored_rows(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text("select count(*) from b1tw_snapshots where entity = :e"),
                                   {"e": ENTITY}) or 0)
    finally:
        engine.dispose()


def measure_variant(variant: str, invoices: int, latency_s: float, workdir: Path,
                    page_size: int = OPTIMIZED_PAGE_SIZE) -> dict[str, Any]:
    """A fresh simulator with `invoices` generated invoices, one worker process syncing them, and what
    the simulator saw (requests by resource)."""
    from b1twilio_sim.sap_b1 import DEMO_PASSWORD, SapB1Simulator

    sim = SapB1Simulator(port=0, seed=False).start_background()  # started first: stop() needs a server loop
    try:
        sim.generate_invoices(invoices, entity=ENTITY)
        sim.set_faults(latency_s=latency_s)
        db_url = f"sqlite:///{workdir / f'{variant}.sqlite'}"
        result = _run_worker(variant, sim.base_url, db_url, DEMO_PASSWORD, page_size,
                             company_db=sim.company_db, username=sim.username)
        result.update(sim_requests=sim.count_requests(), sim_logins=sim.logins,
                      sim_pages=sim.count_requests("GET", ENTITY), stored=_stored_rows(db_url))
        return result
    finally:
        sim.stop()


def run(invoices: int = DEFAULT_INVOICES, latency_s: float = DEFAULT_LATENCY_S,
        page_size: int = OPTIMIZED_PAGE_SIZE) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="b1tw-bench-sync-") as tmp:
        optimized = measure_variant("optimized", invoices, latency_s, Path(tmp), page_size)
        baseline = measure_variant("baseline", invoices, latency_s, Path(tmp))
    growth_b = baseline["peak_rss_kib"] - baseline["rss_before_kib"]
    growth_o = optimized["peak_rss_kib"] - optimized["rss_before_kib"]
    rows = [
        row("requests to B1 (incl. login + logout)", baseline["sim_requests"], optimized["sim_requests"]),
        row("logins", baseline["sim_logins"], optimized["sim_logins"]),
        row("wall time (fetch + store)", baseline["wall_s"], optimized["wall_s"], seconds),
        row("peak RSS of the syncing process", baseline["peak_rss_kib"], optimized["peak_rss_kib"], megabytes),
        row("peak RSS growth during the sync", growth_b, growth_o, megabytes),
        Row("rows stored", count(baseline["stored"]), count(optimized["stored"]), "-"),
    ]
    notes = [
        f"{invoices:,} sales invoices generated by the B1 simulator; {latency_s * 1000:g} ms latency injected "
        "into every B1 request (login included); SQLite store in a temp directory.",
        f"Optimized: `SapB1Session` (page size {page_size} via `Prefer: odata.maxpagesize`, `$select` of "
        f"{len(_document_fields())} document fields, `$orderby=DocEntry`) streamed into "
        "`SnapshotStore.upsert` (1,000-row chunks, bulk INSERT .. ON CONFLICT).",
        "Baseline: naive httpx client (server default page of 20, every field incl. DocumentLines, all "
        "records kept in a list), then one INSERT .. ON CONFLICT per row in one transaction "
        f"(fetch {seconds(baseline['fetch_s'])}, store {seconds(baseline['store_s'])}).",
        "Each variant ran in its own subprocess; peak RSS is that process's ru_maxrss, growth is it minus "
        "the RSS just before the sync (after imports, so both variants carry the same libraries).",
    ]
    facts = {"baseline": baseline, "optimized": optimized, "invoices": invoices, "latency_s": latency_s}
    return BenchResult(f"1. Initial sync of {invoices:,} invoices", rows, notes, facts)


def _document_fields() -> tuple[str, ...]:
    return _invoice_spec().select


def _invoice_spec() -> Any:
    """Sales invoices as the pipeline reads them (the fields the rule kinds declare)."""
    from b1twilio_pipeline.alerts.rules.kinds import reads_by_entity
    from b1twilio_pipeline.b1.definitions import read_specs

    return read_specs(reads_by_entity())["sales_invoices"]


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="one initial-sync variant (run by benchmarks.initial_sync)")
    parser.add_argument("--worker", choices=["optimized", "baseline"], required=True)
    parser.add_argument("base_url")
    parser.add_argument("db_url")
    parser.add_argument("--page-size", type=int, default=OPTIMIZED_PAGE_SIZE)
    parser.add_argument("--company-db", default="SBODEMOUS")
    parser.add_argument("--username", default="manager")
    args = parser.parse_args(argv)
    password = os.environ.get("BENCH_B1_PASSWORD") or "manager"  # never on the command line
    login = {"company_db": args.company_db, "username": args.username}
    if args.worker == "optimized":
        result = sync_optimized(args.base_url, args.db_url, password, page_size=args.page_size, **login)
    else:
        result = sync_naive(args.base_url, args.db_url, password, **login)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
