"""The contract every registered method keeps, checked for each method × unit it declares:
registering a method is enough to get it tested here.

- scores have the unit's shape and are finite;
- they are seeded-deterministic: the same setting gives the same numbers whatever the global
  random state (a method must draw from its own ``seed``, not from torch's or numpy's);
- every parameter survives the CLI round trip (its default written as a ``--param`` string and
  parsed back) and the widget round trip (the parsed value fed back as a widget would);
- the store round trip: computed once, then served from the store, equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.methods import all_methods, get_method
from analysis.operations import compute_scores

CASES = [(name, unit) for name, method in all_methods().items() for unit in method.units]


def _fresh(method) -> None:
    """Forget what a method memoizes between calls, so a second call really recomputes."""
    from analysis.methods import pins

    pins._SCORE_CACHE.clear()
    if hasattr(method, "_memo"):
        object.__setattr__(method, "_memo", None)


def _as_cli_string(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("name, unit", CASES, ids=[f"{n}-{u}" for n, u in CASES])
def test_scores_have_the_unit_shape_are_finite_and_seeded(name, unit, tiny_session):
    method = get_method(name)
    ctx = tiny_session.context()
    _fresh(method)
    torch.manual_seed(1)
    np.random.seed(1)
    first = method.score(ctx, unit, None)
    assert first.shape == tiny_session.loaded.inventory.unit_shape(unit)
    assert np.isfinite(first).all()
    _fresh(method)
    torch.manual_seed(2)  # another global state: the scores must not depend on it
    np.random.seed(2)
    again = method.score(ctx, unit, None)
    np.testing.assert_allclose(again, first, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", list(all_methods()))
def test_every_parameter_survives_the_cli_and_widget_round_trip(name):
    method = get_method(name)
    declared = [*method.params, *(method.trainer.params if method.trainer else ())]
    for param in declared:
        parsed = param.parse(_as_cli_string(param.default))
        assert parsed == param.default, (name, param.name)
        assert param.parse(parsed) == parsed  # a widget hands back the typed value
    assert method.validate({p.name: _as_cli_string(p.default) for p in method.params}) == method.validate(None)


@pytest.mark.parametrize("name, unit", CASES, ids=[f"{n}-{u}" for n, u in CASES])
def test_scores_round_trip_through_the_store(name, unit, tiny_session):
    _fresh(get_method(name))
    computed = compute_scores(tiny_session, name, unit)
    stored = compute_scores(tiny_session, name, unit)
    assert not computed.cached and stored.cached
    np.testing.assert_array_equal(stored.scores, computed.scores)
