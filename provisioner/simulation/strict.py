"""Doubles as strict as AWS where moto 5.2.5 is kinder: on in every run of the simulator.

Each rule below is one moto lets through and AWS refuses (or one state moto skips), with
the source of the AWS rule. Error codes are AWS's; each message is the one AWS gives, as
quoted in public error reports (cited), or ours where AWS documents only the code.

EC2 DependencyViolation (moto refuses only DeleteVpc with subnets or extra route tables and
DeleteInternetGateway while attached; everything below it accepts):
- DeleteSecurityGroup while the group is referenced by another group's rule or used by a
  network interface, instance, load balancer, DB instance, cache, VPC endpoint or EKS
  cluster. botocore EC2 model, DeleteSecurityGroup: "associated with an instance or
  network interface, is referenced by another security group ... fails with
  DependencyViolation"; message "resource sg-... has a dependent object"
  (terraform-provider-aws issues #1671, #32745).
- DeleteSubnet while network interfaces live in it: instances, NAT gateways, load
  balancers, interface endpoints, EKS control-plane interfaces. botocore EC2 model,
  DeleteSubnet ("terminate all running instances in the subnet"); message "The subnet
  'subnet-...' has dependencies and cannot be deleted." (terraform-aws-modules/
  terraform-aws-vpc #1081, cloud-nuke #285: endpoints hold subnets).
- DeleteVpc while an internet gateway is attached, or security groups (other than the
  default), endpoints or subnets remain. botocore EC2 model, DeleteVpc ("detach or delete
  all gateways and resources ... delete all security groups ... (except the default
  one)"); message "The vpc 'vpc-...' has dependencies and cannot be deleted."
  (cloud-nuke #345).
- DetachInternetGateway while the VPC has mapped public addresses (an associated Elastic
  IP, a NAT gateway, an instance's public IP, an internet-facing load balancer). botocore
  EC2 model, DetachInternetGateway ("must not contain any running instances with Elastic
  IP addresses or public IPv4 addresses"); message from hashicorp/terraform #497, #1303,
  and jenkins-x/terraform-aws-eks-jx #373 (a load balancer's address).
- DeleteInternetGateway while attached: moto refuses it, with its own message; here AWS's
  "The internetGateway 'igw-...' has dependencies and cannot be deleted."
  (giantswarm/aws-operator #109).
- ReleaseAddress of an address still associated: InvalidIPAddress.InUse (botocore EC2
  model, ReleaseAddress, "[Nondefault VPC] You must disassociate ... Otherwise ...
  InvalidIPAddress.InUse"). And DeleteNatGateway releases the NAT's interface and its
  address once the NAT is deleted (moto keeps both, so the address would stay "in use").

ACM:
- A DNS-validated certificate is ISSUED only once each validation CNAME exists in a hosted
  zone of the account (ACM user guide, "DNS validation"; moto issues it after
  MOTO_ACM_VALIDATION_WAIT seconds whatever the zone holds). The wait still applies.
- DeleteCertificate of a certificate a listener uses: ResourceInUseException (botocore ACM
  model, DeleteCertificate: "You cannot delete an ACM certificate that is being used by
  another Amazon Web Services service"; message "Certificate arn:... in account ... is in
  use." from dfds/infrastructure-modules #5 and terraform-provider-aws #3866). Its
  InUseBy lists the load balancers, as AWS's describe does (moto: empty for ELBv2).

RDS:
- a deleted DB instance is 'deleting' for one describe, then gone (moto: gone at once;
  AWS takes minutes), and until it is gone its DB subnet group cannot be deleted:
  InvalidDBSubnetGroupStateFault (botocore RDS model, DeleteDBSubnetGroup; message
  "Cannot delete the subnet group '...' because at least one database instance: ... is
  still using it." from terraform-provider-aws issues on aws_db_subnet_group).

VPC endpoints (botocore EC2 model, State: Pending, Available, Deleting, Deleted, ...):
- an interface endpoint is 'pending' when created and for the next describe, then
  'available' (the AWS CLI's create-vpc-endpoint examples: a gateway endpoint answers
  'available' at once, an interface endpoint 'pending'; moto: 'available' at once);
- a deleted endpoint is 'deleting' for one describe, then gone (moto: 'deleted' at once,
  and listed forever).
"""

from __future__ import annotations

from moto.acm import models as acm_models
from moto.rds import models as rds_models
from moto.rds.exceptions import RDSClientError
from moto.core.exceptions import AWSError
from moto.ec2.exceptions import DependencyViolationError, EC2ClientError
from moto.ec2.models.nat_gateways import NatGatewayBackend
from moto.ec2.models.vpcs import VPCBackend
from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses
from moto.ec2.responses.internet_gateways import InternetGateways
from moto.ec2.responses.security_groups import SecurityGroups
from moto.ec2.responses.subnets import Subnets
from moto.ec2.responses.vpcs import VPCs


class _InUse(EC2ClientError):
    def __init__(self, allocation_id: str):
        super().__init__("InvalidIPAddress.InUse", f"The address with allocation id [{allocation_id}] is in use.")


def _others(backend, service: str):
    """The same account and region's backend of another moto service."""
    from moto.backends import get_backend
    return get_backend(service)[backend.account_id][backend.region_name]


def _live_instances(ec2):
    return [i for reservation in ec2.reservations.values() for i in reservation.instances
            if i._state.name not in ("terminated", "shutting-down")]


def _live_nats(ec2):
    return [n for n in ec2.nat_gateways.values() if n.state not in ("deleted", "deleting", "failed")]


def _live_endpoints(ec2):
    return [e for e in ec2.vpc_end_points.values() if e.state not in ("deleted", "deleting")]


def _load_balancers(ec2):
    return list(_others(ec2, "elbv2").load_balancers.values())


def _eks_config(ec2) -> list[dict]:
    return [c.resources_vpc_config or {} for c in _others(ec2, "eks").clusters.values()]


def _group_users(ec2, group_id: str) -> list[str]:
    """What keeps a security group from being deleted (empty: nothing)."""
    users = []
    for group in (g for groups in ec2.groups.values() for g in groups.values() if g.id != group_id):
        for rule in list(group.ingress_rules) + list(group.egress_rules):
            if (rule.source_group or {}).get("GroupId") == group_id:
                users.append(f"a rule of {group.id}")
    users += [f"interface {e.id}" for e in _live_interfaces(ec2) if group_id in {g.id for g in e.group_set}]
    users += [f"load balancer {lb.name}" for lb in _load_balancers(ec2) if group_id in (lb.security_groups or [])]
    users += [f"DB instance {db.db_instance_identifier}" for db in _others(ec2, "rds").databases.values()
              if group_id in (db.vpc_security_group_ids or [])]
    users += [f"cache {rg.id}" for rg in _others(ec2, "elasticache").replication_groups.values()
              if rg.status != "deleting" and group_id in (rg.security_group_ids or [])]
    users += [f"endpoint {e.id}" for e in _live_endpoints(ec2) if group_id in e.security_group_ids]
    users += ["EKS cluster" for config in _eks_config(ec2) if group_id in (config.get("securityGroupIds") or [])]
    return users


def _subnet_users(ec2, subnet_id: str) -> list[str]:
    users = [f"interface {e.id}" for e in _live_interfaces(ec2) if e.subnet is not None and e.subnet.id == subnet_id]
    users += [f"instance {i.id}" for i in _live_instances(ec2) if i.subnet_id == subnet_id]
    users += [f"NAT {n.id}" for n in _live_nats(ec2) if n.subnet_id == subnet_id]
    users += [f"load balancer {lb.name}" for lb in _load_balancers(ec2)
              if subnet_id in {getattr(s, "id", s) for s in lb.subnets}]
    users += [f"endpoint {e.id}" for e in _live_endpoints(ec2) if subnet_id in (e.subnet_ids or [])]
    users += ["EKS cluster" for config in _eks_config(ec2) if subnet_id in (config.get("subnetIds") or [])]
    return users


def _live_interfaces(ec2):
    """Interfaces that still exist in AWS terms: moto keeps a deleted NAT gateway's, and a
    terminated instance's primary interface (AWS deletes both with their owner)."""
    gone = {id(n._eni) for n in ec2.nat_gateways.values() if n.state == "deleted"}
    return [e for e in ec2.enis.values() if id(e) not in gone and (
        e.instance is None or e.instance._state.name not in ("terminated", "shutting-down"))]


def _mapped_public_addresses(ec2, vpc_id: str) -> list[str]:
    mapped = [a.public_ip for a in ec2.addresses
              if a.eni is not None and a.eni.subnet is not None and a.eni.subnet.vpc_id == vpc_id]
    mapped += [n.id for n in _live_nats(ec2) if n.vpc_id == vpc_id and n.connectivity_type != "private"]
    mapped += [i.id for i in _live_instances(ec2) if i.vpc_id == vpc_id and i.public_ip]
    mapped += [lb.name for lb in _load_balancers(ec2) if lb.vpc_id == vpc_id and lb.scheme == "internet-facing"]
    return mapped


def _vpc_dependents(ec2, vpc_id: str) -> list[str]:
    found = [f"gateway {g.id}" for g in ec2.internet_gateways.values() if g.vpc is not None and g.vpc.id == vpc_id]
    found += [f"group {g.id}" for g in ec2.groups.get(vpc_id, {}).values() if g.name != "default"]
    found += [f"endpoint {e.id}" for e in _live_endpoints(ec2) if e.vpc_id == vpc_id]
    return found


def _refusing(response_class, action: str, check):
    """Wrap a moto EC2 response handler: check(handler) raises when AWS would refuse."""
    original = getattr(response_class, action)

    def handler(self):
        check(self)
        return original(self)
    setattr(response_class, action, handler)


def _check_delete_security_group(self) -> None:
    group_id = self._get_param("GroupId")
    if not group_id and self._get_param("GroupName"):
        group = self.ec2_backend.get_security_group_by_name_or_id(self._get_param("GroupName"))
        group_id = group.id if group else None
    if group_id and _group_users(self.ec2_backend, group_id):
        raise DependencyViolationError(f"resource {group_id} has a dependent object")


def _check_delete_subnet(self) -> None:
    subnet_id = self._get_param("SubnetId")
    if _subnet_users(self.ec2_backend, subnet_id):
        raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")


def _check_delete_vpc(self) -> None:
    vpc_id = self._get_param("VpcId")
    if _vpc_dependents(self.ec2_backend, vpc_id):
        raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")


def _check_detach_internet_gateway(self) -> None:
    vpc_id = self._get_param("VpcId")
    if _mapped_public_addresses(self.ec2_backend, vpc_id):
        raise DependencyViolationError(f"Network {vpc_id} has some mapped public address(es). Please unmap those "
                                       "public address(es) before detaching the gateway.")


def _check_delete_internet_gateway(self) -> None:
    igw_id = self._get_param("InternetGatewayId")
    gateway = self.ec2_backend.internet_gateways.get(igw_id)
    if gateway is not None and gateway.vpc is not None:
        raise DependencyViolationError(f"The internetGateway '{igw_id}' has dependencies and cannot be deleted.")


def _check_release_address(self) -> None:
    allocation_id = self._get_param("AllocationId")
    for address in self.ec2_backend.addresses:
        if address.allocation_id == allocation_id and (address.eni is not None or address.instance is not None):
            raise _InUse(allocation_id)


_original_delete_nat = NatGatewayBackend.delete_nat_gateway


def _delete_nat_gateway(self, nat_gateway_id: str):
    """A deleted NAT lets go of its address (AWS: the EIP is disassociated once the NAT is
    'deleted'; moto keeps the association, so the address could never be released)."""
    nat = _original_delete_nat(self, nat_gateway_id)
    for address in self.addresses:
        if address.eni is nat._eni:
            address.eni, address.association_id = None, None
    return nat


# --- VPC endpoints ------------------------------------------------------------------

_original_create_endpoint = VPCBackend.create_vpc_endpoint
_original_describe_endpoints = VPCBackend.describe_vpc_endpoints
_original_delete_endpoints = VPCBackend.delete_vpc_endpoints


def _create_vpc_endpoint(self, *args, **kwargs):
    endpoint = _original_create_endpoint(self, *args, **kwargs)
    if (endpoint.vpc_endpoint_type or "").lower() != "gateway":
        endpoint.state, endpoint.strict_describes_pending = "pending", 1
    return endpoint


def _delete_vpc_endpoints(self, vpce_ids=None):
    """A second delete of an endpoint already deleting is accepted, as in AWS (moto would
    remove its routes twice and answer InvalidRoute.NotFound)."""
    known = [self.vpc_end_points[i] for i in vpce_ids or [] if i in self.vpc_end_points
             and self.vpc_end_points[i].state not in ("deleting", "deleted")]
    _original_delete_endpoints(self, [e.id for e in known])
    for endpoint in known:
        endpoint.state, endpoint.strict_describes_deleting = "deleting", 1


def _describe_vpc_endpoints(self, vpc_end_point_ids=None, filters=None):
    for endpoint_id, endpoint in list(self.vpc_end_points.items()):
        if endpoint.state == "deleting" and not getattr(endpoint, "strict_describes_deleting", 0):
            del self.vpc_end_points[endpoint_id]  # gone, after one describe saw it 'deleting'
    found = _original_describe_endpoints(self, vpc_end_point_ids, filters)
    for endpoint in found:
        if endpoint.state == "pending" and not getattr(endpoint, "strict_describes_pending", 0):
            endpoint.state = "available"
        for counter in ("strict_describes_pending", "strict_describes_deleting"):
            if getattr(endpoint, counter, 0):
                setattr(endpoint, counter, getattr(endpoint, counter) - 1)
    return found


# --- ACM ----------------------------------------------------------------------------

_original_check = acm_models.CertBundle.check


def _validation_records_exist(bundle) -> bool:
    from moto.route53.models import route53_backends
    options = bundle.describe()["Certificate"].get("DomainValidationOptions", [])
    wanted = {(o["ResourceRecord"]["Name"].rstrip("."), o["ResourceRecord"]["Value"].rstrip("."))
              for o in options if "ResourceRecord" in o}
    present = set()
    for zone in route53_backends[bundle.arn.split(":")[4]]["global"].zones.values():
        for record in zone.rrsets:
            if record.type == "CNAME":
                present |= {(record.name.rstrip("."), value.rstrip(".")) for value in record.records}
    return wanted <= present


def _check(self) -> None:
    if self.type == "AMAZON_ISSUED" and self.status == "PENDING_VALIDATION" and not _validation_records_exist(self):
        return  # AWS validates only once the CNAME answers from a zone
    _original_check(self)


def _listener_users(backend, arn: str) -> list[str]:
    elbv2 = _others(backend, "elbv2")
    return sorted({lb.arn for lb in elbv2.load_balancers.values() for listener in lb.listeners.values()
                   if arn in (listener.certificates or [])})


class CertificateInUse(AWSError):
    TYPE = "ResourceInUseException"


_original_delete_certificate = acm_models.AWSCertificateManagerBackend.delete_certificate
_original_describe = acm_models.CertBundle.describe


def _delete_certificate(self, arn: str) -> None:
    if _listener_users(self, arn):
        raise CertificateInUse(f"Certificate {arn} in account {self.account_id} is in use.")
    _original_delete_certificate(self, arn)


def _describe(self) -> dict:
    described = _original_describe(self)
    _, _, _, region, account, _ = self.arn.split(":", 5)
    users = _listener_users(acm_models.acm_backends[account][region], self.arn)
    others = {user for user in described["Certificate"].get("InUseBy", []) if ":listener/" not in user}
    described["Certificate"]["InUseBy"] = sorted(others | set(users))  # moto lists listeners: AWS, load balancers
    return described


_installed = []


class InvalidDBSubnetGroupStateFault(RDSClientError):
    def __init__(self, group: str, instance: str):
        super().__init__("InvalidDBSubnetGroupStateFault", f"Cannot delete the subnet group '{group}' because at "
                         f"least one database instance: {instance} is still using it.")


_original_delete_db_instance = rds_models.RDSBackend.delete_db_instance
_original_describe_db_instances = rds_models.RDSBackend.describe_db_instances
_original_delete_subnet_group = rds_models.RDSBackend.delete_subnet_group


def _delete_db_instance(self, db_instance_identifier, *args, **kwargs):
    database = _original_delete_db_instance(self, db_instance_identifier, *args, **kwargs)
    database.status, database._strict_seen_deleting = "deleting", False
    self.databases[db_instance_identifier] = database  # still there, deleting, until described once
    return database


def _describe_db_instances(self, *args, **kwargs):
    for name, database in list(self.databases.items()):
        if getattr(database, "_strict_seen_deleting", False):
            del self.databases[name]
    found = _original_describe_db_instances(self, *args, **kwargs)
    for database in found:
        if hasattr(database, "_strict_seen_deleting"):
            database._strict_seen_deleting = True
    return found


def _delete_subnet_group(self, subnet_name):
    for database in self.databases.values():
        if getattr(database, "_db_subnet_group_name", None) == subnet_name:
            raise InvalidDBSubnetGroupStateFault(subnet_name, database.db_instance_identifier)
    return _original_delete_subnet_group(self, subnet_name)


def install() -> None:
    if _installed:
        return
    _installed.append(True)
    _refusing(SecurityGroups, "delete_security_group", _check_delete_security_group)
    _refusing(Subnets, "delete_subnet", _check_delete_subnet)
    _refusing(VPCs, "delete_vpc", _check_delete_vpc)
    _refusing(InternetGateways, "detach_internet_gateway", _check_detach_internet_gateway)
    _refusing(InternetGateways, "delete_internet_gateway", _check_delete_internet_gateway)
    _refusing(ElasticIPAddresses, "release_address", _check_release_address)
    NatGatewayBackend.delete_nat_gateway = _delete_nat_gateway
    VPCBackend.create_vpc_endpoint = _create_vpc_endpoint
    VPCBackend.delete_vpc_endpoints = _delete_vpc_endpoints
    VPCBackend.describe_vpc_endpoints = _describe_vpc_endpoints
    acm_models.CertBundle.check = _check
    acm_models.CertBundle.describe = _describe
    acm_models.AWSCertificateManagerBackend.delete_certificate = _delete_certificate
    rds_models.RDSBackend.delete_db_instance = _delete_db_instance
    rds_models.RDSBackend.describe_db_instances = _describe_db_instances
    rds_models.RDSBackend.delete_subnet_group = _delete_subnet_group
