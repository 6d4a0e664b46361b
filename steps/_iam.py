"""IAM roles shared by the steps: service roles and IRSA roles, each with exactly the
policies it is given (managed ones attached, one inline policy kept equal to ours)."""

from __future__ import annotations

import json

from provisioner.aws import if_exists
from provisioner.reaping import delete_with_retry
from provisioner.tags import DEPLOYMENT_TAG, tag_dict

INLINE_POLICY = "provisioner"


def trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def irsa_trust(eks: dict, namespace: str, service_accounts: list[str]) -> str:
    """Trust for IRSA: only these service accounts of this cluster's OIDC issuer, not a whole namespace."""
    issuer = eks["oidc_issuer"].removeprefix("https://")
    subjects = [f"system:serviceaccount:{namespace}:{account}" for account in service_accounts]
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": eks["oidc_provider_arn"]},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{issuer}:aud": "sts.amazonaws.com", f"{issuer}:sub": subjects}}}]})


def ensure_role(ctx, resource: str, trust_policy: str, managed_policies: list[str], description: str,
                inline_policy: dict | None = None) -> str:
    """A role named <deployment>-<resource> with exactly these policies."""
    iam, name = ctx.client("iam"), ctx.name(resource)
    found = if_exists(iam.get_role, RoleName=name)
    if found is None:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy, Description=description,
                              Tags=ctx.tags.as_list(resource))["Role"]["Arn"]
    else:
        arn = found["Role"]["Arn"]
        if _policy_doc(found["Role"]["AssumeRolePolicyDocument"]) != json.loads(trust_policy):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust_policy)
    ctx.record(f"role/{resource}", arn)
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
    for policy in managed_policies:
        if policy not in attached:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    if inline_policy is not None:
        current = if_exists(iam.get_role_policy, RoleName=name, PolicyName=INLINE_POLICY)
        if current is None or _policy_doc(current["PolicyDocument"]) != inline_policy:
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY, PolicyDocument=json.dumps(inline_policy))
    return arn


def delete_role(ctx, resource: str) -> None:
    iam, name = ctx.client("iam"), ctx.name(resource)
    role = if_exists(iam.get_role, RoleName=name)
    if role is None or tag_dict(iam.list_role_tags(RoleName=name)["Tags"]).get(DEPLOYMENT_TAG) != ctx.config.deployment:
        return  # absent, or not ours
    for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
    delete_with_retry(lambda: iam.delete_role(RoleName=name), f"role {name}", lambda: "", ctx.progress)
    ctx.record(f"role/{resource}", None)


def _policy_doc(document) -> dict:
    return json.loads(document) if isinstance(document, str) else document
