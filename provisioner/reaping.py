"""Clearing what blocks a delete: retries on DependencyViolation that say what is in the
way, and the VPC leftovers (endpoints, detached network interfaces) that hold subnets."""

from __future__ import annotations

from .aws import if_exists
from .errors import StepError
from .retry import delete_with_retry
from .waiting import wait_until

__all__ = ["delete_with_retry", "delete_endpoints", "delete_endpoints_by_id", "delete_detached_interfaces",
           "explain_vpc"]


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
