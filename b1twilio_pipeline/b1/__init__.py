"""SAP Business One: the Service Layer client and resource, change detection, windows, and the snapshot
assets and store (the first stage of SAP -> snapshots -> alerts -> notifications -> delivery -> SAP audit)."""
