"""Tests of ``smp-pruner`` (the learned SMP pruner) and the official-style masks of the ``smp``
ridge surrogate: each official formula against a hand computation on small tensors, seeded
determinism, and the training mode's three arms on the tiny random BERT.

``smp-pruner`` is not in the registry yet: it is imported directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunelens.analysis.errors import ParamError
from prunelens.analysis.fingerprints import weights_digest
from prunelens.analysis.gates import hook_count
from prunelens.analysis.methods import smp as smp_mod
from prunelens.analysis.methods import smp_pruner as sp
from prunelens.analysis.methods.smp_pruner import METHOD

SMALL = {"steps": 12, "batch_size": 8, "score_batches": 2}
SMALL_RUN = {"pruner_steps": 4, "batch_size": 4, "score_batches": 1, "steps": 3, "finetune_batch_size": 4,
             "max_length": 32}


# ---------------------------------------------------------------------------------------------
# the pruner network


def test_cnn_output_shape_and_range():
    cnn = sp.HeadPrunerCNN(ndf=8, size=64, generator=torch.Generator().manual_seed(0))
    maps = torch.softmax(torch.randn(5, 1, 64, 64) * 3, dim=-1)
    out = cnn(maps)
    assert out.shape == (5, 2)
    assert bool(((out > 0) & (out < 1)).all())
    big = cnn(torch.randn(5, 1, 64, 64) * 1e3)  # the sigmoid bounds any input
    assert bool(((big >= 0) & (big <= 1)).all())
    # the official layer plan for 64 tokens: four stride-2 convolutions (8, 16, 32, 64 channels), a
    # 4x4 output convolution to 2 channels, BatchNorm after all but the first, LeakyReLU 0.2
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 2]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert all(c.kernel_size == (4, 4) and c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.modules()) == 3
    assert isinstance(list(cnn.main)[-1], torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="power of two"):
        sp.HeadPrunerCNN(size=48)


def test_cnn_init_is_seeded():
    a = sp.HeadPrunerCNN(generator=torch.Generator().manual_seed(1))
    b = sp.HeadPrunerCNN(generator=torch.Generator().manual_seed(1))
    c = sp.HeadPrunerCNN(generator=torch.Generator().manual_seed(2))
    wa, wb, wc = (next(m.parameters()).detach() for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert abs(float(wa.std()) - 0.01) < 0.005  # the official N(0, 0.01)


def test_maps_are_padded_to_64_with_padding_rows_zeroed():
    attention = torch.rand(2, 3, 4, 5, 5)  # layers, batch, heads, seq, seq
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    maps = sp.padded_maps(attention, mask, 64)
    assert maps.shape == (2 * 3 * 4, 1, 64, 64)
    grid = maps.reshape(2, 3, 4, 64, 64)
    assert torch.equal(grid[1, 0, 2, :3, :5], attention[1, 0, 2, :3])
    assert bool((grid[:, 0, :, 3:, :] == 0).all())  # padding queries of sentence 0
    assert bool((grid[..., 5:] == 0).all()) and bool((grid[..., 5:, :] == 0).all())
    long = sp.padded_maps(torch.rand(1, 1, 1, 70, 70), None, 64)  # cropped
    assert long.shape == (1, 1, 64, 64)


def test_head_scores_average_the_cnn_over_the_batch():
    cnn = sp.HeadPrunerCNN(generator=torch.Generator().manual_seed(0)).eval()
    attention = torch.rand(2, 3, 4, 6, 6)
    scores = sp.head_scores(cnn, attention, None, channel=1)
    direct = cnn(sp.padded_maps(attention, None))[:, 1].reshape(2, 3, 4).mean(1)
    assert scores.shape == (2, 4)
    torch.testing.assert_close(scores, direct)


# ---------------------------------------------------------------------------------------------
# official mask sampling


def test_official_masks_half_the_layers_intact_and_the_declared_count_elsewhere():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = torch.rand(6, 12, requires_grad=True) * 2
        intact = sp.intact_layers(6, rng)
        mask = sp.sample_head_mask(logits, 6, intact, gen)
        values = mask.detach()
        assert set(values.unique().tolist()) <= {0.0, 1.0}
        rows = values.sum(1).tolist()
        assert len(intact) == 3
        assert [rows[i] for i in intact] == [12.0] * 3
        assert sorted(rows) == [6.0] * 3 + [12.0] * 3


def test_straight_through_gradient_flows_to_the_logits_of_pruned_layers():
    gen = torch.Generator().manual_seed(3)
    logits = torch.rand(4, 8, dtype=torch.float64, requires_grad=True)
    mask = sp.sample_head_mask(logits, 4, [1, 3], gen)
    weights = torch.arange(32, dtype=torch.float64).reshape(4, 8)
    (mask * weights).sum().backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert float(grad[[0, 2]].abs().sum()) > 0  # drawn layers: the soft samples' gradient
    assert float(grad[[1, 3]].abs().sum()) == 0  # intact layers: constant ones


def test_hard_gumbel_is_one_hot_with_soft_gradient_and_follows_the_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 0.0, 3.0], requires_grad=True)
    draws = sp.hard_gumbel(logits.expand(4000, 3), gen)
    assert torch.equal(draws.detach().sum(1), torch.ones(4000))
    freq = draws.detach().mean(0)
    expected = torch.softmax(logits.detach(), 0)
    assert torch.allclose(freq, expected, atol=0.03)  # Gumbel-max samples softmax(logits)
    draws[:, 2].sum().backward()
    assert float(logits.grad.abs().sum()) > 0


def test_layer_mask_is_the_union_of_draws_and_exact_even_for_peaked_scores():
    gen = torch.Generator().manual_seed(0)
    row = sp.layer_mask(torch.tensor([50.0, 0.0, 0.0, 0.0, 0.0, 0.0]), 3, gen)  # one head dominates
    assert float(row.detach().sum()) == 3.0 and float(row[0]) == 1.0
    assert float(sp.layer_mask(torch.zeros(4), 4, gen).sum()) == 4.0
    assert float(sp.layer_mask(torch.zeros(4), 0, gen).sum()) == 0.0


def test_sampling_is_seeded():
    logits = torch.rand(3, 6)
    a = sp.sample_head_mask(logits, 3, [0], torch.Generator().manual_seed(5))
    b = sp.sample_head_mask(logits, 3, [0], torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not all(torch.equal(a, sp.sample_head_mask(logits, 3, [0], torch.Generator().manual_seed(s)))
                   for s in range(6, 12))


# ---------------------------------------------------------------------------------------------
# the objective, by hand on a 3-sentence batch


FULL = [[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.0]]
PRUNED = [[1.0, 0.5, 2.0], [0.5, 1.0, 0.0], [2.0, 1.0, 1.0]]


def _centred_unit(rows):
    v = np.asarray(rows, dtype=np.float64)
    c = v - v.mean(0)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _softmax(x):
    z = np.exp(np.asarray(x) - max(x))
    return z / z.sum()


def test_smp_kl_on_a_three_sentence_batch_row_distribution_by_hand():
    """Each sentence's softmax over the other two of 10 x cos(centred vectors); KL(full ‖ pruned)
    averaged over the 3 sentences — written out in plain numpy."""
    def rows(v):
        c = _centred_unit(v)
        return [_softmax([10.0 * c[i] @ c[j] for j in range(3) if j != i]) for i in range(3)]

    expected = np.mean([np.sum(p * np.log(p / q)) for p, q in zip(rows(FULL), rows(PRUNED))])
    full = torch.tensor(FULL, dtype=torch.float64)
    pruned = torch.tensor(PRUNED, dtype=torch.float64, requires_grad=True)
    got = sp.representation_kl(full, pruned, "row", 0.1)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-10)
    assert float(got.detach()) == pytest.approx(smp_mod.similarity_kl(full, pruned.detach(), 0.1, "centred-cosine"),
                                       rel=1e-12)  # the ridge surrogate's KL: one function
    got.backward()
    assert torch.isfinite(pruned.grad).all() and float(pruned.grad.abs().sum()) > 0


def test_smp_kl_on_a_three_sentence_batch_official_pairs_by_hand():
    """The official cos_dist(group=2) + KLDivLoss: centre on all 3, keep the first 2 (n - n % 2),
    the 2 x 2 matrix of 10 x cos read as rows of 2 entries, a 2-way softmax each, the mean of
    p·log(p/q) over the 4 entries."""
    def groups(v):
        c = _centred_unit(v)[:2]
        sims = 10.0 * c @ c.T
        return [_softmax(list(sims.reshape(-1, 2)[g])) for g in range(2)]

    terms = [p * np.log(p / q) for p, q in zip(groups(FULL), groups(PRUNED))]
    expected = float(np.mean(np.concatenate(terms)))
    full = torch.tensor(FULL, dtype=torch.float64)
    pruned = torch.tensor(PRUNED, dtype=torch.float64)
    assert float(sp.representation_kl(full, pruned, "pairs", 0.1)) == pytest.approx(expected, rel=1e-10)
    assert float(sp.representation_kl(full, full.clone(), "pairs", 0.1)) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="distribution"):
        sp.representation_kl(full, pruned, "columns")


def test_feature_mask_is_the_official_dropout():
    gen = torch.Generator().manual_seed(0)
    m = sp.feature_mask(4000, 0.8, gen)
    assert set(m.unique().tolist()) <= {0.0, 5.0}
    assert abs(float((m > 0).float().mean()) - 0.2) < 0.03
    assert torch.equal(sp.feature_mask(7, 0.0, gen), torch.ones(7))
    assert all(float(sp.feature_mask(1, 0.95, gen).sum()) > 0 for _ in range(20))  # never all dropped


# ---------------------------------------------------------------------------------------------
# the method on the tiny model


def test_scores_are_seeded_deterministic_and_leave_the_model_alone(tiny_session):
    ctx = tiny_session
    model = tiny_session.loaded.model
    before = weights_digest(model)
    torch.manual_seed(1)
    a = METHOD.score(ctx, "head", {**SMALL, "seed": 3})
    torch.manual_seed(2)  # another global state: the scores must not depend on it
    np.random.seed(2)
    b = METHOD.score(ctx, "head", {**SMALL, "seed": 3})
    c = METHOD.score(ctx, "head", {**SMALL, "seed": 4})
    assert a.shape == (2, 4)
    assert bool(((a > 0) & (a < 1)).all())
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert hook_count(model) == 0
    assert weights_digest(model) == before
    assert not any(p.requires_grad for p in model.parameters())


def test_pruner_training_moves_the_cnn_and_records_every_step(tiny_session):
    data = tiny_session.data
    params = METHOD.validate({**SMALL, "distribution": "pairs", "sentence_vector": "cls"})
    scores, history = sp.train_pruner(tiny_session.loaded.model, tiny_session.loaded.tokenizer, data, params)
    assert [h["step"] for h in history] == list(range(1, 13))
    assert all(math.isfinite(h["loss"]) and h["loss"] >= 0 for h in history)
    assert scores.shape == (2, 4) and float(scores.std()) > 0


def test_the_method_declares_its_cost_params_and_deviations():
    assert METHOD.name == "smp-pruner" and METHOD.units == ("head",)
    assert METHOD.expensive  # asks for a click in the dashboard
    assert METHOD.cost is not None and METHOD.trainer is not None and METHOD.trainer.cost is not None
    declared = [*METHOD.params, *METHOD.trainer.params]
    for p in declared:
        if p.kind in ("int", "float"):
            assert math.isfinite(p.low) and math.isfinite(p.high), p.name
    assert "seed" in {p.name for p in METHOD.params}
    aspects = {d.aspect for d in METHOD.deviations}
    assert {"attention maps", "budget", "similarity distribution", "what meta means"} <= aspects
    assert METHOD.validate(None)["steps"] * METHOD.validate(None)["batch_size"] >= 3000  # a few hundred steps
    assert "meta" in sp.__doc__ and "pruner" in sp.__doc__
    assert METHOD.default_scope == "layer" and METHOD.default_sparsity == 0.5


def test_bad_parameters_are_refused_with_clear_messages():
    with pytest.raises(ParamError, match=r"parameter 'ndf' must be in \[1, 32\]"):
        METHOD.validate({"ndf": 0})
    with pytest.raises(ParamError, match="parameter 'distribution' must be one of row, pairs"):
        METHOD.validate({"distribution": "columns"})
    with pytest.raises(ParamError, match="parameter 'batch_size' must be in"):
        METHOD.validate({"batch_size": 2})
    with pytest.raises(ParamError, match="over the budget"):
        METHOD.validate({"steps": 5000, "batch_size": 64})
    with pytest.raises(ParamError, match="has no parameter 'gumbel'"):
        METHOD.validate({"gumbel": 1})
    with pytest.raises(ParamError, match="parameter 'prune_ratio' must be in"):
        METHOD.trainer.validate({"prune_ratio": 1.0})
    with pytest.raises(ParamError, match="scores units head"):
        METHOD.check_unit("ffn")


# ---------------------------------------------------------------------------------------------
# training mode: SMP's regime on the tiny model


def test_training_mode_returns_a_run_result_with_three_arms_and_paired_correctness(tiny_session):
    from prunelens.analysis.compare import paired_difference
    from prunelens.analysis.run_result import normalise

    model = tiny_session.loaded.model
    before = weights_digest(model)
    params = METHOD.trainer.validate(SMALL_RUN)
    run = METHOD.trainer.run(tiny_session, params, lambda f, m: None)
    result = normalise({"method": "smp-pruner", "params": params, **run})
    assert set(result.variants) == {"smp_pruner", "random", "magnitude"}
    n = len(tiny_session.data)
    for name, metrics in result.variants.items():
        assert len(metrics["correct"]) == n and set(metrics["correct"]) <= {"0", "1"}
        assert metrics["accuracy"] == pytest.approx(metrics["correct"].count("1") / n)
        assert len(result.histories[name]) == 3
    assert len(result.histories["pruner training"]) == 4
    assert np.asarray(result.scores["head"]).shape == (2, 4)
    masks = result.extras["masks"]
    for name in ("smp_pruner", "random", "magnitude"):
        assert [sum(row) for row in masks[name]] == [2, 2]  # the top half of every layer kept
    kept = np.asarray(masks["smp_pruner"], dtype=bool)
    scores = np.asarray(result.scores["head"])
    assert all(scores[i][kept[i]].min() >= scores[i][~kept[i]].max() for i in range(2))
    assert not result.extras["pretrained_start"] and "not a pre-trained encoder" in result.extras["start"]
    assert any("pre-trained" in note for note in result.notes)
    diff = paired_difference([[int(c) for c in result.variants["smp_pruner"]["correct"]]],
                             [[int(c) for c in result.variants["random"]["correct"]]])
    assert diff.examples == n
    assert [r["variant"] for r in result.variant_rows()][0].startswith("SMP pruner")
    assert weights_digest(model) == before and hook_count(model) == 0
    again = METHOD.trainer.run(tiny_session, params, lambda f, m: None)
    assert again["variants"]["smp_pruner"]["correct"] == run["variants"]["smp_pruner"]["correct"]
    assert again["scores"] == run["scores"]


def test_the_default_starts_from_the_pretrained_minilm_with_a_fresh_classifier(tiny_loaded, monkeypatch):
    """For the embedded default the pruned model is ``load_base_for_classification()`` (the
    pre-trained MiniLM-L6 with a fresh classifier); torch's global generator is left alone."""
    from dataclasses import replace

    from prunelens.analysis.hooks import private_copy

    calls = []

    def fake_base(num_labels=2):
        calls.append(num_labels)
        torch.manual_seed(0)  # as the real one does
        return private_copy(tiny_loaded.model), tiny_loaded.tokenizer

    monkeypatch.setattr(sp, "load_base_for_classification", fake_base)
    default = replace(tiny_loaded, name="default", source="embedded")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    model, what, pretrained = sp.starting_model(default, seed=0)
    assert calls == [2] and pretrained and "pre-trained MiniLM-L6" in what
    assert torch.equal(torch.rand(1), expected_next)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    other, what, pretrained = sp.starting_model(tiny_loaded, seed=0)
    assert not pretrained and other is not tiny_loaded.model
    assert not torch.equal(other.classifier.weight, tiny_loaded.model.classifier.weight)  # re-initialised
    assert torch.equal(other.base_model.encoder.layer[0].attention.self.query.weight,
                       tiny_loaded.model.base_model.encoder.layer[0].attention.self.query.weight)


# ---------------------------------------------------------------------------------------------
# the ridge surrogate's official-style masks


def test_ridge_surrogate_official_masks_by_default():
    masks = smp_mod.sample_official_masks(6, 12, 50, 0.5, seed=0)
    assert masks.shape == (50, 6, 12)
    for mask in masks:
        rows = sorted(mask.sum(1).tolist())
        assert rows == [6.0] * 3 + [12.0] * 3
    assert np.array_equal(masks, smp_mod.sample_official_masks(6, 12, 50, 0.5, seed=0))
    assert not np.array_equal(masks, smp_mod.sample_official_masks(6, 12, 50, 0.5, seed=1))
    assert smp_mod.official_keep(12, 0.25) == 3
    ridge = smp_mod.METHOD
    assert ridge.validate(None)["mask_style"] == "official"
    assert ridge.validate({"mask_style": "independent"})["mask_style"] == "independent"
    with pytest.raises(ParamError, match="mask_style"):
        ridge.validate({"mask_style": "gumbel"})
    what = {d.aspect: d.prunelens for d in ridge.deviations}
    assert "smp-pruner" in what["what is learned"] and "official" in what["masks"]
    assert "ridge surrogate" in ridge.title.lower()


def test_ridge_surrogate_scores_with_both_mask_styles(tiny_session):
    ctx = tiny_session
    small = {"samples": 8, "batch_size": 10, "batches": 1}
    official = smp_mod.METHOD.score(ctx, "head", small)
    independent = smp_mod.METHOD.score(ctx, "head", {**small, "mask_style": "independent"})
    assert official.shape == independent.shape == (2, 4)
    assert np.isfinite(official).all() and not np.array_equal(official, independent)
    assert abs(float(official.sum())) < 1e-9  # fixed removed count: only differences identified
