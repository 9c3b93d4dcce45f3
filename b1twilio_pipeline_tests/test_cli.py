"""`b1twilio` console script, run as a real subprocess: secrets commands and check-config."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from keyring.backend import KeyringBackend

from b1twilio_pipeline.core.phones import mask_phone, mask_secret
from b1twilio_pipeline.core.secrets_store import parse_key
from b1twilio_sim.sap_b1 import SapB1Simulator

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "b1twilio"
KEYRING_BACKEND = f"{__name__}.JsonFileKeyring"


class JsonFileKeyring(KeyringBackend):
    """Stand-in for the OS keyring in subprocesses (PYTHON_KEYRING_BACKEND), kept in a JSON file."""

    priority = 1  # type: ignore[assignment]

    def _load(self) -> dict[str, str]:
        path = Path(os.environ["B1TWILIO_TEST_KEYRING"])
        return json.loads(path.read_text()) if path.exists() else {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        Path(os.environ["B1TWILIO_TEST_KEYRING"]).write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        data.pop(f"{service}/{username}", None)
        Path(os.environ["B1TWILIO_TEST_KEYRING"]).write_text(json.dumps(data))


class Cli:
    """Runs the console script with a private store, keyring and environment."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "secrets.enc"
        self.keyring_file = tmp_path / "keyring.json"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("B1_", "TWILIO_", "B1TWILIO_", "PHONE_"))
        }
        self.env.update(
            B1TWILIO_SECRETS_FILE=str(self.store),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            B1TWILIO_TEST_KEYRING=str(self.keyring_file),
            PYTHONPATH=str(REPO),
        )

    def use_test_keyring(self) -> None:
        self.env["PYTHON_KEYRING_BACKEND"] = KEYRING_BACKEND

    def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]
        result = subprocess.run(
            [*command, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**self.env, **(env or {})},
        )  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def new_key(cli: Cli) -> str:
    result = cli("secrets", "generate-key")
    assert result.returncode == 0
    return result.stdout.strip()


def test_generate_key_prints_a_usable_key_once(cli: Cli) -> None:
    result = cli("secrets", "generate-key")
    key = result.stdout.strip()
    assert result.returncode == 0 and len(parse_key(key)) == 32
    assert "export B1TWILIO_SECRET_KEY" in result.stderr and key not in result.stderr
    assert new_key(cli) != key


def test_set_show_delete_with_masked_output_and_encrypted_file(cli: Cli) -> None:
    cli.env["B1TWILIO_SECRET_KEY"] = new_key(cli)
    password = "Pa55word-Never-Shown"
    stored = cli("secrets", "set", "B1_PASSWORD", stdin=password + "\n")  # value not on the command line
    assert stored.returncode == 0, stored.stderr
    assert password not in stored.stdout + stored.stderr and mask_secret(password) in stored.stdout
    assert cli("secrets", "set", "PHONE_SAM", "+447700900123").returncode == 0
    assert cli("secrets", "set", "B1_USERNAME", "manager").returncode == 0

    raw = cli.store.read_bytes()
    for plain in (password.encode(), b"447700900123", b"manager", b"B1_PASSWORD"):
        assert plain not in raw

    shown = cli("secrets", "show")
    assert shown.returncode == 0
    assert "B1_PASSWORD" in shown.stdout and mask_secret(password) in shown.stdout
    assert mask_phone("+447700900123") in shown.stdout
    for plain in (password, "+447700900123", "manager"):
        assert plain not in shown.stdout + shown.stderr
    assert "(overridden by the environment)" in cli("secrets", "show", env={"B1_USERNAME": "x"}).stdout

    assert cli("secrets", "delete", "B1_USERNAME").returncode == 0
    assert "B1_USERNAME" not in cli("secrets", "show").stdout
    missing = cli("secrets", "delete", "B1_USERNAME")
    assert missing.returncode == 2 and missing.stderr.startswith("error: B1_USERNAME is not in")


def test_no_key_wrong_key_and_bad_key_are_one_line_errors(cli: Cli) -> None:
    no_key = cli("secrets", "set", "B1_PASSWORD", "pw")
    assert no_key.returncode == 2
    assert no_key.stderr.count("\n") == 1 and no_key.stderr.startswith("error: no secrets key")

    cli.env["B1TWILIO_SECRET_KEY"] = new_key(cli)
    assert cli("secrets", "set", "B1_PASSWORD", "pw-value").returncode == 0
    wrong = cli("secrets", "show", env={"B1TWILIO_SECRET_KEY": new_key(cli)})
    assert wrong.returncode == 2
    assert wrong.stderr == (
        f"error: cannot decrypt {cli.store}: wrong B1TWILIO_SECRET_KEY or the file was modified\n"
    )
    assert "pw-value" not in wrong.stdout
    bad = cli("secrets", "show", env={"B1TWILIO_SECRET_KEY": "not-a-key"})
    assert bad.returncode == 2 and "B1TWILIO_SECRET_KEY is not a valid key" in bad.stderr
    assert "not-a-key" not in bad.stderr


def test_set_refuses_bad_phone_and_unknown_name(cli: Cli) -> None:
    cli.env["B1TWILIO_SECRET_KEY"] = new_key(cli)
    bad_phone = cli("secrets", "set", "PHONE_SAM", "+44 7700 900123")
    assert bad_phone.returncode == 2 and "E.164" in bad_phone.stderr and "900123" not in bad_phone.stderr
    typo = cli("secrets", "set", "TWILIO_AUTH_TOKN", "tok")
    assert typo.returncode == 2 and "not a setting the pipeline reads" in typo.stderr
    assert cli("secrets", "set", "TWILIO_AUTH_TOKN", "tok", "--force").returncode == 0
    assert [p.name for p in cli.store.parent.glob("*.tmp")] == []  # atomic writes leave no temp files


def test_rotate_keeps_values_for_the_new_key_only(cli: Cli) -> None:
    old = new_key(cli)
    cli.env["B1TWILIO_SECRET_KEY"] = old
    assert cli("secrets", "set", "TWILIO_AUTH_TOKEN", "auth-token-value-1").returncode == 0
    rotated = cli("secrets", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert len(parse_key(new)) == 32 and new != old and new not in rotated.stderr
    with_new = cli("secrets", "show", env={"B1TWILIO_SECRET_KEY": new})
    assert with_new.returncode == 0 and mask_secret("auth-token-value-1") in with_new.stdout
    with_old = cli("secrets", "show")
    assert with_old.returncode == 2 and "wrong B1TWILIO_SECRET_KEY" in with_old.stderr


def test_keyring_holds_the_key_and_follows_rotation(cli: Cli) -> None:
    cli.use_test_keyring()
    stored = cli("secrets", "generate-key", "--keyring")
    assert stored.returncode == 0, stored.stderr
    key = json.loads(cli.keyring_file.read_text())["b1twilio/secret-key"]
    assert key not in stored.stdout + stored.stderr
    again = cli("secrets", "generate-key", "--keyring")
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli("secrets", "set", "B1_COMPANY_DB", "SBODEMOUS").returncode == 0
    shown = cli("secrets", "show")
    assert "key from keyring" in shown.stdout and "B1_COMPANY_DB" in shown.stdout

    rotated = cli("secrets", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(cli.keyring_file.read_text())["b1twilio/secret-key"]
    assert new == rotated.stdout.strip() != key
    assert cli("secrets", "show").returncode == 0
    assert cli("secrets", "show", env={"B1TWILIO_SECRET_KEY": key}).returncode == 2


def test_settings_read_env_then_store_then_default(cli: Cli) -> None:
    cli.env["B1TWILIO_SECRET_KEY"] = new_key(cli)
    probe = "from b1twilio_pipeline.core.settings import current; print(current().b1_company_db or 'DEFAULTDB')"

    def read(env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**cli.env, **(env or {})},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert read() == "DEFAULTDB"
    assert cli("secrets", "set", "B1_COMPANY_DB", "STOREDDB").returncode == 0
    assert read() == "STOREDDB"
    assert read({"B1_COMPANY_DB": "ENVDB"}) == "ENVDB"


def test_check_config_default_file_one_line_per_rule(cli: Cli) -> None:
    result = cli("check-config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "default_rules.yaml: OK, 7 rules (5 enabled)" in lines[0]
    assert len(lines) == 8
    assert any(line.strip().startswith("overdue-30:") and "voice call" in line for line in lines)
    assert "  reorder-all: " in result.stdout
    reorder_all = next(line for line in lines if line.startswith("  reorder-all: "))
    assert reorder_all.endswith(f"-> Kim {mask_phone('+447700900107')} by SMS, then a voice call if the SMS fails")
    assert "+447700900" not in result.stdout and mask_phone("+447700900101") in result.stdout


def test_check_config_invalid_file_exits_2_with_one_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "timezone: Europe/Berlin\nrecipients:\n  t:\n    - {name: A, phone: \"+4915112345678\"}\n"
        "rules:\n  - {id: s1, kind: stock_below_reorder, days_overdue: 3, recipients: [t]}\n"
    )
    result = cli("check-config", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"error: {path}: rule 's1': field 'days_overdue': does not apply to kind stock_below_reorder "
        "(only to payment_overdue)\n"
    )


def test_check_config_uses_b1twilio_config_and_warns_about_missing_phone_refs(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "timezone: Europe/Berlin\nrecipients:\n  cc:\n    - {name: Sam, phone_ref: sam}\n"
        "rules:\n  - {id: o, kind: payment_overdue, days_overdue: 3, recipients: [cc]}\n"
    )
    result = cli("check-config", env={"B1TWILIO_CONFIG": str(path)})
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith(f"{path}: OK, 1 rules")
    assert "warning:" in result.stderr and "b1twilio secrets set PHONE_SAM" in result.stderr
    quiet = cli("check-config", str(path), env={"PHONE_SAM": "+447700900123"})
    assert quiet.returncode == 0 and quiet.stderr == ""


COMPANY_RULES = ("timezone: Europe/Berlin\nrecipients:\n  ap:\n    - {name: Dana, phone: \"+4915112345678\"}\n"
                 "rules:\n  - {id: ap, kind: purchase_invoice_received, recipients: [ap]}\n")


def _companies(tmp_path: Path, second: str) -> Path:
    (tmp_path / "rules-de01.yaml").write_text(COMPANY_RULES)
    path = tmp_path / "companies.yaml"
    path.write_text(
        "companies:\n"
        "  - {id: de01, name: Muster GmbH, service_layer_url: 'https://b1-de.example.com:50000/b1s/v1',\n"
        "     company_db: SBODEMODE, username: manager, password_ref: B1_PASSWORD_DE01, timezone: Europe/Berlin,\n"
        "     rules: rules-de01.yaml}\n" + second)
    return path


def test_check_config_checks_the_companies_file_and_each_rules_file_it_names(cli: Cli, tmp_path: Path) -> None:
    path = _companies(tmp_path, "  - {id: at01, name: Muster AT, service_layer_url: 'https://b1-at.example.com:50000"
                                "/b1s/v2/', company_db: SBODEMOAT, username: manager, password_ref: B1_PASSWORD_AT01,"
                                " timezone: Europe/Vienna, rules: rules-de01.yaml, ca_bundle: /etc/ssl/b1-at.pem}\n")
    result = cli("check-config", env={"B1TWILIO_COMPANIES": str(path), "B1_PASSWORD_DE01": "secret-de"})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK, 2 companies"
    assert lines[1] == ("company de01 (Muster GmbH): SBODEMODE at https://b1-de.example.com:50000/b1s/v1, user "
                        "manager, time zone Europe/Berlin")
    assert lines[2].startswith(f"  {tmp_path / 'rules-de01.yaml'}: OK, 1 rules")
    assert "https://b1-at.example.com:50000/b1s/v2," in lines[4]  # the trailing slash dropped
    assert result.stderr == ("warning: company 'at01': B1_PASSWORD_AT01 (its password_ref) is not set: set the "
                             "environment variable or `b1twilio secrets set B1_PASSWORD_AT01 --force`\n")
    assert "secret-de" not in result.stdout


@pytest.mark.parametrize(("second", "expected"), [
    ("  - {id: de01, name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password_ref: P, timezone: UTC, rules: rules-de01.yaml}\n",
     "company 'de01': the id is given twice: each company needs its own (it is part of partition keys and audit "
     "records)"),
    ("  - {id: DE-02, name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password_ref: P, timezone: UTC, rules: rules-de01.yaml}\n",
     "company 'DE-02' (entry 2): field 'id': must be 2-8 lower-case letters and digits starting with a letter, "
     "e.g. de01"),
    ("  - {id: \"de\\e02\", name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password_ref: P, timezone: UTC, rules: rules-de01.yaml}\n",
     "company 'de\\x1b02' (entry 2): field 'id': must be 2-8 lower-case letters and digits starting with a "
     "letter, e.g. de01"),  # a terminal escape in the file is shown, not sent to the operator's terminal
    ("  - {id: de02, name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password_ref: P, timezone: Europe/Berlinn, rules: rules-de01.yaml}\n",
     "company 'de02' (entry 2): field 'timezone': is not a time zone: use an IANA name such as 'Europe/Berlin'"),
    ("  - {id: de02, name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password: hunter2, timezone: UTC, rules: rules-de01.yaml}\n",
     "company 'de02' (entry 2): field 'password': is not a known field (id, name, service_layer_url, company_db, "
     "username, password_ref, timezone, rules, ca_bundle)"),
    ("  - {id: de02, name: B, service_layer_url: 'https://b:50000/b1s/v1', company_db: D, username: u,"
     " password_ref: P, timezone: UTC, rules: missing.yaml}\n",
     "company 'de02': rules file {tmp}/missing.yaml not found: check its 'rules' in {tmp}/companies.yaml (a "
     "relative path is taken from that file's folder)"),
])
def test_check_config_names_the_company_and_field_of_a_mistake(cli: Cli, tmp_path: Path, second: str,
                                                               expected: str) -> None:
    path = _companies(tmp_path, second)
    result = cli("check-config", "--companies", str(path))

    assert result.returncode == 2 and "hunter2" not in result.stderr
    prefix = "" if expected.startswith("company 'de02': rules") else f"{path}: "
    *warnings, error = result.stderr.splitlines()
    assert error == f"error: {prefix}{expected.replace('{tmp}', str(tmp_path))}"
    assert all(line.startswith("warning: company '") for line in warnings)


def test_workspace_names_a_code_location_per_company_that_dagster_loads(cli: Cli, tmp_path: Path) -> None:
    path = _companies(tmp_path, "  - {id: at01, name: Muster AT, service_layer_url: 'https://b1-at.example.com:50000"
                                "/b1s/v1', company_db: SBODEMOAT, username: manager, password_ref: B1_PASSWORD_AT01,"
                                " timezone: Europe/Vienna, rules: rules-de01.yaml}\n")
    result = cli("workspace", "--companies", str(path), "--output", str(tmp_path / "workspace.yaml"))
    assert (result.returncode, result.stdout) == (0, f"{tmp_path / 'workspace.yaml'}: 2 code locations\n")
    entries = yaml.safe_load((tmp_path / "workspace.yaml").read_text())["load_from"]
    assert [entry["python_module"] for entry in entries] == [
        {"module_name": "b1twilio_pipeline.company_location", "attribute": company, "location_name": company}
        for company in ("de01", "at01")]

    env = {**cli.env, "B1TWILIO_COMPANIES": str(path), "B1TWILIO_DATABASE_URL": f"sqlite:///{tmp_path}/store.sqlite",
           "DAGSTER_HOME": str(tmp_path)}
    loaded = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w",
                             str(tmp_path / "workspace.yaml")], capture_output=True, text=True, timeout=180,
                            cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert (tmp_path / "store-de01.sqlite").exists() and (tmp_path / "store-at01.sqlite").exists()
    assert not (tmp_path / "store.sqlite").exists()  # each company its own store, none shared


def test_workspace_without_a_companies_file_and_an_unknown_company_say_so_in_one_line(
        cli: Cli, tmp_path: Path) -> None:
    missing = cli("workspace")
    assert missing.returncode == 2
    assert missing.stderr == ("error: no companies file: set B1TWILIO_COMPANIES or pass --companies FILE (with one "
                              "company the shipped workspace.yaml is the workspace)\n")
    path = _companies(tmp_path, "")
    env = {**cli.env, "B1TWILIO_COMPANIES": str(path), "DAGSTER_HOME": str(tmp_path)}
    unknown = subprocess.run([sys.executable, "-c", "import b1twilio_pipeline.company_location as m; m.xx01"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert unknown.returncode != 0
    assert unknown.stderr.splitlines()[-1] == (
        f"b1twilio_pipeline.core.errors.ConfigurationError: company xx01: no such id in {path}: check the id (a "
        "workspace.yaml older than the file: regenerate it with `b1twilio workspace`)")
    assert cli("--company", "xx01", "db", "upgrade", env=env).stderr == (
        f"error: company xx01: no such id in {path}: check the id (a workspace.yaml older than the file: regenerate "
        "it with `b1twilio workspace`)\n")


def test_a_command_for_one_company_acts_on_its_store(cli: Cli, tmp_path: Path) -> None:
    env = {"B1TWILIO_COMPANIES": str(_companies(tmp_path, "")),
           "B1TWILIO_DATABASE_URL": f"sqlite:///{tmp_path}/store.sqlite"}
    result = cli("--company", "de01", "db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"store sqlite:///{tmp_path}/store-de01.sqlite: upgraded from revision none")
    assert not (tmp_path / "store.sqlite").exists()


def test_usage_errors_and_help(cli: Cli) -> None:
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("secrets", "check-config", "setup-b1-audit-table", "demo"):
        assert command in helped.stdout
    assert cli("no-such-command").returncode == 2
    extra = cli("check-config", "a.yaml", "b.yaml")
    assert extra.returncode == 2 and "unrecognized arguments" in extra.stderr
    as_module = subprocess.run(
        [sys.executable, "-m", "b1twilio_pipeline.cli", "secrets", "show"], capture_output=True, text=True,
        timeout=60, cwd=REPO, env=cli.env,
    )  # fmt: skip
    assert as_module.returncode == 0 and "no secrets stored yet" in as_module.stdout


def test_the_demo_data_folder_is_private(tmp_path: Path) -> None:
    from b1twilio_sim.demo import DemoPaths

    paths = DemoPaths(tmp_path / ".demo")
    paths.prepare(fresh=False)
    assert paths.root.stat().st_mode & 0o777 == 0o700


def test_operator_commands_do_not_load_the_simulators() -> None:
    """`b1twilio secrets ...` and `check-config` import only what they need: never the simulators."""
    code = ("import sys; from b1twilio_pipeline.cli import main; main(['check-config']); "
            "print(sorted(m for m in sys.modules if m.startswith('b1twilio_sim')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- exit status: 2 for bad input, 1 for an outage, one line each; 141 when the reader goes away --------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_every_command_reports_bad_input_with_status_2_and_an_outage_with_1(
    cli: Cli, tmp_path: Path, sap_sim: SapB1Simulator
) -> None:
    """The module docstring's convention, command by command: one `error:` line, never a traceback (the Cli
    fixture fails on one)."""
    store_is_a_folder = {"B1TWILIO_SECRETS_FILE": str(tmp_path), "B1TWILIO_SECRET_KEY": new_key(cli)}
    b1_wrong_password = {"B1_SERVICE_LAYER_URL": sap_sim.base_url, "B1_COMPANY_DB": sap_sim.company_db,
                         "B1_USERNAME": sap_sim.username, "B1_PASSWORD": "not-the-password"}
    nested = tmp_path / "nested.yaml"
    nested.write_text("rules: " + "[" * 3000 + "]" * 3000 + "\n")
    cases: list[tuple[tuple[str, ...], dict[str, str], int, str]] = [
        (("check-config", str(tmp_path / "missing.yaml")), {}, 2, "rules file not found"),
        (("check-config", str(tmp_path)), {}, 2, "cannot read rules file"),
        (("check-config", str(nested)), {}, 2, "nested too deeply"),
        (("secrets", "show"), store_is_a_folder, 2, "Is a directory"),
        (("db", "upgrade", "--database-url", "nonsense://somewhere/db"), {}, 2, "database URL"),
        (("db", "upgrade", "--database-url", "not a url"), {}, 2, "database URL"),
        (("db", "upgrade", "--database-url", f"postgresql://b1twilio@127.0.0.1:{_closed_port()}/none"), {}, 1,
         "the database failed"),
        (("setup-b1-audit-table",), b1_wrong_password, 2, "login failed"),
        (("demo", "--port", "0"), {}, 2, "not a TCP port"),
    ]
    for args, env, status, words in cases:
        result = cli(*args, env=env)
        assert (result.returncode, result.stdout) == (status, ""), (args, result.returncode, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)


def _command() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]


def test_a_reader_that_closes_early_ends_the_command_quietly_with_141(cli: Cli, tmp_path: Path) -> None:
    """`b1twilio check-config rules.yaml | head -3`, for real: the output (one line per rule, far more than a
    pipe holds) outlives `head`, and the command stops with git's status and nothing on stderr."""
    rules = "".join(f"  - {{id: r{n}, kind: stock_below_reorder, recipients: [t]}}\n" for n in range(4000))
    path = tmp_path / "many.yaml"
    path.write_text(f'timezone: Europe/Berlin\nrecipients:\n  t: [{{name: A, phone: "+4915112345678"}}]\n'
                    f"rules:\n{rules}")
    errors = tmp_path / "stderr.txt"
    pipeline = f'{shlex.join([*_command(), "check-config", str(path)])} 2>"$1" | head -3; echo "${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", pipeline, "bash", str(errors)], capture_output=True, text=True,
                            timeout=120, cwd=REPO, env=cli.env)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}: OK, 4000 rules") and len(lines) == 4, lines
    assert lines[-1] == "141"
    assert errors.read_text() == ""


@pytest.mark.parametrize("args", [("rules-schema",), ("check-config",), ("secrets", "show")])
def test_every_command_stops_quietly_when_its_stdout_is_already_closed(cli: Cli, args: tuple[str, ...]) -> None:
    reader_gone = subprocess.Popen([*_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=REPO, env=cli.env)
    assert reader_gone.stdout is not None and reader_gone.stderr is not None
    reader_gone.stdout.close()  # the only reader closes before the command writes a byte
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=120) == 141 and stderr == ""


def test_rotate_with_nobody_reading_the_new_key_changes_nothing(cli: Cli) -> None:
    cli.env["B1TWILIO_SECRET_KEY"] = new_key(cli)
    assert cli("secrets", "set", "B1_USERNAME", "manager").returncode == 0
    rotating = subprocess.Popen([*_command(), "secrets", "rotate"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=REPO, env=cli.env)
    assert rotating.stdout is not None
    rotating.stdout.close()
    assert rotating.wait(timeout=120) == 141
    shown = cli("secrets", "show")  # the old key still opens the store: no key was lost
    assert shown.returncode == 0 and "B1_USERNAME" in shown.stdout


def test_windows_lists_the_keys_a_backfill_can_name(cli: Cli, tmp_path: Path) -> None:
    store = {"B1TWILIO_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}", "B1TWILIO_WINDOW_MINUTES": "15",
             "B1TWILIO_TIMEZONE": "Europe/Berlin"}
    first = cli("windows", "--last", "3", env=store)
    again = cli("windows", "--last", "3", env=store)
    history = cli("windows", "--last", "2", env={**store, "B1TWILIO_PARTITIONS_START": "2026-11-01-00:00"})
    refused = cli("windows", "--last", "0", env=store)

    # A new deployment: its first start is recorded, and its window is the only one (older ones never were).
    assert first.returncode == 0 and len(first.stdout.split()) == 1, first
    assert again.stdout == first.stdout
    assert len(history.stdout.split()) == 2 and history.stdout.split()[-1] >= first.stdout.strip()
    key = first.stdout.strip()
    assert key[:11].count("-") == 3 and key[-3:] in (":00", ":15", ":30", ":45"), key
    assert refused.returncode == 2 and refused.stderr.startswith("error: --last 0"), refused
