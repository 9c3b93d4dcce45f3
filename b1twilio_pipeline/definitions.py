"""The code location: every asset, job, sensor, schedule and resource, merged into one `defs`."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
