"""`python -m benchmarks` (`make bench`): run the benchmarks, print their tables and write
them to `benchmarks/results.md`.

    python -m benchmarks                       # everything at full size (hours: see benchmarks/README.md)
    python -m benchmarks --invoices 20000      # smaller initial sync and poll
    python -m benchmarks --only incremental_poll
    python -m benchmarks --only idle --idle-minutes 2 --designs current --storages sqlite --output -
    python -m benchmarks --only companies --companies 20 --idle-minutes 10
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

from benchmarks import companies, daemon, incremental_poll, initial_sync
from benchmarks._common import BenchResult, machine_info, machine_markdown
from benchmarks._session import DESIGNS, STORAGES, DaemonOptions

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"
IN_PROCESS = ("initial_sync", "incremental_poll")
NAMES = (*IN_PROCESS, *daemon.NAMES, "companies")


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of `allowed`, kept in `allowed`'s order."""
    def parse(text: str) -> tuple[str, ...]:
        chosen = {name.strip() for name in text.split(",") if name.strip()}
        if not chosen or chosen - set(allowed):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated)")
        return tuple(name for name in allowed if name in chosen)
    return parse


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(size) for size in text.split(",") if size.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("burst sizes are positive integers, comma-separated (e.g. 100,1000)")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=initial_sync.DEFAULT_INVOICES,
                        help="invoices in B1 for the initial sync and the incremental poll (default 100000)")
    parser.add_argument("--b1-latency-ms", type=float, default=initial_sync.DEFAULT_LATENCY_S * 1000,
                        help="latency injected into every B1 request (default 5)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only these (repeatable)")
    defaults = DaemonOptions()
    parser.add_argument("--idle-minutes", type=float, default=defaults.idle_minutes,
                        help="idle window per design and storage, scaled to per hour (default 20)")
    parser.add_argument("--floor-minutes", type=float, default=None,
                        help="the floor's idle window, if shorter: it runs nothing on a clock, so a short "
                             "window measures it as well (default: --idle-minutes)")
    parser.add_argument("--changes", type=int, default=defaults.changes,
                        help="B1 changes timed per design for the latency (default 10)")
    parser.add_argument("--bursts", type=_sizes, default=defaults.bursts,
                        help="burst sizes, comma-separated (default 100,1000)")
    parser.add_argument("--designs", type=_names(DESIGNS), default=defaults.designs,
                        help="daemon-level designs, comma-separated (default floor,baseline,current)")
    parser.add_argument("--storages", type=_names(STORAGES), default=defaults.storages,
                        help="instance storages of the idle (and latency: the first) deployments "
                             "(default sqlite,postgres)")
    parser.add_argument("--companies", type=int, default=20,
                        help="companies of the many-company deployment, measured beside one alone (default 20)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="markdown file to write (default benchmarks/results.md); '-' to write none")
    return parser


def _plan(args: argparse.Namespace) -> list[tuple[str, Callable[[], list[BenchResult]]]]:
    """The in-process benchmarks one by one, then the daemon-level ones together (they share deployments)."""
    b1 = args.b1_latency_ms / 1000
    chosen = [name for name in NAMES if not args.only or name in args.only]
    plan: dict[str, Callable[[], list[BenchResult]]] = {
        "initial_sync": lambda: [initial_sync.run(args.invoices, b1)],
        "incremental_poll": lambda: [incremental_poll.run(args.invoices, b1)],
    }
    steps = [(name, plan[name]) for name in chosen if name in IN_PROCESS]
    under_daemon = [name for name in chosen if name in daemon.NAMES]
    if under_daemon:
        options = DaemonOptions(idle_minutes=args.idle_minutes, floor_minutes=args.floor_minutes,
                                changes=args.changes, bursts=args.bursts,
                                designs=args.designs, storages=args.storages)
        steps.append((" + ".join(under_daemon), lambda: daemon.run(options, under_daemon)))
    if "companies" in chosen:
        counts = (1, args.companies) if args.companies > 1 else (1,)
        steps.append(("companies", lambda: [companies.run(counts, args.idle_minutes, args.changes)]))
    return steps


def _load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    floor_minutes = args.idle_minutes if args.floor_minutes is None else args.floor_minutes
    if args.invoices < 1 or args.changes < 1 or min(args.idle_minutes, floor_minutes) <= 0:
        print("--invoices and --changes must be at least 1, --idle-minutes and --floor-minutes above 0",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    info = machine_info()
    info["load average before (1/5/15 min)"] = _load()
    sections: list[str] = []
    started = time.perf_counter()
    for name, bench in _plan(args):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        results = bench()
        print(f"{name} done in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        for result in results:
            print(result.markdown(), flush=True)
            sections.append(result.markdown())
    info["load average after (1/5/15 min)"] = _load()
    info["total benchmark time"] = f"{time.perf_counter() - started:.0f} s"
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    document = "\n".join([
        "# Benchmark results", "",
        f"Produced by `{command.strip()}`. Ratios are baseline / optimized (how many times less the "
        "optimized path needs); every baseline was measured in the same run against the same simulators. "
        "The daemon-level tables show each design's figures with the targets' verdicts beside them.", "",
        "## Machine", "", machine_markdown(info), "## Results", "", *sections,
    ]).rstrip() + "\n"
    print("## Machine\n\n" + machine_markdown(info), flush=True)
    if args.output != "-":
        Path(args.output).write_text(document, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
