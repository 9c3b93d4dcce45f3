"""`b1twilio windows`: the partition keys of the latest snapshot windows, exactly as the code location cuts
them (B1TWILIO_WINDOW_MINUTES, B1TWILIO_TIMEZONE, first window at the deployment's recorded first start),
so a backfill from the command line names windows that exist instead of guessing a key."""

from __future__ import annotations

import argparse

from b1twilio_pipeline.b1.first_start import first_start
from b1twilio_pipeline.b1.windows import PollingSettings
from b1twilio_pipeline.core.database_resource import DatabaseResource
from b1twilio_pipeline.core.errors import ConfigurationError


def windows_command(args: argparse.Namespace) -> int:
    if args.last < 1:
        raise ConfigurationError(f"--last {args.last}: give a number of windows, 1 or more")
    polling = PollingSettings.from_settings()
    start = None if polling.partitions_start else first_start(DatabaseResource())
    for key in polling.partitions_def(start).get_partition_keys()[-args.last:]:
        print(key)
    return 0
