"""The one vocabulary of replica roles and kinds, shared by the controller's catalog and the
nodes' replica records: both sides name the same replica, so they must not drift apart."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a replica does for its environment, as the catalog decided it."""

    PRIMARY = "primary"  # takes writes under a lease, streams to the secondaries
    SECONDARY = "secondary"  # applies the primary's journal; never writes
    FENCED = "fenced"  # was primary; takes no writes while a failover moves the primary


class Kind(StrEnum):
    """Where a replica stands relative to its primary. Every replica today is `geo` (in the
    paired region); `local` (another node of the home region) is ready for local HA."""

    LOCAL = "local"
    GEO = "geo"
