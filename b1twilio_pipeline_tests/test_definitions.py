"""The code location loads: what `dagster dev -w workspace.yaml` and `dagster definitions validate` need."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from b1twilio_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_dagster_definitions_validate_cli(tmp_path: Path) -> None:
    # DAGSTER_HOME elsewhere: the top-level dagster.yaml is the production (PostgreSQL) instance.
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
