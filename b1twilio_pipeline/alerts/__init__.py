"""Alerts: the rules file, rule evaluation over the snapshots, quiet hours, and the alert events."""
