"""analysis/batches.py: the one order in which training batches draw their examples."""

from __future__ import annotations

import numpy as np

from prunelens.analysis.batches import epoch_order


def test_epoch_order_is_seeded_permutations_one_after_another():
    rng, by_hand = np.random.default_rng(7), np.random.default_rng(7)
    order = epoch_order(4, 10, rng)
    expected = np.concatenate([by_hand.permutation(4) for _ in range(3)])[:10]
    np.testing.assert_array_equal(order, expected)
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3]  # each example once per epoch
    assert len(epoch_order(4, 8, np.random.default_rng(0))) == 8  # exactly two epochs: no third drawn
    assert epoch_order(0, 5, np.random.default_rng(0)).size == 0
