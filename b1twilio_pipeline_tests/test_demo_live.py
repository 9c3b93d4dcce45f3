"""The quick start as a new user meets it: `b1twilio demo` runs everything on
loopback, and with nobody clicking the UI fills with snapshots, notification runs and delivery receipts,
the Twilio simulator receives SMS and calls (each once), the B1 simulator's audit table fills, no secret
reaches Dagster's storage or the logs, and headless Chromium sees all of it in the Dagster UI.

The demo is started once, as a real subprocess in its own process group, and everything is checked
through public interfaces: Dagster's GraphQL API, the simulators' admin APIs and the rendered UI.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from b1twilio_pipeline.alerts.rules import load_rules
from b1twilio_pipeline.alerts.rules.kinds import KINDS
from b1twilio_sim.demo import RULES_FILE

pytestmark = pytest.mark.browser

STARTUP_TIMEOUT_S = 120.0
# The README promises alerts within a minute and a notification of every rule kind within the first minutes;
# the bound leaves room for a loaded CI machine and reports the measured times either way.
FLOW_DEADLINE_S = 240.0
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000", "--virtual-time-budget=10000"]
SNAPSHOT_ASSETS = ("purchase_invoices", "sales_invoices", "purchase_orders", "incoming_payments", "item_stock")
NOTIFICATION_ASSETS = ("sent_notifications", "notification_deliveries", "audit_records")
REPOSITORY = Path(__file__).resolve().parents[1]
DANA, KIM, PAT = "+447700900101", "+447700900107", "+447700900108"  # of the demo rules
# The README marks the shell blocks meant to be run against a running demo with this comment.
README_DEMO_BLOCK = re.compile(r"<!-- runs against the demo: [^>]*-->\s*```bash\n(.*?)```", re.S)


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_command() -> list[str]:
    script = Path(sys.executable).with_name("b1twilio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "b1twilio_pipeline.cli"]


@dataclass
class DemoRun:
    """A running `b1twilio demo` and what the test learned from its banner."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    stdout: Path
    stderr: Path
    started: float
    secrets: dict[str, str]
    ui_url: str = ""
    twilio_url: str = ""
    sap_url: str = ""
    ready_after_s: float = 0.0
    firsts: dict[str, float] = field(default_factory=dict)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _banner_url(text: str, pattern: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _wait_for_banner(demo: DemoRun) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        text = demo.stdout.read_text(errors="replace")
        ui = _banner_url(text, r"Dagster UI ready after \d+ s:\s+(http://127\.0\.0\.1:\d+)")
        twilio = _banner_url(text, r"Twilio simulator log:\s+(http://127\.0\.0\.1:\d+)/_admin/messages")
        sap = _banner_url(text, r"audit table: (http://127\.0\.0\.1:\d+)/_admin/udt/")
        if ui and twilio and sap:
            demo.ui_url, demo.twilio_url, demo.sap_url = ui, twilio, sap
            demo.ready_after_s = demo.elapsed()
            return
        if demo.process.poll() is not None:
            pytest.fail(f"b1twilio demo exited with status {demo.process.returncode}:\n{demo.output()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"b1twilio demo printed no UI address within {STARTUP_TIMEOUT_S:.0f} s:\n{demo.output()[-3000:]}")


def _processes_with_env(marker: str) -> list[int]:
    """Pids of processes whose environment mentions `marker` (the demo's DAGSTER_HOME): leftovers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def _stop_demo(demo: DemoRun) -> list[int]:
    """SIGTERM to the demo's process group, as Ctrl-C would; returns pids that outlived it (then killed)."""
    group = demo.process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        demo.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        demo.process.wait(timeout=10)
    marker = f"DAGSTER_HOME={demo.data_dir / 'dagster_home'}"
    deadline = time.monotonic() + 10
    leftovers = _processes_with_env(marker)
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _processes_with_env(marker)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`; .ci/run installs it when it can)")
    data_dir = tmp_path / "demo"
    # The simulators take the pipeline's credential variables: known random values let
    # the test look for them where they must never appear.
    creds = {"B1_PASSWORD": "pw-" + secrets.token_hex(10), "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
             "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16)}
    env = {**os.environ, **creds}
    stdout, stderr = tmp_path / "demo.stdout", tmp_path / "demo.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*demo_command(), "demo", "--port", str(free_port()), "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True)
    run = DemoRun(process, data_dir, stdout, stderr, time.monotonic(),
                  {"B1 password": creds["B1_PASSWORD"], "Twilio auth token": creds["TWILIO_AUTH_TOKEN"]})
    try:
        _wait_for_banner(run)
        yield run
    finally:
        leftovers = _stop_demo(run)
        print(f"demo timings (s from start): UI {run.ready_after_s:.0f}, "
              + ", ".join(f"{name} {at:.0f}" for name, at in run.firsts.items()))
    assert process.returncode == 0, f"the demo did not stop cleanly on SIGTERM:\n{run.output()[-3000:]}"
    assert not leftovers, f"processes of the demo outlived it: {leftovers}"


# --- what the demo produced ---------------------------------------------------------------------------------

RUNS_QUERY = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter, limit: 500) {
  __typename ... on Runs { results { runId jobName status tags { key value } } } } }"""
ASSETS_QUERY = """{ assetsOrError { __typename ... on AssetConnection { nodes {
  key { path } definition { groupName } assetMaterializations(limit: 1) { timestamp } } } } }"""


SENT_QUERY = """{ assetOrError(assetKey: {path: ["notifications", "sent_notifications"]}) { __typename
  ... on Asset { assetMaterializations(limit: 500) { runId metadataEntries { label
  ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } } } } }"""


def graphql(demo: DemoRun, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(f"{demo.ui_url}/graphql", json={"query": query, "variables": variables or {}},
                        timeout=30).json()
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def runs(demo: DemoRun, **run_filter: Any) -> list[dict[str, Any]]:
    data = graphql(demo, RUNS_QUERY, {"filter": run_filter})["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def sent_notifications(demo: DemoRun) -> list[dict[str, Any]]:
    """The audit trail: one `sent_notifications` event per notification, its metadata as a dict."""
    events = graphql(demo, SENT_QUERY)["assetOrError"]["assetMaterializations"]
    return [{entry["label"]: entry.get("text", entry.get("intValue")) for entry in event["metadataEntries"]}
            for event in events]


def materialized_groups(demo: DemoRun) -> dict[str, set[str]]:
    """Group name -> names of its assets that have at least one materialization."""
    nodes = graphql(demo, ASSETS_QUERY)["assetsOrError"]["nodes"]
    groups: dict[str, set[str]] = {}
    for node in nodes:
        if node["definition"] and node["assetMaterializations"]:
            groups.setdefault(node["definition"]["groupName"], set()).add(node["key"]["path"][-1])
    return groups


def admin(url: str, path: str) -> Any:
    return httpx.get(f"{url}/_admin/{path}", timeout=10).json()


def kinds_sent(demo: DemoRun) -> set[str]:
    """The rule kinds with at least one notification handed to Twilio."""
    kind_of = {rule.id: rule.kind for rule in load_rules(RULES_FILE).rules}
    return {kind_of.get(str(event["rule"]), "") for event in sent_notifications(demo) if event["twilio_sid"]}


@dataclass
class Observed:
    messages: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    audit_rows: list[dict[str, Any]]
    sensor_runs_ok: list[dict[str, Any]]
    groups: dict[str, set[str]]
    kinds: set[str]

    def missing(self) -> list[str]:
        wanted = {
            "SMS at the Twilio simulator": bool(self.messages),
            "calls at the Twilio simulator": bool(self.calls),
            "rows in the B1 audit table": bool(self.audit_rows),
            "a successful notify_job run launched by notification_sensor": bool(self.sensor_runs_ok),
            "materialized b1_snapshots assets": bool(self.groups.get("b1_snapshots")),
            "materialized b1_state assets": bool(self.groups.get("b1_state")),
            "materialized delivery receipts (notification_deliveries)":
                "notification_deliveries" in self.groups.get("notifications", set()),
            **{f"a notification of rule kind {kind}": kind in self.kinds for kind in KINDS},
        }
        return [name for name, ok in wanted.items() if not ok]


def observe(demo: DemoRun) -> Observed:
    observed = Observed(
        messages=admin(demo.twilio_url, "messages")["messages"],
        calls=admin(demo.twilio_url, "calls")["calls"],
        audit_rows=admin(demo.sap_url, "udt/B1TW_AUDIT")["rows"],
        sensor_runs_ok=runs(demo, pipelineName="notify_job", statuses=["SUCCESS"],
                            tags=[{"key": "dagster/sensor_name", "value": "notification_sensor"}]),
        groups=materialized_groups(demo),
        kinds=kinds_sent(demo),
    )
    for name, seen in (("first SMS", observed.messages), ("first call", observed.calls),
                       ("first audit row", observed.audit_rows), ("first notify run", observed.sensor_runs_ok),
                       ("first snapshot", observed.groups.get("b1_snapshots"))):
        if seen and name not in demo.firsts:
            demo.firsts[name] = demo.elapsed()
    return observed


def wait_for_flow(demo: DemoRun) -> Observed:
    observed = observe(demo)
    while observed.missing() and demo.elapsed() < FLOW_DEADLINE_S:
        assert demo.process.poll() is None, f"the demo stopped:\n{demo.output()[-3000:]}"
        time.sleep(2)
        observed = observe(demo)
    return observed


def partition_stats(demo: DemoRun, path: list[str]) -> dict[str, int]:
    query = """query Stats($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { partitionStats {
      numMaterialized numPartitions numFailed numMaterializing } } }"""
    nodes = graphql(demo, query, {"keys": [{"path": path}]})["assetNodes"]
    assert len(nodes) == 1, nodes
    return nodes[0]["partitionStats"]


# --- the README, run as written -------------------------------------------------------------------------


def readme_demo_blocks() -> list[str]:
    return [textwrap.dedent(block) for block in README_DEMO_BLOCK.findall((REPOSITORY / "README.md").read_text())]


def run_as_written(block: str, demo: DemoRun, root: Path) -> subprocess.CompletedProcess[str]:
    """`block` in bash, in a fresh shell (none of this process's pipeline or Dagster settings), from a
    checkout-like folder: the repository's workspace.yaml, this interpreter's virtual environment as
    `.venv` and the running demo's data folder as `.demo`."""
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.prefix))
    (root / ".demo").symlink_to(demo.data_dir)
    (root / "workspace.yaml").symlink_to(REPOSITORY / "workspace.yaml")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("B1_", "B1TWILIO_", "TWILIO_", "DAGSTER_", "PHONE_"))}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


# --- secrets ------------------------------------------------------------------------------------------------


def secret_values(demo: DemoRun) -> dict[str, str]:
    """What must never be stored or logged: the credentials and every full recipient number (also
    without its '+', which catches URL-encoded forms)."""
    values = dict(demo.secrets)
    for group in load_rules(RULES_FILE).recipients.values():
        for person in group:
            if person.phone:
                values[f"phone of {person.name}"] = person.phone.lstrip("+")
    return values


def leaks(demo: DemoRun) -> list[str]:
    """'<what> in <file>' for every secret found in Dagster's storage (SQLite, compute logs), the
    dagster dev log or the demo's own output. demo.env holds the credentials on purpose (mode 0600)."""
    files = [path for root in (demo.data_dir / "dagster_home", demo.data_dir / "logs")
             for path in root.rglob("*") if path.is_file()]
    files += [demo.stdout, demo.stderr]
    found = []
    values = {name: value.encode() for name, value in secret_values(demo).items()}
    for path in files:
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # a SQLite -wal/-journal file checkpointed away meanwhile
            continue
        found += [f"{name} in {path}" for name, value in values.items() if value in content]
    return found


# --- the browser --------------------------------------------------------------------------------------------


def chromium(url: str, profile: Path, screenshot: Path | None = None, timeout_s: float = 90) -> str:
    """The DOM after the React app rendered (optionally a screenshot too), as visible text."""
    command = [chromium_path() or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom"]
    if screenshot is not None:
        command.append(f"--screenshot={screenshot}")
    process = subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        dom, _ = process.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return visible_text(dom.decode(errors="replace"))


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", html.unescape(text))


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot at {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the test -----------------------------------------------------------------------------------------------


def test_demo_alerts_within_the_minute_and_the_ui_shows_it(demo: DemoRun, tmp_path: Path) -> None:
    observed = wait_for_flow(demo)
    timings = ", ".join(f"{name} after {at:.0f} s" for name, at in demo.firsts.items())
    assert not observed.missing(), (f"after {demo.elapsed():.0f} s still missing: {observed.missing()} "
                                    f"(seen: {timings})")

    # Each notification reached Twilio once: no (recipient, text) pair twice, no run key launched twice.
    repeated = [key for key, count in Counter((m["to"], m["body"]) for m in observed.messages).items()
                if count > 1]
    assert not repeated, f"SMS sent more than once: {[(to[-3:], body) for to, body in repeated]}"
    run_keys = Counter(tags_of(run).get("dagster/run_key") for run in runs(demo, pipelineName="notify_job"))
    assert None not in run_keys and max(run_keys.values()) == 1, run_keys.most_common(3)

    # The audit trail: every notification is an event of `sent_notifications` naming its rule, document and
    # Twilio SID, with only a masked phone; each SID once. An escalation step the sender found acknowledged
    # (Jo presses 1) is an event too, without a SID, saying who acknowledged.
    audit = sent_notifications(demo)
    assert audit, "no sent_notifications events"
    for event in audit:
        assert event["rule"] and event["document"] and re.fullmatch(r"\+\d{2}\*+\d{3}", event["recipient_phone"])
        if event["outcome"] == "skipped":
            assert event["twilio_sid"] == "" and " acknowledged the alert at " in event["error"], event
        else:
            assert event["twilio_sid"].startswith(("SM", "CA")), event
    sids = Counter(event["twilio_sid"] for event in audit if event["outcome"] != "skipped")
    assert max(sids.values()) == 1, sids.most_common(3)

    leaked = leaks(demo)
    assert not leaked, f"secrets leaked: {leaked}"

    # The UI, rendered by headless Chromium. The demo dismissed the community sign-up dialog Dagster shows
    # on a first visit from localhost, which would cover every page.
    assert graphql(demo, "{ shouldShowNux }")["shouldShowNux"] is False
    profile = tmp_path / "chromium-profile"
    graph_png = tmp_path / "asset_graph.png"
    graph = chromium(f"{demo.ui_url}/asset-groups", profile, graph_png)
    assert_png(graph_png)
    for group in ("b1_snapshots", "b1_state", "alerts", "notifications"):
        assert group in graph, f"asset graph without group {group}: {graph[:500]}"
    for group, names in (("b1_snapshots", SNAPSHOT_ASSETS), ("notifications", NOTIFICATION_ASSETS)):
        group_png = tmp_path / f"{group}.png"
        shown = chromium(f"{demo.ui_url}/locations/b1twilio_pipeline/asset-groups/{group}", profile, group_png)
        assert_png(group_png)
        for name in names:
            assert name in shown, f"{group} graph without {name}: {shown[:800]}"
    runs_png = tmp_path / "notification_runs.png"
    succeeded = chromium(f"{demo.ui_url}/runs?q%5B0%5D=job%3Anotify_job&q%5B1%5D=status%3ASUCCESS", profile,
                         runs_png)
    assert_png(runs_png)
    assert re.search(r"notify_job notification_sensor Success", succeeded), succeeded[:800]
    assert "b1twilio/notifications:" in succeeded

    # The audit view: who was told what, when, and did it arrive, on one page.
    audit_png = tmp_path / "audit_view.png"
    audit_page = chromium(f"{demo.ui_url}/assets/notifications/notification_deliveries", profile, audit_png)
    assert_png(audit_png)
    assert "who_was_told_what" in audit_page, audit_page[:800]
    for name in ("Dana", "Alex", "Sam"):
        assert re.search(rf"{name} \+44\*+\d{{3}}", audit_page), f"{name} not in the audit view: {audit_page[:1500]}"
    assert "delivered" in audit_page and "completed" in audit_page, audit_page[:1500]

    # The partitions begin at the demo's first start: nothing before it counts as missing.
    stats = partition_stats(demo, ["b1", "purchase_invoices"])
    assert 1 <= stats["numPartitions"] <= 3, stats
    assert stats["numMaterialized"] >= 1, stats

    # Every README command meant for the demo, as written, in a fresh shell.
    blocks = readme_demo_blocks()
    assert blocks, "the README marks no shell block to run against the demo"
    for index, block in enumerate(blocks):
        done = run_as_written(block, demo, tmp_path / f"readme-{index}")
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README block {index} failed ({done.returncode}):\n{block}\n{output[-3000:]}"
        assert "Traceback" not in output and "Warning" not in output, output[-3000:]
    backfill_runs = [run for run in runs(demo, pipelineName="snapshot_job") if "dagster/backfill" in tags_of(run)]
    assert backfill_runs, "the README's backfill launched no run"

    # The on-call loop under dagster dev: Jo and Lee press 1, Dana's phone replies OK, Robin replies in the
    # README; each acknowledgement is a receipt of its own in B1. Kim, who never acknowledges, is called a
    # minute after her SMS; Dana's and Lee's escalation steps (a call to Dana, a call to Pat) are skipped.
    wanted = {"Dana", "Robin", "Jo", "Lee"}
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        acknowledged = [row for row in admin(demo.sap_url, "udt/B1TW_AUDIT")["rows"]
                        if row["U_Status"] == "acknowledged"]
        called = {call["to"] for call in admin(demo.twilio_url, "calls")["calls"]}
        if wanted <= {row["U_Recipient"].split()[0] for row in acknowledged} and KIM in called:
            break
        time.sleep(3)
    assert wanted <= {row["U_Recipient"].split()[0] for row in acknowledged}, acknowledged
    assert {row["U_Channel"] for row in acknowledged} == {"sms", "voice"}
    assert all(re.search(r"\+44\*+\d{3}", row["U_Recipient"]) for row in acknowledged), acknowledged
    assert KIM in called and not called & {DANA, PAT}, called
