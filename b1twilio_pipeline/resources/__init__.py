"""Dagster resources wrapping the SAP Business One Service Layer session and the Twilio client."""
