"""The B1 audit table: delivery receipts written back to SAP Business One as a user-defined table.

`setup_audit_table` creates `@B1TW_AUDIT` and its fields through UserTablesMD/UserFieldsMD (idempotent:
"already exists" is success). Each receipt's `Code` is derived from the SID and status, so a repeated
write is recognised by B1 itself as a duplicate and nothing is written twice.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from typing import Any

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.errors import SapB1Error

TABLE = "B1TW_AUDIT"
FIELDS: tuple[tuple[str, int, str], ...] = (
    ("MsgSid", 64, "Twilio message or call SID"),
    ("Status", 24, "Delivery status"),
    ("Channel", 8, "sms or voice"),
    ("RuleId", 80, "Alert rule id"),
    ("DocRef", 80, "B1 document"),
    ("Recipient", 120, "Recipient (phone masked)"),
    ("ErrorCode", 16, "Twilio error code"),
    ("EventTime", 32, "When the status was received (UTC)"),
    ("Source", 12, "callback or poll"),
)


def setup_audit_table(session: SapB1Session) -> dict[str, str]:
    """Create the table and its fields; returns what happened to each ('created' or 'exists')."""
    outcome: dict[str, str] = {}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        (TABLE, "UserTablesMD", {"TableName": TABLE, "TableDescription": "b1twilio delivery receipts",
                                 "TableType": "bott_NoObject"}),
    ]
    requests += [
        (f"U_{name}", "UserFieldsMD", {"Name": name, "Type": "db_Alpha", "Size": size, "Description": text,
                                       "SubType": "st_None", "TableName": f"@{TABLE}"})
        for name, size, text in FIELDS
    ]
    for label, path, body in requests:
        try:
            session.post(path, body)
            outcome[label] = "created"
        except SapB1Error as error:
            if not error.already_exists:
                raise
            outcome[label] = "exists"
    return outcome


@dataclass(frozen=True)
class AuditRecord:
    sid: str
    status: str
    channel: str
    rule_id: str
    document: str
    recipient: str
    error_code: int | None
    event_time: str
    source: str

    @property
    def code(self) -> str:
        """Deterministic primary key (B1 allows 50 characters): the same receipt, the same Code."""
        return f"{self.sid}-{self.status}"[:40] + "-" + hashlib.sha1(
            f"{self.sid}:{self.status}".encode()).hexdigest()[:8]

    def body(self) -> dict[str, Any]:
        return {
            "Code": self.code, "Name": f"{self.status} {self.sid}"[:30],
            "U_MsgSid": self.sid, "U_Status": self.status, "U_Channel": self.channel,
            "U_RuleId": self.rule_id[:80], "U_DocRef": self.document[:80], "U_Recipient": self.recipient[:120],
            "U_ErrorCode": "" if self.error_code is None else str(self.error_code),
            "U_EventTime": self.event_time, "U_Source": self.source,
        }


def write_record(session: SapB1Session, record: AuditRecord) -> str:
    """Write one receipt; 'written', or 'exists' when B1 already holds that Code (a retried write)."""
    try:
        session.post(f"U_{TABLE}", record.body())
        return "written"
    except SapB1Error as error:
        if error.already_exists:
            return "exists"
        raise


def setup_audit_table_command(args: argparse.Namespace) -> int:
    """`b1twilio setup-b1-audit-table`: uses the same settings as the pipeline's SapB1Resource."""
    from b1twilio_pipeline.b1.resource import SapB1Resource

    session = SapB1Resource().session()
    try:
        outcome = setup_audit_table(session)
    finally:
        session.logout()
    created = sum(1 for v in outcome.values() if v == "created")
    print(f"audit table @{TABLE}: {created} created, {len(outcome) - created} already there "
          f"({', '.join(f'{k}={v}' for k, v in outcome.items())})")
    return 0
