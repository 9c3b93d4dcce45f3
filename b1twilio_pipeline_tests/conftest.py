"""Shared fixtures: each area keeps its own fixture module, re-exported here."""

from b1twilio_pipeline_tests.fixtures_pipeline import *  # noqa: F403
from b1twilio_pipeline_tests.fixtures_sap import *  # noqa: F403
from b1twilio_pipeline_tests.fixtures_twilio import *  # noqa: F403
