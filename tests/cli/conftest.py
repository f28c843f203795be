"""CLI tests use the gateway tests' process fixtures (tests/gateway/conftest.py)."""

from tests.gateway.conftest import cluster, gateway_only

__all__ = ["cluster", "gateway_only"]
