"""`b1_audit_records`: each final delivery status and read receipt written back to SAP Business One as a row
of the user-defined table @B1TW_AUDIT, exactly once (the row's key is derived from the SID and status, so
B1 itself refuses a repeat)."""

import dagster as dg

from b1twilio_pipeline.b1 import audit_table as audit
from b1twilio_pipeline.b1.errors import SapB1Error
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_pipeline.core.company_scope import asset_key
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.notifications.deliveries import DELIVERIES_KEY, DELIVERY_GROUP
from b1twilio_pipeline.notifications.delivery_log import DeliveryEvent, DeliveryLog
from b1twilio_pipeline.notifications.ledger import Ledger

AUDIT_KEY = asset_key("b1", "audit_records")


def _record(ledger: Ledger, event: DeliveryEvent) -> audit.AuditRecord:
    n = ledger.by_sid(event.sid)
    return audit.AuditRecord(
        sid=event.sid, status=event.status, channel=event.channel, rule_id=n.rule_id if n else "",
        document=n.document if n else "", recipient=f"{n.recipient_name} {n.recipient_masked}" if n else "",
        error_code=event.error_code, event_time=event.received_at.isoformat(timespec="seconds"),
        source=event.source)


@dg.asset(
    key=AUDIT_KEY,
    deps=[DELIVERIES_KEY],
    group_name=DELIVERY_GROUP,
    kinds={"sap"},
    description=f"Each final delivery status and read receipt written to the B1 table @{audit.TABLE} "
                "(created on first use if the setup command was not run), exactly once.",
)
def b1_audit_records(context: dg.AssetExecutionContext, sap: SapB1Resource,
                     database: DatabaseResource) -> dg.MaterializeResult:
    ledger = Ledger(database.engine)
    session = sap.session()
    log = DeliveryLog(database.engine)
    events = log.unaudited()
    outcomes = {"written": 0, "exists": 0}
    for event in events:
        record = _record(ledger, event)
        try:
            outcome = audit.write_record(session, record)
        except SapB1Error as error:
            if error.status != 404:
                raise
            context.log.info(f"audit table missing ({error.b1_message}): creating it")
            audit.setup_audit_table(session)
            outcome = audit.write_record(session, record)
        outcomes[outcome] += 1
        log.mark_audited([event.seq])
    return dg.MaterializeResult(metadata={
        "receipts_written": outcomes["written"], "already_in_b1": outcomes["exists"],
        "dagster/row_count": len(events)})
