"""Tandem: open disaster recovery for multi-tenant SaaS environments."""

__version__ = "0.1.0"
