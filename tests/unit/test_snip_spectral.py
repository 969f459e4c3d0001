"""Tests of ``prunelens.analysis.spectral`` and the ``snip`` method (Lin et al. 2020) on the tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import hook_count
from prunelens.analysis.methods import get_method
from prunelens.analysis.methods.snip import TRAINER, function_norms
from prunelens.analysis.models import CHECKPOINT_DIR
from prunelens.analysis.spectral import (
    MATRICES,
    activation_statistics,
    layer_matrices,
    sigma_max,
    spectral_norms,
    spectrally_normalized,
)
from prunelens.analysis.training import train_command
from tests.tiny import assert_run_result_shape

SNIP = get_method("snip")


def _all_hooks(model) -> int:
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
    return total


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, state) -> bool:
    now = model.state_dict()
    return set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)


def _manual_norms(loaded, batches, relative: bool = False):
    """Heads, attention and FFN function norms computed from captured activations and weights,
    one head slice at a time (independent of the method's einsum)."""
    layers = loaded.layers()
    inv = loaded.inventory
    d = inv.head_size
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        dense = layer.attention.output.dense
        handles.append(dense.register_forward_pre_hook(
            lambda m, a, i=i: seen.__setitem__((i, "ctx"), a[0].detach().clone())))
        handles.append(layer.attention.self.query.register_forward_pre_hook(
            lambda m, a, i=i: seen.__setitem__((i, "x"), a[0].detach().clone())))
        handles.append(layer.intermediate.dense.register_forward_pre_hook(
            lambda m, a, i=i: seen.__setitem__((i, "x_ffn"), a[0].detach().clone())))
        handles.append(dense.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__((i, "attn"), o.detach().clone())))
        handles.append(layer.output.dense.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__((i, "ffn"), o.detach().clone())))
    head = np.zeros((inv.layers, inv.heads))
    attn = np.zeros(inv.layers)
    ffn = np.zeros(inv.layers)
    tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                loaded.model(**batch.model_inputs())
                mask = batch.attention_mask.bool()
                tokens += int(mask.sum())
                for i, layer in enumerate(layers):
                    W = layer.attention.output.dense.weight.double()
                    ctx = seen[(i, "ctx")][mask].double()
                    x = seen[(i, "x")][mask].double().norm(dim=-1) if relative else 1.0
                    x_ffn = seen[(i, "x_ffn")][mask].double().norm(dim=-1) if relative else 1.0
                    for h in range(inv.heads):
                        contrib = ctx[:, h * d:(h + 1) * d] @ W[:, h * d:(h + 1) * d].T
                        head[i, h] += float((contrib.norm(dim=-1) / x).sum())
                    attn[i] += float((seen[(i, "attn")][mask].double().norm(dim=-1) / x).sum())
                    ffn[i] += float((seen[(i, "ffn")][mask].double().norm(dim=-1) / x_ffn).sum())
    finally:
        for handle in handles:
            handle.remove()
    return head / tokens, attn / tokens, ffn / tokens


# ---------------------------------------------------------------------------------------------
# spectral


def test_power_iteration_matches_matrix_norm(tiny_loaded):
    for layer in tiny_loaded.layers():
        for linear in layer_matrices(layer).values():
            exact = float(torch.linalg.matrix_norm(linear.weight.double(), ord=2))
            assert abs(sigma_max(linear.weight) - exact) < 1e-3
    # a hard case: the top two singular values 0.1% apart (textbook power iteration is slow here)
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(60, 40, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(90, 40, generator=g, dtype=torch.float64))
    s = torch.linspace(3.0, 0.1, 40, dtype=torch.float64)
    s[1] = 2.997
    W = (U * s) @ V.T
    assert abs(sigma_max(W) - 3.0) < 1e-3
    assert abs(sigma_max(W, iters=2000, vectors=1) - 3.0) < 1e-3  # textbook, many steps
    assert sigma_max(torch.zeros(5, 7)) == 0.0


def test_spectral_norms_table(tiny_loaded):
    table = spectral_norms(tiny_loaded)
    assert list(table.columns[:3]) == ["layer", "matrix", "sigma"]
    assert len(table) == tiny_loaded.inventory.layers * len(MATRICES)
    assert table["matrix"].tolist()[:6] == list(MATRICES)
    row = table[(table.layer == 1) & (table.matrix == "intermediate")].iloc[0]
    w = tiny_loaded.layers()[1].intermediate.dense.weight
    assert (row.rows, row.cols) == tuple(w.shape)
    assert abs(row.sigma - float(torch.linalg.matrix_norm(w.double(), ord=2))) < 1e-3


def test_spectrally_normalized_copy(tiny_loaded):
    before = _state(tiny_loaded.model)
    capped = spectrally_normalized(tiny_loaded, 1.5)
    exact = spectrally_normalized(tiny_loaded.model, None)
    untouched = spectrally_normalized(tiny_loaded.model, 1e6)
    assert _same_state(tiny_loaded.model, before)  # the original is not changed
    for i, layer in enumerate(tiny_loaded.layers()):
        for name, linear in layer_matrices(layer).items():
            sigma = float(torch.linalg.matrix_norm(linear.weight.double(), ord=2))
            w_cap = layer_matrices(capped.bert.encoder.layer[i])[name].weight
            w_exact = layer_matrices(exact.bert.encoder.layer[i])[name].weight
            w_same = layer_matrices(untouched.bert.encoder.layer[i])[name].weight
            assert float(torch.linalg.matrix_norm(w_cap.double(), ord=2)) <= 1.5 + 1e-4
            assert abs(float(torch.linalg.matrix_norm(w_exact.double(), ord=2)) - 1.0) < 1e-4
            torch.testing.assert_close(w_cap, linear.weight / max(1.0, sigma / 1.5))
            assert torch.equal(w_same, linear.weight)
            assert torch.equal(layer_matrices(capped.bert.encoder.layer[i])[name].bias, linear.bias)
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(ParamError, match="spectral cap c must be a positive number"):
            spectrally_normalized(tiny_loaded, bad)


def test_normalization_effect(tiny_loaded, tiny_session):
    from prunelens.analysis.spectral import normalization_effect

    table = normalization_effect(tiny_loaded, tiny_session.evaluator, [1e6, 1.0, None])
    base = tiny_session.evaluator.base
    assert list(table["exact"]) == [False, False, False, True]
    assert table["matrices_rescaled"].tolist() == [0, 0, 12, 12]
    assert table["loss"].iloc[0] == base.loss and table["loss"].iloc[1] == pytest.approx(base.loss)
    exact = tiny_session.evaluator.evaluate(model=spectrally_normalized(tiny_loaded, None))
    assert table["loss"].iloc[3] == pytest.approx(exact.loss)


def test_activation_statistics(tiny_loaded, tiny_session):
    batches = tiny_session.evaluator.batches
    stats = activation_statistics(tiny_loaded, batches=batches, c=1.0, bins=20, max_samples=50)
    inv = tiny_loaded.inventory
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    assert stats.tokens == tokens and stats.examples == len(tiny_session.data)
    assert len(stats.plain) == len(stats.normalized) == inv.layers
    for plain, normed in zip(stats.plain, stats.normalized):
        for q in ("gelu", "attention_norm", "ffn_norm"):
            a, b = getattr(plain, q), getattr(normed, q)
            np.testing.assert_array_equal(a.edges, b.edges)
            assert a.counts.sum() == a.n and len(a.edges) == 21 and len(a.samples) == 50
        assert plain.attention_norm.n == tokens and plain.gelu.n == tokens * inv.ffn
        assert normed.ffn_norm.mean < plain.ffn_norm.mean  # σ ≈ 2.3 capped at 1 shrinks outputs
    # a cap far above every σ leaves the model as it is: identical histograms
    same = activation_statistics(tiny_loaded, batches=batches, c=1e6, bins=20)
    for plain, normed in zip(same.plain, same.normalized):
        np.testing.assert_array_equal(plain.ffn_norm.counts, normed.ffn_norm.counts)
        np.testing.assert_array_equal(plain.gelu.counts, normed.gelu.counts)
    assert set(stats.table()["version"]) == {"plain", "normalized"}
    assert _all_hooks(tiny_loaded.model) == 0


# ---------------------------------------------------------------------------------------------
# snip scores


@pytest.mark.parametrize("relative", [False, True])
def test_function_norms_equal_manual_computation(tiny_loaded, tiny_session, relative):
    ctx = tiny_session
    head, attn, ffn = _manual_norms(tiny_loaded, tiny_session.evaluator.batches, relative)
    params = {"relative": relative}
    np.testing.assert_allclose(SNIP.score(ctx, "head", params), head, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(SNIP.score(ctx, "attention", params), attn, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(SNIP.score(ctx, "ffn", params), ffn, rtol=1e-5, atol=1e-7)
    # a block's output is the sum of its heads' contributions plus the bias (triangle inequality)
    if not relative:
        bias = np.array([float(la.attention.output.dense.bias.norm())
                         for la in tiny_loaded.layers()])
        assert np.all(attn <= head.sum(1) + bias + 1e-6)
    assert _all_hooks(tiny_loaded.model) == 0 and hook_count(tiny_loaded.model) == 0


def test_scores_shapes_units_and_spectral_cap(tiny_loaded, tiny_session):
    ctx = tiny_session
    inv = tiny_loaded.inventory
    for unit in ("head", "attention", "ffn"):
        scores = SNIP.score(ctx, unit, {})
        assert scores.shape == inv.unit_shape(unit) and np.all(scores > 0)
        # a cap above every σ_max changes nothing; a cap of 1 shrinks every norm here (σ ≈ 2.3)
        np.testing.assert_allclose(SNIP.score(ctx, unit, {"spectral_cap": 1e6}), scores, rtol=1e-6)
        assert np.all(SNIP.score(ctx, unit, {"spectral_cap": 1.0}) < scores)
        assert SNIP.score(ctx, unit, {"examples": 8}).shape == inv.unit_shape(unit)
    with pytest.raises(ParamError, match="scores units head, attention, ffn, not 'neuron'"):
        SNIP.score(ctx, "neuron", {})
    assert _all_hooks(tiny_loaded.model) == 0


def test_snip_norms_are_measured_on_the_training_split(tiny_session, tiny_loaded, tmp_path, monkeypatch):
    """Like every other criterion: a seeded sample of the training data, equal to the norms over
    those sentences by hand and different from the norms on the evaluation sentences."""
    from prunelens.analysis import batches as batches_mod
    from prunelens.analysis.data import load_data, tokenize_batches
    from tests.tiny import write_tiny_csv

    other = load_data(str(write_tiny_csv(tmp_path / "train.csv", n=24, seed=5)))
    monkeypatch.setattr(batches_mod, "training_data", lambda session: (other, "a test's train split"))
    head, attn, ffn = _manual_norms(tiny_loaded, tokenize_batches(tiny_loaded.tokenizer, other, 8)[0])
    np.testing.assert_allclose(SNIP.score(tiny_session, "head", {}), head, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(SNIP.score(tiny_session, "ffn", {}), ffn, rtol=1e-5, atol=1e-7)
    on_eval, _, _ = _manual_norms(tiny_loaded, tiny_session.evaluator.batches)
    assert not np.allclose(head, on_eval, rtol=1e-3)
    sample = SNIP.score(tiny_session, "head", {"examples": 8})  # 8 of the 24, seeded
    assert np.array_equal(sample, SNIP.score(tiny_session, "head", {"examples": 8}))
    assert not np.allclose(sample, SNIP.score(tiny_session, "head", {"examples": 8, "seed": 1}))


def test_head_contributions_sum_to_the_dense_output(tiny_loaded):
    from prunelens.analysis.methods.snip import head_contributions, head_norms

    torch.manual_seed(0)
    dense = tiny_loaded.layers()[0].attention.output.dense
    heads = tiny_loaded.inventory.heads
    ctx = torch.randn(7, dense.in_features, dtype=torch.float64)
    parts = head_contributions(ctx, dense.weight.double(), heads)
    assert parts.shape == (7, heads, dense.out_features)
    torch.testing.assert_close(parts.sum(1) + dense.bias.double(),
                               ctx @ dense.weight.double().T + dense.bias.double())
    torch.testing.assert_close(head_norms(ctx, dense.weight.double(), heads), parts.norm(dim=-1))


def test_exact_normalization_scores_use_normalized_weights(tiny_loaded, tiny_session):
    model = spectrally_normalized(tiny_loaded, None)
    expected = function_norms(model, tiny_session.evaluator.batches)
    got = SNIP.score(tiny_session, "head", {"exact_spectral": True})
    np.testing.assert_allclose(got, expected.head, rtol=1e-6)


def test_bad_params_raise(tiny_session):
    with pytest.raises(ParamError, match=r"parameter 'spectral_cap' must be in \[0.0"):
        SNIP.validate({"spectral_cap": -1})
    with pytest.raises(ParamError, match="parameter 'relative' must be true or false, got 'maybe'"):
        SNIP.validate({"relative": "maybe"})
    with pytest.raises(ParamError, match="has no parameter 'c'"):
        SNIP.validate({"c": 1})
    with pytest.raises(ParamError, match="parameter 'sn' must be one of cap, exact, initial, off"):
        TRAINER.validate({"sn": "sometimes"})
    with pytest.raises(ParamError, match="parameter 'steps' must be in"):
        TRAINER.validate({"steps": 0})


def test_hooks_removed_after_an_error(tiny_loaded):
    class Broken:
        def model_inputs(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        function_norms(tiny_loaded.model, [Broken()])
    assert _all_hooks(tiny_loaded.model) == 0


# ---------------------------------------------------------------------------------------------
# training mode


def test_training_mode(tiny_loaded, tiny_session):
    before = _state(tiny_loaded.model)
    out = train_command(tiny_session, "snip", {"steps": 3, "batch_size": 8, "sn": "exact",
                                                "lr": 1e-4})
    inv = tiny_loaded.inventory
    assert_run_result_shape(out)  # the one RunResult shape (issue 16)
    variants, extras, history = out["variants"], out["extras"], out["histories"]["trained"]
    assert set(variants) == {"untrained", "trained", "control"} and "params" in out and "seconds" in out
    for key in ("scores_without_training", "sigma", "train_data", "pruned"):
        assert key in extras
    for scores in (out["scores"], extras["scores_without_training"]):
        assert np.asarray(scores["head"]).shape == (inv.layers, inv.heads)
        assert np.asarray(scores["attention"]).shape == (inv.layers,)
        assert np.asarray(scores["ffn"]).shape == (inv.layers,)
    assert extras["scores"] == {"tokens": extras["scores"]["tokens"], "relative": False}  # the norms' own
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history:
        assert set(h) == {"step", "loss", "task_loss", "penalty"}
        assert h["loss"] == pytest.approx(h["task_loss"] + 0.01 * h["penalty"], rel=1e-5)
    assert {"accuracy", "loss", "margin"} <= set(variants["trained"])
    assert variants["trained"]["n"] == len(tiny_session.data)
    assert "evaluation data itself" in extras["train_data"]["note"]
    # the untrained scores are the score-only method's; exact SN leaves σ_max ≈ 1 after training
    np.testing.assert_allclose(extras["scores_without_training"]["head"],
                               SNIP.score(tiny_session, "head", {}), rtol=1e-9)
    assert all(abs(r["sigma"] - 1.0) < 2e-2 for r in extras["sigma"]["after"])
    # what exact SN alone does to the loaded model, before any step: the W/σ copy's evaluation
    start = extras["evaluation_at_start"]
    normalized = tiny_session.evaluator.evaluate(model=spectrally_normalized(tiny_loaded, None))
    assert start["n"] == len(tiny_session.data)
    assert start["loss"] == pytest.approx(normalized.loss, rel=1e-3)
    assert start["loss"] != pytest.approx(tiny_session.evaluator.base.loss, rel=1e-3)
    assert _same_state(tiny_loaded.model, before)
    assert not any(p.requires_grad for p in tiny_loaded.model.parameters())
    assert _all_hooks(tiny_loaded.model) == 0
    again = train_command(tiny_session, "snip", {"steps": 3, "batch_size": 8, "sn": "exact",
                                                  "lr": 1e-4})
    assert again["cached"] is True and again["histories"] == out["histories"]
    # the λ = 0 control: same steps, no identity prior in its loss
    control = out["histories"]["control"]
    assert out["labels"] == {"control": "λ = 0 control"}
    assert np.asarray(extras["control"]["scores"]["head"]).shape == (inv.layers, inv.heads)
    assert [h["step"] for h in control] == [1, 2, 3]
    assert all(h["loss"] == pytest.approx(h["task_loss"], rel=1e-6) for h in control)
    assert control[0]["task_loss"] == pytest.approx(history[0]["task_loss"], rel=1e-5)
    # every model pruned by its own norms on the same grid
    from prunelens.analysis.methods.snip import PRUNE_GRID

    assert [(r["unit"], r["sparsity"]) for r in extras["pruned"]] == list(PRUNE_GRID)
    for row in extras["pruned"]:
        assert set(row) == {"unit", "sparsity", "trained", "untrained", "control"}
        assert all(0.0 <= row[m]["accuracy"] <= 1.0 for m in ("trained", "untrained", "control"))
    # the untrained row is the score-only scores' own pruning, evaluated as the Prune page does
    from prunelens.analysis.operations import evaluate_mask
    from prunelens.analysis.pruning import select

    half = [r for r in extras["pruned"] if r["unit"] == "head" and r["sparsity"] == 0.5][0]
    mask = select(np.asarray(extras["scores_without_training"]["head"]), 0.5)
    result, _ = evaluate_mask(tiny_session, "head", mask)
    assert half["untrained"]["accuracy"] == pytest.approx(result["pruned"]["accuracy"], abs=1e-9)


def test_identity_prior_by_hand():
    """Σ_l [Σ_h mean ||c_h W_hᵀ|| + mean ||A(x)|| + mean ||FFN(x)||] over non-padding tokens."""
    from prunelens.analysis.methods.snip import identity_prior
    from prunelens.analysis.spectral import LayerCapture

    g = torch.Generator().manual_seed(0)
    b, t, hidden, heads = 2, 3, 4, 2
    keep = torch.tensor([[True, True, False], [True, False, False]])
    caps, weights, want = [], [], 0.0
    for _ in range(2):
        cap = LayerCapture(layer_input=torch.randn(b, t, hidden, generator=g),
                           context=torch.randn(b, t, hidden, generator=g),
                           attention_out=torch.randn(b, t, hidden, generator=g),
                           ffn_input=torch.randn(b, t, hidden, generator=g),
                           ffn_out=torch.randn(b, t, hidden, generator=g))
        w = torch.randn(hidden, hidden, generator=g)
        caps.append(cap)
        weights.append(w)
        tokens = [(i, j) for i in range(b) for j in range(t) if keep[i, j]]
        for h in range(heads):
            cols = slice(2 * h, 2 * h + 2)
            want += sum(float(torch.linalg.norm(cap.context[i, j, cols] @ w[:, cols].T))
                        for i, j in tokens) / len(tokens)
        want += sum(float(torch.linalg.norm(cap.attention_out[i, j])) for i, j in tokens) / len(tokens)
        want += sum(float(torch.linalg.norm(cap.ffn_out[i, j])) for i, j in tokens) / len(tokens)
    got = identity_prior(caps, weights, heads, keep, relative=False)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_cap_mode_pulls_every_top_singular_value_down(tiny_loaded):
    import copy

    from prunelens.analysis.methods.snip import _register_sn

    model = copy.deepcopy(tiny_loaded.model)
    before = {f"{i}.{n}": float(torch.linalg.matrix_norm(m.weight.double(), ord=2))
              for i, layer in enumerate(model.bert.encoder.layer) for n, m in layer_matrices(layer).items()}
    _register_sn(model, "cap", 0.8, seed=0)
    for i, layer in enumerate(model.bert.encoder.layer):
        for n, m in layer_matrices(layer).items():
            sigma = float(torch.linalg.matrix_norm(m.weight.double(), ord=2))
            assert sigma == pytest.approx(0.8 * before[f"{i}.{n}"], rel=1e-3)


def test_training_initial_cap_starts_from_the_model(tiny_loaded, tiny_session):
    """sn=initial with λ=0 and lr=0: the first step's task loss is the unchanged model's loss."""
    from prunelens.analysis.methods.snip import _train_batches
    from prunelens.analysis.batches import training_data

    out = train_command(tiny_session, "snip", {"steps": 1, "batch_size": 8, "lr": 1e-8, "sn": "initial",
                                                "penalty": 0.0, "control": False}, use_store=False)
    data, _ = training_data(tiny_session)
    (batch,) = _train_batches(tiny_loaded.tokenizer, data, 1, 8, 0)
    with torch.no_grad():
        logits = tiny_loaded.model(**batch.model_inputs()).logits
    loss = float(torch.nn.functional.cross_entropy(logits, batch.labels))
    assert out["histories"]["trained"][0]["task_loss"] == pytest.approx(loss, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# the real default model


@pytest.mark.slow
def test_power_iteration_on_default_model():
    if not (CHECKPOINT_DIR / "manifest.json").exists():
        pytest.skip("default checkpoint not built")
    from prunelens.analysis.models import load_model

    loaded = load_model("default")
    table = spectral_norms(loaded)
    for row in table.itertuples():
        layer = loaded.layers()[row.layer]
        w = layer_matrices(layer)[row.matrix].weight.double()
        assert abs(row.sigma - float(torch.linalg.matrix_norm(w, ord=2))) < 1e-3
