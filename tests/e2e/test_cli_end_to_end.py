"""Evaluator vs a plain loop, Michel vs finite differences, the store, and the CLI's JSON shapes."""

from __future__ import annotations

import json
import multiprocessing
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunelens.analysis.cache import Key, ResultStore, StoreWarning, write_manifest
from prunelens.analysis.cli import main
from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.methods.michel import gate_gradients
from prunelens.analysis.operations import compute_scores


def test_evaluator_equals_a_plain_loop(tiny_session):
    loaded, data = tiny_session.loaded, tiny_session.data
    mask = np.ones((2, 4))
    mask[0, 1] = mask[1, 3] = 0
    correct, losses, margins = [], [], []
    with torch.no_grad(), gated(loaded.model, head=mask):
        for text, label in zip(data.texts, data.labels):
            enc = loaded.tokenizer(text, return_tensors="pt")
            logits = loaded.model(**enc).logits[0].double()
            correct.append(float(logits.argmax() == label))
            losses.append(float(F.cross_entropy(logits[None], torch.tensor([label]))))
            other = logits.clone()
            other[label] = -float("inf")
            margins.append(float(logits[label] - other.max()))
    result = tiny_session.evaluator.evaluate(Masks(head=mask))
    assert result.n == len(data)
    assert result.accuracy == pytest.approx(np.mean(correct), abs=1e-12)
    assert result.loss == pytest.approx(np.mean(losses), abs=1e-5)
    assert result.margin == pytest.approx(np.mean(margins), abs=1e-5)
    assert result.loss_se == pytest.approx(np.std(losses, ddof=1) / np.sqrt(len(losses)), abs=1e-5)


def test_compare_gives_paired_deltas(tiny_session):
    mask = np.ones((2, 4))
    mask[1] = 0
    cmp = tiny_session.evaluator.compare(Masks(head=mask))
    assert cmp.delta["loss"] == pytest.approx(cmp.pruned.loss - cmp.base.loss, abs=1e-12)
    assert cmp.delta["accuracy"] == pytest.approx(cmp.pruned.accuracy - cmp.base.accuracy, abs=1e-12)
    assert cmp.delta["loss_se"] > 0
    unpruned = tiny_session.evaluator.compare(Masks(head=np.ones((2, 4))))
    assert unpruned.delta["loss"] == 0 and unpruned.delta["loss_se"] == 0


def test_michel_equals_finite_differences(tiny_session):
    ctx = tiny_session
    batches = tiny_session.evaluator.batches
    grads = gate_gradients(ctx, "head", batches)
    eps = 1e-3
    model = tiny_session.loaded.model
    for layer, head in [(0, 0), (1, 2), (0, 3)]:
        estimate = 0.0
        for batch in batches:
            values = []
            for sign in (+1, -1):
                gate = torch.ones(2, 4, dtype=torch.float64)
                gate[layer, head] += sign * eps
                with torch.no_grad(), gated(model.double(), head=gate):
                    logits = model(**batch.model_inputs()).logits
                values.append(float(F.cross_entropy(logits, batch.labels)))
            model.float()
            estimate += abs((values[0] - values[1]) / (2 * eps))
        assert grads[layer, head] == pytest.approx(estimate / len(batches), rel=1e-3, abs=1e-6)


def test_michel_normalizes_per_layer(tiny_session):
    scores = get_method("michel").score(tiny_session, "head", {})
    np.testing.assert_allclose(np.sqrt((scores**2).sum(1)), 1.0, rtol=1e-9)


def test_every_method_has_the_documented_shape(tiny_session):
    inv = tiny_session.loaded.inventory
    for name, method in all_methods().items():
        if method.expensive and name != "ablation":
            continue
        for unit in method.units:
            scores = compute_scores(tiny_session, name, unit).scores
            assert scores.shape == inv.unit_shape(unit), (name, unit)
            assert np.isfinite(scores).all(), (name, unit)


def test_magnitude_matches_manual_norm(tiny_session):
    scores = compute_scores(tiny_session, "magnitude", "head").scores
    layer = tiny_session.loaded.layers()[1]
    sl = slice(2 * 4, 3 * 4)
    manual = torch.sqrt(sum((m.weight[sl].double() ** 2).sum() for m in (
        layer.attention.self.query, layer.attention.self.key, layer.attention.self.value))
        + (layer.attention.output.dense.weight[:, sl].double() ** 2).sum())
    assert scores[1, 2] == pytest.approx(float(manual), rel=1e-9)


def test_ablation_is_the_loss_increase(tiny_session):
    scores = compute_scores(tiny_session, "ablation", "head").scores
    mask = np.ones((2, 4))
    mask[1, 1] = 0
    ev = tiny_session.evaluator
    assert scores[1, 1] == pytest.approx(ev.evaluate(Masks(head=mask)).loss - ev.base.loss, abs=1e-9)


def test_scores_come_back_from_the_store(tiny_session):
    first = compute_scores(tiny_session, "random", "head", {"seed": 3})
    second = compute_scores(tiny_session, "random", "head", {"seed": "3"})
    assert not first.cached and second.cached
    np.testing.assert_array_equal(first.scores, second.scores)
    other = compute_scores(tiny_session, "random", "head", {"seed": 4})
    assert not other.cached and not np.array_equal(other.scores, first.scores)


# --------------------------------------------------------------------------------------------
# the store


def _key(**kw):
    return Key.make("m" * 16, "d" * 16, "scores", kw.get("method", "michel"), "head", kw.get("params", {}))


def test_store_round_trip_and_shipped_fallback(tmp_path):
    shipped = ResultStore(tmp_path / "shipped", None)
    shipped.put(_key(), {"scores": [[1.0]]})
    write_manifest(tmp_path / "shipped")  # what makes a folder a shipped store
    store = ResultStore(tmp_path / "user", tmp_path / "shipped")
    assert store.get(_key()) == {"scores": [[1.0]]} and store.where(_key()) == "shipped"
    store.put(_key(), {"scores": [[2.0]]})
    assert store.get(_key()) == {"scores": [[2.0]]} and store.where(_key()) == "user"
    assert not list((tmp_path / "shipped").rglob("*.tmp"))


def test_store_survives_a_truncated_entry(tmp_path):
    store = ResultStore(tmp_path, None)
    store.put(_key(), {"scores": [[1.0, 2.0]]})
    path = next(tmp_path.rglob("*.json"))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.warns(StoreWarning, match="corrupt or truncated"):
        assert store.get(_key()) is None
    value, cached = store.get_or_compute(_key(), lambda: {"scores": [[3.0]]})
    assert value == {"scores": [[3.0]]} and not cached
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get(_key()) == {"scores": [[3.0]]}


def _writer(root, value, rounds):
    store = ResultStore(root, None)
    for _ in range(rounds):
        store.put(_key(), {"scores": [[value] * 2000]})


def test_two_writers_of_one_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, v, 30)) for v in (1.0, 2.0)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    value = ResultStore(tmp_path, None).get(_key())
    assert value["scores"][0] in ([1.0] * 2000, [2.0] * 2000)
    assert len(list(tmp_path.rglob("*.json"))) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_keys_are_content_hashes_not_user_strings(tmp_path):
    store = ResultStore(tmp_path / "s", None)
    store.put(_key(method="../../escape", params={"x": "../../y"}), {"ok": 1})
    files = list((tmp_path / "s").rglob("*"))
    assert all(str(f).startswith(str(tmp_path / "s")) for f in files)
    assert not (tmp_path / "escape").exists()
    assert all(len(f.stem) == 64 for f in files if f.is_file())


# --------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture()
def cli(tiny_bert_dir, tiny_csv, store, capsys):
    def run(*args):
        code = main([*args, "--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet"]
                    if args[0] not in ("methods",) else list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_score_json_shape(cli, tmp_path):
    code, _, err = cli("score", "--method", "michel", "--json", str(tmp_path / "s.json"))
    assert code == 0, err
    payload = json.loads((tmp_path / "s.json").read_text())
    assert set(payload) == {"schema", "version", "method", "unit", "params", "model", "data", "objective",
                            "scores", "seconds", "cached"}
    assert payload["schema"] == "prunelens.score/1"
    assert payload["objective"] == "labels"  # a classifier on labelled data
    assert set(payload["model"]) == {"name", "fingerprint", "layers", "heads"}
    assert set(payload["data"]) == {"name", "split", "n", "fingerprint"}
    assert np.asarray(payload["scores"]).shape == (2, 4)
    assert payload["cached"] is False


def test_cli_prune_json_shape(cli, tmp_path):
    code, _, err = cli("prune", "--method", "magnitude", "--sparsity", "0.5", "--physical",
                       "--json", str(tmp_path / "p.json"))
    assert code == 0, err
    payload = json.loads((tmp_path / "p.json").read_text())
    for part in ("base", "pruned", "delta"):
        assert {"accuracy", "loss", "margin"} <= set(payload[part])
    assert np.asarray(payload["mask"]).sum() == 4 and payload["sparsity"] == 0.5
    assert set(payload["compression"]) == {"removed", "total", "fraction"}
    assert payload["compression"]["removed"] == 4 * (4 * 16 * 4 + 12)
    assert payload["physical"]["max_abs_logit_difference"] < 1e-5


def test_cli_curve_json_and_csv(cli, tmp_path):
    code, _, err = cli("curve", "--methods", "magnitude,random", "--sparsities", "0,0.5",
                       "--json", str(tmp_path / "c.json"), "--csv", str(tmp_path / "c.csv"))
    assert code == 0, err
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [(r["method"], r["sparsity"]) for r in rows] == [
        ("magnitude", 0.0), ("magnitude", 0.5), ("random", 0.0), ("random", 0.5)]
    assert {"accuracy", "loss", "margin"} <= set(rows[0])
    assert (tmp_path / "c.csv").read_text().startswith("method,sparsity,accuracy")


def test_cli_methods_lists_declared_params(cli, tmp_path):
    code, _, _ = cli("methods", "--json", str(tmp_path / "m.json"))
    assert code == 0
    methods = {m["name"]: m for m in json.loads((tmp_path / "m.json").read_text())["methods"]}
    assert {"michel", "ablation", "magnitude", "random"} <= set(methods)
    assert methods["random"]["params"][0] == {"name": "seed", "type": "int", "default": 0,
                                             "help": methods["random"]["params"][0]["help"],
                                             "range": [0, 2**31 - 1]}


@pytest.mark.parametrize(
    "args,message",
    [
        (("score", "--method", "nope"), "unknown method 'nope'"),
        (("score", "--method", "michel", "--unit", "weight"), "scores units"),
        (("score", "--method", "random", "--param", "seed=abc"), "must be an integer"),
        (("score", "--method", "random", "--param", "colour=red"), "has no parameter 'colour'"),
        (("prune", "--method", "random", "--sparsity", "1.5"), "sparsity must be in [0, 1)"),
        (("prune", "--method", "random", "--threshold", "-1"), "threshold must be a finite number >= 0"),
    ],
)
def test_cli_errors_are_one_line(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in err


@pytest.mark.slow
def test_default_model_loads_offline_and_is_accurate(default_loaded):
    from prunelens.analysis.data import load_data
    from prunelens.analysis.evaluate import Evaluator

    inv = default_loaded.inventory
    assert (inv.layers, inv.heads, inv.head_size, inv.hidden) == (6, 12, 32, 384)
    assert inv.head_params == 4 * 384 * 32 + 96
    result = Evaluator(default_loaded, load_data("default")).base
    assert result.n == 872
    assert result.accuracy >= 0.83


def _single_example_gradients(ctx, batches):
    """The paper's E_x|∂L(x)/∂ξ| by hand: one backward pass per example."""
    model = ctx.loaded.model
    total, n = torch.zeros(2, 4, dtype=torch.float64), 0
    for batch in batches:
        inputs = batch.model_inputs()
        for row in range(inputs["input_ids"].shape[0]):
            one = {k: v[row:row + 1] for k, v in inputs.items()}
            gate = torch.ones(2, 4, requires_grad=True)
            with torch.enable_grad(), gated(model, head=gate):
                loss = F.cross_entropy(model(**one).logits, batch.labels[row:row + 1])
                (grad,) = torch.autograd.grad(loss, gate)
            total += grad.abs().double()
            n += 1
    return (total / n).numpy()


def test_michel_per_example_equals_one_backward_per_example(tiny_session):
    """Per-example gates in one batched backward give each example's own gradient."""
    ctx = tiny_session
    batches = tiny_session.evaluator.batches
    expected = _single_example_gradients(ctx, batches)
    np.testing.assert_allclose(gate_gradients(ctx, "head", batches, per="example"), expected, rtol=1e-5)
    batch_level = gate_gradients(ctx, "head", batches, per="batch")
    assert not np.allclose(batch_level, expected, rtol=1e-3)  # |mean| < mean |·|: cancellation


def test_michel_per_token_equals_finite_differences_on_token_gates(tiny_session):
    """Per token: Σ_t |∂L/∂ξ_{t}| for a gate on one token position of one head, by finite
    differences on a hand-made per-token gate (two examples)."""
    ctx = tiny_session
    batch = tiny_session.evaluator.batches[0]
    inputs = {k: v[:2] for k, v in batch.model_inputs().items()}
    labels = batch.labels[:2]

    class Two:
        def __init__(self):
            self.labels = labels

        def to(self, device):
            return self

        def model_inputs(self):
            return inputs

    got = gate_gradients(ctx, "head", [Two()], per="token")
    model = tiny_session.loaded.model.double()
    eps, (layer, head) = 1e-4, (1, 2)
    rows, tokens = inputs["input_ids"].shape
    estimate = 0.0
    try:
        for b in range(rows):
            for t in range(tokens):
                values = []
                for sign in (+1, -1):
                    gate = torch.ones(2, rows, tokens, 4, dtype=torch.float64)
                    gate[layer, b, t, head] += sign * eps
                    with torch.no_grad(), gated(model, head=gate):
                        logits = model(**inputs).logits
                    values.append(float(F.cross_entropy(logits, labels, reduction="sum")))
                estimate += abs((values[0] - values[1]) / (2 * eps))
    finally:
        model.float()
    assert got[layer, head] == pytest.approx(estimate / rows, rel=1e-4, abs=1e-8)


def test_michel_scores_come_from_the_training_split(tiny_session, monkeypatch):
    from prunelens.analysis import batches as batches_mod
    from prunelens.analysis.methods import michel

    seen = []
    real = batches_mod.training_data

    def spy(session):
        data, note = real(session)
        seen.append(data)
        return data, note

    monkeypatch.setattr(batches_mod, "training_data", spy)
    params = get_method("michel").validate({"examples": 16})
    batches = michel.training_batches(tiny_session, params)
    assert seen and batches.data is seen[0] and len(batches.order) == 16
    a = get_method("michel").score(tiny_session, "head", {"examples": 16})
    b = get_method("michel").score(tiny_session, "head", {"examples": 16})
    assert np.array_equal(a, b)  # seeded
    c = get_method("michel").score(tiny_session, "head", {"examples": 16, "seed": 1})
    assert not np.array_equal(a, c)


def test_ablation_measures_on_the_training_split(tiny_session, tiny_loaded, tmp_path, monkeypatch):
    """Leave-one-out on the training data: equal to masking each head alone on that data by
    hand, and different from the same ablation on the evaluation data."""
    from prunelens.analysis.data import load_data
    from prunelens.analysis.evaluate import Evaluator
    from prunelens.analysis.methods import ablation
    from tests.tiny import write_tiny_csv

    other = load_data(str(write_tiny_csv(tmp_path / "train.csv", n=24, seed=5)))
    monkeypatch.setattr(ablation, "training_data", lambda session: (other, "a test's train split"))
    scores = get_method("ablation").score(tiny_session, "head", {"examples": 24})
    ev = Evaluator(tiny_loaded, other)
    expected = np.zeros((2, 4))
    for layer, head in np.ndindex(2, 4):
        mask = np.ones((2, 4), dtype=np.float32)
        mask[layer, head] = 0
        expected[layer, head] = ev.evaluate(Masks(head=mask)).loss - ev.base.loss
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)
    monkeypatch.setattr(ablation, "training_data", lambda session: (session.data, "own data"))
    on_eval = get_method("ablation").score(tiny_session, "head", {"examples": 24})
    assert not np.allclose(on_eval, scores)


def test_training_split_scores_are_keyed_by_the_training_split(tiny_bert_dir, tiny_loaded, tiny_session,
                                                               store, tmp_path, monkeypatch):
    """Issue 30: michel scores on the training split, so another --limit of the evaluation data
    is a store hit; an entry under the key it had before (the evaluation data's) is still read."""
    from prunelens.analysis.batches import training_data, training_fingerprint
    from prunelens.analysis.methods import michel
    from prunelens.analysis.operations import open_session
    from prunelens.analysis.session import LEGACY_DATA_KEY

    def score(limit):
        out = tmp_path / f"s{limit}.json"
        assert main(["score", "--model", str(tiny_bert_dir), "--data", "default", "--limit", str(limit),
                     "--method", "michel", "--param", "examples=16", "--quiet", "--json", str(out)]) == 0
        return json.loads(out.read_text())

    first = score(16)
    assert first["cached"] is False and first["data"]["n"] == 16

    def recomputed(*args, **kwargs):
        raise AssertionError("michel recomputed scores the store holds")

    monkeypatch.setattr(michel.Michel, "compute_units", recomputed)
    again = score(24)
    assert again["cached"] is True and again["data"]["n"] == 24 and again["scores"] == first["scores"]

    session = open_session(data="default", limit=8, loaded=tiny_loaded, store=ResultStore(tmp_path / "old", None))
    params = get_method("michel").validate({"examples": 16})
    keys = session.keys("scores", "michel", "head", params)
    assert list(keys) == ["fp32", f"fp32 {LEGACY_DATA_KEY}"]
    assert keys["fp32"].data == training_fingerprint(session) == training_data(session)[0].fingerprint
    assert keys[f"fp32 {LEGACY_DATA_KEY}"].data == session.data.fingerprint != keys["fp32"].data
    session.store.put(keys[f"fp32 {LEGACY_DATA_KEY}"], {"scores": first["scores"]})  # stored before
    old = compute_scores(session, "michel", "head", params)
    assert old.cached and np.array_equal(old.scores, np.asarray(first["scores"]))
    # snip's function norms read the training split too (issue 28)
    assert list(session.keys("scores", "snip", "head", get_method("snip").validate({}))) == \
        ["fp32", f"fp32 {LEGACY_DATA_KEY}"]
    # what does not read the training split keeps its key: smp on the data's own sentences, a
    # method that reads no data, and every method on data without a train split
    for method, p in (("smp", {"sentences": "eval"}), ("magnitude", {})):
        assert list(session.keys("scores", method, "head", get_method(method).validate(p))) == ["fp32"]
    assert session.key("scores", "smp", "head", get_method("smp").validate({"sentences": "eval"})).data \
        == session.data.fingerprint
    assert session.key("scores", "michel", "head", params).data != tiny_session.key(
        "scores", "michel", "head", params).data == tiny_session.data.fingerprint


# ---------------------------------------------------------------------------------------------
# every encoder family through the CLI (issue 32's done-when, on tiny checkpoints)


@pytest.mark.parametrize("family", ["distilbert", "albert", "deberta-v2", "mpnet", "modernbert"])
def test_prune_physical_and_neuron_scores_on_every_family(family, tiny_csv, tmp_path, monkeypatch):
    from tests.tiny import write_tiny_family

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = write_tiny_family(tmp_path / family, family)
    out = tmp_path / "F.json"
    assert main(["prune", "--model", str(folder), "--data", str(tiny_csv), "--method", "michel",
                 "--sparsity", "0.5", "--physical", "--json", str(out)]) in (0, None)
    result = json.loads(out.read_text())
    layers, heads = (3 if family in ("albert", "modernbert") else 2), 4
    assert np.asarray(result["mask"]).shape == (layers, heads)
    assert result["physical"]["max_abs_logit_difference"] <= 1e-3
    scores = tmp_path / "S.json"
    assert main(["score", "--model", str(folder), "--data", str(tiny_csv), "--method", "magnitude",
                 "--unit", "neuron", "--json", str(scores)]) in (0, None)
    assert np.asarray(json.loads(scores.read_text())["scores"]).shape == (layers, 24)


def test_re_pruning_an_export_keeps_the_grid_with_null_heads(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    export = tmp_path / "E"
    assert main(["export", "--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--method", "magnitude",
                 "--sparsity", "0.5", "--scope", "layer", "--no-onnx", "--out", str(export)]) in (0, None)
    out = tmp_path / "F.json"
    assert main(["prune", "--model", str(export), "--data", str(tiny_csv), "--method", "random",
                 "--sparsity", "0.25", "--physical", "--json", str(out)]) in (0, None)
    result = json.loads(out.read_text())
    mask = result["mask"]
    assert sum(v is None for row in mask for v in row) == 4  # 2 layers x 4 heads, half gone
    assert sum(v == 0 for row in mask for v in row) == 1  # a quarter of the 4 left
    assert result["physical"]["max_abs_logit_difference"] <= 1e-4
    assert result["sparsity"] == 0.25
