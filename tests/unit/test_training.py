"""analysis/training.py: what tells runs of one method apart in a listing."""

from __future__ import annotations

from prunelens.analysis.training import changed_params, get_trainer


def test_changed_params_are_the_ones_off_the_trainers_defaults():
    defaults = get_trainer("pins").validate({})
    assert changed_params("pins", defaults) == {}
    run = get_trainer("pins").validate({"target_sparsity": 0.9, "seed": 2})
    assert changed_params("pins", run) == {"target_sparsity": 0.9, "seed": 2}
    # a parameter the trainer no longer declares (an old stored run) is shown, not hidden
    assert changed_params("pins", {**defaults, "retired": 1}) == {"retired": 1}
    assert changed_params("no-such-method", {"seed": 1}) == {}
