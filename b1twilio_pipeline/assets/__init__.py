"""Software-defined assets: B1 snapshots, alert candidates, notification deliveries, B1 audit records."""
