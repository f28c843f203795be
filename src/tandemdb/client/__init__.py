"""Tandem's Python SDK. `Client` (blocking) and `AsyncClient` share every method (api.py)."""

from .api import AsyncClient, Client
from .errors import TandemError

__all__ = ["AsyncClient", "Client", "TandemError"]
