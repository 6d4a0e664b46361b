"""A full apply against moto over HTTP: what exists afterwards, with which settings."""

from __future__ import annotations

import base64
import json
import re

import boto3
import pytest

from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import AwsCalls

DEPLOYMENT = "acme-test"


def tags_of(tag_list) -> dict:
    return {t["Key"]: t["Value"] for t in tag_list or []}


@pytest.fixture
def applied(shared_deployment):
    """The module's one applied deployment (with tags team=platform); the tests using it
    only read, or put back what they change."""
    return shared_deployment


def client(service):
    return boto3.client(service, region_name=REGION)


def test_network_has_three_zones_with_tagged_subnets_nat_and_routes(applied):
    ec2 = client("ec2")
    mine = [{"Name": "tag:provisioner:deployment", "Values": [DEPLOYMENT]}]
    [vpc] = ec2.describe_vpcs(Filters=mine)["Vpcs"]
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]
    subnets = ec2.describe_subnets(Filters=mine)["Subnets"]
    private = [s for s in subnets if "kubernetes.io/role/internal-elb" in tags_of(s["Tags"])]
    public = [s for s in subnets if "kubernetes.io/role/elb" in tags_of(s["Tags"])]
    assert len(private) == 3 and len(public) == 3
    assert {s["AvailabilityZone"] for s in private} == {s["AvailabilityZone"] for s in public}
    assert sorted(s["CidrBlock"] for s in private) == ["10.0.0.0/21", "10.0.16.0/21", "10.0.8.0/21"]
    assert sorted(s["CidrBlock"] for s in public) == ["10.0.40.0/21", "10.0.48.0/21", "10.0.56.0/21"]
    assert all(s["MapPublicIpOnLaunch"] for s in public) and not any(s["MapPublicIpOnLaunch"] for s in private)
    assert all(tags_of(s["Tags"])["kubernetes.io/cluster/acme-test-eks"] == "shared" for s in subnets)
    [nat] = [n for n in ec2.describe_nat_gateways(Filter=mine)["NatGateways"] if n["State"] == "available"]
    assert nat["SubnetId"] in {s["SubnetId"] for s in public}
    assert len(ec2.describe_addresses(Filters=mine)["Addresses"]) == 1
    tables = {tags_of(t["Tags"])["Name"]: t for t in ec2.describe_route_tables(Filters=mine)["RouteTables"]}
    private_routes = {r.get("DestinationCidrBlock"): r for r in tables["acme-test-private"]["Routes"]}
    public_routes = {r.get("DestinationCidrBlock"): r for r in tables["acme-test-public"]["Routes"]}
    assert private_routes["0.0.0.0/0"]["NatGatewayId"] == nat["NatGatewayId"]
    assert public_routes["0.0.0.0/0"]["GatewayId"].startswith("igw-")
    assert {a["SubnetId"] for a in tables["acme-test-private"]["Associations"]} == {s["SubnetId"] for s in private}


def test_verify_reports_the_spec_checklist_in_one_readable_report(applied):
    """Cluster and nodes, the ALB and its healthy targets, RDS and ElastiCache available,
    S3 through the endpoint, releases deployed, the URL: each line read live."""
    config, _ = applied
    result = run_cli("verify", config)
    assert result.code == 0, result
    lines = {line.split()[0]: line for line in result.out.splitlines() if line.strip() and not line.startswith(" ")}
    assert "cluster acme-test-eks ACTIVE, Kubernetes 1.34" in lines["eks"]
    assert "node group acme-test-default ACTIVE: 3 nodes (3-10)" in result.out
    assert "3/3 nodes Ready" in lines["k8s_bootstrap"]
    assert "acme-test-alb active at" in lines["alb"] and "1/1 targets healthy on pod port 8080" in lines["alb"]
    assert "RDS acme-test-pg available, PostgreSQL 16" in lines["postgres"]
    assert "ElastiCache acme-test-redis available" in lines["redis"] and "TLS on" in lines["redis"]
    assert "reachable through gateway endpoint vpce-" in lines["storage"]
    lb_dns = client("elbv2").describe_load_balancers(Names=["acme-test-alb"])["LoadBalancers"][0]["DNSName"]
    assert "release langsmith deployed" in lines["langsmith"] and f"LangSmith at http://{lb_dns}" in lines["langsmith"]
    assert "release cert-manager deployed" in result.out
    assert result.out.rstrip().endswith("Verify: everything matches the config.")
    facts = json.loads(run_cli("verify", config, "--json").out)["facts"]
    assert any("targets healthy" in fact for fact in facts["alb"])


def test_every_resource_carries_name_ownership_and_user_tags(applied):
    ec2 = client("ec2")
    mine = [{"Name": "tag:provisioner:deployment", "Values": [DEPLOYMENT]}]
    tagged = (ec2.describe_vpcs(Filters=mine)["Vpcs"] + ec2.describe_subnets(Filters=mine)["Subnets"]
              + ec2.describe_security_groups(Filters=mine)["SecurityGroups"]
              + ec2.describe_route_tables(Filters=mine)["RouteTables"])
    for resource in tagged:
        tags = tags_of(resource["Tags"])
        assert tags["Name"].startswith("acme-test-") and tags["team"] == "platform"
        assert tags["provisioner:step"] in ("vpc", "postgres", "redis", "eks", "alb")
    [db] = client("rds").describe_db_instances()["DBInstances"]
    assert tags_of(db["TagList"])["provisioner:step"] == "postgres"
    bucket = json.loads(open("state/acme-test.json").read())["steps"]["storage"]["outputs"]["bucket_name"]
    assert tags_of(client("s3").get_bucket_tagging(Bucket=bucket)["TagSet"])["Name"] == "acme-test-traces"


def test_traces_bucket_is_private_encrypted_expiring_and_endpoint_only(applied):
    s3, ec2 = client("s3"), client("ec2")
    outputs = json.loads(open("state/acme-test.json").read())["steps"]
    bucket = outputs["storage"]["outputs"]["bucket_name"]
    assert bucket.startswith("acme-test-traces-")
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["Filter"]["Prefix"]: r["Expiration"]["Days"]
             for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules == {"ttl_s/": 14, "ttl_l/": 400}
    endpoint_id = outputs["storage"]["outputs"]["s3_vpc_endpoint_id"]
    [endpoint] = ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"]
    assert endpoint["VpcEndpointType"] == "Gateway" and endpoint["ServiceName"] == f"com.amazonaws.{REGION}.s3"
    assert sorted(endpoint["RouteTableIds"]) == sorted(outputs["vpc"]["outputs"]["route_table_ids"])
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny" and "s3:GetObject" in s["Action"]]
    assert deny and deny[0]["Principal"] == "*"
    assert deny[0]["Condition"] == {"StringNotEquals": {"aws:SourceVpce": endpoint_id}}
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in policy["Statement"])


def test_secrets_are_secure_strings_under_the_deployment_prefix(applied):
    ssm = client("ssm")
    params = {p["Name"]: p for page in ssm.get_paginator("describe_parameters").paginate() for p in page["Parameters"]}
    expected = ["postgres-password", "redis-auth-token", "langsmith-api-key-salt", "langsmith-jwt-secret",
                "langsmith-admin-password", "langsmith-insights-encryption-key", "langsmith-polly-encryption-key",
                "clickhouse-password", "insights-postgres-password", "polly-postgres-password",
                "langsmith-license-key"]
    for leaf in expected:
        assert params[f"/langsmith/acme-test/{leaf}"]["Type"] == "SecureString"
    admin = ssm.get_parameter(Name="/langsmith/acme-test/langsmith-admin-password", WithDecryption=True)
    value = admin["Parameter"]["Value"]
    assert len(value) >= 12 and any(c.isupper() for c in value) and any(c.islower() for c in value)
    for leaf in ("langsmith-insights-encryption-key", "langsmith-polly-encryption-key"):  # Fernet keys
        key = ssm.get_parameter(Name=f"/langsmith/acme-test/{leaf}", WithDecryption=True)["Parameter"]["Value"]
        assert len(base64.urlsafe_b64decode(key.encode())) == 32 and "+" not in key and "/" not in key


def test_postgres_is_private_encrypted_protected_and_reachable_from_the_vpc_only(applied):
    rds, ec2 = client("rds"), client("ec2")
    [db] = rds.describe_db_instances(DBInstanceIdentifier="acme-test-pg")["DBInstances"]
    assert db["Engine"] == "postgres" and db["EngineVersion"].startswith("16")
    assert db["DBInstanceClass"] == "db.t3.large" and db["AllocatedStorage"] == 20  # the gp3 floor
    assert db["StorageType"] == "gp3" and db["MaxAllocatedStorage"] == 100
    assert db["StorageEncrypted"] and not db["PubliclyAccessible"] and db["DeletionProtection"]
    assert db["BackupRetentionPeriod"] == 7
    subnet_ids = {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]}
    private = json.loads(open("state/acme-test.json").read())["steps"]["vpc"]["outputs"]["private_subnet_ids"]
    assert subnet_ids == set(private)
    [group_ref] = db["VpcSecurityGroups"]
    [group] = ec2.describe_security_groups(GroupIds=[group_ref["VpcSecurityGroupId"]])["SecurityGroups"]
    assert [(p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in group["IpPermissions"]] == [(5432, "10.0.0.0/16")]
    assert [r["CidrIp"] for p in group["IpPermissionsEgress"] for r in p["IpRanges"]] == ["10.0.0.0/16"]


def test_redis_has_tls_encryption_at_rest_and_an_auth_token(applied):
    [group] = client("elasticache").describe_replication_groups(ReplicationGroupId="acme-test-redis")[
        "ReplicationGroups"]
    assert group["TransitEncryptionEnabled"] and group["AtRestEncryptionEnabled"] and group["AuthTokenEnabled"]
    assert group["CacheNodeType"] == "cache.m6g.xlarge"


def test_eks_cluster_oidc_and_node_group(applied):
    eks, iam = client("eks"), client("iam")
    cluster = eks.describe_cluster(name="acme-test-eks")["cluster"]
    assert cluster["status"] == "ACTIVE" and cluster["version"] == "1.34"
    state = json.loads(open("state/acme-test.json").read())["steps"]
    vpc = state["vpc"]["outputs"]
    assert set(cluster["resourcesVpcConfig"]["subnetIds"]) == set(vpc["private_subnet_ids"] + vpc["public_subnet_ids"])
    assert cluster["logging"]["clusterLogging"][0]["enabled"]
    assert cluster["roleArn"].endswith(":role/acme-test-eks-cluster")
    attached = iam.list_attached_role_policies(RoleName="acme-test-eks-node")["AttachedPolicies"]
    assert {p["PolicyName"] for p in attached} == {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                                                   "AmazonEC2ContainerRegistryReadOnly"}
    issuer = cluster["identity"]["oidc"]["issuer"].removeprefix("https://")
    providers = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    assert [p for p in providers if p.endswith(issuer)] == [state["eks"]["outputs"]["oidc_provider_arn"]]
    addon = eks.describe_addon(clusterName="acme-test-eks", addonName="aws-ebs-csi-driver")["addon"]
    assert addon["status"] == "ACTIVE" and addon["serviceAccountRoleArn"].endswith(":role/acme-test-irsa-ebs-csi")
    group = eks.describe_nodegroup(clusterName="acme-test-eks", nodegroupName="acme-test-default")["nodegroup"]
    assert group["scalingConfig"] == {"minSize": 3, "maxSize": 10, "desiredSize": 3}
    assert group["instanceTypes"] == ["m5.4xlarge"] and set(group["subnets"]) == set(vpc["private_subnet_ids"])


def test_irsa_roles_trust_only_their_service_accounts_and_reach_only_their_resources(applied):
    iam, s3 = client("iam"), client("s3")
    state = json.loads(open("state/acme-test.json").read())["steps"]
    issuer = state["eks"]["outputs"]["oidc_issuer"].removeprefix("https://")
    langsmith = iam.get_role(RoleName="acme-test-irsa-langsmith")["Role"]
    [statement] = langsmith["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Federated": state["eks"]["outputs"]["oidc_provider_arn"]}
    subjects = statement["Condition"]["StringEquals"][f"{issuer}:sub"]
    assert "system:serviceaccount:langsmith:langsmith-backend" in subjects
    assert not any(s.endswith(":*") for s in subjects) and "StringLike" not in statement["Condition"]
    bucket = state["storage"]["outputs"]["bucket_name"]
    s3_policy = iam.get_role_policy(RoleName="acme-test-irsa-langsmith", PolicyName="provisioner")["PolicyDocument"]
    resources = {r for st in s3_policy["Statement"] for r in [st["Resource"]]}
    assert resources == {f"arn:aws:s3:::{bucket}/*", f"arn:aws:s3:::{bucket}"}
    eso = iam.get_role_policy(RoleName="acme-test-irsa-external-secrets", PolicyName="provisioner")["PolicyDocument"]
    assert all("parameter/langsmith/acme-test" in r for r in eso["Statement"][0]["Resource"])
    eso_trust = iam.get_role(RoleName="acme-test-irsa-external-secrets")["Role"]["AssumeRolePolicyDocument"]
    assert eso_trust["Statement"][0]["Condition"]["StringEquals"][f"{issuer}:sub"] == [
        "system:serviceaccount:external-secrets:external-secrets"]
    ebs = iam.list_attached_role_policies(RoleName="acme-test-irsa-ebs-csi")["AttachedPolicies"]
    assert [p["PolicyName"] for p in ebs] == ["AmazonEBSCSIDriverPolicy"]
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    allow = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in allow] == [{"AWS": langsmith["Arn"]}]
    names = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert "acme-test-irsa-cert-manager" not in names  # only with letsencrypt


def test_reapply_makes_no_mutating_call(applied, monkeypatch, kube_server):
    """Neither in AWS nor in the cluster: no create, patch or delete, no helm upgrade."""
    config, _ = applied
    kube_server.cluster.requests.clear()
    with AwsCalls() as seen:
        result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert seen.calls and seen.mutating == []
    assert kube_server.cluster.mutations == []
    assert "helm upgrade" not in result.out
    assert "0 mutating" in result.out and result.out.count("unchanged") == 10


def test_apply_adopts_and_repairs_drift(applied):
    """Settings changed behind our back are put back; nothing is recreated."""
    config, _ = applied
    s3 = client("s3")
    bucket = json.loads(open("state/acme-test.json").read())["steps"]["storage"]["outputs"]["bucket_name"]
    s3.delete_bucket_lifecycle(Bucket=bucket)
    before = census()
    verify = run_cli("verify", config)
    assert verify.code == 1 and "lifecycle differs" in verify.out
    plan = run_cli("plan", config)
    assert re.search(r"^storage +update$", plan.out, re.M)
    assert run_cli("apply", config, "--yes").code == 0
    assert len(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 2
    assert census() == before
    assert run_cli("verify", config).code == 0


def test_plan_before_anything_exists_says_create_for_every_step(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    result = run_cli("plan", config)
    assert result.code == 0
    for step in ("vpc", "secrets", "storage", "postgres", "redis", "eks"):
        assert re.search(rf"^{step} +create$", result.out, re.M)
    assert census() == {}


def test_in_cluster_data_stores_skip_rds_and_elasticache(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml", postgres_source="in-cluster", redis_source="in-cluster")
    assert run_cli("apply", config, "--yes").code == 0
    assert client("rds").describe_db_instances()["DBInstances"] == []
    assert client("elasticache").describe_replication_groups()["ReplicationGroups"] == []
    assert run_cli("graph", config).out.count("postgres") == 1  # destroy order still cleans it up


def test_bring_your_own_vpc_is_used_and_left_alone(aws, tmp_path):
    ec2 = client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
        "Subnet"]["SubnetId"] for i, az in enumerate("abab")]
    config = write_config(tmp_path / "config.yaml", create_vpc=False, vpc_id=vpc_id,
                          private_subnets=subnets[:2], public_subnets=subnets[2:])
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    [db] = client("rds").describe_db_instances()["DBInstances"]
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == set(subnets[:2])
    assert ec2.describe_vpcs(Filters=[{"Name": "tag:provisioner:deployment", "Values": [DEPLOYMENT]}])["Vpcs"] == []
    assert run_cli("destroy", config, "--yes").code == 0
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["VpcId"] == vpc_id
    assert len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]) == 4


def test_bring_your_own_vpc_with_wrong_ids_fails_the_step_clearly(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml", create_vpc=False, vpc_id="vpc-0000000000000000f",
                          private_subnets=["subnet-1", "subnet-2"], public_subnets=["subnet-3", "subnet-4"])
    result = run_cli("apply", config, "--yes")
    assert result.code == 1
    assert "vpc_id vpc-0000000000000000f does not exist" in result.out
    status = json.loads(open("state/acme-test.json").read())["steps"]
    assert status["vpc"]["status"] == "failed" and "does not exist" in status["vpc"]["last_error"]
    assert "postgres" not in status  # dependants never started
