"""Route 53 CallerReference, as AWS keeps it (moto 5.2.5 accepts a reused one).

AWS never accepts a CallerReference twice in an account, not even after the zone made
with it is deleted: botocore's route53 model, HostedZoneAlreadyExists, "Amazon Route 53
returns this error when a hosted zone has already been created with the specified
CallerReference", and CreateHostedZoneRequest.CallerReference, "You must use a unique
CallerReference string every time you submit a CreateHostedZone request". Here every
reference ever used stays taken for the life of the simulated account.
"""

from __future__ import annotations

from moto.route53.exceptions import Route53ClientError
from moto.route53.models import Route53Backend


class HostedZoneAlreadyExists(Route53ClientError):
    def __init__(self, caller_reference: str):
        super().__init__("HostedZoneAlreadyExists",
                         f"A hosted zone has already been created with the specified caller reference "
                         f"{caller_reference}")


_original_create_hosted_zone = Route53Backend.create_hosted_zone


def _create_hosted_zone(self, name, private_zone, caller_reference=None, *args, **kwargs):
    used = self.__dict__.setdefault("simulated_caller_references", set())
    if caller_reference in used:
        raise HostedZoneAlreadyExists(caller_reference)
    zone = _original_create_hosted_zone(self, name, private_zone, caller_reference, *args, **kwargs)
    used.add(caller_reference)
    return zone


def install() -> None:
    Route53Backend.create_hosted_zone = _create_hosted_zone
