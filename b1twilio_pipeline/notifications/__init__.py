"""Notifications: planning, the ledger, sending through Twilio, delivery status, the receiver of what Twilio
calls back, and the write-back of receipts to the B1 audit table."""
