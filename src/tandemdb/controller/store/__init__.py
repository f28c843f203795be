"""The coordination store: the one seam between the controller and where its state lives.

Like Patroni's `dcs/`, the controller's logic talks only to `Store`; one module per backend
implements it (`sqlite.py` now, `etcd.py` later). Keys are strings such as
`environments/acme`; values are JSON-able objects.

Every write moves one global **revision** counter forward by one. A key's **version** is the
revision of its last write (etcd's `mod_revision`), so `compare_and_set(key, version, …)`
succeeds only if nobody wrote the key since it was read, and `watch` can answer "what changed
after revision R" without missing a write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


class StoreError(Exception):
    """The store cannot do what was asked (closed, corrupt, or unreachable)."""


class Compacted(StoreError):
    """A watch asked for changes older than the store still keeps: re-read, then watch."""


class Item(NamedTuple):
    """A key's value and version; unpacks as `value, version = store.get(key)`."""

    value: Any
    version: int


@dataclass(frozen=True)
class Change:
    """One write seen by a watch. `value` is None when the key was deleted."""

    revision: int
    key: str
    value: Any | None


class Store(ABC):
    """Keys with versions, compare-and-set, prefix listing and watches by revision."""

    @abstractmethod
    def get(self, key: str) -> Item | None:
        """The key's value and version, or None if it does not exist."""

    @abstractmethod
    def put(self, key: str, value: Any) -> int:
        """Write unconditionally; returns the new version (= the new revision)."""

    @abstractmethod
    def compare_and_set(self, key: str, expected_version: int | None, value: Any) -> bool:
        """Write only if the key's version is `expected_version` (None: it must not exist)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the key; False if it did not exist (and nothing changed)."""

    @abstractmethod
    def list(self, prefix: str) -> dict[str, Item]:
        """Every key that starts with `prefix`, in key order."""

    @abstractmethod
    def revision(self) -> int:
        """The revision of the latest write (0 for an empty store)."""

    @abstractmethod
    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Change]:
        """Changes under `prefix` newer than `after_revision`, in revision order.

        Answers at once if there are some, else blocks up to `timeout` seconds for one and
        returns [] if none came. Raises `Compacted` if changes after `after_revision` are
        no longer kept. Blocking: call it from a worker thread in async code.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the backend; blocked watches return at once."""


def open_store(controller_dir: Path) -> Store:
    """The default backend: SQLite in `<controller_dir>/store.sqlite`."""
    from .sqlite import SqliteStore

    return SqliteStore(Path(controller_dir) / "store.sqlite")


__all__ = ["Change", "Compacted", "Item", "Store", "StoreError", "open_store"]
