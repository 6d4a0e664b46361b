"""The realistic-AWS runs: the apply, destroy and crash tests again, with the simulator
answering as AWS does (provisioner/simulation/realistic.py): throttling and 5xx now and
then, the eventual-consistency answers for a window after each create or change, and
resources that stay in progress (NAT pending, EKS CREATING, ...) for a scaled while.

Waits and retries are scaled down (waiting.TIME_SCALE, and botocore's own back-off by the
same factor) so the runs stay short; each new thing is refused once, so every "not yet"
path runs at the cost of one short retry.
"""

from __future__ import annotations

import botocore.retries.standard
import pytest

from provisioner import waiting
from provisioner.simulation import aws as simulator, realistic
from tests import census

TIME_SCALE = 0.05  # IAM/S3 retries then last 6 s, EC2 15 s
WINDOW_SECONDS, NOT_YET_ANSWERS = 10, 1  # the first call using each new thing within 10 s is refused
LATENCY_SCALE = 0.0005  # an EKS cluster CREATING for 0.3 s, RDS creating for 0.24 s
THROTTLE_RATE, ERROR_RATE = 0.02, 0.01


def realistic_aws_on():
    """A module-scoped, autouse fixture body: the layer on for every test of the module."""
    with pytest.MonkeyPatch.context() as patch:
        original = botocore.retries.standard.ExponentialBackoff.delay_amount
        patch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount",
                      lambda self, context: original(self, context) * TIME_SCALE)
        patch.setattr(waiting, "TIME_SCALE", TIME_SCALE)
        realistic.configure(window_seconds=WINDOW_SECONDS, not_yet_answers=NOT_YET_ANSWERS,
                            throttle_rate=THROTTLE_RATE, error_rate=ERROR_RATE, seed=12,
                            observers=(census.CALLER,))
        simulator.simulate_latency(LATENCY_SCALE)
        try:
            yield realistic
        finally:
            realistic.configure()
            simulator.simulate_latency(0.0)


realistic_aws = pytest.fixture(scope="module", autouse=True)(realistic_aws_on)
