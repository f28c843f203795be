"""`syncrule.holds`: when another replica's epoch history confirms a write its primary
committed but never had acknowledged (a switchover within the region, docs/ha.md)."""

from __future__ import annotations

from tandemdb.node.syncrule import holds


def test_a_newer_epoch_starting_at_or_after_the_entry_confirms_it():
    history = [(1, 0), (2, 40)]  # epoch 2 began after lsn 40: lsns 1..40 are epoch 1's
    assert holds(history, 40, 1) and holds(history, 7, 1)


def test_an_entry_past_the_fork_point_is_not_confirmed():
    # epoch 2 began at 30: lsn 35 in this history is epoch 2's, not the old primary's
    assert not holds([(1, 0), (2, 30)], 35, 1)


def test_no_newer_epoch_confirms_nothing():
    assert not holds([(1, 0)], 5, 1) and not holds([], 5, 1)


def test_an_entry_of_another_epoch_at_that_lsn_is_not_confirmed():
    # The history skipped epoch 2 (its primary's writes never reached this replica): the
    # entry at lsn 25 here is epoch 1's, not the epoch 2 write waiting for confirmation.
    assert not holds([(1, 0), (3, 40)], 25, 2)
    # A history cut to its newest pairs, which no longer reach back to the entry.
    assert not holds([(3, 40), (4, 50)], 25, 2)
