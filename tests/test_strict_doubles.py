"""The simulator refuses what AWS refuses (provisioner/simulation/strict.py), through the
same boto3 calls the product makes: each answer's code is checked against botocore's
service model, so a double that drifts from AWS fails here."""

from __future__ import annotations

import time

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION

EC2_MODEL = botocore.session.get_session().get_service_model("ec2")
ACM_MODEL = botocore.session.get_session().get_service_model("acm")


def _refused(call, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


@pytest.fixture
def ec2(aws):
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def network(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    return vpc, subnet


def test_a_security_group_referenced_by_another_groups_rule_is_not_deletable(ec2, network):
    vpc, _ = network
    target = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    source = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    permission = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": source}]}
    ec2.authorize_security_group_ingress(GroupId=target, IpPermissions=[permission])
    assert "DependencyViolation" in EC2_MODEL.operation_model("DeleteSecurityGroup").documentation
    assert _refused(ec2.delete_security_group, GroupId=source) == (
        "DependencyViolation", f"resource {source} has a dependent object")
    ec2.revoke_security_group_ingress(GroupId=target, IpPermissions=[permission])
    ec2.delete_security_group(GroupId=source)


def test_a_security_group_on_a_network_interface_and_its_subnet_are_not_deletable(ec2, network):
    vpc, subnet = network
    group = ec2.create_security_group(GroupName="eni", Description="eni", VpcId=vpc)["GroupId"]
    interface = ec2.create_network_interface(SubnetId=subnet, Groups=[group])["NetworkInterface"]["NetworkInterfaceId"]
    assert _refused(ec2.delete_security_group, GroupId=group)[0] == "DependencyViolation"
    assert _refused(ec2.delete_subnet, SubnetId=subnet) == (
        "DependencyViolation", f"The subnet '{subnet}' has dependencies and cannot be deleted.")
    ec2.delete_network_interface(NetworkInterfaceId=interface)
    ec2.delete_security_group(GroupId=group)
    ec2.delete_subnet(SubnetId=subnet)


def test_a_vpc_with_an_attached_gateway_or_a_group_is_not_deletable_nor_the_attached_gateway(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    group = ec2.create_security_group(GroupName="left", Description="left", VpcId=vpc)["GroupId"]
    assert _refused(ec2.delete_vpc, VpcId=vpc) == (
        "DependencyViolation", f"The vpc '{vpc}' has dependencies and cannot be deleted.")
    assert _refused(ec2.delete_internet_gateway, InternetGatewayId=gateway) == (
        "DependencyViolation", f"The internetGateway '{gateway}' has dependencies and cannot be deleted.")
    ec2.detach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=gateway)
    assert _refused(ec2.delete_vpc, VpcId=vpc)[0] == "DependencyViolation"  # the group is left
    ec2.delete_security_group(GroupId=group)
    ec2.delete_vpc(VpcId=vpc)


def test_a_gateway_is_not_detachable_while_a_nat_maps_a_public_address_nor_its_address_releasable(ec2, network):
    vpc, subnet = network
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    assert "must not contain any running instances with Elastic IP addresses" in EC2_MODEL.operation_model(
        "DetachInternetGateway").documentation
    assert _refused(ec2.detach_internet_gateway, InternetGatewayId=gateway, VpcId=vpc) == (
        "DependencyViolation", f"Network {vpc} has some mapped public address(es). Please unmap those public "
                               "address(es) before detaching the gateway.")
    assert "InvalidIPAddress.InUse" in EC2_MODEL.operation_model("ReleaseAddress").documentation
    assert _refused(ec2.release_address, AllocationId=allocation)[0] == "InvalidIPAddress.InUse"
    assert _refused(ec2.delete_subnet, SubnetId=subnet)[0] == "DependencyViolation"  # the NAT's interface
    ec2.delete_nat_gateway(NatGatewayId=nat)  # the NAT lets go of its address and interface
    ec2.release_address(AllocationId=allocation)
    ec2.detach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    ec2.delete_subnet(SubnetId=subnet)


def test_an_interface_endpoint_is_pending_at_first_and_deleting_before_it_is_gone(ec2, network):
    vpc, subnet = network
    endpoint = ec2.create_vpc_endpoint(VpcEndpointType="Interface", VpcId=vpc, SubnetIds=[subnet],
                                       ServiceName=f"com.amazonaws.{REGION}.ssm")["VpcEndpoint"]
    assert endpoint["State"] == "pending"
    states = [ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint["VpcEndpointId"]])["VpcEndpoints"][0]["State"]
              for _ in range(2)]
    assert states == ["pending", "available"]
    assert {s.lower() for s in states} <= {s.lower() for s in EC2_MODEL.shape_for("State").enum}
    assert _refused(ec2.delete_vpc, VpcId=vpc)[0] == "DependencyViolation"
    ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoint["VpcEndpointId"]])
    ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoint["VpcEndpointId"]])  # again, as a resumed destroy does
    in_vpc = [{"Name": "vpc-id", "Values": [vpc]}]
    assert [e["State"] for e in ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"]] == ["deleting"]
    assert ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"] == []


def test_a_gateway_endpoint_is_available_at_once(ec2, network):
    vpc, _ = network
    endpoint = ec2.create_vpc_endpoint(VpcEndpointType="Gateway", VpcId=vpc,
                                       ServiceName=f"com.amazonaws.{REGION}.s3")["VpcEndpoint"]
    assert endpoint["State"] == "available"


def test_a_certificate_is_issued_only_once_its_validation_record_exists_and_is_not_deletable_in_use(aws, network):
    acm, route53 = boto3.client("acm", region_name=REGION), boto3.client("route53", region_name=REGION)
    arn = acm.request_certificate(DomainName="app.strict.example.com", ValidationMethod="DNS")["CertificateArn"]
    time.sleep(1.2)  # past MOTO_ACM_VALIDATION_WAIT: moto alone would issue it now
    described = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert described["Status"] == "PENDING_VALIDATION"
    record = described["DomainValidationOptions"][0]["ResourceRecord"]
    zone = route53.create_hosted_zone(Name="strict.example.com", CallerReference="strict")["HostedZone"]["Id"]
    route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": record["Name"], "Type": "CNAME", "TTL": 300, "ResourceRecords": [{"Value": record["Value"]}]}}]})
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "ISSUED"

    ec2, elbv2 = boto3.client("ec2", region_name=REGION), boto3.client("elbv2", region_name=REGION)
    vpc, subnet = network
    other = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.2.0/24", AvailabilityZone=f"{REGION}b")["Subnet"]["SubnetId"]
    lb = elbv2.create_load_balancer(Name="strict", Subnets=[subnet, other])["LoadBalancers"][0]["LoadBalancerArn"]
    group = elbv2.create_target_group(Name="strict", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]
    elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTPS", Port=443, Certificates=[{"CertificateArn": arn}],
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}])
    assert "ResourceInUseException" in [s.name for s in ACM_MODEL.operation_model("DeleteCertificate").error_shapes]
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["InUseBy"] == [lb]
    assert _refused(acm.delete_certificate, CertificateArn=arn) == (
        "ResourceInUseException", f"Certificate {arn} in account 123456789012 is in use.")
    assert _refused(ec2.delete_subnet, SubnetId=subnet)[0] == "DependencyViolation"  # the load balancer's
    elbv2.delete_load_balancer(LoadBalancerArn=lb)
    acm.delete_certificate(CertificateArn=arn)


# --- the product copes with them -----------------------------------------------------
# (Every apply and destroy in the suite runs against these doubles; the tests below add
# what only a stricter AWS makes visible.)

from provisioner import waiting  # noqa: E402
from tests.census import census  # noqa: E402
from tests.conftest import run_cli, write_config  # noqa: E402

DEPLOYMENT = "acme-test"


@pytest.fixture
def applied(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(waiting, "TIME_SCALE", 0.01)  # give up on a blocker after 6 s, not 10 min
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    state = __import__("json").loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    return config, state["steps"]["vpc"]["outputs"]


def test_destroy_stops_at_a_foreign_instance_in_its_subnet_names_it_and_finishes_once_it_is_gone(applied):
    """moto deletes a subnet with an instance in it; AWS refuses, and so must the destroy."""
    config, vpc = applied
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    foreign = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=vpc["private_subnet_ids"][0])[
        "Instances"][0]["InstanceId"]
    blocked = run_cli("destroy", config, "--yes")
    assert blocked.code != 0
    assert "cannot delete subnet" in blocked.out and f"In the way: ENI" in blocked.out
    assert f"instance {foreign}" in blocked.out
    ec2.terminate_instances(InstanceIds=[foreign])
    finished = run_cli("destroy", config, "--yes")
    assert finished.code == 0, finished
    assert census() == {}


def test_destroy_waits_out_a_public_address_that_lingers_in_the_vpc(applied):
    """AWS refuses to detach the internet gateway while any address in the VPC is public
    (a load balancer's interfaces linger for minutes after it is deleted): the detach is
    retried until the address is gone, as terraform-provider-aws retries it."""
    import threading
    config, vpc = applied
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=vpc["public_subnet_ids"][0])[
        "Instances"][0]["InstanceId"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    association = ec2.associate_address(AllocationId=allocation, InstanceId=instance)["AssociationId"]

    def lingering_address_goes():  # a second after the destroy got to the gateway (its NAT gone)
        watcher = boto3.client("ec2", region_name=REGION)
        while any(n["State"] != "deleted" for n in watcher.describe_nat_gateways()["NatGateways"]):
            time.sleep(0.05)
        time.sleep(1)
        watcher.disassociate_address(AssociationId=association)
        watcher.release_address(AllocationId=allocation)
        watcher.terminate_instances(InstanceIds=[instance])
    remover = threading.Thread(target=lingering_address_goes)
    remover.start()
    try:
        result = run_cli("destroy", config, "--yes")
    finally:
        remover.join()
    assert result.code == 0, result
    assert census() == {}


def test_a_db_subnet_group_is_held_while_its_instance_is_deleting(aws):
    """RDS refuses DeleteDBSubnetGroup while any instance, even one being deleted, uses it."""
    import pytest
    from botocore.exceptions import ClientError
    ec2, rds = boto3.client("ec2", region_name=REGION), boto3.client("rds", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"][
        "SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    rds.create_db_subnet_group(DBSubnetGroupName="held", DBSubnetGroupDescription="x", SubnetIds=subnets)
    rds.create_db_instance(DBInstanceIdentifier="db1", Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="u", MasterUserPassword="password1", AllocatedStorage=20,
                           DBSubnetGroupName="held")
    rds.delete_db_instance(DBInstanceIdentifier="db1", SkipFinalSnapshot=True)
    with pytest.raises(ClientError) as refused:
        rds.delete_db_subnet_group(DBSubnetGroupName="held")
    assert refused.value.response["Error"]["Code"] == "InvalidDBSubnetGroupStateFault"
    assert [i["DBInstanceStatus"] for i in rds.describe_db_instances()["DBInstances"]] == ["deleting"]
    assert rds.describe_db_instances()["DBInstances"] == []
    rds.delete_db_subnet_group(DBSubnetGroupName="held")


def test_a_cluster_starts_with_its_creators_entry_and_takes_only_principals_iam_names(aws, network):
    """EKS gives the creator (an assumed role: its role, path included) cluster admin, and
    refuses an entry for an ARN IAM does not hold as written: the pathless ARN of a role
    with a path (terraform-aws-modules/terraform-aws-eks #2969) or an STS session ARN."""
    import json
    iam, eks = boto3.client("iam", region_name=REGION), boto3.client("eks", region_name=REGION)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})
    creator = iam.create_role(RoleName="AWSReservedSSO_Admin_1", Path="/aws-reserved/sso.amazonaws.com/us-east-1/",
                              AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    keys = boto3.client("sts", region_name=REGION).assume_role(RoleArn=creator, RoleSessionName="jane")["Credentials"]
    as_creator = boto3.client("eks", region_name=REGION, aws_access_key_id=keys["AccessKeyId"],
                              aws_secret_access_key=keys["SecretAccessKey"], aws_session_token=keys["SessionToken"])
    _, subnet = network
    as_creator.create_cluster(name="c", roleArn=creator, resourcesVpcConfig={"subnetIds": [subnet]},
                              accessConfig={"bootstrapClusterCreatorAdminPermissions": True})
    assert eks.list_access_entries(clusterName="c")["accessEntries"] == [creator]
    assert [p["policyArn"] for p in eks.list_associated_access_policies(
        clusterName="c", principalArn=creator)["associatedAccessPolicies"]] == [
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"]
    other = iam.create_role(RoleName="ops", Path="/team/", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    for wrong in ("arn:aws:iam::123456789012:role/ops", "arn:aws:sts::123456789012:assumed-role/ops/jane",
                  "arn:aws:iam::123456789012:role/team/nobody"):
        assert _refused(eks.create_access_entry, clusterName="c", principalArn=wrong) == (
            "InvalidParameterException", "The specified principalArn is invalid: invalid principal")
    eks.create_access_entry(clusterName="c", principalArn=other)
    assert sorted(eks.list_access_entries(clusterName="c")["accessEntries"]) == sorted([creator, other])
    as_creator.create_cluster(name="d", roleArn=creator, resourcesVpcConfig={"subnetIds": [subnet]},
                              accessConfig={"bootstrapClusterCreatorAdminPermissions": False})
    assert eks.list_access_entries(clusterName="d")["accessEntries"] == []
