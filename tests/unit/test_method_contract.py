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

from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.operations import compute_scores

CASES = [(name, unit) for name, method in all_methods().items() for unit in method.units]


def _as_cli_string(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("name, unit", CASES, ids=[f"{n}-{u}" for n, u in CASES])
def test_scores_have_the_unit_shape_are_finite_and_seeded(name, unit, tiny_session):
    method = get_method(name)
    ctx = tiny_session
    torch.manual_seed(1)
    np.random.seed(1)
    first = method.score(ctx, unit, None)
    assert first.shape == tiny_session.loaded.inventory.unit_shape(unit)
    assert np.isfinite(first).all()
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
    computed = compute_scores(tiny_session, name, unit)
    stored = compute_scores(tiny_session, name, unit)
    assert not computed.cached and stored.cached
    np.testing.assert_array_equal(stored.scores, computed.scores)


JOINT = [name for name, method in all_methods().items() if method.joint]


def test_joint_methods_are_the_ones_whose_one_pass_gives_every_unit():
    assert set(JOINT) == {"michel", "pins", "platon", "snip"}


@pytest.mark.parametrize("name", JOINT)
def test_a_joint_method_scores_all_units_in_one_computation_and_stores_them(name, tiny_session, monkeypatch):
    method = get_method(name)
    calls = []
    real = type(method).compute_units

    def counted(self, ctx, units, params):
        calls.append(tuple(units))
        return real(self, ctx, units, params)

    monkeypatch.setattr(type(method), "compute_units", counted)
    first = compute_scores(tiny_session, name, method.units[0])
    assert calls == [method.joint_units(first.params, method.units[0])] and set(calls[0]) == set(method.units)
    for unit in method.units[1:]:  # every other unit: from the store, not recomputed or memoized
        assert compute_scores(tiny_session, name, unit).cached
    assert len(calls) == 1
    alone = {u: method.compute_units(tiny_session, (u,), first.params)[u] for u in method.units}
    together = real(method, tiny_session, method.units, first.params)
    for unit in method.units:  # the joint computation gives what each unit's own would
        np.testing.assert_allclose(together[unit], alone[unit], rtol=1e-9, atol=1e-15)
    assert not any(hasattr(method, attr) for attr in ("_memo", "_cache"))


def test_a_label_using_method_says_why_it_cannot_score_a_regression_head(tiny_loaded):
    from prunelens.analysis.errors import ParamError

    michel = get_method("michel")
    assert michel.is_compatible(tiny_loaded) is None and get_method("magnitude").is_compatible(tiny_loaded) is None
    config = tiny_loaded.model.config
    labels = config.num_labels
    try:
        config.num_labels = 1
        reason = michel.is_compatible(tiny_loaded)
        assert "1 output" in reason and "regression" in reason
        assert get_method("magnitude").is_compatible(tiny_loaded) is None  # needs no labels
        from prunelens.analysis.session import Session

        with pytest.raises(ParamError, match="cannot score this model and data: its importance"):
            michel.score(Session(tiny_loaded, None), "head")
    finally:
        config.num_labels = labels


@pytest.mark.parametrize("name", [n for n, m in all_methods().items() if m.trainer is not None])
def test_every_trainer_estimates_its_run_time_and_it_grows_with_the_steps(name, tiny_loaded):
    trainer = get_method(name).trainer
    base = trainer.estimate(tiny_loaded, None, 100)
    assert base["seconds"] > 0 and base["train_examples"] > 0 and base["eval_examples"] >= 100
    steps = next(p for p in trainer.params if p.name in ("steps", "finetune_steps"))
    more = trainer.estimate(tiny_loaded, {steps.name: min(steps.high, 2 * steps.default)}, 100)
    assert more["train_examples"] > base["train_examples"] and more["seconds"] > base["seconds"]


def _controls_script(name: str):
    import streamlit as st

    from prunelens.analysis.methods import get_method
    from prunelens.dashboard import controls

    method = get_method(name)
    values = controls.param_controls(method, "contract")
    if method.trainer is not None:
        values = {**values, **controls.param_controls(method, "contract.train", params=method.trainer.params,
                                                      query_prefix="t.")}
    st.session_state["contract.values"] = values


@pytest.mark.parametrize("name", list(all_methods()))
def test_every_parameter_is_drawn_by_its_widget_at_its_default(name):
    """The widget round trip for real: the controls built from the declarations show every default
    and hand back exactly the parsed defaults (a slider whose grid misses the default would not)."""
    from streamlit.testing.v1 import AppTest

    method = get_method(name)
    at = AppTest.from_function(_controls_script, args=(name,), default_timeout=30).run()
    assert not at.exception and not at.error and not at.warning
    defaults = {p.name: p.default for p in method.params}
    if method.trainer is not None:
        defaults.update({p.name: p.default for p in method.trainer.params})
    assert at.session_state["contract.values"] == defaults
