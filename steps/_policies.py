"""Least-privilege policies for the IRSA roles, each scoped to this deployment."""

from __future__ import annotations


def _statement(actions, resources="*", condition=None) -> dict:
    statement = {"Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _document(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def langsmith_s3(bucket: str) -> dict:
    """Objects in the traces bucket, and listing it; nothing else in S3."""
    return _document(_statement(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], f"arn:aws:s3:::{bucket}/*"),
                     _statement(["s3:ListBucket"], f"arn:aws:s3:::{bucket}"))


def external_secrets(region: str, account: str, ssm_prefix: str) -> dict:
    """Read the deployment's own SSM parameters (and decrypt them with the AWS-managed key)."""
    path = ssm_prefix.strip("/")
    return _document(
        _statement(["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                   [f"arn:aws:ssm:{region}:{account}:parameter/{path}", f"arn:aws:ssm:{region}:{account}:parameter/{path}/*"]),
        _statement(["ssm:DescribeParameters"]))


def cluster_autoscaler(cluster: str) -> dict:
    """Describe everywhere; scale and terminate only in this cluster's node groups."""
    owned = {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster}": "owned"}}
    return _document(
        _statement(["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup"]),
        _statement(["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                   condition=owned))


def cert_manager_route53() -> dict:
    """DNS-01: change records and follow the change; find zones by name."""
    return _document(_statement(["route53:GetChange"], "arn:aws:route53:::change/*"),
                     _statement(["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
                                "arn:aws:route53:::hostedzone/*"),
                     _statement(["route53:ListHostedZonesByName"]))


def load_balancer_controller() -> dict:
    """The AWS Load Balancer Controller's published policy (v2): mutations only on load
    balancers, target groups and security groups carrying its cluster tag."""
    cluster_tag = "elbv2.k8s.aws/cluster"
    tagged_resource = {"Null": {f"aws:ResourceTag/{cluster_tag}": "false"}}
    tagged_request = {"Null": {f"aws:RequestTag/{cluster_tag}": "false"}}
    elb = "arn:aws:elasticloadbalancing:*:*:"
    return _document(
        _statement(["iam:CreateServiceLinkedRole"],
                   condition={"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}),
        _statement(["ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections",
                    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:GetCoipPoolUsage",
                    "ec2:DescribeCoipPools", "ec2:GetSecurityGroupsForVpc", "ec2:DescribeIpamPools",
                    "ec2:DescribeRouteTables", "elasticloadbalancing:DescribeLoadBalancers",
                    "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DescribeListeners",
                    "elasticloadbalancing:DescribeListenerCertificates", "elasticloadbalancing:DescribeSSLPolicies",
                    "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:DescribeTargetHealth",
                    "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTrustStores",
                    "elasticloadbalancing:DescribeListenerAttributes",
                    "elasticloadbalancing:DescribeCapacityReservation"]),
        _statement(["cognito-idp:DescribeUserPoolClient", "acm:ListCertificates", "acm:DescribeCertificate",
                    "iam:ListServerCertificates", "iam:GetServerCertificate", "waf-regional:GetWebACL",
                    "waf-regional:GetWebACLForResource", "waf-regional:AssociateWebACL",
                    "waf-regional:DisassociateWebACL", "wafv2:GetWebACL", "wafv2:GetWebACLForResource",
                    "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL", "shield:GetSubscriptionState",
                    "shield:DescribeProtection", "shield:CreateProtection", "shield:DeleteProtection"]),
        _statement(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]),
        _statement(["ec2:CreateSecurityGroup"]),
        _statement(["ec2:CreateTags"], "arn:aws:ec2:*:*:security-group/*",
                   {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}, **tagged_request}),
        _statement(["ec2:CreateTags", "ec2:DeleteTags"], "arn:aws:ec2:*:*:security-group/*",
                   {"Null": {f"aws:RequestTag/{cluster_tag}": "true", f"aws:ResourceTag/{cluster_tag}": "false"}}),
        _statement(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"],
                   condition=tagged_resource),
        _statement(["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
                   condition=tagged_request),
        _statement(["elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteRule"]),
        _statement(["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                   [f"{elb}targetgroup/*/*", f"{elb}loadbalancer/net/*/*", f"{elb}loadbalancer/app/*/*"],
                   {"Null": {f"aws:RequestTag/{cluster_tag}": "true", f"aws:ResourceTag/{cluster_tag}": "false"}}),
        _statement(["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                   [f"{elb}listener/net/*/*/*", f"{elb}listener/app/*/*/*", f"{elb}listener-rule/net/*/*/*",
                    f"{elb}listener-rule/app/*/*/*"]),
        _statement(["elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
                    "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
                    "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:ModifyListenerAttributes",
                    "elasticloadbalancing:ModifyCapacityReservation"], condition=tagged_resource),
        _statement(["elasticloadbalancing:AddTags"], [f"{elb}targetgroup/*/*", f"{elb}loadbalancer/net/*/*",
                                                      f"{elb}loadbalancer/app/*/*"],
                   {"StringEquals": {"elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]},
                    **tagged_request}),
        _statement(["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
                   f"{elb}targetgroup/*/*"),
        _statement(["elasticloadbalancing:SetWebAcl", "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:RemoveListenerCertificates",
                    "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities"]),
    )
