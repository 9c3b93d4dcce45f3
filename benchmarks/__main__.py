"""`python -m benchmarks` (`make bench`): run the benchmarks, print their tables and write
them to `benchmarks/results.md`.

    python -m benchmarks                       # everything at full size (a few minutes on 2 cores)
    python -m benchmarks --invoices 20000      # smaller initial sync and poll
    python -m benchmarks --only incremental_poll
    python -m benchmarks --output -            # print only, write no file
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from benchmarks import incremental_poll, initial_sync
from benchmarks._common import BenchResult, machine_info, machine_markdown

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"
NAMES = ("initial_sync", "incremental_poll")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=initial_sync.DEFAULT_INVOICES,
                        help="invoices in B1 for the initial sync and the incremental poll (default 100000)")
    parser.add_argument("--b1-latency-ms", type=float, default=initial_sync.DEFAULT_LATENCY_S * 1000,
                        help="latency injected into every B1 request (default 5)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only these (repeatable)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="markdown file to write (default benchmarks/results.md); '-' to write none")
    return parser


def _plan(args: argparse.Namespace) -> list[tuple[str, Callable[[], BenchResult]]]:
    b1 = args.b1_latency_ms / 1000
    plan: dict[str, Callable[[], BenchResult]] = {
        "initial_sync": lambda: initial_sync.run(args.invoices, b1),
        "incremental_poll": lambda: incremental_poll.run(args.invoices, b1),
    }
    return [(name, plan[name]) for name in NAMES if not args.only or name in args.only]


def _load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.invoices < 1:
        print("--invoices must be at least 1", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    info = machine_info()
    info["load average before (1/5/15 min)"] = _load()
    sections: list[str] = []
    started = time.perf_counter()
    for name, bench in _plan(args):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        result = bench()
        print(f"{name} done in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        print(result.markdown(), flush=True)
        sections.append(result.markdown())
    info["load average after (1/5/15 min)"] = _load()
    info["total benchmark time"] = f"{time.perf_counter() - started:.0f} s"
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    document = "\n".join([
        "# Benchmark results", "",
        f"Produced by `{command.strip()}`. Ratios are baseline / optimized (how many times less the "
        "optimized path needs); every baseline was measured in the same run against the same simulators.", "",
        "## Machine", "", machine_markdown(info), "## Results", "", *sections,
    ]).rstrip() + "\n"
    print("## Machine\n\n" + machine_markdown(info), flush=True)
    if args.output != "-":
        Path(args.output).write_text(document, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
