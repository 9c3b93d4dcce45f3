"""b1twilio-pipeline: SAP Business One events to Twilio SMS and voice alerts, orchestrated by Dagster."""

import warnings

# Dagster marks parameters this pipeline relies on (an asset's backfill_policy, owners) as beta and says
# so once per asset in every process that loads the code location: dozens of lines before the output of
# `dagster job backfill` that an operator can do nothing about. Set here, where every such process starts.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
