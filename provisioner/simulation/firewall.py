"""A small, honest Network Firewall double for the simulator (moto 5.2.5 lacks most of it).

moto answers create/describe/list firewall only: it accepts a policy that does not exist,
reports READY with no SyncStates (so no endpoint to route through), and has no rule
groups, policies or deletes at all. This double, on moto's own response class:

- rule groups: create (a name is unique per type), describe, list, update with the
  update token, delete (refused while a policy uses the group, as AWS does);
- firewall policies: create (refused when a referenced rule group does not exist),
  describe, list, delete (refused while a firewall uses the policy);
- firewalls: create refuses an unknown policy and places one endpoint per subnet
  mapping in EC2 (a Gateway Load Balancer endpoint, so routes can target it, as the
  firewall's endpoints in AWS); the first describe answers PROVISIONING, later ones
  READY with the endpoints in SyncStates (once READY_AFTER_SECONDS have passed: the
  sandbox's latency scaling sets it); delete answers DELETING once, then the
  firewall and its endpoints are gone. Delete protection is honoured.

- EC2 ReplaceRoute: moto drops VpcEndpointId (and keeps a replaced route's old endpoint).
  Here the route targets the given endpoint, or no endpoint, as in AWS.

Not modelled: traffic inspection itself (nothing flows through the simulator).
"""

from __future__ import annotations

import json
import time
import uuid

from moto.core.exceptions import JsonRESTError
from moto.ec2.models import ec2_backends
from moto.ec2.responses.route_tables import RouteTables
from moto.networkfirewall import models as nfw_models
from moto.networkfirewall import responses as nfw_responses


READY_AFTER_SECONDS = 0.0


class _NotFound(JsonRESTError):
    def __init__(self, what: str):
        super().__init__("ResourceNotFoundException", f"{what} not found")


class _InvalidRequest(JsonRESTError):
    def __init__(self, message: str):
        super().__init__("InvalidRequestException", message)


class _InvalidOperation(JsonRESTError):
    def __init__(self, message: str):
        super().__init__("InvalidOperationException", message)


def _store(response) -> dict:
    backend = response.networkfirewall_backend
    if not hasattr(backend, "simulated"):
        backend.simulated = {"rule_groups": {}, "policies": {}, "firewall_seen": set(), "deleting": set()}
    return backend.simulated


def _arn(response, kind: str, name: str) -> str:
    return f"arn:aws:network-firewall:{response.region}:{response.current_account}:{kind}/{name}"


def _find(items: dict, name: str | None, arn: str | None, what: str) -> dict:
    for item in items.values():
        if item["arn"] == arn or item["name"] == name:
            return item
    raise _NotFound(f"{what} {name or arn}")


def _token() -> str:
    return str(uuid.uuid4())


# --- rule groups ----------------------------------------------------------------------


def _rule_group_response(group: dict, policies: dict) -> dict:
    users = sum(1 for p in policies.values()
                if group["arn"] in [r["ResourceArn"] for r in p["body"].get("StatefulRuleGroupReferences", [])])
    return {"RuleGroupArn": group["arn"], "RuleGroupName": group["name"], "RuleGroupId": group["id"],
            "Type": group["type"], "Capacity": group["capacity"], "RuleGroupStatus": "ACTIVE",
            "Description": group["description"], "Tags": group["tags"], "NumberOfAssociations": users}


def _create_rule_group(self):
    store, name, kind = _store(self), self._get_param("RuleGroupName"), self._get_param("Type")
    if any(g["name"] == name and g["type"] == kind for g in store["rule_groups"].values()):
        raise _InvalidRequest(f"A resource with the specified name already exists: {name}")
    arn = _arn(self, "stateful-rulegroup" if kind == "STATEFUL" else "stateless-rulegroup", name)
    group = {"arn": arn, "name": name, "id": str(uuid.uuid4()), "type": kind, "capacity": self._get_param("Capacity"),
             "description": self._get_param("Description") or "", "tags": self._get_param("Tags") or [],
             "body": self._get_param("RuleGroup") or {}, "token": _token()}
    store["rule_groups"][arn] = group
    return json.dumps({"UpdateToken": group["token"],
                       "RuleGroupResponse": _rule_group_response(group, store["policies"])})


def _describe_rule_group(self):
    store = _store(self)
    group = _find(store["rule_groups"], self._get_param("RuleGroupName"), self._get_param("RuleGroupArn"), "rule group")
    return json.dumps({"UpdateToken": group["token"], "RuleGroup": group["body"],
                       "RuleGroupResponse": _rule_group_response(group, store["policies"])})


def _list_rule_groups(self):
    return json.dumps({"RuleGroups": [{"Name": g["name"], "Arn": g["arn"]} for g in _store(self)["rule_groups"].values()]})


def _update_rule_group(self):
    store = _store(self)
    group = _find(store["rule_groups"], self._get_param("RuleGroupName"), self._get_param("RuleGroupArn"), "rule group")
    if self._get_param("UpdateToken") != group["token"]:
        raise _InvalidRequest("Update token is stale; describe the rule group and retry")
    group.update(body=self._get_param("RuleGroup"), token=_token())
    return json.dumps({"UpdateToken": group["token"],
                       "RuleGroupResponse": _rule_group_response(group, store["policies"])})


def _delete_rule_group(self):
    store = _store(self)
    group = _find(store["rule_groups"], self._get_param("RuleGroupName"), self._get_param("RuleGroupArn"), "rule group")
    if _rule_group_response(group, store["policies"])["NumberOfAssociations"]:
        raise _InvalidOperation("Unable to delete the object because it is still in use")
    del store["rule_groups"][group["arn"]]
    return json.dumps({"RuleGroupResponse": {**_rule_group_response(group, store["policies"]),
                                             "RuleGroupStatus": "DELETING"}})


# --- policies -------------------------------------------------------------------------


def _policy_response(self, policy: dict) -> dict:
    users = sum(1 for f in self.networkfirewall_backend.firewalls.values() if f.firewall_policy_arn == policy["arn"])
    return {"FirewallPolicyName": policy["name"], "FirewallPolicyArn": policy["arn"], "FirewallPolicyId": policy["id"],
            "FirewallPolicyStatus": "ACTIVE", "Description": policy["description"], "Tags": policy["tags"],
            "NumberOfAssociations": users}


def _create_firewall_policy(self):
    store, name = _store(self), self._get_param("FirewallPolicyName")
    if any(p["name"] == name for p in store["policies"].values()):
        raise _InvalidRequest(f"A resource with the specified name already exists: {name}")
    body = self._get_param("FirewallPolicy")
    for reference in body.get("StatefulRuleGroupReferences", []):
        if reference["ResourceArn"] not in store["rule_groups"]:
            raise _InvalidRequest(f"Rule group {reference['ResourceArn']} does not exist")
    arn = _arn(self, "firewall-policy", name)
    policy = {"arn": arn, "name": name, "id": str(uuid.uuid4()), "body": body, "token": _token(),
              "description": self._get_param("Description") or "", "tags": self._get_param("Tags") or []}
    store["policies"][arn] = policy
    return json.dumps({"UpdateToken": policy["token"], "FirewallPolicyResponse": _policy_response(self, policy)})


def _describe_firewall_policy(self):
    policy = _find(_store(self)["policies"], self._get_param("FirewallPolicyName"),
                   self._get_param("FirewallPolicyArn"), "firewall policy")
    return json.dumps({"UpdateToken": policy["token"], "FirewallPolicy": policy["body"],
                       "FirewallPolicyResponse": _policy_response(self, policy)})


def _list_firewall_policies(self):
    return json.dumps({"FirewallPolicies": [{"Name": p["name"], "Arn": p["arn"]}
                                            for p in _store(self)["policies"].values()]})


def _delete_firewall_policy(self):
    store = _store(self)
    policy = _find(store["policies"], self._get_param("FirewallPolicyName"), self._get_param("FirewallPolicyArn"),
                   "firewall policy")
    if _policy_response(self, policy)["NumberOfAssociations"]:
        raise _InvalidOperation("Unable to delete the object because it is still in use")
    del store["policies"][policy["arn"]]
    return json.dumps({"FirewallPolicyResponse": {**_policy_response(self, policy), "FirewallPolicyStatus": "DELETING"}})


# --- firewalls ------------------------------------------------------------------------

_original_create_firewall = nfw_responses.NetworkFirewallResponse.create_firewall
_original_describe_firewall = nfw_responses.NetworkFirewallResponse.describe_firewall


def _ec2(self):
    return ec2_backends[self.current_account][self.region]


def _create_firewall(self):
    if self._get_param("FirewallPolicyArn") not in _store(self)["policies"]:
        raise _InvalidRequest(f"Firewall policy {self._get_param('FirewallPolicyArn')} does not exist")
    name = self._get_param("FirewallName")
    if any(f.firewall_name == name for f in self.networkfirewall_backend.firewalls.values()):
        raise _InvalidRequest(f"A resource with the specified name already exists: {name}")
    _original_create_firewall(self)
    firewall = self.networkfirewall_backend._get_firewall(None, name)
    sync_states = {}
    for mapping in firewall.subnet_mappings:
        subnet = _ec2(self).get_subnet(mapping["SubnetId"])
        endpoint = _ec2(self).create_vpc_endpoint(
            firewall.vpc_id, f"com.amazonaws.vpce.{self.region}.vpce-svc-networkfirewall", "GatewayLoadBalancer",
            None, [], [subnet.id])
        sync_states[subnet.availability_zone] = {"Attachment": {"SubnetId": subnet.id, "EndpointId": endpoint.id,
                                                                "Status": "READY"}}
    firewall.firewall_status = {"Status": "PROVISIONING", "ConfigurationSyncStateSummary": "PENDING"}
    firewall.simulated_sync_states = sync_states
    firewall.simulated_born = time.monotonic()
    return json.dumps({"Firewall": nfw_responses._firewall(firewall), "FirewallStatus": firewall.firewall_status})


def _describe_firewall(self):
    store = _store(self)
    firewall = self.networkfirewall_backend._get_firewall(self._get_param("FirewallArn"), self._get_param("FirewallName"))
    if firewall.arn in store["deleting"]:
        _remove_firewall(self, firewall)
        raise _NotFound(f"firewall {firewall.firewall_name}")
    grown = time.monotonic() - firewall.simulated_born >= READY_AFTER_SECONDS
    if firewall.arn in store["firewall_seen"] and firewall.firewall_status["Status"] == "PROVISIONING" and grown:
        firewall.firewall_status = {"Status": "READY", "ConfigurationSyncStateSummary": "IN_SYNC",
                                    "SyncStates": firewall.simulated_sync_states}
    store["firewall_seen"].add(firewall.arn)
    return _original_describe_firewall(self)


def _remove_firewall(self, firewall) -> None:
    endpoint_ids = [s["Attachment"]["EndpointId"] for s in firewall.simulated_sync_states.values()]
    _ec2(self).delete_vpc_endpoints(endpoint_ids)
    del self.networkfirewall_backend.firewalls[firewall.arn]
    _store(self)["deleting"].discard(firewall.arn)


def _delete_firewall(self):
    firewall = self.networkfirewall_backend._get_firewall(self._get_param("FirewallArn"), self._get_param("FirewallName"))
    if firewall.delete_protection:
        raise _InvalidOperation("Firewall has delete protection enabled; turn it off first")
    _store(self)["deleting"].add(firewall.arn)
    firewall.firewall_status = {**firewall.firewall_status, "Status": "DELETING"}
    return json.dumps({"Firewall": nfw_responses._firewall(firewall), "FirewallStatus": firewall.firewall_status})


def _get_firewall(self, firewall_arn, firewall_name):
    """moto raises an Elasticsearch error (HTTP 409) for a missing firewall; AWS answers ResourceNotFoundException."""
    for firewall in self.firewalls.values():
        if firewall.arn == firewall_arn or firewall.firewall_name == firewall_name:
            return firewall
    raise _NotFound(f"firewall {firewall_name or firewall_arn}")


_original_replace_route = RouteTables.replace_route


def _replace_route(self):
    result = _original_replace_route(self)
    table = self.ec2_backend.get_route_table(self._get_param("RouteTableId"))
    for route in table._routes.values():
        if route.destination_cidr_block == self._get_param("DestinationCidrBlock"):
            route.vpc_endpoint_id = self._get_param("VpcEndpointId")
    return result


def install() -> None:
    RouteTables.replace_route = _replace_route
    nfw_models.NetworkFirewallBackend._get_firewall = _get_firewall
    for action in ("create_rule_group", "describe_rule_group", "list_rule_groups", "update_rule_group",
                   "delete_rule_group", "create_firewall_policy", "describe_firewall_policy", "list_firewall_policies",
                   "delete_firewall_policy",
                   "create_firewall", "describe_firewall", "delete_firewall"):
        setattr(nfw_responses.NetworkFirewallResponse, action, globals()[f"_{action}"])
