"""Small, honest test doubles for what moto 5.2.5 lacks, patched into the in-process
moto server (it runs in this test process, so the product still talks real HTTP).

- ElastiCache DeleteCacheSubnetGroup is not implemented in moto (HTML 500). Here it
  deletes the group, and refuses while a live replication group still uses it, as AWS does.
- ElastiCache replication groups stay 'deleting' forever in moto. Here a deleted group
  answers 'deleting' to one describe and is gone after that, as in AWS (minus the minutes).
- IAM: moto knows AWS-managed policies only when it loads all ~1,600 of them, which
  costs over a second on every reset. Here only the ones the product attaches are
  loaded; attaching any other still fails, as an unknown policy does in AWS.
"""

import json

from moto.elasticache import models, responses
from moto.iam import models as iam_models
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.elasticache.exceptions import CacheSubnetGroupNotFound
from moto.elasticache.exceptions import ElastiCacheException


class CacheSubnetGroupInUse(ElastiCacheException):
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


def install() -> None:
    iam_models.IAMBackend._init_aws_policies = _init_aws_policies
    models.ElastiCacheBackend.delete_cache_subnet_group = _delete_cache_subnet_group
    responses.ElastiCacheResponse.delete_cache_subnet_group = _delete_cache_subnet_group_response
    models.ElastiCacheBackend.describe_replication_groups = _describe_replication_groups
