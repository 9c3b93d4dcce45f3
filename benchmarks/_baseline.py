"""The baseline design: commit a325f14 of this repository ("today's design": a poll schedule every minute,
one run per notification), extracted from git and run by the same `dagster dev` as the current tree.

The extracted tree goes first on PYTHONPATH (and is the working directory), so `b1twilio_pipeline`
resolves to it in `dagster dev`, its code server and every run worker: the editable install of the current
tree is an import hook appended to `sys.meta_path`, which PYTHONPATH entries precede. `resolved_package`
checks exactly that in a child process before anything is measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks._common import REPO_ROOT

BASELINE_COMMIT = "a325f14"
PACKAGE = "b1twilio_pipeline"


class BaselineError(RuntimeError):
    """The baseline cannot be extracted or does not resolve to the extracted tree."""


def describe_commit(commit: str = BASELINE_COMMIT) -> str:
    """`a325f14 2026-11-25 <subject>` for the report."""
    result = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h %cs %s", commit],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or commit


def extract(dest: Path, commit: str = BASELINE_COMMIT) -> Path:
    """`git archive <commit> | tar -x -C dest`: the tree of `commit`, without the working tree's changes."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True,
                           check=False)
    archive.stdout.close()
    _, error = archive.communicate()
    if archive.returncode != 0:
        raise BaselineError(f"git archive {commit} failed: {error.decode(errors='replace').strip()} "
                            "(a shallow clone lacks it: `git fetch --unshallow`)")
    if untar.returncode != 0:
        raise BaselineError(f"tar -x into {dest} failed: {untar.stderr.decode(errors='replace').strip()}")
    if not (dest / PACKAGE / "definitions.py").is_file():
        raise BaselineError(f"{commit} has no {PACKAGE}/definitions.py")
    return dest


def child_path_environment(tree: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with `tree` first on PYTHONPATH."""
    result = dict(os.environ if env is None else env)
    rest = result.get("PYTHONPATH", "")
    result["PYTHONPATH"] = str(tree) + (os.pathsep + rest if rest else "")
    return result


def resolved_package(tree: Path, package: str = PACKAGE) -> Path:
    """Where `package` is imported from by a Python started as `dagster dev` will be (cwd and PYTHONPATH
    `tree`); a BaselineError unless that is inside `tree`."""
    probe = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"],
                           cwd=tree, env=child_path_environment(tree), capture_output=True, text=True,
                           check=False, timeout=120)
    if probe.returncode != 0:
        raise BaselineError(f"importing {package} from {tree} failed: {probe.stderr.strip()[-500:]}")
    found = Path(probe.stdout.strip()).resolve()
    if not found.is_relative_to(tree.resolve()):
        raise BaselineError(f"{package} resolved to {found}, not to the baseline tree {tree}: the current "
                            "tree's install shadows PYTHONPATH")
    return found
