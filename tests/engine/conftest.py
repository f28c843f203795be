"""Shared helpers for engine tests: real environments in temporary directories."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tandemdb.engine import Environment


def copy_blobs(source: Environment, target: Environment, entries) -> None:
    """What a node does before applying: fetch the blobs the entries reference."""
    for entry in entries:
        for digest in entry.blobs:
            if not target.blobs.has(digest) and source.blobs.has(digest):
                target.blobs.put(source.blobs.get(digest))


def replicate(source: Environment, target: Environment) -> int:
    """Ship everything after the target's last lsn from source to target."""
    entries = source.read_journal(target.last_lsn, max_entries=100_000, max_bytes=1 << 40)
    copy_blobs(source, target, entries)
    return target.apply(entries, sender_epoch=source.epoch)


@pytest.fixture
def make_env(tmp_path: Path) -> Callable[[str], Environment]:
    opened: list[Environment] = []

    def make(name: str = "env") -> Environment:
        env = Environment(tmp_path / name)
        opened.append(env)
        return env

    yield make
    for env in opened:
        with contextlib.suppress(Exception):  # a test may have closed it already
            env.close()
