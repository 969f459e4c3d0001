"""admm / admm-quant: N:M and k-bit projections, the ADMM solver, live scores, training mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelens.analysis.fingerprints import weights_digest
from prunelens.analysis.errors import ParamError
from prunelens.analysis.methods.admm import (
    METHOD,
    AdmmState,
    constrained_linears,
    pattern_of,
    unit_shares,
)
from prunelens.analysis.methods.admm_quant import METHOD as QUANT
from prunelens.analysis.operations import accuracy_by_pattern
from prunelens.analysis.patterns import (
    block_counts,
    distinct_per_row,
    exactly_n_fraction,
    nm_mask,
    project_kbit,
    project_nm,
)
from prunelens.analysis.training import train_command
from tests.tiny import assert_run_result_shape

UNITS = ("head", "attention", "ffn", "neuron")
TINY_TRAIN = {"iterations": 2, "steps": 2, "finetune_steps": 3, "batch_size": 8}


def manual_nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    mask = torch.zeros_like(w)
    for r in range(w.shape[0]):
        for b in range(0, w.shape[1], m):
            block = [(abs(float(w[r, b + j])), j) for j in range(m)]
            for _, j in sorted(block, key=lambda t: -t[0])[:n]:
                mask[r, b + j] = 1
    return mask


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 4), (1, 2), (4, 8)])
def test_nm_mask_matches_manual_loop(n, m):
    torch.manual_seed(n * 10 + m)
    w = torch.randn(6, 16)
    mask = nm_mask(w, n, m)
    assert torch.equal(mask, manual_nm_mask(w, n, m))
    projected = project_nm(w, n, m)
    assert torch.equal(block_counts(projected, m), torch.full((6, 16 // m), n))
    assert exactly_n_fraction(projected, n, m) == 1.0
    assert torch.equal(projected[mask.bool()], w[mask.bool()])
    # every kept weight is at least as large as every dropped one of its block
    blocks, kept = w.abs().reshape(6, -1, m), mask.reshape(6, -1, m).bool()
    low_kept = torch.where(kept, blocks, torch.inf).amin(-1)
    high_dropped = torch.where(~kept, blocks, -torch.inf).amax(-1)
    assert torch.all(low_kept >= high_dropped)


def test_blocks_run_along_the_input_dimension():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [8.0, 7.0, 6.0, 5.0]])
    assert project_nm(w, 2, 4).tolist() == [[0, 0, 3, 4], [8, 7, 0, 0]]
    assert project_nm(w, 1, 2).tolist() == [[0, 2, 0, 4], [8, 0, 6, 0]]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_kbit_projection_grid(bits):
    torch.manual_seed(bits)
    w = torch.randn(5, 64)
    q = project_kbit(w, bits)
    assert int(distinct_per_row(q).max()) <= 2**bits
    # symmetric per-row grid: values are integer multiples of max|w_row| / (2^(b-1) - 1)
    scale = w.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert torch.allclose(q.abs().amax(1), w.abs().amax(1))
    assert (q - w).abs().le(scale / 2 + 1e-6).all()  # rounding to the nearest grid point
    assert torch.allclose(project_kbit(q, bits), q, atol=1e-6)  # idempotent


def test_bad_pattern_params():
    w = torch.randn(4, 16)
    with pytest.raises(ParamError, match="must not exceed M"):
        nm_mask(w, 5, 4)
    with pytest.raises(ParamError, match="does not divide"):
        nm_mask(w, 2, 3)
    with pytest.raises(ParamError, match="at least 2 bits"):
        project_kbit(w, 1)


@pytest.mark.parametrize("prox", [False, True])
def test_one_admm_iteration_lowers_residual(prox):
    torch.manual_seed(0)
    target = torch.randn(8, 16)
    w = torch.nn.Parameter(target.clone())
    state = AdmmState.start([w], lambda t: project_nm(t, 2, 4), rho=1.0, prox=prox)
    before = state.residual()
    assert before == pytest.approx(float((target - project_nm(target, 2, 4)).norm()), rel=1e-6)
    optimizer = torch.optim.SGD([w], lr=0.1)
    record = state.iterate(lambda: 0.1 * ((w - target) ** 2).sum(), optimizer, steps=5, growth=2.0)
    assert record["residual"] < before
    assert record["rho"] == 1.0 and state.rho == 2.0
    assert exactly_n_fraction(state.z[0], 2, 4) == 1.0


def test_scores_shapes_and_values(tiny_session):
    ctx = tiny_session
    inv = tiny_session.loaded.inventory
    for method in (METHOD, QUANT):
        for unit in UNITS:
            scores = method.score(ctx, unit, {})
            assert scores.shape == inv.unit_shape(unit)
            assert np.all((scores > 0) & (scores <= 1.0 + 1e-12))
    # 2:4 keeps the larger half of every block: at least half of each unit's squared norm
    heads = METHOD.score(ctx, "head", {"n": 2, "m": 4})
    assert np.all(heads >= 0.5)
    assert np.allclose(METHOD.score(ctx, "attention", {"n": 4, "m": 4}), 1.0)
    # head share by hand for layer 0, head 1
    layer = tiny_session.loaded.layers()[0]
    d = inv.head_size
    rows = slice(d, 2 * d)
    parts = [layer.attention.self.query.weight[rows], layer.attention.self.key.weight[rows],
             layer.attention.self.value.weight[rows], layer.attention.output.dense.weight[:, rows]]
    full = sum(float((p.double() ** 2).sum()) for p in parts)
    surv = (sum(float((project_nm(m.weight, 2, 4)[rows].double() ** 2).sum()) for m in
                (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value))
            + float((project_nm(layer.attention.output.dense.weight, 2, 4)[:, rows].double() ** 2).sum()))
    assert heads[0, 1] == pytest.approx(surv / full, rel=1e-9)
    # the live scores equal unit_shares on the shared model
    assert np.array_equal(heads, unit_shares(tiny_session.loaded.model, inv, "head",
                                             lambda t: project_nm(t, 2, 4)))


def test_bad_params_raise(tiny_session):
    ctx = tiny_session
    with pytest.raises(ParamError, match="must not exceed M"):
        METHOD.score(ctx, "head", {"n": 5, "m": 4})
    with pytest.raises(ParamError, match="does not divide the input dimension 16"):
        METHOD.score(ctx, "head", {"n": 2, "m": 3})
    with pytest.raises(ParamError, match="does not divide the input dimension 24"):
        METHOD.score(ctx, "ffn", {"n": 2, "m": 16})  # 16 divides hidden 16, not ffn 24
    with pytest.raises(ParamError):
        QUANT.score(ctx, "head", {"bits": 1})
    with pytest.raises(ParamError, match="must not exceed M"):
        train_command(tiny_session, "admm", {"n": 5, "m": 4, **TINY_TRAIN}, use_store=False)


def test_pattern_of_is_a_window_of_the_full_mask(tiny_loaded):
    full = tiny_loaded.layers()[1].intermediate.dense.weight
    piece = pattern_of(tiny_loaded, 1, "intermediate", 2, 4, rows=(3, 7), cols=(2, 9))
    assert (piece.row_start, piece.col_start) == (3, 0)
    assert piece.mask.shape == (4, 12)  # columns widened to whole blocks 0..12
    assert np.array_equal(piece.mask, nm_mask(full, 2, 4)[3:7, 0:12].numpy().astype(np.int8))
    assert np.allclose(piece.weights, full[3:7, 0:12].numpy())
    with pytest.raises(ParamError, match="unknown matrix"):
        pattern_of(tiny_loaded, 0, "gate", 2, 4)
    with pytest.raises(ParamError, match="layer 5"):
        pattern_of(tiny_loaded, 5, "query", 2, 4)


def test_accuracy_by_pattern_uses_a_copy(tiny_session):
    fp = weights_digest(tiny_session.loaded.model)

    rows = accuracy_by_pattern(tiny_session, [(2, 4), (4, 4)])
    assert [r["pattern"] for r in rows] == ["dense", "2:4", "4:4"]
    assert rows[2]["accuracy"] == rows[0]["accuracy"] and rows[2]["loss"] == pytest.approx(rows[0]["loss"], abs=1e-6)
    assert rows[1]["sparsity"] == 0.5
    assert weights_digest(tiny_session.loaded.model) == fp
    # cached: the second call reads the store
    assert accuracy_by_pattern(tiny_session, [(2, 4), (4, 4)]) == rows


def test_training_mode_meets_pattern_and_leaves_model_alone(tiny_session):

    model = tiny_session.loaded.model
    fp = weights_digest(model)
    grads = [p.requires_grad for p in model.parameters()]
    result = train_command(tiny_session, "admm", TINY_TRAIN)
    assert weights_digest(model) == fp
    assert [p.requires_grad for p in model.parameters()] == grads
    assert_run_result_shape(result)  # the one RunResult shape (issue 16)
    extras, histories, variants = result["extras"], result["histories"], result["variants"]
    assert extras["constraint"]["exactly_n_fraction"] == 1.0
    assert extras["constraint"]["sparsity"] == pytest.approx(0.5)
    assert [h["iteration"] for h in histories["ADMM"]] == [1, 2]
    assert histories["ADMM"][1]["rho"] == pytest.approx(1.5 * histories["ADMM"][0]["rho"])
    assert len(histories["fine-tune"]) == 3
    assert set(variants) == {"dense", "oneshot", "oneshot_finetuned", "admm_projected", "admm"}
    assert set(result["labels"]) == set(variants)
    inv = tiny_session.loaded.inventory
    assert np.asarray(result["scores"]["head"]).shape == inv.unit_shape("head")
    assert np.asarray(extras["shares"]["ffn"]).shape == inv.unit_shape("ffn")
    # one-shot = live scores' model evaluated on a projected copy
    live = accuracy_by_pattern(tiny_session, [(2, 4)], use_store=False)[1]
    assert variants["oneshot"]["loss"] == pytest.approx(live["loss"], rel=1e-6)
    for name, ev in variants.items():  # per-example correctness, for paired comparisons
        if name != "dense":
            correct = [c == "1" for c in ev["correct"]]
            assert len(correct) == len(tiny_session.data) and np.mean(correct) == pytest.approx(ev["accuracy"])
    assert train_command(tiny_session, "admm", TINY_TRAIN)["cached"] is True


def test_training_final_weights_satisfy_pattern(tiny_session, monkeypatch):
    """Inspect the trained copy itself (not only the reported statistic)."""
    from prunelens.analysis.methods import admm

    captured = {}
    real_evaluate = admm._evaluate

    def spy(evaluator, model):
        captured["model"] = model
        return real_evaluate(evaluator, model)

    monkeypatch.setattr(admm, "_evaluate", spy)
    train_command(tiny_session, "admm", {**TINY_TRAIN, "n": 1, "m": 4}, use_store=False)
    trained = captured["model"]
    assert trained is not tiny_session.loaded.model
    for _, _, lin in constrained_linears(trained):
        assert type(lin).__name__ == "Linear"  # parametrizations were removed
        assert torch.equal(block_counts(lin.weight, 4), torch.ones(lin.out_features, lin.in_features // 4,
                                                                      dtype=torch.long))


def test_quant_training(tiny_session):

    fp = weights_digest(tiny_session.loaded.model)
    result = train_command(tiny_session, "admm-quant", {**TINY_TRAIN, "bits": 3, "penalty": "gradient",
                                                        "finetune_baseline": True}, use_store=False)
    assert weights_digest(tiny_session.loaded.model) == fp
    assert_run_result_shape(result)
    assert result["extras"]["constraint"]["on_grid_fraction"] == 1.0
    assert result["extras"]["constraint"]["max_distinct_per_row"] <= 2**3
    assert "rounding" in result["labels"]["oneshot"]
    assert set(result["variants"]) == {"dense", "oneshot", "oneshot_finetuned", "admm_projected", "admm"}


def test_sr_ste_gradient_is_the_official_one():
    """aojunzz/NM-sparsity sparse_ops: forward with the 2:4-masked weight, backward
    grad + λ·(1 − mask)⊙W to the dense weight; by hand on a 2 × 4 weight."""
    from prunelens.analysis.methods.admm import ProjectedWeight, nm_projection

    w = torch.tensor([[0.5, -2.0, 0.1, 1.0], [3.0, 0.2, -0.3, -4.0]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]])  # top-2 |w| of every 4
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0]])
    decay = 0.01
    projected = ProjectedWeight(nm_projection(2, 4), decay)(w)
    assert torch.equal(projected.detach(), w.detach() * mask)
    (projected * c).sum().backward()
    expected = c + decay * (1 - mask) * w.detach()
    assert torch.allclose(w.grad, expected)


def test_the_one_shot_baseline_gets_the_same_training_budget(tiny_session):
    """Equal budgets: the one-shot 2:4 projection is trained with SR-STE for as many steps as
    ADMM's W-steps and fine-tune together (0.1 gave it none, or only the fine-tune's steps)."""
    import prunelens.analysis.methods.admm as admm_mod

    calls = []
    real = admm_mod.sr_ste_finetune

    def spy(model, projection, loss_fn, steps, *args, **kwargs):
        calls.append(steps)
        return real(model, projection, loss_fn, steps, *args, **kwargs)

    params = {"iterations": 2, "steps": 3, "finetune_steps": 4, "batch_size": 4}
    from unittest import mock

    with mock.patch.object(admm_mod, "sr_ste_finetune", spy):
        result = admm_mod.run_admm(tiny_session, admm_mod.METHOD.trainer.validate(params),
                                   admm_mod.no_progress, admm_mod.nm_projection(2, 4))
    assert calls == [2 * 3 + 4, 4]  # baseline: all 10 steps; ADMM: its 4 fine-tune steps after 6 W-steps
    assert "oneshot_finetuned" in result["variants"]
    assert "10 SR-STE steps (equal budget)" in result["labels"]["oneshot_finetuned"]


def test_srste_sgd_is_the_official_recipe_step_by_hand():
    """srste_optimizer=sgd: torch SGD (momentum 0.9, weight decay 5e-5) on the SR-STE gradient
    g + λ·(1 − mask)⊙W, the rate warmed up then cosine-decayed; two steps by hand on a 2 × 4 weight."""
    import math

    from torch import nn

    from prunelens.analysis.methods.admm import SGD_MOMENTUM, SGD_WEIGHT_DECAY, srste_optimizer

    w0 = torch.tensor([[0.5, -2.0, 0.1, 1.0], [3.0, 0.2, -0.3, -4.0]])
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0]])
    w = nn.Parameter(w0.clone())
    steps, lr, decay = 48, 0.1, 0.01
    opt, schedule = srste_optimizer([w], steps, 1e-3, "sgd", sgd_lr=lr)
    assert isinstance(opt, torch.optim.SGD) and (SGD_MOMENTUM, SGD_WEIGHT_DECAY) == (0.9, 5e-5)
    rates = []
    for _ in range(2):
        opt.zero_grad()
        projected = _srste_projected(w, decay)
        (projected * c).sum().backward()
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    warmup = round(5 / 120 * steps)  # 2 warm-up steps
    assert rates == pytest.approx([0.0, lr / warmup])
    # by hand: d = g + λ(1 − m)W + wd·W (straight through: g reaches every weight; m the top 2 |W|
    # of every 4 at that step); buf = d (first step), then 0.9·buf + d; W -= rate·buf
    by_hand, buf = w0.clone(), None
    for rate in rates:
        top2 = by_hand.abs().argsort(dim=1, descending=True)[:, :2]
        mask = torch.zeros_like(by_hand).scatter_(1, top2, 1.0)
        d = c + decay * (1 - mask) * by_hand + 5e-5 * by_hand
        buf = d if buf is None else 0.9 * buf + d
        by_hand = by_hand - rate * buf
    assert torch.allclose(w.detach(), by_hand, atol=1e-7)
    # after the warm-up: cosine decay to 0 at the last step
    for _ in range(warmup, steps):
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi)), abs=1e-12)
    adam, none = srste_optimizer([w], steps, 1e-3)  # the default: Adam at lr, constant
    assert isinstance(adam, torch.optim.Adam) and none is None and adam.param_groups[0]["lr"] == 1e-3


def _srste_projected(w, decay):
    from prunelens.analysis.methods.admm import ProjectedWeight, nm_projection

    return ProjectedWeight(nm_projection(2, 4), decay)(w)


def test_training_with_the_official_sgd_recipe_meets_the_pattern(tiny_session):
    adam = train_command(tiny_session, "admm", TINY_TRAIN, use_store=False)
    sgd = train_command(tiny_session, "admm", {**TINY_TRAIN, "srste_optimizer": "sgd"}, use_store=False)
    assert sgd["params"]["srste_optimizer"] == "sgd" and sgd["extras"]["constraint"]["exactly_n_fraction"] == 1.0
    assert sgd["histories"]["fine-tune"][0]["loss"] == pytest.approx(adam["histories"]["fine-tune"][0]["loss"])
    assert sgd["variants"]["admm"]["loss"] != pytest.approx(adam["variants"]["admm"]["loss"], rel=1e-6)
