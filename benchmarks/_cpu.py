"""CPU time of a whole process tree, run workers that already exited included.

A Dagster deployment's cost is spread over short-lived processes (one per run), so sampling the live
processes misses most of it. A cgroup v1 `cpuacct` group counts every nanosecond of every process in it,
and children are born in their parent's group: the tree is put in a fresh group before its first
instruction (a shell writes its own pid into the group, then execs the real command). Where cgroups are
unavailable (not root, no v1 cpuacct hierarchy) the fallback samples /proc for the session's processes
twice a second: it misses what a process burns after its last sample and processes shorter than that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Protocol

CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuMeter(Protocol):
    method: str  # how the time is counted, printed beside the figures

    def prefix(self) -> list[str]: ...

    def attach(self, pid: int) -> None: ...

    def seconds(self) -> float: ...

    def pids(self) -> list[int]: ...

    def close(self) -> None: ...


def _own_cpuacct_path() -> Path:
    """This process's cpuacct group (nested groups are made under it, so a containerised run works)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, controllers, path = line.split(":", 2)
            if "cpuacct" in controllers.split(","):
                return CPUACCT_ROOT / path.lstrip("/")
    return CPUACCT_ROOT


class CgroupMeter:
    """A fresh cpuacct group; `prefix()` is the argv that enters it and execs the command that follows."""

    method = "cgroup v1 cpuacct (every process of the tree, exited ones included)"

    def __init__(self, label: str) -> None:
        self.path = _own_cpuacct_path() / f"b1tw_bench_{label}_{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def prefix(self) -> list[str]:
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs")]

    def attach(self, pid: int) -> None:
        """Nothing to do: the prefix put the process in the group before it started."""

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        return []

    def close(self) -> None:
        """Kill what is left in the group (only processes the benchmark started are in it), then remove it."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                threading.Event().wait(0.1)
        raise RuntimeError(f"could not remove cgroup {self.path}: processes still in it: {self.pids()}")


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(session id, start time, utime + stime in ticks) of a process, or None if it is gone."""
    try:
        fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[3]), int(fields[19]), int(fields[11]) + int(fields[12])


class ProcMeter:
    """Fallback: samples /proc for the processes of the child's session (its pid is the session id)."""

    method = "/proc sampling of the process session every 0.5 s (misses short-lived processes)"

    def __init__(self, label: str, interval_s: float = 0.5) -> None:
        self.label, self.interval_s = label, interval_s
        self.session: int | None = None
        self._seen: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cpu-{label}", daemon=True)

    def prefix(self) -> list[str]:
        return []

    def attach(self, pid: int) -> None:
        self.session = pid
        self._thread.start()

    def _sample(self) -> None:
        found: dict[tuple[int, int], int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _stat(entry.name)) is not None and stat[0] == self.session:
                found[(int(entry.name), stat[1])] = stat[2]
        with self._lock:
            self._seen.update(found)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def seconds(self) -> float:
        if self.session is not None:
            self._sample()
        with self._lock:
            return sum(self._seen.values()) / _TICKS

    def pids(self) -> list[int]:
        return [int(e.name) for e in Path("/proc").iterdir()
                if e.name.isdigit() and (stat := _stat(e.name)) is not None and stat[0] == self.session]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def cpu_meter(label: str) -> CpuMeter:
    """The cgroup meter when this process may make cpuacct groups, else the /proc fallback."""
    if (CPUACCT_ROOT / "cpuacct.usage").exists():
        with contextlib.suppress(OSError):
            return CgroupMeter(label)
    return ProcMeter(label)

