"""The two checks on `notification_deliveries`, each computed from the ledger's state, not from the statuses
one run happened to report: a check that only looked at its own batch would turn green on the next quiet
run while a person was still never reached.

- `no_delivery_exceptions` (warn): an SMS undelivered/failed or a call unanswered/busy/failed in the last
  `WINDOW` that nothing made up for since. It clears when an escalation of it (the voice call after the
  SMS, the next person of the on-call chain, or theirs) was delivered or answered, or when the exception
  is older than the window. Another recipient of the same alert being reached does not clear it.
- `no_failed_notifications` (error): a notification Twilio never accepted (failed for good, or waiting for
  review) in the last `WINDOW`; the admins were told of each.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from b1twilio_pipeline.core.markdown import markdown_table
from b1twilio_pipeline.notifications.ledger import Notification
from b1twilio_pipeline.notifications.ledger_reads import LedgerReads

EXCEPTION_CHECK = "no_delivery_exceptions"
FAILED_CHECK = "no_failed_notifications"
WINDOW = timedelta(hours=24)


def _rows(found: list[Notification], why: str) -> list[dict[str, str]]:
    return [{"at": f"{n.final_at:%Y-%m-%d %H:%M} UTC" if n.final_at else "", "rule": n.rule_id,
             "document": n.document, "recipient": f"{n.recipient_name} {n.recipient_masked}",
             "channel": n.channel, "status": n.status, why: str(getattr(n, why) or "")} for n in found]


def exception_check(reads: LedgerReads, now: datetime) -> dg.AssetCheckResult:
    found = reads.unresolved_exceptions(since=now - WINDOW)
    return dg.AssetCheckResult(
        check_name=EXCEPTION_CHECK, passed=not found, severity=dg.AssetCheckSeverity.WARN,
        metadata={"unresolved_exceptions": len(found),
                  "exceptions": dg.MetadataValue.md(markdown_table(_rows(found, "error_code"), empty="None."))})


def failed_check(reads: LedgerReads, now: datetime) -> dg.AssetCheckResult:
    failed = reads.unresolved_failures(since=now - WINDOW)
    return dg.AssetCheckResult(
        check_name=FAILED_CHECK, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_or_in_review": len(failed),
                  "notifications": dg.MetadataValue.md(markdown_table(_rows(failed, "error_message"),
                                                                      empty="None."))})
