"""WAF (create_waf): a REGIONAL web ACL with three AWS managed rule groups, associated
with our ALB, the one that really serves. Disassociated before the ACL is deleted."""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.retry import STILL_IN_USE, WAF_ENTITY_NOT_SEEN_YET, Answer, until_accepted

from .alb import find_load_balancer, load_balancer_name
from .base import Finding, Step, register

MANAGED_RULE_GROUPS = (("AWSManagedRulesCommonRuleSet", 10, "common-rules"),
                       ("AWSManagedRulesAmazonIpReputationList", 20, "ip-reputation"),
                       ("AWSManagedRulesKnownBadInputsRuleSet", 30, "known-bad-inputs"))


def acl_name(config) -> str:
    return f"{config.deployment}-waf"


def _visibility(metric: str) -> dict:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric}


def rules(config) -> list[dict]:
    return [{"Name": group, "Priority": priority, "OverrideAction": {"None": {}},
             "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": group}},
             "VisibilityConfig": _visibility(f"{config.deployment}-{metric}")}
            for group, priority, metric in MANAGED_RULE_GROUPS]


def find_acl(wafv2, name: str) -> dict | None:
    for acl in wafv2.list_web_acls(Scope="REGIONAL")["WebACLs"]:
        if acl["Name"] == name:
            return acl
    return None


@register
class Waf(Step):
    name = "waf"
    requires = ("alb",)

    @staticmethod
    def enabled(config) -> bool:
        return config["create_waf"]

    def create(self, ctx) -> dict:
        wafv2, cfg = ctx.client("wafv2"), ctx.config
        name = acl_name(cfg)
        found = find_acl(wafv2, name)
        if found is None:  # managed rule groups can be briefly unavailable (TF wafv2/web_acl.go retries 5 min)
            found = until_accepted(lambda: wafv2.create_web_acl(
                Name=name, Scope="REGIONAL", DefaultAction={"Allow": {}}, Rules=rules(cfg),
                VisibilityConfig=_visibility(name), Tags=ctx.tags.as_list("waf"),
                Description=f"LangSmith {cfg.deployment}"), not_yet=WAF_ENTITY_NOT_SEEN_YET[:1],
                what=f"create web ACL {name}", propagation="waf", progress=ctx.progress)["Summary"]
        ctx.record("web_acl", found["ARN"])
        current = wafv2.get_web_acl(Name=name, Scope="REGIONAL", Id=found["Id"])
        if [r["Name"] for r in current["WebACL"]["Rules"]] != [r["Name"] for r in rules(cfg)]:
            wafv2.update_web_acl(Name=name, Scope="REGIONAL", Id=found["Id"], DefaultAction={"Allow": {}},
                                 Rules=rules(cfg), VisibilityConfig=_visibility(name), LockToken=current["LockToken"])
        lb_arn = ctx.upstream("alb")["load_balancer_arn"]
        # WAF may not see a new ALB yet: WAFNonexistentItemException reads as "not associated",
        # and the association is retried while WAF cannot see it (TF web_acl_association.go).
        associated = if_exists(wafv2.get_web_acl_for_resource, ResourceArn=lb_arn)
        if (associated or {}).get("WebACL", {}).get("ARN") != found["ARN"]:
            until_accepted(lambda: wafv2.associate_web_acl(WebACLArn=found["ARN"], ResourceArn=lb_arn),
                           not_yet=WAF_ENTITY_NOT_SEEN_YET, what=f"associate web ACL {name}", propagation="waf",
                           progress=ctx.progress)
        return {"web_acl_arn": found["ARN"], "associated_with": lb_arn,
                "rule_groups": [group for group, _, _ in MANAGED_RULE_GROUPS]}

    def verify(self, ctx) -> list[Finding]:
        wafv2, cfg = ctx.client("wafv2"), ctx.config
        found = find_acl(wafv2, acl_name(cfg))
        if found is None:
            return [Finding(f"web ACL {acl_name(cfg)}", "missing", missing=True)]
        lb = find_load_balancer(ctx.client("elbv2"), load_balancer_name(cfg))
        associated = if_exists(wafv2.get_web_acl_for_resource, ResourceArn=lb["LoadBalancerArn"]) if lb else None
        if (associated or {}).get("WebACL", {}).get("ARN") != found["ARN"]:
            return [Finding(f"web ACL {acl_name(cfg)}", "not associated with the ALB")]
        ctx.fact(f"web ACL {acl_name(cfg)} on {lb['LoadBalancerName']} with {len(MANAGED_RULE_GROUPS)} AWS managed rule groups")
        return []

    def destroy(self, ctx) -> None:
        wafv2, cfg = ctx.client("wafv2"), ctx.config
        lb = find_load_balancer(ctx.client("elbv2"), load_balancer_name(cfg))
        if lb is not None:
            if_exists(wafv2.disassociate_web_acl, ResourceArn=lb["LoadBalancerArn"])
        found = find_acl(wafv2, acl_name(cfg))
        if found is not None:
            def delete():  # a fresh LockToken each try: a stale one is WAFOptimisticLockException
                token = wafv2.get_web_acl(Name=found["Name"], Scope="REGIONAL", Id=found["Id"])["LockToken"]
                wafv2.delete_web_acl(Name=found["Name"], Scope="REGIONAL", Id=found["Id"], LockToken=token)
            # Right after disassociation WAF still sees the ACL in use (TF wafv2/web_acl.go retries 5 min).
            until_accepted(delete, not_yet=STILL_IN_USE + (Answer("WAFOptimisticLockException"),)
                           + WAF_ENTITY_NOT_SEEN_YET[:1], what=f"delete web ACL {found['Name']}", propagation="waf",
                           progress=ctx.progress, absent_is_done=True)
        ctx.record("web_acl", None)


