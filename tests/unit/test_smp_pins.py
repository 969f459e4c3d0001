"""Tests of the ``smp`` and ``pins`` methods on the tiny random BERT."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import hook_count
from prunelens.analysis.methods import get_method
from prunelens.analysis.methods import pins as pins_mod
from prunelens.analysis.methods import smp as smp_mod
from prunelens.analysis.fingerprints import weights_digest
from tests.tiny import assert_run_result_shape

SMALL_SMP = {"samples": 8, "batch_size": 10, "batches": 1}
SMALL_TRAIN = {"steps": 12, "batch_size": 4, "prune_every": 2, "warmup": 0.1, "final": 0.3,
               "target_sparsity": 0.6, "lr": 1e-3, "eta": 1e-3}


# ---------------------------------------------------------------------------------------------
# smp: pure pieces


def test_similarity_kl_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.randn(6, 5)
    assert smp_mod.similarity_kl(a, a.clone()) == 0.0
    assert smp_mod.similarity_kl(a, a.clone(), similarity="dot") == 0.0
    b = a + 0.5 * torch.randn(6, 5)
    assert smp_mod.similarity_kl(a, b) > 0.0
    assert smp_mod.similarity_kl(a, b, temperature=1.0, similarity="dot") > 0.0
    # cosine similarity ignores the scale of each vector
    assert smp_mod.similarity_kl(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)


def test_similarity_kl_matches_manual_computation():
    torch.manual_seed(1)
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = 0.5

    def dist(x):
        x = x / x.norm(dim=1, keepdim=True)
        s = (x @ x.T / t).numpy()
        rows = []
        for i in range(len(s)):
            others = np.delete(s[i], i)
            e = np.exp(others - others.max())
            rows.append(e / e.sum())
        return np.array(rows)

    p, q = dist(a), dist(b)
    expected = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert smp_mod.similarity_kl(a, b, temperature=t) == pytest.approx(expected, rel=1e-9)


def test_sentence_vectors_cls_and_mean_skip_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(smp_mod.sentence_vectors(hidden, mask, "cls"), hidden[:, 0])
    mean = smp_mod.sentence_vectors(hidden, mask, "mean")
    assert torch.allclose(mean[0], hidden[0, :2].mean(0))
    assert torch.allclose(mean[1], hidden[1].mean(0))


def test_ridge_recovers_planted_importance():
    rng = np.random.default_rng(0)
    features, samples = 24, 400
    w = rng.uniform(0.0, 1.0, features)
    removed = (rng.random((samples, features)) < 0.5).astype(float)
    losses = 0.3 + removed @ w + rng.normal(0, 0.05, samples)
    coef = smp_mod.ridge_importance(removed, losses, alpha=1.0)
    assert coef.shape == (features,)
    assert spearmanr(coef, w).statistic > 0.97
    assert np.abs(coef - w).max() < 0.1
    # no penalty, no noise: exact recovery
    exact = smp_mod.ridge_importance(removed, 0.3 + removed @ w, alpha=0.0)
    assert np.allclose(exact, w, atol=1e-8)


def test_ridge_shrinks_with_alpha_and_checks_shapes():
    rng = np.random.default_rng(1)
    x = (rng.random((50, 5)) < 0.5).astype(float)
    y = x @ np.arange(1.0, 6.0)
    small, big = smp_mod.ridge_importance(x, y, 0.1), smp_mod.ridge_importance(x, y, 1000.0)
    assert np.linalg.norm(big) < np.linalg.norm(small)
    with pytest.raises(ValueError):
        smp_mod.ridge_importance(x, y[:-1], 1.0)


def test_sample_masks_seeded_and_keep_rate():
    a = smp_mod.sample_masks(3, 4, 500, 0.25, seed=7)
    assert a.shape == (500, 3, 4)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, smp_mod.sample_masks(3, 4, 500, 0.25, seed=7))
    assert not np.array_equal(a, smp_mod.sample_masks(3, 4, 500, 0.25, seed=8))
    assert abs(a.mean() - 0.25) < 0.03


# ---------------------------------------------------------------------------------------------
# smp on the tiny model


def test_smp_shape_deterministic_and_leaves_model_alone(tiny_session):
    method = get_method("smp")
    assert method.default_scope == "layer" and method.default_sparsity == 0.5
    ctx = tiny_session
    before = weights_digest(tiny_session.loaded.model)
    a = method.score(ctx, "head", {**SMALL_SMP, "seed": 3})
    b = method.score(ctx, "head", {**SMALL_SMP, "seed": 3})
    c = method.score(ctx, "head", {**SMALL_SMP, "seed": 4})
    assert a.shape == (2, 4)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert hook_count(tiny_session.loaded.model) == 0
    assert weights_digest(tiny_session.loaded.model) == before


def test_smp_losses_zero_for_full_mask_and_positive_for_pruned(tiny_session):
    ctx = tiny_session
    params = get_method("smp").validate({**SMALL_SMP, "sentence_vector": "cls"})
    masks = np.ones((3, 2, 4), dtype=np.float32)
    masks[1, 0, :2] = 0
    masks[2] = 0
    losses = smp_mod.smp_losses(ctx, masks, params)
    assert losses[0] == 0.0
    assert losses[1] > 0.0 and losses[2] > 0.0


def test_smp_bad_params():
    method = get_method("smp")
    with pytest.raises(ParamError, match="keep_rate"):
        method.validate({"keep_rate": 1.5})
    with pytest.raises(ParamError, match="sentence_vector"):
        method.validate({"sentence_vector": "max"})
    with pytest.raises(ParamError, match="samples"):
        method.validate({"samples": "many"})
    with pytest.raises(ParamError, match="no parameter"):
        method.validate({"M": 3})
    with pytest.raises(ParamError, match="scores units"):
        method.check_unit("neuron")


# ---------------------------------------------------------------------------------------------
# pins: pure pieces


def test_pins_score_formula_on_hand_built_gradient():
    theta = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    grad = torch.tensor([[0.1, 0.3], [-2.0, 4.0]])
    eta = 0.5
    expected = torch.tensor([[-0.1 + 0.5 * 0.01, 0.6 + 0.5 * 0.09],
                             [1.0 + 0.5 * 4.0, 0.0 + 0.5 * 16.0]])
    assert torch.allclose(pins_mod.pins_score(theta, grad, eta), expected)


def test_ema_update_formula():
    ibar, unc = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.2])
    s = torch.tensor([3.0, 1.0])
    new_ibar, new_unc = pins_mod.ema_update(ibar, unc, s, beta1=0.85, beta2=0.99)
    exp_ibar = torch.tensor([0.85 * 1.0 + 0.15 * 3.0, 0.85 * -1.0 + 0.15 * 1.0])
    exp_unc = 0.99 * unc + 0.01 * (s - exp_ibar).abs()
    assert torch.allclose(new_ibar, exp_ibar)
    assert torch.allclose(new_unc, exp_unc)
    assert torch.equal(ibar, torch.tensor([1.0, -1.0]))  # inputs untouched


def test_cubic_schedule_values_and_monotone():
    total, target, warmup, final = 100, 0.8, 10, 30
    values = [pins_mod.cubic_sparsity(t, total, target, warmup, final) for t in range(total + 1)]
    assert values[0] == 0.0 and values[warmup] == 0.0
    assert values[total] == target and values[total - final] == target
    assert all(b >= a for a, b in pairwise(values))
    mid = (warmup + total - final) // 2
    assert values[mid] == pytest.approx(target * (1 - 0.5**3))
    assert pins_mod.cubic_sparsity(50, 100, 0.5) == pytest.approx(0.5 * (1 - 0.5**3))


def test_self_reg_loss_is_the_official_kl_teacher_to_student():
    """T²·KL(p_teacher ‖ p_student), not the reverse KL that 0.1 used (they differ here)."""
    s = torch.tensor([[1.0, -1.0], [0.2, 0.3]])
    t = torch.tensor([[0.0, 0.5], [1.0, -1.0]])
    assert float(pins_mod.self_reg_loss(s, s)) == pytest.approx(0.0, abs=1e-7)
    ps, pt = torch.softmax(s / 2, -1), torch.softmax(t / 2, -1)
    official = 4.0 * float((pt * (pt.log() - ps.log())).sum(-1).mean())
    reverse = 4.0 * float((ps * (ps.log() - pt.log())).sum(-1).mean())
    assert abs(official - reverse) > 1e-3  # the test can tell the directions apart
    assert float(pins_mod.self_reg_loss(s, t, 2.0)) == pytest.approx(official, rel=1e-6)


def test_self_reg_adaptive_alpha_weights_each_example_by_its_confidence():
    s = torch.tensor([[3.0, -3.0], [0.0, 0.0]])  # confident; uniform (α = 0)
    t = torch.tensor([[0.0, 0.5], [1.0, -1.0]])
    p = torch.softmax(s, -1)
    alpha = 1 - (-(p * p.log()).sum(-1)) / np.log(2)
    assert alpha[1] == pytest.approx(0.0, abs=1e-7) and 0.9 < alpha[0] < 1.0
    ps, pt = torch.softmax(s / 2, -1), torch.softmax(t / 2, -1)
    per_example = (pt * (pt.log() - ps.log())).sum(-1)
    expected = 4.0 * float((alpha * per_example).mean())
    assert float(pins_mod.self_reg_loss(s, t, 2.0, adaptive=True)) == pytest.approx(expected, rel=1e-6)


def test_aggregate_sums_rows_and_columns():
    class Inv:
        heads, head_size = 2, 2

    hidden, ffn = 4, 3
    q = torch.arange(16.0).reshape(4, 4)
    k, v, o = torch.ones(4, 4), torch.zeros(4, 4), 2 * torch.ones(4, 4)
    inter, out = torch.arange(12.0).reshape(ffn, hidden), torch.ones(hidden, ffn)
    layer = [q, k, v, o, inter, out]
    heads = pins_mod.aggregate([layer], Inv, "head")
    # head 0: q rows 0-1 (sum 0..7 = 28) + k rows (8) + v (0) + o columns 0-1 (16)
    assert heads.tolist() == [[28 + 8 + 0 + 16, (8 + 9 + 10 + 11 + 12 + 13 + 14 + 15) + 8 + 16]]
    neurons = pins_mod.aggregate([layer], Inv, "neuron")
    assert neurons.tolist() == [[0 + 1 + 2 + 3 + 4, 4 + 5 + 6 + 7 + 4, 8 + 9 + 10 + 11 + 4]]
    assert pins_mod.aggregate([layer], Inv, "attention").tolist() == [120 + 16 + 32]
    assert pins_mod.aggregate([layer], Inv, "ffn").tolist() == [66 + 12]


def test_global_mask_removes_exact_count_lowest():
    imp = [[torch.tensor([[5.0, 1.0], [3.0, 0.0]]), torch.tensor([2.0, 4.0, 6.0])]]
    masks = pins_mod._global_mask(imp, 3 / 7)
    assert masks[0][0].tolist() == [[True, False], [True, False]]
    assert masks[0][1].tolist() == [False, True, True]


# ---------------------------------------------------------------------------------------------
# pins on the tiny model


def test_pins_scores_every_unit_and_model_untouched(tiny_session):
    method = get_method("pins")
    ctx = tiny_session
    model = tiny_session.loaded.model
    before = weights_digest(model)
    params = {"batches": 3, "batch_size": 8, "seed": 1, "normalize": False}
    shapes = {"head": (2, 4), "attention": (2,), "ffn": (2,), "neuron": (2, 24)}
    scores = {}
    for unit, shape in shapes.items():
        scores[unit] = method.score(ctx, unit, params)
        assert scores[unit].shape == shape
        assert np.isfinite(scores[unit]).all()
    assert np.abs(scores["head"]).sum() > 0
    # heads and attention blocks come from the same weight scores: a block's O/Q/K/V sum
    assert np.allclose(scores["head"].sum(1), scores["attention"], rtol=1e-6, atol=1e-12)
    assert weights_digest(model) == before
    assert not any(p.requires_grad for p in model.parameters())
    assert model.training is False
    normed = method.score(ctx, "neuron", {**params, "normalize": True})
    assert np.abs(normed).max() == pytest.approx(1.0)
    assert np.allclose(normed, scores["neuron"] / np.abs(scores["neuron"]).max())


def test_pins_score_weights_deterministic(tiny_session):
    params = get_method("pins").validate({"batches": 2, "batch_size": 8})
    a = pins_mod.score_weights(tiny_session.loaded, tiny_session.data, params)
    b = pins_mod.score_weights(tiny_session.loaded, tiny_session.data, params)
    assert len(a) == 2 and len(a[0]) == 6
    assert all(torch.equal(x, y) for la, lb in zip(a, b) for x, y in zip(la, lb))


def test_pins_bad_params():
    method = get_method("pins")
    with pytest.raises(ParamError, match="beta1"):
        method.validate({"beta1": 1.5})
    with pytest.raises(ParamError, match="batches"):
        method.validate({"batches": 0})
    trainer = method.trainer
    with pytest.raises(ParamError, match="target_sparsity"):
        trainer.validate({"target_sparsity": 1.0})
    with pytest.raises(ParamError, match="baseline"):
        trainer.validate({"baseline": "random"})
    with pytest.raises(ParamError, match="no parameter"):
        trainer.validate({"sparsity": 0.5})
    with pytest.raises(ParamError, match="warmup"):
        pins_mod._check_train_params(trainer.validate({"warmup": 0.6, "final": 0.5}))


# every training option at its 0.2 value (the defaults are the official values now)
V02_TRAINING = pins_mod.V02_VALUES["pins"]


def test_prune_train_hits_target_exactly(tiny_session):
    loaded = tiny_session.loaded
    before = weights_digest(loaded.model)
    params = pins_mod.METHOD.trainer.validate({**SMALL_TRAIN, **V02_TRAINING})
    batches = pins_mod.shuffled_batches(loaded.tokenizer, tiny_session.data, 4, 12, seed=0)
    out = pins_mod.prune_train(loaded, batches, params, "pins", self_reg=True)
    summary = out["summary"]
    total = 2 * (4 * 16 * 16 + 2 * 16 * 24)
    assert summary["total_weights"] == total
    assert summary["pruned_weights"] == round(0.6 * total)
    weights = pins_mod.prunable_weights(out["model"])
    for wl, ml in zip(weights, out["masks"]):
        for w, m in zip(wl, ml):
            assert torch.all(w[~m] == 0)
    assert summary["zero_fraction"] >= summary["weight_sparsity"]
    sparsities = [h["sparsity"] for h in summary["history"]]
    expected = [pins_mod.cubic_sparsity(h["step"], 12, 0.6, 1, 4) for h in summary["history"]]
    assert sparsities == pytest.approx(expected, abs=1e-6)
    assert sparsities[-1] == 0.6
    assert all(b >= a for a, b in pairwise(sparsities))
    assert any(h["self_reg_loss"] > 0 for h in summary["history"])
    assert all(h["lr"] == SMALL_TRAIN["lr"] for h in summary["history"])  # constant
    assert weights_digest(loaded.model) == before


def test_prune_train_official_pool_has_the_biases_and_the_teacher_is_dev_selected(tiny_session):
    loaded = tiny_session.loaded
    params = pins_mod.METHOD.trainer.validate({**SMALL_TRAIN, "teacher_every": 5})  # the defaults
    assert params["bias_pool"] and params["teacher"] == "best_dev" and params["delta_t"] == 10
    train, held_out = pins_mod.selection_split(tiny_session.data, 0)
    assert len(held_out) == len(tiny_session.data) // 4 and len(train) + len(held_out) == len(tiny_session.data)
    assert not set(held_out.texts) & set(train.texts) or len(set(tiny_session.data.texts)) < len(tiny_session.data)
    select, _ = pins_mod.tokenize_batches(loaded.tokenizer, held_out, 64)
    batches = pins_mod.shuffled_batches(loaded.tokenizer, train, 4, 12, seed=0)
    out = pins_mod.prune_train(loaded, batches, params, "pins", self_reg=True, select_batches=select)
    summary = out["summary"]
    biases = 2 * (4 * 16 + 24 + 16)
    total = 2 * (4 * 16 * 16 + 2 * 16 * 24) + biases
    assert summary["total_weights"] == total and summary["pruned_weights"] == round(0.6 * total)
    assert 0.0 < summary["bias_sparsity"] <= 1.0
    pool = pins_mod.prunable_pool(out["model"], True)
    assert [len(layer) for layer in pool] == [12, 12]
    for wl, ml in zip(pool, out["masks"]):
        for w, m in zip(wl, ml):
            assert torch.all(w[~m] == 0)
    # evaluated after steps 1, 6, 11 (the official global_step % 50 == 0, counted from 0);
    # the first evaluation always replaces the teacher (the official best starts at -999)
    selections = summary["teacher_selection"]
    assert [s["step"] for s in selections] == [1, 6, 11] and selections[0]["teacher_replaced"]
    lrs = [h["lr"] for h in summary["history"]]
    # one warm-up step, then linear decay to 0 (logged every 2 steps from step 2: 10/11 of the peak)
    assert lrs[0] == pytest.approx(SMALL_TRAIN["lr"] * 10 / 11) and lrs[-1] == 0.0 and lrs == sorted(lrs, reverse=True)


def test_linear_schedule_factors_warm_up_then_decay_to_zero():
    factors = pins_mod._lr_factors({"lr_schedule": "linear", "warmup": 0.2}, 10)
    # 2 warm-up steps; the rate is stepped before each update (official order)
    assert factors == pytest.approx([0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0])
    assert pins_mod._lr_factors({"lr_schedule": "constant", "warmup": 0.2}, 3) == [1.0, 1.0, 1.0]


def test_mixed_loss_is_the_official_alpha_mix_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1])
    loss, ce_part, kl_part = pins_mod.mixed_loss(logits, teacher, labels, temperature=2.0)
    p0 = torch.softmax(logits[0], -1)
    alpha = [1 - float(-(p0 * p0.log()).sum()) / np.log(2), 0.0]  # a uniform student: α = 0
    ce = [float(-torch.log_softmax(logits[i], -1)[labels[i]]) for i in range(2)]
    kl = []
    for i in range(2):
        pt, ls = torch.softmax(teacher[i] / 2, -1), torch.log_softmax(logits[i] / 2, -1)
        kl.append(4.0 * float((pt * (pt.log() - ls)).sum()))
    expected = np.mean([alpha[i] * kl[i] + (1 - alpha[i]) * ce[i] for i in range(2)])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(ce_part) + float(kl_part) == pytest.approx(float(loss))
    assert alpha[0] == pytest.approx(0.4729, abs=1e-3)


def test_train_command_compares_self_reg_and_baseline(tiny_session):
    from prunelens.analysis.training import train_command

    params = {**SMALL_TRAIN, "steps": 8}  # the official training: the defaults
    result = train_command(tiny_session, "pins", params)
    assert result["params"]["teacher"] == "best_dev" and result["extras"]["selection_data"]["n"] > 0
    assert result["cached"] is False
    assert_run_result_shape(result)  # the one RunResult shape (issue 16)
    variants, extras = result["variants"], result["extras"]
    assert set(variants) == {"dense", "pins_self_reg", "pins_no_self_reg", "baseline"}
    runs = extras["runs"]  # each trained run's summary
    assert set(runs) == {"pins_self_reg", "pins_no_self_reg"}
    assert runs["pins_self_reg"]["self_reg"] and not runs["pins_no_self_reg"]["self_reg"]
    assert all(h["self_reg_loss"] == 0 for h in result["histories"]["pins_no_self_reg"])
    assert set(result["histories"]) == {"pins_self_reg", "pins_no_self_reg", "baseline"}  # gradual
    for name, summary in (*runs.items(), ("baseline", extras["baseline"])):
        assert summary["weight_sparsity"] == pytest.approx(0.6, abs=1e-3)
        assert 0.0 <= variants[name]["accuracy"] <= 1.0
        correct = [c == "1" for c in variants[name]["correct"]]  # per example: paired comparisons
        assert len(correct) == len(tiny_session.data)
        assert np.mean(correct) == pytest.approx(variants[name]["accuracy"])
    assert extras["baseline"]["criterion"] == "magnitude"
    assert result["labels"]["baseline"].startswith("baseline (magnitude, same cubic schedule")
    assert np.asarray(result["scores"]["head"]).shape == (2, 4)
    assert result["notes"]  # trained on the evaluation data: said so
    assert set(extras["self_reg_gain"]) == {"accuracy", "loss", "margin"}
    again = train_command(tiny_session, "pins", params)
    assert again["cached"] is True


def test_global_mask_ties_go_to_earlier_weights():
    imp = [[torch.zeros(2, 3)], [torch.zeros(4)]]
    masks = pins_mod._global_mask(imp, 0.5)
    assert masks[0][0].tolist() == [[False, False, False], [False, False, True]]
    assert masks[1][0].tolist() == [True, True, True, True]


def _official_pins(thetas, grads, eta, beta1, beta2, delta_t=1):
    """DRSY/PINS Pruner.update_ipt_with_local_window, written out on plain floats."""
    ipt = ibar = unc = 0.0
    for step, (theta, g) in enumerate(zip(thetas, grads)):
        local = step % delta_t
        score = abs(-theta * g + eta * g * g)
        if local == 0:
            ibar = beta1 * ibar + (1 - beta1) * ipt
            unc = beta2 * unc + (1 - beta2) * abs(ipt - ibar)
            ipt = score
        else:
            ipt = (ipt * local + score) / (local + 1)
    return ibar * unc


@pytest.mark.parametrize("delta_t", [1, 2])
def test_pins_state_follows_the_official_update_over_three_steps(delta_t):
    """|S| before the EMA, the window mean, the one-step lag: three steps, two weights."""
    thetas = [[1.0, -2.0], [0.8, -1.5], [0.5, -1.0], [0.4, -0.9]]
    grads = [[0.5, 0.25], [-0.4, 0.5], [0.3, -0.2], [0.1, 0.7]]
    w = torch.nn.Parameter(torch.zeros(2))
    state = pins_mod.PinsState([[w]], eta=0.1, beta1=0.85, beta2=0.99, delta_t=delta_t)
    for theta, g in zip(thetas, grads):
        with torch.no_grad():
            w.copy_(torch.tensor(theta))
        w.grad = torch.tensor(g)
        state.update()
    expected = [_official_pins([t[i] for t in thetas], [g[i] for g in grads], 0.1, 0.85, 0.99, delta_t)
                for i in range(2)]
    got = state.importance()[0][0]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert (got >= 0).all() and expected[0] > 0


def test_pins_signed_variant_is_an_explicit_option():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    state = pins_mod.PinsState([[w]], eta=0.0, beta1=0.5, beta2=0.5, signed=True)
    for _ in range(2):  # the official lag: the first step's score enters at the second update
        w.grad = torch.tensor([1.0, 1.0])
        state.update()
    # S = [-1, 1] (signed); Ī = 0.5·S; U = 0.5·|S − Ī| = [0.25, 0.25]
    assert torch.allclose(state.importance()[0][0], torch.tensor([-0.125, 0.125]))


def test_platon_is_pins_without_the_eta_term(tiny_session):
    """PLATON's scores equal PINS's computed with η = 0 (same data, seeds, smoothing)."""
    pins, platon = get_method("pins"), get_method("platon")
    common = {"batches": 2, "batch_size": 8, "beta2": 0.95}
    a = pins.compute(tiny_session, "head", pins.validate({**common, "eta": 0.0}))
    b = platon.compute(tiny_session, "head", platon.validate(common))
    assert np.allclose(a, b, rtol=1e-6, atol=0)
    c = pins.compute(tiny_session, "head", pins.validate({**common, "eta": 0.5}))
    assert not np.allclose(a, c)  # a large η changes the ranking input


@pytest.mark.parametrize("name", ["pins", "platon"])
@pytest.mark.parametrize("unit", ["head", "attention", "ffn", "neuron"])
def test_pins_and_platon_scores_are_non_negative(name, unit, tiny_session):
    """0.1's signed EMA gave half the heads negative scores; Ī·U of |S| never is."""
    method = get_method(name)
    scores = method.compute(tiny_session, unit, method.validate({"batches": 2, "batch_size": 8}))
    assert scores.shape == tiny_session.loaded.inventory.unit_shape(unit)
    assert (scores >= 0).all() and scores.max() > 0


# the windows that matter for the flush: one batch, a window as long as the batches, a window
# longer than them (0.2: every score exactly 0), a window that ends open
WINDOWS = [{"batches": 1, "delta_t": 1}, {"batches": 2, "delta_t": 2}, {"batches": 2, "delta_t": 64},
           {"batches": 3, "delta_t": 2}]


@pytest.mark.parametrize("name", ["pins", "platon"])
def test_no_setting_in_the_declared_ranges_gives_all_equal_scores(name, tiny_session):
    """Every corner of the declared β1/β2 (and η) ranges, with every kind of window, raw scores:
    no unit's scores are all equal (0.2 gave all 0 with delta_t >= batches, and all 0 at β1 = 0)."""
    from itertools import product

    method = get_method(name)
    ends = lambda p: (method.param(p).low, method.param(p).high)
    etas = ends("eta") if name == "pins" else (None,)
    for window, beta1, beta2, eta in product(WINDOWS, ends("beta1"), ends("beta2"), etas):
        setting = {**window, "batch_size": 4, "beta1": beta1, "beta2": beta2, "normalize": False,
                   **({"eta": eta} if eta is not None else {})}
        scores = method.compute_units(tiny_session, method.units, method.validate(setting))
        for unit, s in scores.items():
            assert np.ptp(s) > 0, (setting, unit)


def test_score_only_mode_flushes_the_open_window():
    """Two updates in one window of 64: the flush folds their mean |S| into Ī and U (0.2: 0)."""
    w = torch.nn.Parameter(torch.tensor([2.0]))
    state = pins_mod.PinsState([[w]], eta=0.0, beta1=0.5, beta2=0.5, delta_t=64)
    for g in (1.0, 3.0):
        w.grad = torch.tensor([g])
        state.update()
    assert state.importance()[0][0].item() == 0.0  # the training lag: nothing folded yet
    state.flush()
    state.flush()  # idempotent
    # window mean |θ·g| = (2 + 6) / 2 = 4; Ī = 0.5·4 = 2; U = 0.5·|4 − 2| = 1; Ī·U = 2
    assert state.importance()[0][0].item() == pytest.approx(2.0)


def test_beta1_zero_is_refused_because_it_zeroes_every_score():
    for name in ("pins", "platon"):
        with pytest.raises(ParamError, match="beta1"):
            get_method(name).validate({"beta1": 0.0})


@pytest.mark.parametrize("official", [False, True])
def test_platon_training_mode_prunes_to_target_against_gradual_magnitude(tiny_session, official):
    from prunelens.analysis.training import train_command

    params = {k: v for k, v in SMALL_TRAIN.items() if k != "eta"}
    if not official:  # the defaults are official (Adamax + decay, importance after the step,
        # schedule, clipping, biases, deltaT 10); 0.2's: AdamW, before the step, weights only
        params.update(pins_mod.V02_VALUES["platon"])
    result = train_command(tiny_session, "platon", params)
    assert ("bias_sparsity" in result["extras"]["runs"]["platon"]) == official
    assert_run_result_shape(result)
    assert set(result["variants"]) == {"dense", "platon", "baseline"}
    assert set(result["extras"]["runs"]) == {"platon"}
    run = result["extras"]["runs"]["platon"]
    assert run["criterion"] == "platon" and not run["self_reg"]
    assert run["weight_sparsity"] == pytest.approx(0.6, abs=1e-3)
    baseline = result["extras"]["baseline"]
    assert baseline["criterion"] == "magnitude"
    assert baseline["weight_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert all(np.min(result["scores"][u]) >= 0 for u in ("head", "ffn"))


def test_methods_listing_names_platon_with_its_training_mode(capsys, tmp_path):
    from prunelens.analysis.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "training mode: prunelens train --method platon" in out
    assert "training mode: prunelens train --method pins" in out
    # nobody takes it for connection-sensitivity SNIP (Lee et al. 2019)
    assert "SNIP (spectral-normalized identity prior, Lin et al. 2020)" in out
    assert main(["methods", "--json", str(tmp_path / "m.json")]) == 0
    listed = {m["name"]: m for m in json.loads((tmp_path / "m.json").read_text())["methods"]}
    for name in ("pins", "platon"):  # training follows the official code by default (deltaT = 10
        # in every official script); every option's other value is 0.2's
        defaults = {p["name"]: p["default"] for p in listed[name]["training_params"]}
        assert defaults["delta_t"] == 10
        assert {k: defaults[k] for k in pins_mod.OFFICIAL_VALUES[name]} == pins_mod.OFFICIAL_VALUES[name]
        assert set(pins_mod.V02_VALUES[name]) == set(pins_mod.OFFICIAL_VALUES[name])
        assert all(defaults[k] != v for k, v in pins_mod.V02_VALUES[name].items())
        live = {p["name"]: p["default"] for p in listed[name]["params"]}
        assert live["delta_t"] == 1  # score-only mode: a few batches, the window flushed at the end


def test_smp_kl_on_a_three_sentence_batch_by_hand():
    """The official objective on 3 sentences: for each i, softmax over j ≠ i of 10·cos of the
    batch-centred vectors (temperature 0.1), KL(full ‖ pruned), averaged over i."""
    from prunelens.analysis.methods.smp import similarity_kl

    full = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    pruned = torch.tensor([[1.0, 0.5, 2.0], [0.5, 1.0, 0.0], [2.0, 1.0, 1.0]], dtype=torch.float64)

    def distributions(v):
        c = v - v.mean(0)
        c = c / c.norm(dim=1, keepdim=True)
        rows = []
        for i in range(3):
            logits = [10.0 * float(c[i] @ c[j]) for j in range(3) if j != i]
            z = np.exp(np.array(logits) - max(logits))
            rows.append(z / z.sum())
        return rows

    p, q = distributions(full), distributions(pruned)
    expected = np.mean([float(np.sum(pi * np.log(pi / qi))) for pi, qi in zip(p, q)])
    got = similarity_kl(full, pruned, temperature=0.1, similarity="centred-cosine")
    assert got == pytest.approx(expected, rel=1e-9)
    assert got != pytest.approx(similarity_kl(full, pruned, 0.1, "cosine"), rel=1e-3)  # centring matters
    assert get_method("smp").validate(None)["similarity"] == "centred-cosine"
