"""The crash sweep over the optional steps (DNS, access logs, WAF, CloudTrail, bastion,
Network Firewall): its own file, so the two sweeps run on different workers."""

from __future__ import annotations

from tests.census import census
from tests.conftest import run_cli, write_config
from tests.sweep import DEPLOYMENT, sweep

ADD_ONS = {"dns", "alb_access_logs", "waf", "cloudtrail", "bastion", "firewall"}


def test_add_on_steps_resume_after_a_crash_at_every_change_and_destroy_clean(aws, tmp_path, monkeypatch,
                                                                              kube_server):
    """The same sweep over the optional steps (only theirs: test_crash_resume sweeps the rest),
    then a destroy of the whole add-on stack from its state."""
    config = write_config(tmp_path / "config.yaml", tls_certificate_source="acm", langsmith_domain="ls.example.com",
                          create_waf=True, create_cloudtrail=True, alb_access_logs_enabled=True,
                          create_bastion=True, create_firewall=True)
    covered = sweep(config, aws, kube_server, monkeypatch, tmp_path / "state" / f"{DEPLOYMENT}.json", only=ADD_ONS)
    assert set(covered) == ADD_ONS and all(covered[step][0] > 0 for step in ADD_ONS)
    assert run_cli("apply", config, "--yes").code == 0
    assert run_cli("destroy", config, "--yes").code == 0
    assert census() == {}
