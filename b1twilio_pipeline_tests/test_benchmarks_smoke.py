"""Every benchmark runs at a tiny size against real simulators and reports what it claims to measure.

Only structural facts are asserted (request counts, rows stored, messages accepted once, computed waits):
wall times depend on the machine and are never asserted, nor is any target met.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from b1twilio_pipeline_tests.fixtures_pipeline import create_database, drop_database
from benchmarks import daemon, incremental_poll, initial_sync
from benchmarks.__main__ import main
from benchmarks._autovacuum import AutovacuumStandIn, apply_instance_settings
from benchmarks._session import DaemonOptions


def test_initial_sync_pages_big_and_selects_while_the_naive_client_pages_by_20() -> None:
    result = initial_sync.run(invoices=500, latency_s=0.0)

    optimized, baseline = result.facts["optimized"], result.facts["baseline"]
    assert optimized["stored"] == baseline["stored"] == 500
    assert optimized["sim_pages"] == 1 and baseline["sim_pages"] == 25  # 1000 per page vs the default 20
    assert optimized["sim_logins"] == baseline["sim_logins"] == 1
    assert optimized["sim_requests"] == optimized["client_requests"] == 3  # login, one page, logout
    assert optimized["sim_requests"] < baseline["sim_requests"]
    assert baseline["peak_rss_kib"] >= baseline["rss_before_kib"] > 0
    assert "| requests to B1 (incl. login + logout) | 27 | 3 | 9.00x |" in result.markdown()


def test_incremental_poll_makes_one_request_per_entity_and_one_login() -> None:
    result = incremental_poll.run(invoices=1500, latency_s=0.0)

    optimized, baseline = result.facts["optimized"], result.facts["baseline"]
    assert optimized["per_entity"] == dict.fromkeys(result.facts["entities"], 1)
    assert optimized["logins"] == 1 and optimized["requests"] == 1 + len(result.facts["entities"])
    assert optimized["changed"] == baseline["changed"] == 0
    assert baseline["per_entity"]["Invoices"] == 2  # 1,510 invoices in pages of 1,000
    assert baseline["rows_read"] > 1500 > optimized["rows_read"]


def test_command_line_writes_a_markdown_report(tmp_path: Path) -> None:
    output = tmp_path / "results.md"

    assert main(["--only", "incremental_poll", "--invoices", "50", "--b1-latency-ms", "0",
                 "--output", str(output)]) == 0

    text = output.read_text()
    assert "## Machine" in text and "**cores**" in text and "**python**" in text
    assert "Incremental poll" in text and "| metric | baseline | optimized | ratio |" in text
    assert "Initial sync" not in text


@pytest.mark.bench
def test_daemon_benchmarks_measure_the_current_design_under_dagster_dev() -> None:
    """Idle, latency and a burst of 3 for the current design on SQLite, at the smallest sizes that still
    go through `dagster dev`, its daemon and the simulators (about 3 minutes: two deployments)."""
    options = DaemonOptions(idle_minutes=0.5, changes=1, bursts=(3,), burst_timeout_s=240.0, burst_grace_s=5.0,
                            designs=("current",), storages=("sqlite",), demo_data=False,
                            quiet_s=15.0, clock_quiet_s=60.0, closing_read=False)

    idle_result, latency_result, burst_result = daemon.run(options)

    assert idle_result.facts["problems"] == []
    (idle_figures,) = idle_result.facts["idle"]
    assert (idle_figures["design"], idle_figures["storage"]) == ("current", "sqlite")
    assert idle_figures["minutes"] >= 0.5
    assert idle_figures["runs"] == len(idle_figures["run_labels"]) >= idle_figures["failed_runs"] == 0
    assert idle_figures["cpu_s"] > 0 and idle_figures["b1_requests"] >= 0
    assert idle_figures["steps"] and idle_figures["steps"][-1][1] == idle_figures["storage_bytes"]
    (latency_figures,) = latency_result.facts["latency"]
    assert len(latency_figures["seconds"]) == 1 and latency_figures["missed"] == 0
    assert latency_figures["seconds"][0] > 0 and latency_figures["duplicates"] == 0
    (burst,) = burst_result.facts["bursts"]
    assert (burst["design"], burst["storage"], burst["size"]) == ("current", "queued", 3)
    assert burst["accepted"] == 3 and burst["seconds"] is not None and burst["duplicates"] == 0
    assert burst["runs"] >= 1 and burst["cpu_s"] > 0
    for result in (idle_result, latency_result, burst_result):
        assert "| current | " in result.markdown() and "met)" in result.markdown()  # a verdict, either way


@pytest.mark.postgres
def test_the_autovacuum_stand_in_vacuums_only_tables_over_autovacuums_threshold(postgres: sa.Engine) -> None:
    name, url = create_database(postgres, "autovacuum")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    stand_in = AutovacuumStandIn([url])
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("create table churned (id int primary key, n int)"))
            conn.execute(sa.text("create table calm (id int primary key, n int)"))
            conn.execute(sa.text("insert into churned select i, 0 from generate_series(1, 10) i"))
            conn.execute(sa.text("insert into calm select i, 0 from generate_series(1, 10) i"))
            for _ in range(6):  # 60 dead versions: over 50 + 20 % of 10 rows
                conn.execute(sa.text("update churned set n = n + 1"))
            conn.execute(sa.text("update calm set n = n + 1"))  # 10 dead versions: under it
            # the same 10 on a table whose own settings say 5 are enough (as the operator's settings do)
            conn.execute(sa.text("create table tuned (id int primary key, n int) "
                                 "with (autovacuum_vacuum_threshold = 5, autovacuum_vacuum_scale_factor = 0)"))
            conn.execute(sa.text("insert into tuned select i, 0 from generate_series(1, 10) i"))
            conn.execute(sa.text("update tuned set n = n + 1"))
            # A value too big for the page lives in the table's TOAST table: each rewrite leaves its old
            # chunks dead there (3 a time, 60 in all), and only 20 row versions in the table itself.
            conn.execute(sa.text("create table toasted (id int primary key, body text)"))
            conn.execute(sa.text("insert into toasted values (1, '')"))
            for _ in range(20):
                conn.execute(sa.text("update toasted set body = (select string_agg(md5(random()::text), '') "
                                     "from generate_series(1, 300))"))
            conn.execute(sa.text("select pg_stat_force_next_flush()"))
            toast = conn.execute(sa.text("select 'pg_toast.' || relname from pg_stat_all_tables where relid = "
                                         "(select reltoastrelid from pg_class where relname = 'toasted')")).scalar_one()

        assert stand_in.vacuum_due() >= 3  # and any shared catalog the other tests' databases churned

        with engine.connect() as conn:
            vacuumed = dict(conn.execute(sa.text(
                "select schemaname || '.' || relname, vacuum_count from pg_stat_all_tables")).all())
            dead = dict(conn.execute(sa.text("select relname, n_dead_tup from pg_stat_user_tables")).all())
        assert [vacuumed[name] for name in ("public.churned", toast, "public.tuned", "public.calm", "public.toasted")
                ] == [1, 1, 1, 0, 0]
        assert dead["churned"] == dead["tuned"] == 0 and dead["calm"] == 10
    finally:
        stand_in.stop()
        engine.dispose()
        drop_database(postgres, name)


@pytest.mark.postgres
def test_a_benchmark_instance_gets_the_operators_autovacuum_settings(postgres: sa.Engine) -> None:
    name, url = create_database(postgres, "bench_instance")
    try:
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}):
            apply_instance_settings(url)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            options = conn.execute(sa.text("select reloptions from pg_class where relname = 'jobs'")).scalar_one()
        engine.dispose()
        assert options == ["autovacuum_vacuum_threshold=5", "autovacuum_vacuum_scale_factor=0"]
    finally:
        drop_database(postgres, name)
