"""Rank statistics of prunelens.analysis.compare against manual computation."""

from __future__ import annotations

import numpy as np
import pytest

from prunelens.analysis.compare import (
    jaccard,
    jaccard_matrix,
    normalized_ranks,
    rank_correlations,
    unit_scores,
)
from prunelens.analysis.errors import ParamError


def test_normalized_ranks():
    r = normalized_ranks([[3.0, 1.0], [2.0, 4.0]])
    assert r.tolist() == [[2 / 3, 0.0], [1 / 3, 1.0]]


def test_rank_correlations_match_manual():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    corr = rank_correlations({"a": a, "rev": -a, "same": a * 10, "const": np.ones(4)})
    assert corr.spearman[0, 1] == pytest.approx(-1.0) and corr.kendall[0, 1] == pytest.approx(-1.0)
    assert corr.spearman[0, 2] == pytest.approx(1.0)
    assert np.isnan(corr.spearman[0, 3]) and corr.as_dict()["spearman"][0][3] is None
    # one swap out of 6 pairs: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    c = rank_correlations({"a": a, "b": np.array([2.0, 1.0, 3.0, 4.0])})
    assert c.kendall[0, 1] == pytest.approx(4 / 6) and c.spearman[0, 1] == pytest.approx(0.8)


def test_jaccard_matrix():
    assert jaccard([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(1 / 3)
    scores = {"a": np.array([[4.0, 3.0, 2.0, 1.0]]), "b": np.array([[4.0, 1.0, 3.0, 2.0]])}
    jac = jaccard_matrix(scores, 0.5)
    assert jac[0, 1] == pytest.approx(1 / 3) and jac[0, 0] == 1.0
    with pytest.raises(ParamError):
        rank_correlations({"a": np.ones(3), "b": np.ones(4)})


def test_unit_scores_ranks_match_compute(tiny_session):
    from prunelens.analysis.operations import compute_scores

    rows = {r["method"]: r for r in unit_scores(tiny_session, "head", (1, 2))}
    mag = compute_scores(tiny_session, "magnitude", "head").scores
    assert rows["magnitude"]["score"] == pytest.approx(mag[1, 2])
    assert rows["magnitude"]["rank"] == int((mag > mag[1, 2]).sum()) + 1
    assert rows["ablation"]["source"] == "missing" and rows["ablation"]["score"] is None


def test_diagnostics_are_labelled_and_never_preselected(open_page):
    """ADMM's surviving-norm share is a diagnostic: its label says so and the Compare page does
    not put it into the ranking side by side unless asked (0.1 ranked it beside the criteria)."""
    from prunelens.analysis.methods import all_methods
    from prunelens.dashboard import controls

    diagnostics = {n for n, m in all_methods().items() if m.diagnostic}
    assert diagnostics == {"admm", "admm-quant"}
    assert all("diagnostic" in controls.method_label(n) for n in diagnostics)
    assert "diagnostic" not in controls.method_label("michel")
    at = open_page("compare")
    assert not at.exception
    chosen = at.multiselect(key="cmp.methods").value
    assert chosen and not diagnostics & set(chosen)


def test_paired_difference_is_a_crossed_bootstrap_by_hand():
    """A 2-seed x 2-example table: the 4 seed draws x 4 example draws are enumerated. With
    a - b = [[1, 0], [0, 0]], a resample's mean is (share of seed 0 drawn) x (share of example 0
    drawn); each share is 1, 1/2, 0 with probability 1/4, 1/2, 1/4."""
    from prunelens.analysis.compare import paired_difference

    d = paired_difference([[1, 0], [0, 1]], [[0, 0], [0, 1]])
    assert d.exact and d.resamples == 16 and d.seeds == 2 and d.examples == 2
    assert d.mean == 0.25 and d.per_seed == [0.5, 0.0]
    # E[share²] = 1/4 + 1/8 = 3/8, so Var = (3/8)² − (1/4)² = 5/64
    assert d.se == pytest.approx(np.sqrt(5 / 64))
    shares = [1.0, 0.5, 0.5, 0.0]  # the four equally likely draws of one axis
    by_hand = sorted(x * y for x in shares for y in shares)
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])))
    assert d.low == 0.0 and d.within_noise and d.rule == "within noise (neither pass nor fail)"
    # the seeds now enter: a per-sentence difference that flips sign between seeds is noise
    flips = paired_difference([[1] * 50, [0] * 50], [[0] * 50, [1] * 50])
    assert flips.mean == 0.0 and flips.within_noise and flips.high >= 1.0 - 1e-12


def test_paired_difference_draws_seeds_and_sentences_and_its_verdicts():
    from prunelens.analysis.compare import joint_rule, paired_difference

    rng = np.random.default_rng(0)
    a = (rng.random((3, 200)) < 0.8).astype(int)
    b = (rng.random((3, 200)) < 0.5).astype(int)
    d = paired_difference(a, b)
    assert not d.exact and d.resamples == 4000
    assert d.mean == pytest.approx((a - b).mean())
    assert d.low < d.mean < d.high and not d.within_noise
    assert d.verdict("SN", "control") == "SN better" and d.rule == "PASS"
    assert paired_difference(a, b).low == d.low  # a fixed seed: reproducible
    # a seed-to-seed spread the 0.2 interval hid: per-seed +20 / -10 / +20 points
    spread = paired_difference([[1] * 20 + [0] * 80, [0] * 100, [1] * 20 + [0] * 80],
                               [[0] * 100, [1] * 10 + [0] * 90, [0] * 100])
    assert spread.per_seed == pytest.approx([0.2, -0.1, 0.2]) and spread.within_noise
    worse = paired_difference(b, a)
    assert worse.verdict("SN", "control") == "control better" and worse.rule == "FAIL"
    same = paired_difference([[1, 0, 1, 0]], [[0, 1, 0, 1]])
    assert same.mean == 0.0 and same.within_noise and same.verdict() == "within noise"
    assert joint_rule([d, d]) == "PASS" and joint_rule([d, same]) == same.rule
    assert joint_rule([d, worse]) == "FAIL" and joint_rule([same, worse]) == "FAIL"
    with pytest.raises(Exception, match="equal"):
        paired_difference([[1, 0]], [[1, 0, 1]])


def test_compare_on_the_default_opens_with_the_shipped_methods_and_their_curves(open_page, monkeypatch):
    """Issue 30 item 4: every criterion whose scores ship is preselected (0.2 opened with only
    magnitude and random), and their curves draw from the store without a click."""
    from prunelens.analysis.methods import all_methods

    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # a user's default: checked-bf16 answers are read
    at = open_page("compare", model="default", data="default")
    assert not at.exception
    chosen = at.multiselect(key="cmp.methods").value
    criteria = {n for n, m in all_methods().items() if "head" in m.units and not m.diagnostic}
    assert {"ablation", "michel", "pins", "snip", "smp-pruner", "magnitude", "random"} <= set(chosen)
    assert set(chosen) <= criteria
    assert not [b for b in at.button if b.key == "cmp.draw"]  # the curves are drawn from the store
    assert not at.warning


def test_a_layer_emptied_by_a_global_scope_is_named_and_keep_one_prevents_it():
    from prunelens.analysis.compare import emptied_by, jaccard_matrix
    from prunelens.analysis.pruning import emptied_layers, select

    scores = np.array([[0.1, 0.2, 0.3], [5.0, 6.0, 7.0], [0.05, 4.0, 9.0]])
    assert emptied_layers(select(scores, 0.4, "global")) == [0]  # 4 of 9: layer 0's three, then 0.05
    assert emptied_by({"m": scores}, [0.2, 0.4], "global") == {"m": {0.4: [0]}}
    assert emptied_by({"m": scores}, [0.4], "global", keep_one_per_layer=True) == {}
    assert emptied_by({"m": scores}, [0.6], "layer") == {}  # 2 of 3 per layer
    assert select(scores, 0.4, "global", keep_one_per_layer=True)[0].tolist() == [0, 0, 1]
    same = jaccard_matrix({"a": scores, "b": scores}, 0.4, "global", keep_one_per_layer=True)
    assert same.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_constant_scores_warning_only_when_the_scores_rank_nothing():
    from prunelens.analysis.compare import constant_scores_warning

    assert constant_scores_warning(np.zeros((2, 3)), "pins") == (
        "every pins score is 0: these scores rank nothing (pruning by them would remove units in "
        "index order); try more batches or other parameters")
    assert constant_scores_warning(np.array([0.0, 1e-30])) is None
    assert constant_scores_warning(np.array([5.0])) is None  # one unit: nothing to rank
