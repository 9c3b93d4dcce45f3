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


def test_the_one_company_code_location_refuses_a_companies_file(tmp_path: Path) -> None:
    """Watching only the company of the B1_ settings while a companies file names others would look like
    alerting for all of them."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "B1TWILIO_COMPANIES": str(tmp_path / "companies.yaml")}
    result = subprocess.run([sys.executable, "-c", "import b1twilio_pipeline.definitions"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        f"b1twilio_pipeline.core.errors.ConfigurationError: B1TWILIO_COMPANIES={tmp_path / 'companies.yaml'} is "
        "set: load one code location per company (`b1twilio workspace` writes the workspace.yaml), or unset it to "
        "watch the one company of the B1_ settings")
