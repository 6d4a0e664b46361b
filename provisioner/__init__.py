"""Provisioner for self-hosted LangSmith on AWS."""
