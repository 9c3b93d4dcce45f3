"""Benchmark 4: latency from a change in B1 to the SMS accepted by Twilio.

Measured: a purchase invoice is added at the B1 simulator, then the real definitions are driven in-process
(SQLite snapshot store, a temporary Dagster instance): the snapshot job for the open polling window, the
alerts job, one notification-sensor tick and the notification run it requests, until the Twilio simulator
has received the SMS. This is the pipeline's own processing time (no daemon, no run-launch overhead).

Computed, not slept: how long the change waits before any poll reads it. The pipeline polls the still-open
window every minute (partitions with `end_offset=1`); the baseline reads a window only once it has closed
(`end_offset=0`), so the change waits for the rest of its window. Both then wait the same for the alert and
notification sensors (their minimum intervals) and take the same processing time.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._common import BenchResult, Row, ratio, seconds

DEFAULT_B1_LATENCY_S = 0.005
DEFAULT_TWILIO_LATENCY_S = 0.020
POLL_INTERVAL_S = 60.0  # the default poll cron, "* * * * *"
RECIPIENT = "+15005550101"
FROM_NUMBER = "+15005550006"

# Run logs at WARNING: the benchmark's output is its table, not Dagster's step-by-step debug log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

RULES = f"""
timezone: UTC
recipients:
  ap_team:
    - {{name: Dana, phone: "{RECIPIENT}"}}
rules:
  - id: ap-new-supplier-invoice
    kind: purchase_invoice_received
    channel: sms
    recipients: [ap_team]
    template: "New supplier invoice {{DocNum}} from {{CardName}}: {{DocTotal:,.2f}} {{DocCurrency}}, due {{DocDueDate}}"
"""


@dataclass
class Driver:
    """Runs what the schedule, sensors and daemon would run, in-process, step by step."""

    defs: Any
    instance: Any
    store: Any
    cursors: dict[str, str | None] = field(default_factory=dict)

    def run_job(self, name: str, **kwargs: Any) -> Any:
        result = self.defs.resolve_job_def(name).execute_in_process(instance=self.instance,
                                                                    run_config=QUIET, **kwargs)
        if not result.success:
            raise RuntimeError(f"{name} failed in the benchmark run")
        return result

    def poll(self, moment: datetime) -> Any:
        partitions = self.defs.resolve_job_def("snapshot_job").partitions_def
        key = partitions.get_partition_key_for_timestamp(moment.timestamp())
        return self.run_job("snapshot_job", partition_key=key)

    def evaluate(self) -> Any:
        return self.run_job("alerts_job")

    def notify(self) -> list[Any]:
        import dagster as dg

        sensor = self.defs.resolve_sensor_def("notification_sensor")
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor.name),
                                          definitions=self.defs, resources={"store": self.store})
        result = sensor(context)
        self.cursors[sensor.name] = getattr(result, "cursor", None) or context.cursor
        job = self.defs.resolve_job_def("notify_job")
        return [job.execute_in_process(run_config={**request.run_config, **QUIET}, instance=self.instance,
                                       tags={**request.tags, "dagster/run_key": request.run_key})
                for request in getattr(result, "run_requests", None) or []]


def poll_waits(change_at: datetime, window_end: datetime) -> tuple[float, float]:
    """(optimized, baseline) seconds from the change until a poll reads it: the next minute tick, or the
    close of the change's window."""
    into_minute = change_at.second + change_at.microsecond / 1e6
    optimized = (POLL_INTERVAL_S - into_minute) % POLL_INTERVAL_S
    return optimized, max(0.0, (window_end - change_at).total_seconds())


def run(b1_latency_s: float = DEFAULT_B1_LATENCY_S, twilio_latency_s: float = DEFAULT_TWILIO_LATENCY_S) -> BenchResult:
    import dagster as dg

    from b1twilio_pipeline.database import dispose_engine
    from b1twilio_pipeline.definitions import build_definitions
    from b1twilio_pipeline.resources.rules import RulesResource
    from b1twilio_pipeline.resources.sap_b1 import SapB1Resource
    from b1twilio_pipeline.resources.store import StoreResource
    from b1twilio_pipeline.resources.twilio import TwilioResource
    from b1twilio_sim.sap_b1 import DEMO_PASSWORD, SapB1Simulator
    from b1twilio_sim.twilio import TwilioSimulator

    with contextlib.ExitStack() as cleanup:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="b1tw-bench-e2e-"))
        store_url = f"sqlite:///{Path(tmp) / 'store.sqlite'}"
        cleanup.callback(dispose_engine, store_url)
        sap = SapB1Simulator(port=0, seed=False).start_background()
        cleanup.callback(sap.stop)
        twilio = TwilioSimulator(port=0, auto_advance=False).start_background()
        cleanup.callback(twilio.stop)
        sap.set_faults(latency_s=b1_latency_s)
        twilio.set_latency(twilio_latency_s)
        rules_path = Path(tmp) / "rules.yaml"
        rules_path.write_text(RULES)
        store = StoreResource(database_url=store_url)
        resources: dict[str, dg.ConfigurableResource] = {
            "sap": SapB1Resource(service_layer_url=sap.base_url, company_db=sap.company_db,
                                 username=sap.username, password=DEMO_PASSWORD, timezone=sap.timezone),
            "twilio": TwilioResource(account_sid=twilio.account_sid, auth_token=twilio.auth_token,
                                     from_number=FROM_NUMBER, api_base_url=twilio.url, status_callback_url=""),
            "store": store,
            "rules": RulesResource(path=str(rules_path)),
        }
        defs = build_definitions(rules_path=str(rules_path), resources=resources)
        with dg.instance_for_test(temp_dir=tmp) as instance:
            driver = Driver(defs, instance, store)
            # Warm-up turn with nothing to do: the pipeline is running already when the change happens.
            driver.poll(sap.clock.now())
            driver.evaluate()
            driver.notify()
            measured = _measure(driver, sap, twilio)
            sensors = {name: defs.resolve_sensor_def(name).minimum_interval_seconds or 30
                       for name in ("alert_evaluation_sensor", "notification_sensor")}
            partitions = defs.resolve_job_def("snapshot_job").partitions_def
            key = partitions.get_partition_key_for_timestamp(measured["change_at"].timestamp())
            window = partitions.time_window_for_partition_key(key)
    return _result(measured, window, sensors, b1_latency_s, twilio_latency_s)


def _measure(driver: Driver, sap: Any, twilio: Any) -> dict[str, Any]:
    """Add the invoice, run poll -> evaluate -> notify, and find when Twilio received the SMS."""
    started_wall, started = time.time(), time.perf_counter()
    change_at = sap.clock.now()
    invoice = sap.add_document("PurchaseInvoices", {
        "CardCode": "V10000", "CardName": "Acme Components GmbH", "DocCurrency": "EUR",
        "DocumentLines": [{"ItemCode": "A00001", "Quantity": 10, "Price": 123.45}]})
    driver.poll(change_at)
    polled = time.perf_counter()
    driver.evaluate()
    evaluated = time.perf_counter()
    runs = driver.notify()
    notified = time.perf_counter()
    doc_num = str(invoice["DocNum"])
    sms = [m for m in twilio.messages() if m["to"] == RECIPIENT and doc_num in m["body"]]
    posts = [r for r in twilio.api_requests() if r.method == "POST" and r.path.endswith("/Messages.json")
             and r.status == 201]
    if len(sms) != 1 or not posts:
        raise RuntimeError(f"expected one SMS for DocNum {doc_num} at the Twilio simulator, found {len(sms)}")
    accepted = posts[-1].at - started_wall  # when Twilio received the accepted request
    return {"change_at": change_at, "doc_num": doc_num, "sms": len(sms), "runs": len(runs),
            "poll_s": polled - started, "evaluate_s": evaluated - polled, "notify_s": notified - evaluated,
            "to_twilio_s": accepted, "total_s": notified - started}


def _result(measured: dict[str, Any], window: Any, sensors: dict[str, int], b1_latency_s: float,
            twilio_latency_s: float) -> BenchResult:
    change_at: datetime = measured["change_at"]
    opt_wait, base_wait = poll_waits(change_at, window.end)
    window_s = (window.end - window.start).total_seconds()
    sensor_avg = sum(sensors.values()) / 2
    sensor_max = float(sum(sensors.values()))
    pipeline = measured["total_s"]  # until the notification run ended: SMS accepted and its SID recorded
    rows = [
        Row("wait until a poll reads the change, this run (computed, not slept)", seconds(base_wait),
            seconds(opt_wait), f"{seconds(base_wait - opt_wait)} sooner"),
        Row("same wait, expected for a change at a random moment (computed)", seconds(window_s / 2),
            seconds(POLL_INTERVAL_S / 2), ratio(window_s / 2, POLL_INTERVAL_S / 2)),
        Row("same wait, worst case (computed)", seconds(window_s), seconds(POLL_INTERVAL_S),
            ratio(window_s, POLL_INTERVAL_S)),
        Row("sensor pickup: alert + notification sensor intervals, expected / worst (computed)",
            f"{sensor_avg:g} s / {sensor_max:g} s", f"{sensor_avg:g} s / {sensor_max:g} s", "1.00x"),
        Row("pipeline time, B1 change -> SMS accepted, SID recorded (measured in-process)", seconds(pipeline),
            seconds(pipeline), "1.00x"),
        Row("end-to-end latency, expected = wait + sensors + pipeline", seconds(window_s / 2 + sensor_avg + pipeline),
            seconds(POLL_INTERVAL_S / 2 + sensor_avg + pipeline),
            ratio(window_s / 2 + sensor_avg + pipeline, POLL_INTERVAL_S / 2 + sensor_avg + pipeline)),
        Row("end-to-end latency, worst case", seconds(window_s + sensor_max + pipeline),
            seconds(POLL_INTERVAL_S + sensor_max + pipeline),
            ratio(window_s + sensor_max + pipeline, POLL_INTERVAL_S + sensor_max + pipeline)),
    ]
    notes = [
        f"Change made at {change_at:%H:%M:%S} UTC in window {window.start:%H:%M}-{window.end:%H:%M}: the "
        f"baseline (`end_offset=0`) waits for the window to close, the pipeline for the next minute tick. The "
        f"difference for this change is {seconds(base_wait - opt_wait)}; expected "
        f"{seconds(window_s / 2 - POLL_INTERVAL_S / 2)}.",
        f"Measured in-process (B1 {b1_latency_s * 1000:g} ms and Twilio {twilio_latency_s * 1000:g} ms latency per "
        f"request, SQLite store, temporary Dagster instance, after one warm-up turn): snapshot job "
        f"{seconds(measured['poll_s'])}, alerts job {seconds(measured['evaluate_s'])}, sensor tick + notification "
        f"run {seconds(measured['notify_s'])}; the SMS request reached Twilio {seconds(measured['to_twilio_s'])} "
        "after the change. The baseline would run the same jobs, so the same time is counted for both.",
        "Sensor intervals are the minimum intervals of `alert_evaluation_sensor` and `notification_sensor` "
        f"({sensors['alert_evaluation_sensor']} s, {sensors['notification_sensor']} s); under `dagster-daemon` "
        "each run also pays its launch overhead (a new process per run), the same for both.",
    ]
    facts = {**measured, "change_at": change_at.isoformat(), "optimized_wait_s": opt_wait,
             "baseline_wait_s": base_wait, "window_s": window_s, "sensors": sensors}
    return BenchResult("4. End-to-end latency, B1 change -> SMS accepted by Twilio", rows, notes, facts)


__all__ = ["Driver", "poll_waits", "run"]
