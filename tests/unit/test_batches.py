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


def test_training_data_follows_a_property_of_the_data_not_its_name(tiny_session):
    """A data set merely named like the default does not train on the default's train split;
    the default data (any subset of it) names its own train split."""
    from dataclasses import replace

    from prunelens.analysis.batches import training_data
    from prunelens.analysis.data import load_data

    named = replace(tiny_session.data, name="rotten_tomatoes")
    data, note = training_data(replace(tiny_session, data=named))
    assert data is named and "optimistic" in note
    default = load_data("default")
    assert default.train_source == "default" and default.subset(5).train_source == "default"
    assert load_data("default", split="train").texts[0] not in set(default.texts)
