"""Every benchmark runs at a tiny size against real simulators and reports what it claims to measure.

Only structural facts are asserted (request counts, rows stored, messages accepted once, computed waits):
wall times depend on the machine and are never asserted.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import incremental_poll, initial_sync
from benchmarks.__main__ import main


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
