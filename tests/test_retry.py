"""The shared compare-and-set retry: bounded, and it says what kept losing."""

import pytest

from tandemdb.common.retry import Contended, cas_attempts


def test_the_body_returns_on_success_without_raising() -> None:
    def first_win() -> int:
        for attempt in cas_attempts("x", attempts=3):
            if attempt == 1:
                return attempt
        raise AssertionError("unreachable")

    assert first_win() == 1


def test_losing_every_attempt_raises_naming_the_change() -> None:
    tries = []
    with pytest.raises(Contended, match="environment acme: the decision lost its"):
        for attempt in cas_attempts("environment acme: the decision", attempts=4):
            tries.append(attempt)
    assert tries == [0, 1, 2, 3]


def test_a_caller_chooses_its_own_error() -> None:
    with pytest.raises(KeyError):
        for _ in cas_attempts("x", attempts=1, error=KeyError):
            pass
