"""Every fast path of the evaluator gives the reference evaluator's numbers (tiny BERT, and
for the masked outputs, the [CLS]-only last layer, the layer cache and the headless encoder, a
tiny checkpoint of every other family the fast kernel runs: DistilBERT, ALBERT, MPNet).

Reference = the HF forward under hook gates (``Evaluator.reference_outputs``). fp32 fast paths
must agree to 1e-5 in the logits; bf16 is only reported as an agreement rate. No timing here.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.fastpath import (
    FastEncoder,
    LayerRow,
    PrefixCache,
    PrefixEntry,
    mask_rows,
    prefix_keys,
)
from prunelens.analysis.gates import Masks, hook_count
from prunelens.analysis.kernels import kernel_for, module_name
from prunelens.analysis.layout import FAMILIES
from prunelens.analysis.methods import get_method
from prunelens.analysis.session import Session
from prunelens.analysis.pruning import physically_prune, select

ATOL = 1e-5
FAST_FAMILIES = [name for name, family in FAMILIES.items() if family.fast_path]  # bert, distilbert, albert, mpnet


def _random_masks(rng, kind: str, layers=2, heads=4, ffn=24) -> Masks:
    if kind == "head":
        return Masks(head=(rng.random((layers, heads)) > 0.5).astype(np.float32))
    if kind == "neuron":
        return Masks(neuron=(rng.random((layers, ffn)) > 0.5).astype(np.float32))
    if kind == "blocks":
        attention, ffn = np.ones(layers, np.float32), np.ones(layers, np.float32)
        attention[0] = ffn[-1] = 0
        return Masks(attention=attention, ffn=ffn)
    if kind == "float":
        return Masks(head=rng.random((layers, heads)).astype(np.float32),
                     neuron=rng.random((layers, ffn)).astype(np.float32),
                     attention=rng.random(layers).astype(np.float32),
                     ffn=rng.random(layers).astype(np.float32))
    if kind == "no_heads":
        return Masks(head=np.zeros((layers, heads), np.float32))
    if kind == "all_off":
        return Masks(attention=np.zeros(layers, np.float32), ffn=np.zeros(layers, np.float32))
    raise ValueError(kind)


@pytest.fixture()
def evaluators(tiny_loaded, tiny_session):
    data = tiny_session.data
    return (Evaluator(tiny_loaded, data, batch_size=8),
            Evaluator(tiny_loaded, data, batch_size=8, fast=False))


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    """``load(name, headless=False)``: a tiny random checkpoint of family ``name``
    (tests/tiny.write_tiny_family), loaded once on first use."""
    from prunelens.analysis.models import load_model
    from tests.tiny import write_tiny_family

    root = tmp_path_factory.mktemp("fast_families")

    @cache
    def load(name: str, headless: bool = False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folder = write_tiny_family(root / f"{name}-{'encoder' if headless else 'classifier'}", name,
                                       headless=headless)
            return load_model(str(folder))

    return load


@pytest.fixture(params=FAST_FAMILIES)
def family_evaluators(request, tiny_loaded, tiny_session, family_models):
    """Fast and reference evaluators of a tiny classifier of each family the fast kernel runs."""
    loaded = tiny_loaded if request.param == "bert" else family_models(request.param)
    data = tiny_session.data
    return (Evaluator(loaded, data, batch_size=8), Evaluator(loaded, data, batch_size=8, fast=False))


def test_every_fast_family_has_a_kernel_module_and_every_kernel_module_a_family():
    from prunelens.analysis import kernels

    modules = {p.stem for p in Path(kernels.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert modules == {module_name(name).rsplit(".", 1)[1] for name in FAST_FAMILIES}
    assert all(kernel_for(FAMILIES[name]) is not None for name in FAST_FAMILIES)
    assert {"bert", "distilbert", "albert", "mpnet"} <= set(FAST_FAMILIES)


def test_a_family_without_a_kernel_runs_the_reference_path_and_says_why(family_models, tiny_session):
    loaded = family_models("deberta-v2")
    ev = Evaluator(loaded, tiny_session.data, batch_size=8)
    assert ev.fast_encoder() is None
    assert ev.fast_note == ("the fast kernel computes the bert, distilbert, albert, mpnet blocks; a "
                            "deberta-v2 layer runs the reference path (transformers' forward with gates)")


def test_fast_path_is_checked_and_used(family_evaluators):
    fast, ref = family_evaluators
    assert fast.fast_encoder() is not None and fast.fast_note is None
    assert ref.fast_encoder() is None


@pytest.mark.parametrize("kind", ["head", "neuron", "blocks", "float", "no_heads", "all_off"])
def test_fast_outputs_equal_reference(family_evaluators, kind):
    fast, ref = family_evaluators
    inv = fast.loaded.inventory
    rng = np.random.default_rng(hash(kind) % 1000)
    for _ in range(3):
        masks = _random_masks(rng, kind, inv.layers, inv.heads, inv.ffn)
        a, b = fast.outputs(masks).logits, ref.outputs(masks).logits
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    np.testing.assert_allclose(fast.base_outputs.logits, ref.base_outputs.logits, atol=ATOL, rtol=0)


def test_results_equal_reference(evaluators):
    fast, ref = evaluators
    masks = Masks(head=np.array([[1, 0, 1, 0], [0, 1, 1, 1]], np.float32))
    a, b = fast.compare(masks), ref.compare(masks)
    assert a.pruned.accuracy == b.pruned.accuracy
    assert a.pruned.loss == pytest.approx(b.pruned.loss, abs=ATOL)
    assert a.pruned.margin == pytest.approx(b.pruned.margin, abs=ATOL)
    assert a.delta["loss"] == pytest.approx(b.delta["loss"], abs=ATOL)
    assert hook_count(fast.loaded.model) == 0


def test_cls_only_last_layer_equals_full_layer(family_evaluators):
    fast, _ = family_evaluators
    encoder = FastEncoder(fast.loaded.model)
    batch = fast.batches[-1]
    last = fast.loaded.inventory.layers - 1
    head = np.ones((last + 1, 4), np.float32)
    head[last] = [1, 0, 1, 0.5]
    rows = mask_rows(Masks(head=head), last + 1)
    with torch.inference_mode():
        tokens = encoder.tokens(batch)
        x = tokens.pack(encoder.embed(batch))
        for i in range(last):
            x = encoder.layers[i].forward(x, tokens, encoder.plan(i, rows[i]))
        full = tokens.pad(encoder.layers[last].forward(x, tokens, encoder.plan(last, rows[last])))
        cls = encoder.layers[last].forward_cls(x, tokens, encoder.plan(last, rows[last]))
    torch.testing.assert_close(cls, full[:, 0], atol=ATOL, rtol=0)


def test_layer_cache_starts_at_first_differing_layer(family_evaluators, monkeypatch):
    fast, ref = family_evaluators
    encoder = fast.fast_encoder()
    _ = fast.base_outputs
    cache = encoder.cache_for(fast.fast_batches)
    n = fast.loaded.inventory.layers
    last = n - 1
    base_keys = prefix_keys(mask_rows(None, n))
    assert cache.get(last, base_keys[last]) is not None  # the unpruned input of the last layer is kept
    assert cache.get(0, base_keys[0]).context is not None  # and the all-heads context of layer 0
    calls = {"embed": 0, "qkv0": 0}
    real_embed, real_context = encoder.embed, encoder.layers[0].context

    def count_embed(batch):
        calls["embed"] += 1
        return real_embed(batch)

    def count_context(*args, **kwargs):
        calls["qkv0"] += 1
        return real_context(*args, **kwargs)

    monkeypatch.setattr(encoder, "embed", count_embed)
    monkeypatch.setattr(encoder.layers[0], "context", count_context)
    # a mask that differs only in the last layer starts from the cached input of that layer
    head = np.ones((n, 4), np.float32)
    head[last] = [0, 1, 0, 1]
    late = Masks(head=head)
    before = cache.get(last, base_keys[last]).states[0].clone()
    got = fast.outputs(late).logits
    assert calls == {"embed": 0, "qkv0": 0}
    np.testing.assert_allclose(got, ref.outputs(late).logits, atol=ATOL, rtol=0)
    no_cache = np.concatenate([t.numpy() for t in encoder.logits(fast.batches, late, use_cache=False)])
    order = np.concatenate([b.index.numpy() for b in fast.batches])
    np.testing.assert_allclose(got[order], no_cache, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.get(last, base_keys[last]).states[0], before)  # never mutated
    # a mask that differs in layer 0 slices the cached all-heads context: no Q/K/V there
    calls.update(embed=0, qkv0=0)
    head = np.ones((n, 4), np.float32)
    head[0] = [1, 0, 0, 1]
    early = Masks(head=head)
    np.testing.assert_allclose(fast.outputs(early).logits, ref.outputs(early).logits, atol=ATOL, rtol=0)
    assert calls == {"embed": 0, "qkv0": 0}


@pytest.mark.parametrize("name", [n for n in FAST_FAMILIES if n != "bert"])  # BERT's: test_objectives
def test_a_headless_encoder_of_each_fast_family_pools_the_reference_vectors(name, family_models, tiny_session):
    loaded = family_models(name, headless=True)
    inv = loaded.inventory
    ev = Evaluator(loaded, tiny_session.data, batch_size=8, objective="embedding")
    assert ev.fast_encoder() is not None, ev.fast_note
    rng = np.random.default_rng(7)
    for kind in ("no_heads", "float", "head"):
        masks = _random_masks(rng, kind, inv.layers, inv.heads, inv.ffn)
        np.testing.assert_allclose(ev.outputs(masks).logits, ev.reference_outputs(masks).logits,
                                   atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", FAST_FAMILIES)
def test_bf16_layers_of_each_fast_family_track_fp32(name, tiny_loaded, family_models, tiny_session):
    """The bf16 layers (scores in bf16 with the key mask, and MPNet's shared score bias, added by
    the batched matmul) stay within bf16 rounding of fp32; the checked path's rule (close calls
    recomputed in fp32) is tested on BERT in test_precision."""
    loaded = tiny_loaded if name == "bert" else family_models(name)
    model, batches = loaded.model, Evaluator(loaded, tiny_session.data, batch_size=8).fast_batches
    masks = Masks(head=np.resize(np.array([1, 0, 1, 1, 0, 1, 1, 0], np.float32), (loaded.inventory.layers, 4)))
    exact = torch.cat(FastEncoder(model).logits(batches, masks, use_cache=False))
    low = torch.cat(FastEncoder(model, dtype=torch.bfloat16).logits(batches, masks, use_cache=False))
    difference = float((exact - low).abs().max())
    assert 0 < difference < 0.1


def test_prefix_keys_depend_only_on_earlier_layers():
    a = prefix_keys(mask_rows(Masks(head=np.array([[1, 0], [1, 1]], np.float32)), 2))
    b = prefix_keys(mask_rows(Masks(head=np.array([[1, 0], [0, 1]], np.float32)), 2))
    c = prefix_keys(mask_rows(Masks(head=np.ones((2, 2), np.float32)), 2))
    d = prefix_keys(mask_rows(None, 2))
    assert a[:2] == b[:2] and a[2] != b[2]
    assert a[1] != c[1]
    assert c == d  # explicit ones are the unpruned model


def test_prefix_cache_budget_and_pins():
    def entry(n):
        return PrefixEntry([torch.zeros(n, dtype=torch.uint8)])

    cache = PrefixCache(100)
    cache.put(0, b"base", entry(40), pin=True)
    cache.put(1, b"a", entry(30))
    cache.put(1, b"b", entry(30))
    assert cache.bytes == 100
    cache.get(1, b"a")  # a is now more recent than b
    cache.put(2, b"c", entry(30))
    assert cache.get(1, b"b") is None and cache.get(1, b"a") is not None
    assert cache.get(0, b"base") is not None
    cache.put(3, b"huge", entry(70))  # larger than what the pins leave: not kept
    assert cache.get(3, b"huge") is None and cache.bytes <= 100


def test_evaluate_many_equals_evaluate_per_mask(evaluators):
    fast, ref = evaluators
    rng = np.random.default_rng(3)
    masks = [_random_masks(rng, k) for k in ("head", "neuron", "head", "float", "blocks")]
    masks.append(None)
    many = fast.evaluate_many(masks)
    for m, got in zip(masks, many):
        want = ref.evaluate(m)
        assert got.accuracy == want.accuracy
        assert got.loss == pytest.approx(want.loss, abs=ATOL)
        assert got.margin == pytest.approx(want.margin, abs=ATOL)
    compared = fast.compare_many(masks[:2])
    assert compared[0].pruned.loss == pytest.approx(many[0].loss, abs=ATOL)


def test_outputs_lru_returns_identical_results(evaluators):
    fast, _ = evaluators
    masks = Masks(head=np.array([[0, 1, 1, 1], [1, 1, 1, 1]], np.float32))
    first = fast.outputs(masks)
    again = fast.outputs(Masks(head=masks.head.copy()))
    assert again is first


def test_ablation_fast_equals_naive_leave_one_out(tiny_loaded, tiny_session):
    data = tiny_session.data
    fast = Evaluator(tiny_loaded, data, batch_size=8)
    ref = Evaluator(tiny_loaded, data, batch_size=8, fast=False)
    ctx = Session(tiny_loaded, data, _evaluator=fast)
    for unit in ("head", "attention", "ffn"):
        scores = get_method("ablation").score(ctx, unit, {"metric": "loss"})
        shape = tiny_loaded.inventory.unit_shape(unit)
        naive = np.zeros(shape)
        for idx in np.ndindex(*shape):
            mask = np.ones(shape, np.float32)
            mask[idx] = 0
            naive[idx] = ref.evaluate(Masks.for_unit(unit, mask)).loss - ref.base.loss
        np.testing.assert_allclose(scores, naive, atol=ATOL, rtol=0)


def test_estimate_is_a_fixed_subset_with_error_bars(tiny_loaded, tiny_session):
    ev = Evaluator(tiny_loaded, tiny_session.data, batch_size=8)
    masks = Masks(head=np.array([[1, 0, 1, 1], [1, 1, 0, 1]], np.float32))
    est = ev.estimate(masks, size=16, seed=1)
    sub = ev.subset(16, 1)
    assert sub is ev.subset(16, 1) and len(sub.data) == 16 and est.pruned.n == 16
    rows = sub.subset_rows
    assert list(rows) == sorted(set(rows))
    full = ev.outputs(masks)
    np.testing.assert_allclose(sub.outputs(masks).logits, full.logits[rows], atol=ATOL, rtol=0)
    d = full.loss[rows] - ev.base_outputs.loss[rows]
    assert est.delta["loss"] == pytest.approx(d.mean(), abs=ATOL)
    assert est.delta["loss_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(16), abs=ATOL)
    assert ev.subset(10_000) is ev  # a subset as large as the data is the data


def test_reference_path_for_explicit_model_and_gradients(tiny_loaded, evaluators):
    fast, ref = evaluators
    masks = Masks(head=np.array([[1, 0, 1, 1], [1, 1, 1, 0]], np.float32))
    small = physically_prune(tiny_loaded.model, masks)
    np.testing.assert_allclose(fast.outputs(model=small).logits, ref.outputs(masks).logits,
                               atol=ATOL, rtol=0)
    gate = torch.ones(2, 4, requires_grad=True)
    assert not fast._fast_usable(Masks(head=gate), None)
    np.testing.assert_allclose(fast.outputs(Masks(head=gate)).logits, ref.base_outputs.logits,
                               atol=ATOL, rtol=0)


def test_bench_quick_has_the_documented_keys(tiny_session):
    from prunelens.analysis.bench import run_bench

    out = run_bench(tiny_session, quick=True, threads=1, progress=lambda msg: None)
    for key in ("naive_s", "eval_p50_s", "eval_p90_s", "first_estimate_s", "ratio", "michel_s",
                "forward_s", "curve_cold_s", "curve_cached_s", "physical_vs_masked", "rss_mb",
                "ablation_s", "eval_fp32_p50_s", "eval_fp32_aten_p50_s", "fp32_onednn_speedup"):
        assert isinstance(out[key], float) and out[key] > 0, key
    assert out["ratio"] == pytest.approx(out["naive_s"] / out["eval_p50_s"])
    assert out["slider_max_abs_logit_difference"] < ATOL
    assert out["physical_vs_masked_detail"]["max_abs_logit_difference"] < ATOL
    assert out["precision"] == "fp32" and out["prediction_agreement"] == 1.0
    assert out["max_abs_logit_difference_vs_fp32"] < ATOL


def test_bench_reports_the_checked_bf16_path(tiny_session, monkeypatch):
    from prunelens.analysis.bench import format_table, run_bench

    monkeypatch.setenv("PRUNELENS_PRECISION", "bf16")
    out = run_bench(tiny_session, quick=True, threads=1, progress=lambda msg: None)
    assert out["precision"] == "bf16", out["precision_note"]
    assert out["path"] == "checked-bf16" and "calibration error" in out["why"]
    assert out["prediction_agreement"] == 1.0  # close calls were recomputed in fp32
    assert 0 < out["max_abs_logit_difference_vs_fp32"] < 0.1
    assert out["slider_max_abs_logit_difference"] < ATOL  # the exact evaluator stays exact
    assert all(n >= 1 for n in out["slider_rechecked"])
    assert "prediction agreement" in format_table(out)


def test_bench_names_the_path_and_why_on_a_cpu_without_native_bf16(tiny_session, monkeypatch):
    from prunelens.analysis import precision
    from prunelens.analysis.bench import format_table, run_bench

    precision.native_bf16.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # simulated: oneDNN may not use bf16
    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # (the suite's default is fp32)
    try:
        out = run_bench(tiny_session, quick=True, threads=1, progress=lambda msg: None)
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        precision.native_bf16.cache_clear()
    assert out["path"] == "fp32" and out["precision"] == "fp32"
    assert out["why"].startswith("no native bf16 (ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from bf16")
    assert out["onednn_max_cpu_isa"] == "AVX2"
    assert f"path: fp32 (why: {out['why']})" in format_table(out)
    assert out["fp32_kernel"] == "onednn" and "fp32 products: onednn" in format_table(out)


@pytest.mark.parametrize("kind", ["head", "neuron", "float"])
def test_fp32_layers_run_onednn_with_the_gelu_fused_and_equal_f_linear(tiny_loaded, evaluators,
                                                                       monkeypatch, kind):
    from prunelens.analysis import fastpath

    onednn = FastEncoder(tiny_loaded.model)
    monkeypatch.setattr(fastpath, "FP32_KERNEL", "aten")
    aten = FastEncoder(tiny_loaded.model)
    assert fastpath.onednn_fp32_available()  # (x86 with oneDNN: every machine this suite runs on)
    assert all(layer.onednn and layer.fused_gelu for layer in onednn.layers)
    assert not any(layer.onednn or layer.fused_gelu for layer in aten.layers)
    assert fastpath.fp32_kernel() == "aten" and fastpath.fp32_kernel("cuda") == "aten"
    monkeypatch.setattr(fastpath, "FP32_KERNEL", "onednn")
    assert fastpath.fp32_kernel() == "onednn"
    batches = evaluators[0].batches
    rng = np.random.default_rng(3)
    for _ in range(3):
        masks = _random_masks(rng, kind)
        a = torch.cat(onednn.logits(batches, masks, use_cache=False))
        b = torch.cat(aten.logits(batches, masks, use_cache=False))
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_layer_row_key_distinguishes_gates():
    a = LayerRow(None, 1.0, 1.0, None).key()
    b = LayerRow(None, 0.0, 1.0, None).key()
    c = LayerRow(np.array([1, 0], np.float32), 1.0, 1.0, None).key()
    assert len({a, b, c}) == 3


def test_select_based_slider_masks_use_fast_path(evaluators):
    fast, ref = evaluators
    scores = np.random.default_rng(5).random((2, 4))
    for s in (0.25, 0.5, 0.75):
        m = Masks(head=select(scores, s).astype(np.float32))
        np.testing.assert_allclose(fast.outputs(m).logits, ref.outputs(m).logits, atol=ATOL, rtol=0)


def test_layer_cache_keeps_the_shallow_inputs_of_a_step_when_it_cannot_keep_all(tmp_path, tiny_csv):
    from prunelens.analysis.models import load_model
    from prunelens.analysis.operations import open_session
    from tests.tiny import write_tiny_bert

    loaded = load_model(str(write_tiny_bert(tmp_path / "bert4", layers=4)))
    batches = open_session(data=str(tiny_csv), loaded=loaded).evaluator.batches
    encoder = FastEncoder(loaded.model)
    encoder.logits(batches, None)  # the unpruned layer inputs: pinned
    cache = encoder.cache_for(batches)
    state = sum(t.numel() * t.element_size() for t in cache.get(1, prefix_keys(mask_rows(None, 4))[1]).states)
    cache.budget = cache.bytes + 2 * state  # room for two of the three new layer inputs
    step = Masks(head=np.array([[1, 0, 1, 1]] + [[1, 1, 1, 1]] * 3, np.float32))
    encoder.logits(batches, step)
    keys = prefix_keys(mask_rows(step, 4))
    # the deepest input is the one dropped: the next step (which usually changes an early layer
    # too) starts from a shallow one
    assert [cache.get(i, keys[i]) is not None for i in (1, 2, 3)] == [True, True, False]
