"""A simulated AWS for the tests and the benchmark: moto in server mode, in this process.

Never imported by the real path; it needs moto (the `test` extra). The product talks to
it over real HTTP through AWS_ENDPOINT_URL, exactly as it talks to AWS.

Small, honest test doubles fill what moto 5.2.5 lacks:

- ElastiCache DeleteCacheSubnetGroup is not implemented in moto (HTML 500). Here it
  deletes the group, and refuses while a live replication group still uses it, as AWS does.
- ElastiCache replication groups stay 'deleting' forever in moto. Here a deleted group
  answers 'deleting' to one describe and is gone after that, as in AWS (minus the minutes).
- EKS add-ons are not implemented in moto (HTTP 404). Here create, describe, list and
  delete answer as AWS does for an add-on that becomes ACTIVE at once; an add-on needs
  its cluster, and goes with it.
- EKS access entries are not implemented in moto either. Here create, list, describe and
  delete entries, and associate / list access policies, answer as AWS does; entries
  go with their cluster. As in AWS, a cluster created with
  bootstrapClusterCreatorAdminPermissions (the default) starts with an entry for its
  creator (an assumed role's role ARN, path included) holding AmazonEKSClusterAdminPolicy,
  and a new entry's principal must be an IAM role or user ARN exactly as IAM names it
  (a pathless ARN of a role with a path, or an STS session ARN, is refused with
  InvalidParameterException "The specified principalArn is invalid: invalid principal",
  terraform-aws-modules/terraform-aws-eks #2969).
- EKS clusters in moto have no cluster security group. AWS makes one in the cluster's
  VPC (eks-cluster-sg-<name>-<id>, on the nodes and pods) and deletes it with the
  cluster; here too.
- IAM: moto knows AWS-managed policies only when it loads all ~1,600 of them, which
  costs over a second on every reset. Here only the ones the product attaches are
  loaded; attaching any other still fails, as an unknown policy does in AWS.
- S3: moto keeps a deleted bucket's tags, and a new bucket of the same name shows them.
  Here the tags go with the bucket, as in AWS.
- RDS: moto gives every DB instance the same DbiResourceId. AWS gives each instance its
  own, for life (snapshots carry it); here too.
- EKS in moto makes no control-plane log group. AWS makes /aws/eks/<cluster>/cluster when
  logging is on and keeps it after the cluster is deleted; here too.
- EKS version updates (cluster, node group, add-on): see eks_versions.
- Network Firewall rule groups, policies, endpoints and deletes: see simulated_firewall.
- Route 53 CallerReferences stay taken after their zone is deleted: see simulated_route53.
- Where moto is kinder than AWS (DependencyViolation, ACM validation and in-use
  certificates, VPC endpoint states): see strict, always on.
"""

import json
import time
import uuid

from moto.core.exceptions import ServiceException
from moto.ec2.models.nat_gateways import NatGateway
from moto.eks import exceptions as eks_exceptions
from moto.eks import responses as eks_responses
from moto.eks import urls as eks_urls
from moto.eks.models import Cluster, EKSBackend, Nodegroup
from moto.elasticache import models, responses
from moto.elasticache.exceptions import CacheSubnetGroupNotFound
from moto.elbv2.models import FakeLoadBalancer
from moto.iam import models as iam_models
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.rds.models import DBInstance
from moto.s3.models import S3Backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from . import calls as call_record
from . import eks_versions
from . import firewall as simulated_firewall
from . import route53 as simulated_route53
from . import strict
from .realistic import RealisticAws, _signature


class CacheSubnetGroupInUse(ServiceException):
    code = "CacheSubnetGroupInUse"

    def __init__(self, name):
        super().__init__(f"Cache subnet group {name} is currently in use by a cache cluster.")


def _delete_cache_subnet_group(self, cache_subnet_group_name):
    if cache_subnet_group_name not in self.cache_subnet_groups:
        raise CacheSubnetGroupNotFound(cache_subnet_group_name)
    for group in self.replication_groups.values():
        if getattr(group, "cache_subnet_group_name", None) == cache_subnet_group_name:
            raise CacheSubnetGroupInUse(cache_subnet_group_name)
    del self.cache_subnet_groups[cache_subnet_group_name]


def _delete_cache_subnet_group_response(self):
    self.elasticache_backend.delete_cache_subnet_group(self._get_param("CacheSubnetGroupName"))
    return responses.ActionResult({})


_original_describe = models.ElastiCacheBackend.describe_replication_groups


def _describe_replication_groups(self, replication_group_id=None):
    for group_id, group in list(self.replication_groups.items()):
        if group.status == "deleting" and getattr(group, "_seen_deleting", False):
            del self.replication_groups[group_id]
    groups = _original_describe(self, replication_group_id)
    for group in groups:
        if group.status == "deleting":
            group._seen_deleting = True
    return groups


MANAGED_POLICIES = ("AmazonEKSClusterPolicy", "AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                    "AmazonEC2ContainerRegistryReadOnly", "AmazonEBSCSIDriverPolicy", "AmazonSSMManagedInstanceCore")
_managed_policy_data = {}


def _init_aws_policies(self):
    if not _managed_policy_data:
        everything = json.loads(aws_managed_policies_data)
        _managed_policy_data.update({name: everything[name] for name in MANAGED_POLICIES})
    return [iam_models.AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
            for name, data in _managed_policy_data.items()]


def _addons(response) -> dict:
    backend = response.eks_backend
    if not hasattr(backend, "simulated_addons"):
        backend.simulated_addons = {}
    return backend.simulated_addons


def _addon_path(response) -> tuple[str, str | None]:
    parts = response.path.split("?")[0].strip("/").split("/")  # clusters/<name>/addons[/<addon>]
    return parts[1], parts[3] if len(parts) > 3 else None


def _addon_missing(cluster: str, addon: str | None):
    return eks_exceptions.ResourceNotFoundException(
        clusterName=cluster, nodegroupName=None, fargateProfileName=None, addonName=addon,
        message=f"No addon: {addon} found in cluster: {cluster}" if addon else f"No cluster found for name: {cluster}.")


def _known_cluster(response, cluster: str) -> None:
    if cluster not in response.eks_backend.clusters:
        raise _addon_missing(cluster, None)
    for key in [k for k in _addons(response) if k[0] not in response.eks_backend.clusters]:
        del _addons(response)[key]  # add-ons go with their cluster


def _create_addon(self):
    cluster, _ = _addon_path(self)
    _known_cluster(self, cluster)
    name = self._get_param("addonName")
    if (cluster, name) in _addons(self):
        raise eks_exceptions.ResourceInUseException(clusterName=cluster, nodegroupName=None, addonName=name,
                                                    message=f"Addon already exists: {name}")
    arn = f"arn:aws:eks:{self.region}:{self.current_account}:addon/{cluster}/{name}/simulated"
    _addons(self)[(cluster, name)] = {
        "addonName": name, "clusterName": cluster, "status": "ACTIVE", "addonArn": arn,
        "addonVersion": self._get_param("addonVersion") or eks_versions.default_addon_version(
            name, self.eks_backend.clusters[cluster].version),
        "serviceAccountRoleArn": self._get_param("serviceAccountRoleArn"), "tags": self._get_param("tags") or {}}
    return json.dumps({"addon": _addons(self)[(cluster, name)]})


def _describe_addon(self):
    eks_versions.settle(self.eks_backend)
    cluster, name = _addon_path(self)
    _known_cluster(self, cluster)
    if (cluster, name) not in _addons(self):
        raise _addon_missing(cluster, name)
    return json.dumps({"addon": _addons(self)[(cluster, name)]})


def _list_addons(self):
    cluster, _ = _addon_path(self)
    _known_cluster(self, cluster)
    return json.dumps({"addons": sorted(name for c, name in _addons(self) if c == cluster)})


def _delete_addon(self):
    cluster, name = _addon_path(self)
    _known_cluster(self, cluster)
    if (cluster, name) not in _addons(self):
        raise _addon_missing(cluster, name)
    return json.dumps({"addon": {**_addons(self).pop((cluster, name)), "status": "DELETING"}})


def _entries(response) -> dict:
    backend = response.eks_backend
    if not hasattr(backend, "simulated_access_entries"):
        backend.simulated_access_entries = {}
    entries = backend.simulated_access_entries
    for key in [k for k in entries if k[0] not in backend.clusters]:
        del entries[key]  # entries go with their cluster
    return entries


def _entry_path(response) -> tuple[str, str | None]:
    from urllib.parse import unquote
    parts = response.path.split("?")[0].strip("/").split("/", 3)  # clusters/<name>/access-entries[/<arn>...]
    principal = unquote(parts[3]).split("/access-policies")[0] if len(parts) > 3 else None
    if principal is None and response.body:
        principal = json.loads(response.body).get("principalArn")
    return parts[1], principal


def _entry(response) -> tuple[str, str, dict]:
    cluster, principal = _entry_path(response)
    _known_cluster(response, cluster)
    entry = _entries(response).get((cluster, principal))
    if entry is None:
        raise eks_exceptions.ResourceNotFoundException(
            clusterName=cluster, nodegroupName=None, fargateProfileName=None, addonName=None,
            message=f"The specified access entry resource is not found: {principal}")
    return cluster, principal, entry


def _create_access_entry(self):
    cluster, principal = _entry_path(self)
    _known_cluster(self, cluster)
    if (cluster, principal) in _entries(self):
        raise eks_exceptions.ResourceInUseException(clusterName=cluster, nodegroupName=None, addonName=None,
                                                    message="The specified access entry resource is already in use on this cluster.")
    if not _iam_principal_exists(self, principal):
        raise eks_exceptions.InvalidParameterException(
            clusterName=cluster, message="The specified principalArn is invalid: invalid principal")
    body = json.loads(self.body or "{}")
    _add_entry(self, cluster, principal, body.get("type", "STANDARD"), body.get("kubernetesGroups", []),
               body.get("tags", {}))
    return json.dumps({"accessEntry": _public_entry(_entries(self)[(cluster, principal)])})


def _add_entry(response, cluster: str, principal: str, kind: str, groups: list, tags: dict) -> dict:
    entry = _entries(response)[(cluster, principal)] = {
        "clusterName": cluster, "principalArn": principal, "type": kind,
        "accessEntryArn": f"arn:aws:eks:{response.region}:{response.current_account}:access-entry/{cluster}/simulated",
        "kubernetesGroups": groups, "tags": tags, "policies": {}}
    return entry


def _iam_principal_exists(response, principal: str) -> bool:
    """An IAM role or user whose ARN is exactly this one (path included)."""
    from moto.iam.models import iam_backends
    iam = iam_backends[response.current_account][response.partition]
    resource = principal.split(":", 5)[5] if principal.count(":") >= 5 and ":iam::" in principal else ""
    kind, _, name = resource.partition("/")
    lookup = {"role": iam.get_role, "user": iam.get_user}.get(kind)
    try:
        return lookup is not None and lookup(name.rsplit("/", 1)[-1]).arn == principal
    except ServiceException:  # NoSuchEntity
        return False


def _creator_principal(response) -> str:
    """The IAM identity EKS names in its creator's entry: the role of an assumed-role
    session (its ARN from IAM, path included), else the caller itself."""
    from moto.sts.models import sts_backends
    access_key = _signature(response.headers.get("Authorization", ""))[1]
    sts = sts_backends[response.current_account][response.partition]
    assumed = sts.get_assumed_role_from_access_key(access_key)
    return assumed.role_arn if assumed else sts.get_caller_identity(access_key, response.region)[1]


CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def _create_cluster_response(self):
    """A new cluster's creator gets an access entry with cluster admin, unless the request
    turned bootstrapClusterCreatorAdminPermissions off (EKS API CreateCluster, accessConfig)."""
    answer = _original_create_cluster_response(self)
    body = json.loads(self.body or "{}")
    if body.get("accessConfig", {}).get("bootstrapClusterCreatorAdminPermissions", True):
        entry = _add_entry(self, body["name"], _creator_principal(self), "STANDARD", [], {})
        entry["policies"][CLUSTER_ADMIN_POLICY] = {"policyArn": CLUSTER_ADMIN_POLICY,
                                                   "accessScope": {"type": "cluster", "namespaces": []}}
    return answer


_original_create_cluster_response = eks_responses.EKSResponse.create_cluster


def _public_entry(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "policies"}


def _list_access_entries(self):
    cluster, _ = _entry_path(self)
    _known_cluster(self, cluster)
    return json.dumps({"accessEntries": sorted(p for c, p in _entries(self) if c == cluster)})


def _describe_access_entry(self):
    return json.dumps({"accessEntry": _public_entry(_entry(self)[2])})


def _delete_access_entry(self):
    cluster, principal, _ = _entry(self)
    del _entries(self)[(cluster, principal)]
    return json.dumps({})


def _associate_access_policy(self):
    cluster, principal, entry = _entry(self)
    body = json.loads(self.body or "{}")
    entry["policies"][body["policyArn"]] = {"policyArn": body["policyArn"], "accessScope": body["accessScope"]}
    return json.dumps({"clusterName": cluster, "principalArn": principal,
                       "associatedAccessPolicy": entry["policies"][body["policyArn"]]})


def _list_associated_access_policies(self):
    cluster, principal, entry = _entry(self)
    return json.dumps({"clusterName": cluster, "principalArn": principal,
                       "associatedAccessPolicies": list(entry["policies"].values())})


_original_delete_bucket = S3Backend.delete_bucket


def _delete_bucket(self, bucket_name):
    deleted = _original_delete_bucket(self, bucket_name)
    if deleted is not None:
        self.tagger.delete_all_tags_for_resource(deleted.arn)
    return deleted


_original_db_instance_init = DBInstance.__init__


def _db_instance_init(self, *args, **kwargs):
    _original_db_instance_init(self, *args, **kwargs)
    self.dbi_resource_id = "db-" + uuid.uuid4().hex[:26].upper()


_original_create_cluster = EKSBackend.create_cluster
_original_delete_cluster = EKSBackend.delete_cluster


def _create_cluster(self, name, role_arn, resources_vpc_config, *args, **kwargs):
    from moto.ec2.models import ec2_backends
    cluster = _original_create_cluster(self, name, role_arn, resources_vpc_config, *args, **kwargs)
    ec2 = ec2_backends[self.account_id][self.region_name]
    subnets = resources_vpc_config.get("subnetIds") or []
    if subnets:
        vpc_id = ec2.get_subnet(subnets[0]).vpc_id
        group = ec2.create_security_group(f"eks-cluster-sg-{name}-{uuid.uuid4().hex[:8]}",
                                          "EKS created security group", vpc_id,
                                          tags={"aws:eks:cluster-name": name})
        cluster.resources_vpc_config = {**cluster.resources_vpc_config, "clusterSecurityGroupId": group.id,
                                        "vpcId": vpc_id}
    if any(setting.get("enabled") for setting in (cluster.logging or {}).get("clusterLogging", [])):
        _control_plane_log_group(self, name)
    return cluster


def _control_plane_log_group(eks, cluster: str) -> None:
    """EKS writes control-plane logs to /aws/eks/<cluster>/cluster, making the group itself
    (untagged) when logging is on, and leaves it behind when the cluster goes (EKS user guide,
    "Send control plane logs to CloudWatch Logs")."""
    from moto.logs.models import logs_backends
    logs = logs_backends[eks.account_id][eks.region_name]
    if f"/aws/eks/{cluster}/cluster" not in logs.groups:
        logs.create_log_group(f"/aws/eks/{cluster}/cluster", tags={})


def _delete_cluster(self, name):
    from moto.ec2.models import ec2_backends
    cluster = _original_delete_cluster(self, name)
    for store in ("simulated_addons", "simulated_access_entries"):  # they go with their cluster
        for key in [k for k in getattr(self, store, {}) if k[0] == name]:
            del getattr(self, store)[key]
    group_id = cluster.resources_vpc_config.get("clusterSecurityGroupId")
    if group_id:
        ec2_backends[self.account_id][self.region_name].delete_security_group(group_id=group_id)
    return cluster


def _eks_region_from_host(self, request, full_url):
    """moto looks for `.<region>.amazonaws.com` anywhere in the URL, path included; an access
    entry's path holds the principal ARN, and an IAM Identity Center role's path holds
    `sso.amazonaws.com/<region>/`, which moto then takes for the region. AWS goes by the host."""
    from urllib.parse import urlsplit
    parts = urlsplit(full_url)
    return _original_region_from_url(self, request, f"{parts.scheme}://{parts.netloc}/")


_original_region_from_url = eks_responses.EKSResponse.get_region_from_url


def install() -> None:
    eks_responses.EKSResponse.get_region_from_url = _eks_region_from_host
    simulated_firewall.install()
    simulated_route53.install()
    eks_urls.url_paths.update({
        "{0}/clusters/(?P<name>[^/]+)/addons$": eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)$": eks_urls.response.dispatch,
    })
    eks_urls.url_paths.update({
        "{0}/clusters/(?P<name>[^/]+)/access-entries$": eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<principalArn>.+)$": eks_urls.response.dispatch,
    })
    for action in ("create_access_entry", "list_access_entries", "describe_access_entry", "delete_access_entry",
                   "associate_access_policy", "list_associated_access_policies"):
        setattr(eks_responses.EKSResponse, action, globals()[f"_{action}"])
    S3Backend.delete_bucket = _delete_bucket
    DBInstance.__init__ = _db_instance_init
    EKSBackend.create_cluster = _create_cluster
    eks_responses.EKSResponse.create_cluster = _create_cluster_response
    EKSBackend.delete_cluster = _delete_cluster
    eks_responses.EKSResponse.create_addon = _create_addon
    eks_responses.EKSResponse.describe_addon = _describe_addon
    eks_responses.EKSResponse.list_addons = _list_addons
    eks_responses.EKSResponse.delete_addon = _delete_addon
    iam_models.IAMBackend._init_aws_policies = _init_aws_policies
    models.ElastiCacheBackend.delete_cache_subnet_group = _delete_cache_subnet_group
    responses.ElastiCacheResponse.delete_cache_subnet_group = _delete_cache_subnet_group_response
    models.ElastiCacheBackend.describe_replication_groups = _describe_replication_groups
    eks_versions.install()
    strict.install()


# Realistic times to create (seconds), as AWS takes them; simulate_latency scales them.
CREATE_SECONDS = {"eks_cluster": 600, "eks_nodegroup": 240, "rds": 480, "elasticache": 480, "nat_gateway": 90,
                  "load_balancer": 120, "network_firewall": 420}
_LATENCY_TARGETS = {  # model class, status attribute, in-progress value, ready value
    "eks_cluster": (Cluster, "status", "CREATING", "ACTIVE"),
    "eks_nodegroup": (Nodegroup, "status", "CREATING", "ACTIVE"),
    "rds": (DBInstance, "status", "creating", "available"),
    "elasticache": (models.ReplicationGroup, "status", "creating", "available"),
    "nat_gateway": (NatGateway, "state", "pending", "available"),
    "load_balancer": (FakeLoadBalancer, "state", "provisioning", "active"),
}


_latency = {"scale": 0.0, "installed": False}


def simulate_latency(scale: float) -> None:
    """Long-running resources report their in-progress status for scale x the realistic
    duration after they are created, then their ready status; other states pass through
    (AWS: a NAT gateway is 'pending', an EKS cluster 'CREATING', RDS and ElastiCache
    'creating', an ALB 'provisioning' for minutes; moto makes them ready at once).
    scale 0 turns it off again (for resources created from then on)."""
    simulated_firewall.READY_AFTER_SECONDS = CREATE_SECONDS["network_firewall"] * scale
    eks_versions.LATENCY_SCALE = scale
    _latency["scale"] = scale
    if _latency["installed"]:
        return
    _latency["installed"] = True
    for kind, (cls, attribute, busy, ready) in _LATENCY_TARGETS.items():
        stored, born = f"_simulated_{attribute}", "_simulated_born"

        def get(self, stored=stored, born=born, busy=busy, ready=ready, kind=kind):
            value = self.__dict__.get(stored)
            seconds = CREATE_SECONDS[kind] * self.__dict__.get("_simulated_scale", 0.0)
            if value == ready and time.monotonic() - self.__dict__.get(born, 0) < seconds:
                return busy
            return value

        def set_(self, value, stored=stored, born=born):
            self.__dict__.setdefault(born, time.monotonic())
            self.__dict__.setdefault("_simulated_scale", _latency["scale"])
            self.__dict__[stored] = value

        setattr(cls, attribute, property(get, set_))


def ssm_resolver(endpoint: str, region: str = "us-east-1"):
    """For the fake cluster's stand-in External Secrets operator: read a parameter from the simulated SSM."""
    import boto3
    ssm = boto3.session.Session().client("ssm", region_name=region, endpoint_url=endpoint,
                                         aws_access_key_id="simulated", aws_secret_access_key="simulated")

    def resolve(name: str) -> str | None:
        try:
            return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return None
    return resolve


def target_registrar(endpoint: str, region: str = "us-east-1"):
    """For the fake cluster's stand-in load balancer controller: make a simulated target
    group's targets exactly the given (pod IP, port) pairs (a group already deleted is left alone)."""
    import boto3
    from botocore.exceptions import ClientError
    elbv2 = boto3.session.Session().client("elbv2", region_name=region, endpoint_url=endpoint,
                                           aws_access_key_id="simulated", aws_secret_access_key="simulated")

    def register(target_group_arn: str, targets: list[tuple[str, int]]) -> None:
        wanted = {(ip, port) for ip, port in targets}
        try:
            current = {(t["Target"]["Id"], t["Target"]["Port"]) for t in elbv2.describe_target_health(
                TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]}
            if current - wanted:
                elbv2.deregister_targets(TargetGroupArn=target_group_arn,
                                         Targets=[{"Id": ip, "Port": port} for ip, port in current - wanted])
            if wanted - current:
                elbv2.register_targets(TargetGroupArn=target_group_arn,
                                       Targets=[{"Id": ip, "Port": port} for ip, port in sorted(wanted - current)])
        except ClientError:
            pass  # the target group is gone (or the account was reset): nothing to register in
    return register


def start_cluster(aws_endpoint: str, region: str = "us-east-1"):
    """The fake Kubernetes API server, its External Secrets and load balancer controller
    stand-ins talking to this simulated AWS."""
    from .fakekube import FakeKubeServer
    return FakeKubeServer(ssm_resolver(aws_endpoint, region), target_registrar(aws_endpoint, region)).start()


class _Server(ThreadedMotoServer):
    """moto's threaded server, its application behind the realistic-AWS layer (off until
    realistic.configure() turns it on)."""

    def _server_entry(self) -> None:
        app = RealisticAws(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def start_server() -> tuple[ThreadedMotoServer, str]:
    """A moto server on a free loopback port, with the gaps above filled, recording every
    request it receives (calls.LOG)."""
    install()
    server = _Server(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    call_record.install(server)
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
