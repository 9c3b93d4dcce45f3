"""Benchmarks, run with `make bench` (`python -m benchmarks`).

Each module measures one optimization against a naive baseline in the same run, against the simulators
with injected latency, and returns a `BenchResult` table: `initial_sync`, `incremental_poll`, `fanout`,
`end_to_end_latency`. Results of the last full run are in `benchmarks/results.md`.
"""
