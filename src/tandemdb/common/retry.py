"""One bounded retry for compare-and-set loops, so every such loop has the same bound and
the same error when concurrent writers keep winning.

    for _ in cas_attempts(f"environment {name}: the decision"):
        item = store.get(key)
        if store.compare_and_set(key, item.version, changed(item.value)):
            return ...

The loop body returns on success; when every attempt has lost, the iterator raises (by
default `Contended`, a RuntimeError, as the loops raised before it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

CAS_ATTEMPTS = 20  # a compare-and-set lost this many times in a row is an error, not bad luck


class Contended(RuntimeError):
    """Every attempt of a compare-and-set loop lost to a concurrent writer."""


def cas_attempts(what: str, attempts: int = CAS_ATTEMPTS,
                 error: Callable[[str], Exception] = Contended) -> Iterator[int]:
    """Yield attempt numbers 0 … attempts-1; after the last, raise `error(message)` naming
    `what` (the change that kept losing)."""
    yield from range(attempts)
    raise error(f"{what} lost its compare-and-set {attempts} times in a row to concurrent "
                "changes; try again")
