"""b1twilio-pipeline: SAP Business One events to Twilio SMS and voice alerts, orchestrated by Dagster."""
