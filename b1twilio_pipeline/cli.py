"""`b1twilio`: the operator commands (the list is in the README, "Commands").

    b1twilio secrets generate-key [--keyring]     new key for B1TWILIO_SECRET_KEY (or the OS keyring)
    b1twilio secrets set NAME [VALUE] [--force]   VALUE from stdin / a hidden prompt when omitted
    b1twilio secrets show                         names and masked values
    b1twilio secrets delete NAME
    b1twilio secrets rotate                       re-encrypt under a new key, printed once
    b1twilio check-config [FILE] [--companies F]  validate a rules file (or the companies file and each company's
                                                  rules file), say what each rule would do
    b1twilio workspace [--companies F] [--output F]   workspace.yaml: one code location per company
    b1twilio rules-schema                         the JSON Schema of the rules file, for editors
    b1twilio preview [--rules F] [--since D] [--offline]   what a rules file would send now; sends nothing
    b1twilio setup-b1-audit-table                 (b1twilio_pipeline.b1.audit_table)
    b1twilio setup-b1-webhooks                    B1 posts its changes to the receiver (notifications.b1_webhook_setup)
    b1twilio db upgrade [--database-url URL]      migrate the store (b1twilio_pipeline.core.database)
    b1twilio windows [--last N]                   the latest snapshot windows' partition keys, to backfill
    b1twilio receiver [--host H] [--port N] [--public-url URL]   what Twilio calls: statuses, replies, keys
    b1twilio watchdog [--stale-minutes N]         text the admins once when the daemon stops ticking
    b1twilio demo [--port N] [--data-dir D] [--fresh]   the quick start (b1twilio_sim.demo)

With a companies file, `b1twilio --company ID COMMAND` runs a command for that company (its B1, rules file
and store), e.g. `b1twilio --company de01 setup-b1-audit-table`.

Exit status: 0 done; 2 bad configuration or input (a rules file, a setting, a secret, a database URL, B1
refusing the login), as one `error: ...` line on stderr, never a traceback; 1 a service that cannot be
reached or fails (the database, the B1 Service Layer), also one `error: ...` line: trying again later may
work; 141 the reader of the output went away (`b1twilio check-config | head -3`), silently; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date

from b1twilio_pipeline.core import secrets_store, settings
from b1twilio_pipeline.core.phones import mask_phone, mask_secret
from b1twilio_pipeline.core.settings import ConfigurationError

# command -> (module, function), imported only when run: the audit setup pulls in Dagster, which the
# secrets commands should not wait for. The function receives the parsed argparse.Namespace.
DELEGATED = {
    "check-config": ("b1twilio_pipeline.alerts.check_config", "check_config_command"),
    "setup-b1-audit-table": ("b1twilio_pipeline.b1.audit_table", "setup_audit_table_command"),
    "setup-b1-webhooks": ("b1twilio_pipeline.notifications.b1_webhook_setup", "setup_b1_webhooks_command"),
    "db upgrade": ("b1twilio_pipeline.core.database", "upgrade_command"),
    "windows": ("b1twilio_pipeline.b1.window_list", "windows_command"),
    "receiver": ("b1twilio_pipeline.notifications.receiver_command", "receiver_command"),
    "preview": ("b1twilio_pipeline.notifications.preview", "preview_command"),
    "watchdog": ("b1twilio_pipeline.notifications.watchdog", "watchdog_command"),
    "workspace": ("b1twilio_pipeline.company_location", "workspace_command"),
    "demo": ("b1twilio_sim.demo", "main"),
}

_NO_KEY = (
    f"no secrets key: export {secrets_store.KEY_ENV} (make one with `b1twilio secrets generate-key`) "
    "or keep it in the OS keyring with `b1twilio secrets generate-key --keyring`"
)


# 128 + SIGPIPE: the status of git, cat and every C tool when the reader of their output goes away (git
# exits 141 on EPIPE on purpose, and a shell reports 141 for a process SIGPIPE killed), so scripts treat
# `b1twilio ... | head` as they treat `git log | head`. Not 0: the output was cut short, and a
# `set -o pipefail` script that wanted all of it should know.
EXIT_READER_GONE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return status
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly. Python flushes stdout again at exit and would complain
        # about the same pipe, so stdout now goes to /dev/null.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # usage errors and --help: argparse already printed
        return int(exc.code or 0)
    try:
        if args.company:
            from b1twilio_pipeline.company_location import serve_company

            serve_company(args.company)
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        raise
    except ConfigurationError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {_one_line(where + str(exc.strerror or exc))}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print("error: the input is not UTF-8 text", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="b1twilio", description="b1twilio-pipeline operator commands")
    parser.add_argument("--company", metavar="ID", help="act for this company of the companies file "
                                                        "(B1TWILIO_COMPANIES): its B1, rules and store")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    secrets = commands.add_parser("secrets", help="manage the encrypted secrets store")
    actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate-key", help="print a new key for B1TWILIO_SECRET_KEY")
    generate.add_argument("--keyring", action="store_true", help="store it in the OS keyring instead")
    generate.add_argument("--force", action="store_true", help="replace a key already in the keyring")
    generate.set_defaults(handler=cmd_generate_key)
    put = actions.add_parser("set", help="store a value (read from stdin or a prompt when omitted)")
    put.add_argument("name", help="setting name, e.g. B1_PASSWORD or PHONE_SAM")
    put.add_argument("value", nargs="?", help="the value; omit it to keep it out of shell history")
    put.add_argument("--force", action="store_true", help="store a name the pipeline does not know")
    put.set_defaults(handler=cmd_set)
    actions.add_parser("show", help="list stored names with masked values").set_defaults(handler=cmd_show)
    delete = actions.add_parser("delete", help="remove a stored value")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)
    rotate = actions.add_parser("rotate", help="re-encrypt the store under a new key (printed once)")
    rotate.set_defaults(handler=cmd_rotate)

    commands.add_parser("rules-schema", help="print the JSON Schema of the rules file (for editors)").set_defaults(
        handler=cmd_rules_schema)
    check = commands.add_parser("check-config", help="validate a rules file and say what each rule does")
    check.add_argument("file", nargs="?", help="rules file (default: B1TWILIO_CONFIG, else the shipped one)")
    check.add_argument("--companies", metavar="FILE",
                       help="companies file, and every rules file it names (default: B1TWILIO_COMPANIES when no "
                            "rules file is given)")
    check.set_defaults(handler=_delegate("check-config"))
    workspace = commands.add_parser("workspace", help="the workspace.yaml of a companies file: a code location per "
                                                      "company")
    workspace.add_argument("--companies", metavar="FILE", help="companies file (default: B1TWILIO_COMPANIES)")
    workspace.add_argument("--output", metavar="FILE", help="write it there (default: standard output)")
    workspace.set_defaults(handler=_delegate("workspace"))

    commands.add_parser(
        "setup-b1-audit-table", help="create the B1 user-defined audit table (idempotent)"
    ).set_defaults(handler=_delegate("setup-b1-audit-table"))
    commands.add_parser(
        "setup-b1-webhooks", help="subscribe the receiver to B1's changes of what the rules watch (B1 10.0 FP 2602+; "
                                  "idempotent)"
    ).set_defaults(handler=_delegate("setup-b1-webhooks"))
    database = commands.add_parser("db", help="the pipeline's own database (snapshots, alerts, ledger)")
    db_actions = database.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = db_actions.add_parser("upgrade", help="migrate it to this release's schema (the services do "
                                                    "this at start too)")
    upgrade.add_argument("--database-url", help="SQLAlchemy URL (default: B1TWILIO_DATABASE_URL)")
    upgrade.set_defaults(handler=_delegate("db upgrade"))
    windows = commands.add_parser("windows", help="print the partition keys of the latest snapshot windows "
                                                  "(oldest first), e.g. for `dagster job backfill --from`")
    windows.add_argument("--last", type=int, default=4, help="how many windows, the open one included (default 4)")
    windows.set_defaults(handler=_delegate("windows"))
    dry_run = commands.add_parser("preview", help="what a rules file would send on the current B1 data, to whom "
                                                  "and when; sends nothing, writes nothing")
    dry_run.add_argument("--rules", help="rules file (default: B1TWILIO_CONFIG, else the shipped one)")
    dry_run.add_argument("--since", type=_day, help="documents changed since YYYY-MM-DD (default: 3 days ago)")
    dry_run.add_argument("--offline", action="store_true", help="evaluate the snapshot store, do not ask B1")
    dry_run.set_defaults(handler=_delegate("preview"))
    watchdog = commands.add_parser("watchdog", help="text the admins once when the Dagster daemon stops ticking, "
                                                    "and once when it runs again (run it from a timer)")
    watchdog.add_argument("--stale-minutes", type=int, default=5,
                          help="how old the heartbeat may be before the daemon counts as silent (default 5)")
    watchdog.set_defaults(handler=_delegate("watchdog"))
    receiver = commands.add_parser("receiver", help="serve what Twilio calls: status callbacks, SMS replies and "
                                                    "keypresses (acknowledgements)")
    receiver.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    receiver.add_argument("--port", type=int, default=8788, help="port to bind, 0 for a free one (default 8788)")
    receiver.add_argument("--public-url", default=None, help="base URL Twilio calls (signatures cover it); "
                                                             "default B1TWILIO_PUBLIC_URL, else http://HOST:PORT")
    receiver.set_defaults(handler=_delegate("receiver"))
    demo = commands.add_parser("demo", help="start the simulators and the Dagster UI with demo data")
    demo.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
    demo.add_argument("--data-dir", default=".demo",
                      help="folder for the demo's Dagster instance, store and logs (default .demo)")
    demo.add_argument("--fresh", action="store_true", help="wipe the data folder first")
    demo.set_defaults(handler=_delegate("demo"))
    return parser


# --- secrets -----------------------------------------------------------------------------------------------


def cmd_generate_key(args: argparse.Namespace) -> int:
    key = secrets_store.generate_key()
    if args.keyring:
        if secrets_store.keyring_key() and not args.force:
            raise secrets_store.SecretsStoreError(
                "the OS keyring already holds a b1twilio key: replacing it locks you out of the existing "
                "store (use `b1twilio secrets rotate`), or pass --force"
            )
        secrets_store.store_key_in_keyring(key)
        print(f"stored a new key in the OS keyring ({secrets_store.KEYRING_SERVICE}/"
              f"{secrets_store.KEYRING_USERNAME}); it is used when {secrets_store.KEY_ENV} is unset")
        return 0
    print(key)
    print(
        f"# keep this key safe (without it the store cannot be read) and export it: "
        f"export {secrets_store.KEY_ENV}=<the key above>, or in one step: "
        f"export {secrets_store.KEY_ENV}=$(b1twilio secrets generate-key)",
        file=sys.stderr,
    )
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    name = args.name.strip()
    value = args.value if args.value is not None else _read_value(name)
    if settings.is_phone_setting(name):
        value = value.strip()
    settings.check_storable(name, value, allow_unknown=args.force)
    store = _open_store()
    store.set(name, value)
    print(f"stored {name} = {_masked(name, value)} in {store.path}")
    if os.environ.get(name):
        print(f"note: the environment variable {name} is set and takes precedence over the store",
              file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path = secrets_store.store_path()
    if not path.exists():
        print(f"no secrets stored yet ({path})")
        return 0
    store, source = _store_and_key_source()
    items = store.items()
    print(f"{path} (key from {source}), {len(items)} value(s)")
    width = max((len(n) for n in items), default=0)
    for name, value in sorted(items.items()):
        note = "  (overridden by the environment)" if os.environ.get(name) else ""
        print(f"  {name.ljust(width)}  {_masked(name, value)}{note}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = _open_store()
    if not store.exists() or not store.delete(args.name):
        raise secrets_store.SecretsStoreError(
            f"{args.name} is not in {store.path}: `b1twilio secrets show` lists what is stored"
        )
    print(f"deleted {args.name} from {store.path}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    store, source = _store_and_key_source()
    if not store.exists():
        raise secrets_store.SecretsStoreError(f"no secrets file at {store.path}: nothing to rotate")
    store.names()  # decrypt first: a wrong current key fails here, before anything changes
    new_key = secrets_store.generate_key()
    # The new key is printed before the store changes: if stdout is gone (`| head -c 0`), nothing changed,
    # rather than a store encrypted under a key nobody saw.
    print(new_key, flush=True)
    try:
        store.rotate(new_key)
    except (ConfigurationError, OSError) as exc:
        raise secrets_store.SecretsStoreError(
            f"the store was not re-encrypted, the old key still opens it (forget the key printed above): "
            f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
    if source == "keyring":
        try:
            secrets_store.store_key_in_keyring(new_key)
        except ConfigurationError as exc:
            print(f"warning: {_one_line(str(exc))}", file=sys.stderr)
        else:
            print("re-encrypted the store; the OS keyring now holds the new key", file=sys.stderr)
            return 0
    print(
        f"# re-encrypted {store.path} under the new key above; the old key no longer opens it: "
        f"set {secrets_store.KEY_ENV} to the new key wherever the pipeline runs",
        file=sys.stderr,
    )
    return 0


def _open_store() -> secrets_store.SecretsStore:
    return _store_and_key_source()[0]


def _store_and_key_source() -> tuple[secrets_store.SecretsStore, str]:
    """The store at the configured path with the configured key, or the one-line "no key" error."""
    key = secrets_store.configured_key()
    if key is None:
        raise secrets_store.SecretsStoreError(_NO_KEY)
    return secrets_store.SecretsStore(secrets_store.store_path(), key[0]), key[1]


def _read_value(name: str) -> str:
    """The value without putting it on the command line: hidden prompt on a terminal, else stdin."""
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"{name}: ")
    data = sys.stdin.read() if sys.stdin is not None else ""
    return data.rstrip("\r\n")


def _masked(name: str, value: str) -> str:
    return mask_phone(value) if settings.is_phone_setting(name) else mask_secret(value)


# --- check-config ------------------------------------------------------------------------------------------


def cmd_rules_schema(args: argparse.Namespace) -> int:
    from b1twilio_pipeline.alerts.rules import rules_schema_text

    sys.stdout.write(rules_schema_text())
    return 0


# --- delegated commands ------------------------------------------------------------------------------------


def _delegate(command: str) -> Callable[[argparse.Namespace], int]:
    module_name, function_name = DELEGATED[command]

    def run(args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name != "b1twilio_sim":
                raise
            raise ConfigurationError(f"`b1twilio {command}` needs the simulators, which this installation "
                                     "lacks: install with `pip install 'b1twilio-pipeline[demo]'`") from None
        try:
            return int(getattr(module, function_name)(args) or 0)
        except Exception as exc:
            failure = _service_failure(exc)
            if failure is None:
                raise  # a bug: its traceback is what a report needs
            print(f"error: {_one_line(failure[1])}", file=sys.stderr)
            return failure[0]

    return run


def _service_failure(exc: Exception) -> tuple[int, str] | None:
    """(exit status, message) for what the database and B1 commands meet: a database URL that is not one, or
    a login B1 refuses, is configuration (2); a database or B1 that cannot be reached or fails is an outage
    (1). None for anything else."""
    from sqlalchemy import exc as sa_exc

    from b1twilio_pipeline.b1.errors import SapB1AuthError, SapB1Error

    if isinstance(exc, sa_exc.ArgumentError):
        return 2, f"the database URL (--database-url or B1TWILIO_DATABASE_URL) is not usable: {exc}"
    if isinstance(exc, sa_exc.DBAPIError):
        return 1, f"the database failed: {exc.orig}"  # the driver's words, without the statement
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return 1, f"the database failed: {type(exc).__name__}"
    if isinstance(exc, SapB1AuthError):
        return 2, str(exc)
    if isinstance(exc, SapB1Error):
        return 1, str(exc)
    return None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
