"""Clearing what blocks a delete: retries on DependencyViolation that say what is in the
way, and the VPC leftovers (endpoints, detached network interfaces) that hold subnets."""

from __future__ import annotations

from typing import Callable

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from .aws import error_code, if_exists, not_found
from .errors import StepError
from . import waiting
from .waiting import wait_until

# ENIs released by load balancers and Lambda can take minutes to go; ten is generous.
DEPENDENCY_WAIT_SECONDS = 600
# DeleteConflict: IAM answers it for a moment after a policy is detached or a role leaves its
# instance profile (terraform-provider-aws internal/service/iam/role.go deleteRole retries it).
RETRYABLE_CODES = {"DependencyViolation", "ResourceInUse", "ResourceInUseException", "InvalidDBInstanceState",
                   "InvalidCacheClusterState", "InvalidReplicationGroupState", "DeleteConflict"}


def still_protected(exc: BaseException) -> bool:
    """RDS refusing a delete because the deletion-protection change has not landed yet:
    InvalidParameterCombination "Cannot delete protected DB Instance, please disable deletion
    protection and try again." (terraform-provider-aws internal/service/rds/instance.go retries
    on "disable deletion pro")."""
    return (error_code(exc) == "InvalidParameterCombination"
            and "disable deletion pro" in exc.response["Error"].get("Message", ""))


def _retryable(exc: BaseException) -> bool:
    return error_code(exc) in RETRYABLE_CODES or still_protected(exc)


def delete_with_retry(delete: Callable[[], object], what: str, explain: Callable[[], str],
                      progress: Callable[[str], None]) -> None:
    """Delete, retrying while AWS says something still depends on it; an absent
    resource counts as deleted. On giving up, name what is in the way."""
    scale = waiting.TIME_SCALE

    def log(state):
        progress(f"{what} still in use ({error_code(state.outcome.exception())}); retrying")
    try:
        for attempt in Retrying(retry=retry_if_exception(_retryable),
                                wait=wait_exponential(multiplier=scale, min=2 * scale, max=30 * scale),
                                stop=stop_after_delay(DEPENDENCY_WAIT_SECONDS * scale),
                                before_sleep=log, reraise=True):
            with attempt:
                try:
                    delete()
                except ClientError as exc:
                    if not not_found(exc):
                        raise
    except ClientError as exc:
        if _retryable(exc):
            raise StepError(f"cannot delete {what}: {exc.response['Error'].get('Message')}. In the way: "
                            f"{explain() or 'nothing visible to this account'}") from exc
        raise


def delete_endpoints(ec2, vpc_id: str, progress) -> None:
    """Every endpoint left in the VPC: each holds route-table entries or ENIs."""
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    delete_endpoints_by_id(ec2, [e["VpcEndpointId"] for e in endpoints if e["State"].lower() != "deleted"], progress)


def delete_endpoints_by_id(ec2, endpoint_ids: list[str], progress) -> None:
    """Delete and wait for 'deleted' (not 'deleting': the ENIs linger until then)."""
    if endpoint_ids:
        # DeleteVpcEndpoints answers per endpoint in Unsuccessful instead of raising.
        refused = [f"{item['ResourceId']}: {item['Error'].get('Code')} {item['Error'].get('Message')}"
                   for item in ec2.delete_vpc_endpoints(VpcEndpointIds=endpoint_ids).get("Unsuccessful", [])
                   if "NotFound" not in item.get("Error", {}).get("Code", "")]
        if refused:
            raise StepError(f"AWS refused to delete VPC endpoints: {'; '.join(refused)}")
    for endpoint_id in endpoint_ids:
        wait_until(lambda e=endpoint_id: _endpoint_gone(ec2, e), what=f"VPC endpoint {endpoint_id} to be deleted",
                   expected_seconds=30, timeout_seconds=600, progress=progress)


def _endpoint_gone(ec2, endpoint_id: str) -> bool:
    found = (if_exists(ec2.describe_vpc_endpoints, VpcEndpointIds=[endpoint_id]) or {}).get("VpcEndpoints")
    return not found or found[0]["State"].lower() == "deleted"


def delete_detached_interfaces(ec2, vpc_id: str) -> None:
    interfaces = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                          {"Name": "status", "Values": ["available"]}])
    for interface in interfaces["NetworkInterfaces"]:
        delete_with_retry(lambda i=interface["NetworkInterfaceId"]: ec2.delete_network_interface(NetworkInterfaceId=i),
                          f"network interface {interface['NetworkInterfaceId']}", lambda: "", lambda _: None)


def explain_vpc(ec2, vpc_id: str) -> str:
    """What still lives in the VPC, with hints of who made it."""
    found = []
    for interface in ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "NetworkInterfaces"]:
        found.append(f"ENI {interface['NetworkInterfaceId']} ({interface.get('InterfaceType', 'interface')}, "
                     f"{interface.get('Status')}, {interface.get('Description') or 'no description'})")
    for reservation in ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                       {"Name": "instance-state-name",
                                                        "Values": ["pending", "running", "stopping", "stopped"]}])[
            "Reservations"]:
        found += [f"instance {i['InstanceId']}" for i in reservation["Instances"]]
    return "; ".join(found)
