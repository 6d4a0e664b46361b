"""The one tag builder: Name, the ownership tags, and the user's tags.

The ownership tags are how resume adopts what a crashed run made and how destroy finds
everything when the state file is gone.
"""

from __future__ import annotations

DEPLOYMENT_TAG = "provisioner:deployment"
STEP_TAG = "provisioner:step"


class Tagger:
    def __init__(self, deployment: str, step: str, user_tags: dict):
        self.deployment = deployment
        self.step = step
        self.user_tags = dict(user_tags)

    def name(self, resource: str) -> str:
        return f"{self.deployment}-{resource}"

    def tags(self, resource: str, extra: dict | None = None) -> dict:
        return {**self.user_tags, **(extra or {}), "Name": self.name(resource),
                DEPLOYMENT_TAG: self.deployment, STEP_TAG: self.step}

    def as_list(self, resource: str, extra: dict | None = None) -> list[dict]:
        return [{"Key": key, "Value": value} for key, value in self.tags(resource, extra).items()]

    def ec2_spec(self, resource_type: str, resource: str, extra: dict | None = None) -> list[dict]:
        return [{"ResourceType": resource_type, "Tags": self.as_list(resource, extra)}]

    def ec2_filters(self, resource: str | None = None) -> list[dict]:
        """EC2 describe filters that match what this deployment made (one resource, or all)."""
        filters = [{"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [self.deployment]}]
        if resource is not None:
            filters.append({"Name": "tag:Name", "Values": [self.name(resource)]})
        return filters


def tag_dict(tag_list: list[dict] | None) -> dict:
    return {tag["Key"]: tag["Value"] for tag in tag_list or []}

