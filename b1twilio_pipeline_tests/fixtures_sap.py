"""SAP B1 fixtures: a real Service Layer simulator on a free loopback port, and clients pointed at it.

- `sap_sim_factory(**kwargs)` starts a `SapB1Simulator` (any constructor argument: version, expiry_mode,
  timezone, seed, clock, session_timeout_s, ...) and stops it after the test.
- `sap_sim`: the default one (v1, seeded demo data, demo credentials).
- `sap_resource`: a `SapB1Resource` pointed at `sap_sim` with tiny backoffs, for `dg.materialize`.
- `sap_session_for(sim, **overrides)`: a plain `SapB1Session` for a simulator (close it, or use `with`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.resource import SapB1Resource
from b1twilio_sim.sap_b1 import SapB1Simulator

FAST_RETRY: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


def sap_session_for(sim: SapB1Simulator, **overrides: Any) -> SapB1Session:
    """A client session with the simulator's credentials, its time zone and fast retries."""
    options: dict[str, Any] = {**FAST_RETRY, "timezone": sim.timezone}
    options.update(overrides)
    password = options.pop("password", sim.password)
    return SapB1Session(sim.base_url, options.pop("company_db", sim.company_db),
                        options.pop("username", sim.username), password, **options)


@pytest.fixture
def sap_sim_factory() -> Iterator[Callable[..., SapB1Simulator]]:
    started: list[SapB1Simulator] = []

    def make(**kwargs: Any) -> SapB1Simulator:
        sim = SapB1Simulator(**kwargs).start_background()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sap_sim(sap_sim_factory: Callable[..., SapB1Simulator]) -> SapB1Simulator:
    return sap_sim_factory()


@pytest.fixture
def sap_resource(sap_sim: SapB1Simulator) -> SapB1Resource:
    return SapB1Resource(service_layer_url=sap_sim.base_url, company_db=sap_sim.company_db,
                         username=sap_sim.username, password=sap_sim.password, timezone=sap_sim.timezone,
                         **FAST_RETRY)
