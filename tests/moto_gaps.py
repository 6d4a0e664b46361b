"""Small, honest test doubles for what moto 5.2.5 lacks, patched into the in-process
moto server (it runs in this test process, so the product still talks real HTTP).

- ElastiCache DeleteCacheSubnetGroup is not implemented in moto (HTML 500). Here it
  deletes the group, and refuses while a live replication group still uses it, as AWS does.
- ElastiCache replication groups stay 'deleting' forever in moto. Here a deleted group
  answers 'deleting' to one describe and is gone after that, as in AWS (minus the minutes).
"""

from moto.elasticache import models, responses
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


def install() -> None:
    models.ElastiCacheBackend.delete_cache_subnet_group = _delete_cache_subnet_group
    responses.ElastiCacheResponse.delete_cache_subnet_group = _delete_cache_subnet_group_response
    models.ElastiCacheBackend.describe_replication_groups = _describe_replication_groups
