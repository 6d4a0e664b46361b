"""DNS and the certificate when langsmith_domain is set without a brought certificate:
a Route 53 hosted zone, an ACM certificate for the apex only (a wildcard SAN fails
where CAA allows only `issue`), and its validation records.

Staged pattern: with tls_certificate_source none the zone and certificate are made
and nothing waits (delegate the NS records at the registrar meanwhile); with acm the
step waits for the certificate to be issued before the HTTPS listener uses it. The
alias record to the ALB is made by the alb step.
"""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry
from provisioner.tags import DEPLOYMENT_TAG, tag_dict
from provisioner.waiting import wait_until

from .base import Finding, Step, register

VALIDATION_SECONDS = 1800


def find_zone(route53, domain: str) -> str | None:
    zones = route53.list_hosted_zones_by_name(DNSName=domain, MaxItems="1")["HostedZones"]
    if zones and zones[0]["Name"].rstrip(".") == domain and not zones[0]["Config"].get("PrivateZone"):
        return zones[0]["Id"].split("/")[-1]
    return None


LIVE_CERTIFICATE = ("PENDING_VALIDATION", "ISSUED")
# Every status ListCertificates filters on (botocore acm CertificateStatus): destroy also
# removes certificates that failed or timed out, which a live-only listing never shows.
ANY_CERTIFICATE = ("PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED")


def our_certificates(ctx, domain: str, statuses=LIVE_CERTIFICATE) -> list[str]:
    """Our certificates for the domain (tagged with the deployment) in the given states."""
    acm = ctx.client("acm")
    found = []
    for page in acm.get_paginator("list_certificates").paginate(CertificateStatuses=list(statuses)):
        for summary in page["CertificateSummaryList"]:
            if summary["DomainName"] != domain:
                continue
            tags = tag_dict(acm.list_tags_for_certificate(CertificateArn=summary["CertificateArn"])["Tags"])
            if tags.get(DEPLOYMENT_TAG) == ctx.config.deployment:
                found.append(summary["CertificateArn"])
    return found


def find_certificate(ctx, domain: str) -> str | None:
    """Our live certificate for the domain, if any."""
    return next(iter(our_certificates(ctx, domain)), None)


def zone_tags(route53, zone_id: str) -> dict:
    return tag_dict(route53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)[
        "ResourceTagSet"]["Tags"])


@register
class Dns(Step):
    name = "dns"

    @staticmethod
    def enabled(config) -> bool:
        return bool(config["langsmith_domain"]) and not config["acm_certificate_arn"]

    def create(self, ctx) -> dict:
        route53, acm, cfg = ctx.client("route53"), ctx.client("acm"), ctx.config
        domain = cfg["langsmith_domain"]
        zone_id = ctx.ensure("hosted_zone", lambda: find_zone(route53, domain),
                             lambda: route53.create_hosted_zone(
                                 Name=domain, CallerReference=ctx.client_token("hosted_zone"),
                                 HostedZoneConfig={"Comment": f"LangSmith {cfg.deployment}"})
                             ["HostedZone"]["Id"].split("/")[-1])
        self._tag_zone(ctx, route53, zone_id)
        certificate = ctx.ensure("certificate", lambda: find_certificate(ctx, domain),
                                 lambda: acm.request_certificate(
                                     DomainName=domain, ValidationMethod="DNS",
                                     IdempotencyToken=ctx.client_token("certificate"),
                                     Tags=ctx.tags.as_list("certificate"))["CertificateArn"])
        records = self._validation_records(ctx, certificate)
        existing = {(r["Name"], r["Type"]): r for r in route53.list_resource_record_sets(
            HostedZoneId=zone_id)["ResourceRecordSets"]}
        changes = [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": r["Name"], "Type": r["Type"], "TTL": 60, "ResourceRecords": [{"Value": r["Value"]}]}}
                   for r in records if [x["Value"] for x in existing.get((r["Name"], r["Type"]), {}).get(
                       "ResourceRecords", [])] != [r["Value"]]]
        if changes:
            route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
        if cfg["tls_certificate_source"] == "acm":
            self._wait_issued(ctx, certificate)
        name_servers = route53.get_hosted_zone(Id=zone_id)["DelegationSet"]["NameServers"]
        return {"zone_id": zone_id, "name_servers": name_servers, "certificate_arn": certificate, "domain": domain}

    @staticmethod
    def _tag_zone(ctx, route53, zone_id: str) -> None:
        """CreateHostedZone takes no tags: they are added after (and again on resume, when a
        crash came in between), so destroy and the leftovers check recognise the zone. A zone
        of that name the user made before is used but not tagged (destroy leaves it)."""
        wanted = ctx.tags.tags("zone")
        present = zone_tags(route53, zone_id)
        if Dns._ours(route53, zone_id, ctx) and any(present.get(k) != v for k, v in wanted.items()):
            route53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id,
                                             AddTags=ctx.tags.as_list("zone"))

    @staticmethod
    def _validation_records(ctx, certificate: str) -> list[dict]:
        """ACM fills the validation record in a few seconds after the request."""
        acm = ctx.client("acm")

        def ready():
            options = acm.describe_certificate(CertificateArn=certificate)["Certificate"].get(
                "DomainValidationOptions", [])
            records = [o["ResourceRecord"] for o in options if "ResourceRecord" in o]
            return records if records and len(records) == len(options) else None
        return wait_until(ready, what="certificate validation records", expected_seconds=5, timeout_seconds=300,
                          progress=ctx.progress)

    @staticmethod
    def _wait_issued(ctx, certificate: str) -> None:
        acm = ctx.client("acm")

        def issued():
            status = acm.describe_certificate(CertificateArn=certificate)["Certificate"]["Status"]
            if status in ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED"):
                raise StepError(f"certificate {certificate} is {status}; check the CAA records of the domain")
            return status == "ISSUED"
        name_servers = ", ".join(ctx.client("route53").get_hosted_zone(
            Id=ctx.state.step("dns")["physical_ids"]["hosted_zone"])["DelegationSet"]["NameServers"])
        ctx.progress(f"waiting for the certificate to validate; the domain must be delegated to {name_servers}")
        wait_until(issued, what="certificate validation (NS records delegated?)", expected_seconds=120,
                   timeout_seconds=VALIDATION_SECONDS, progress=ctx.progress)

    def verify(self, ctx) -> list[Finding]:
        domain = ctx.config["langsmith_domain"]
        findings = []
        if find_zone(ctx.client("route53"), domain) is None:
            findings.append(Finding(f"hosted zone {domain}", "missing", missing=True))
        certificate = find_certificate(ctx, domain)
        if certificate is None:
            findings.append(Finding(f"certificate {domain}", "missing", missing=True))
        elif ctx.config["tls_certificate_source"] == "acm":
            status = ctx.client("acm").describe_certificate(CertificateArn=certificate)["Certificate"]["Status"]
            ctx.fact(f"certificate for {domain} {status}")
            if status != "ISSUED":
                findings.append(Finding(f"certificate {domain}", f"{status}, not ISSUED"))
        return findings

    def destroy(self, ctx) -> None:
        """After the alb step removed the listener that used the certificate."""
        route53, acm, domain = ctx.client("route53"), ctx.client("acm"), ctx.config["langsmith_domain"]
        if not domain:
            return
        for certificate in our_certificates(ctx, domain, ANY_CERTIFICATE):
            delete_with_retry(lambda c=certificate: acm.delete_certificate(CertificateArn=c), f"certificate {domain}",
                              lambda: "", ctx.progress)
        ctx.record("certificate", None)
        zone_id = find_zone(route53, domain)
        if zone_id is not None and self._ours(route53, zone_id, ctx):
            records = [r for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
                       if r["Type"] not in ("NS", "SOA")]
            if records:
                route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                    "Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in records]})
            route53.delete_hosted_zone(Id=zone_id)
        ctx.record("hosted_zone", None)

    @staticmethod
    def _ours(route53, zone_id: str, ctx) -> bool:
        """Tagged as ours, or (a crash before the tags went on) carrying our comment."""
        zone = if_exists(route53.get_hosted_zone, Id=zone_id)
        if not zone:
            return False
        return (zone_tags(route53, zone_id).get(DEPLOYMENT_TAG) == ctx.config.deployment
                or zone["HostedZone"].get("Config", {}).get("Comment") == f"LangSmith {ctx.config.deployment}")
