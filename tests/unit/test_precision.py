"""The checked-bf16 path: precision choice, calibration, close-call re-checks, store separation.

Predictions must equal fp32's exactly; losses differ by bf16 rounding (reported, bounded here
loosely). The numbers on the default model are in docs/PERFORMANCE.md (``prunelens bench``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelens.analysis import precision
from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.gates import Masks
from prunelens.analysis.operations import Session, compute_scores, evaluate_mask
from prunelens.analysis.precision import Calibration, calibrate, close_calls, margins, pair_error, recheck


def test_resolve_reads_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("PRUNELENS_PRECISION", "bf16")
    assert precision.resolve() == "bf16"
    assert precision.resolve("FP32") == "fp32"
    monkeypatch.delenv("PRUNELENS_PRECISION")
    assert precision.resolve() == "auto"
    with pytest.raises(ValueError, match="unknown precision 'fp16': choose one of auto, fp32, bf16"):
        precision.resolve("fp16")


def test_pair_error_and_margins_by_hand():
    exact = np.array([[1.0, 0.0, -1.0], [0.5, 0.25, 0.0]])
    low = exact + np.array([[0.01, -0.02, 0.0], [0.0, 0.0, 0.005]])
    assert pair_error(exact, low) == pytest.approx(0.03)  # row 0: 0.01 - (-0.02)
    np.testing.assert_allclose(margins(exact), [1.0, 0.25])


def test_calibration_refuses_large_errors_and_single_outputs():
    exact = np.array([[2.0, -2.0], [1.0, -1.0], [3.0, 0.0]])
    cal, reason = calibrate(exact, exact + np.array([[0.1, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert reason is None and cal.error == pytest.approx(0.1) and cal.scale == 2.0
    assert cal.agreement == 1.0
    cal, reason = calibrate(exact, exact + np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert cal is None and "changes the unpruned logits by up to 1" in reason
    cal, reason = calibrate(exact[:, :1], exact[:, :1])
    assert cal is None and "one output" in reason


def test_close_call_threshold_shrinks_with_the_logit_scale_down_to_a_floor():
    cal = Calibration(error=0.1, scale=2.0, agreement=1.0)
    same = np.array([[2.0, 1.75], [2.0, 0.0]])  # scale 2 -> threshold 0.3
    assert cal.threshold(same) == pytest.approx(0.3)
    assert close_calls(same, cal).tolist() == [True, False]
    tiny = same / 1000  # scale 0.002 -> ratio clipped at 0.05 -> threshold 0.015
    assert cal.threshold(tiny) == pytest.approx(0.015)


def test_recheck_replaces_uncertain_rows_and_grows_with_the_masks_own_error():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(200, 2)) * 3
    low = exact + rng.normal(size=exact.shape) * 0.05  # the mask rounds worse than calibrated
    cal = Calibration(error=0.001, scale=3.0, agreement=1.0)
    asked = []

    def exact_of(rows):
        asked.append(int(rows.sum()))
        return exact[rows]

    logits, n = recheck(low, cal, exact_of)
    assert len(asked) >= 2  # the guard sample revealed the larger error: a second round ran
    assert n == sum(asked) and n < len(exact)
    assert (logits.argmax(1) == exact.argmax(1)).all()
    redone = np.isclose(logits, exact).all(1)
    assert redone.sum() == n
    assert (margins(low)[~redone] >= precision.RECHECK_SAFETY * pair_error(exact[redone], low[redone])).all()


def test_batch_rows_trims_padding_and_keeps_the_index(tiny_session):
    batch = tiny_session.evaluator.batches[-1]
    select = torch.zeros(len(batch.index), dtype=torch.bool)
    select[0] = True
    sub = batch.rows(select)
    n = int(batch.attention_mask[0].sum())
    assert sub.input_ids.shape == (1, n)
    assert sub.index.tolist() == [int(batch.index[0])]
    assert torch.equal(sub.input_ids[0], batch.input_ids[0, :n])


@pytest.fixture()
def pair(tiny_session):
    """A checked-bf16 evaluator and an exact one on the same tiny model and data."""
    low = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="bf16")
    exact = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="fp32")
    return low, exact


@pytest.mark.parametrize("kind", ["head", "neuron", "float"])
def test_bf16_predictions_equal_fp32(pair, kind):
    low, exact = pair
    assert low.low_encoder() is not None, low.low_note
    rng = np.random.default_rng(1)
    for _ in range(4):
        if kind == "head":
            masks = Masks(head=(rng.random((2, 4)) > 0.5).astype(np.float32))
        elif kind == "neuron":
            masks = Masks(neuron=(rng.random((2, 24)) > 0.5).astype(np.float32))
        else:
            masks = Masks(head=rng.random((2, 4)).astype(np.float32))
        assert low.precision_for(masks) == "bf16"
        a, b = low.outputs(masks), exact.outputs(masks)
        np.testing.assert_array_equal(a.logits.argmax(1), b.logits.argmax(1))
        assert low.evaluate(masks).accuracy == exact.evaluate(masks).accuracy
        assert abs(a.loss.mean() - b.loss.mean()) < 5e-3
        assert low.rechecked >= precision.GUARD_SIZE


def test_unpruned_outputs_stay_exact_under_bf16(pair):
    low, exact = pair
    assert low.precision_for(None) == "fp32"
    np.testing.assert_array_equal(low.base_outputs.logits, exact.base_outputs.logits)


def test_fp32_request_and_gradients_keep_fp32(pair, tiny_session):
    low, exact = pair
    assert exact.precision_for(Masks(head=np.ones((2, 4), np.float32) * 0.5)) == "fp32"
    assert exact.low_encoder() is None and exact.low_note == "fp32 requested"
    grad = Masks(head=torch.ones(2, 4, requires_grad=True))
    assert low.precision_for(grad) == "fp32"


def test_auto_uses_bf16_only_on_a_native_bf16_cpu(tiny_session, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    ev = Evaluator(tiny_session.loaded, tiny_session.data, precision="auto")
    assert ev.low_encoder() is None and ev.low_note == "this CPU has no native bf16 matmul"
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    ev = Evaluator(tiny_session.loaded, tiny_session.data, precision="auto")
    assert ev.low_encoder() is not None


def _session(base, precision_name):
    ev = Evaluator(base.loaded, base.data, precision=precision_name)
    return Session(base.loaded, base.data, base.store, base.device, ev)


def test_store_keeps_bf16_answers_apart_from_exact_ones(tiny_session):
    mask = np.array([[1, 0, 1, 1], [0, 1, 1, 1]])
    low = _session(tiny_session, "bf16")
    result, cached = evaluate_mask(low, "head", mask)
    assert not cached and result["precision"] == "bf16"
    assert evaluate_mask(low, "head", mask) == (result, True)
    exact = _session(tiny_session, "fp32")
    exact_result, cached = evaluate_mask(exact, "head", mask)
    assert not cached and exact_result["precision"] == "fp32"  # a bf16 answer is never exact
    # once an exact answer exists, the bf16 session reads it instead of its own
    assert evaluate_mask(low, "head", mask) == (exact_result, True)


def test_ablation_scores_are_keyed_by_precision(tiny_session):
    low = _session(tiny_session, "bf16")
    first = compute_scores(low, "ablation", "head")
    assert not first.cached and compute_scores(low, "ablation", "head").cached
    exact = _session(tiny_session, "fp32")
    again = compute_scores(exact, "ablation", "head")
    assert not again.cached
    from scipy.stats import spearmanr

    assert spearmanr(first.scores.ravel(), again.scores.ravel())[0] > 0.9


def test_packed_bf16_layers_equal_plain_bf16_layers(tiny_session):
    from prunelens.analysis import fastpath

    if not fastpath.packed_linear_available():
        pytest.skip("oneDNN packed bf16 linear not available on this CPU")
    batches = tiny_session.evaluator.batches
    masks = Masks(head=np.array([[1, 0, 1, 1], [1, 1, 0, 0.5]], np.float32))
    packed = fastpath.FastEncoder(tiny_session.loaded.model, dtype=torch.bfloat16)
    plain = fastpath.FastEncoder(tiny_session.loaded.model, dtype=torch.bfloat16)
    assert packed.layers[0].packs and packed.layers[0].fused_gelu
    assert not packed.layers[-1].packs  # the [CLS]-only last layer stays fp32
    for layer in plain.layers:
        layer.packs, layer.fused_gelu, layer.full_packs = False, False, {}
    a = torch.cat(packed.logits(batches, masks, use_cache=False))
    b = torch.cat(plain.logits(batches, masks, use_cache=False))
    assert plain._plans and all(p.packed is None for p in plain._plans.values())
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)


def test_plan_cache_stays_within_its_budget(tiny_session, monkeypatch):
    from prunelens.analysis import fastpath

    monkeypatch.setattr(fastpath, "PLAN_CACHE_MB", 0)  # keep only the newest plan per layer
    encoder = fastpath.FastEncoder(tiny_session.loaded.model)
    rng = np.random.default_rng(0)
    for _ in range(10):
        encoder.logits(tiny_session.evaluator.batches[:1],
                       Masks(head=(rng.random((2, 4)) > 0.5).astype(np.float32)), use_cache=False)
    assert len(encoder._plans) == len(encoder.layers)
    assert encoder._plan_bytes == sum(p.nbytes for p in encoder._plans.values())


def test_layer_caches_of_all_batch_lists_share_one_budget(tiny_session, monkeypatch):
    from prunelens.analysis import fastpath

    batches = tiny_session.evaluator.batches
    rows = sum(len(b.index) for b in batches)
    monkeypatch.setattr(fastpath, "FULL_BUDGET_ROWS", 2 * rows)  # one whole list: half the budget
    encoder = fastpath.FastEncoder(tiny_session.loaded.model, cache_bytes=1 << 20)
    first, second, third = list(batches), list(batches), list(batches)
    assert encoder.cache_for(first).budget == 1 << 19
    encoder.cache_for(second)
    encoder.cache_for(first)  # used again: now the most recent
    encoder.cache_for(third)  # three halves do not fit: the least recently used (second) goes
    assert list(encoder.caches) == [id(first), id(third)]


def _known_rows_case(seed: int, known_count: int):
    """100 two-class examples, bf16 noise 0.01, and the first ``known_count`` rows known exactly."""
    rng = np.random.default_rng(seed)
    exact = rng.normal(size=(100, 2)) * 3
    low = exact + rng.normal(size=exact.shape) * 0.01
    known = np.arange(100) < known_count
    return exact, low, Calibration(error=0.01, scale=3.0, agreement=1.0), known


def test_recheck_uses_known_exact_rows_as_the_guard():
    exact, low, cal, known = _known_rows_case(2, 30)
    asked = []

    def exact_of(rows):
        asked.append(rows.copy())
        assert not (rows & known).any()  # known rows are never recomputed
        return exact[rows]

    logits, n = recheck(low, cal, exact_of, (known, exact[known]))
    np.testing.assert_array_equal(logits[known], exact[known])
    assert n == sum(int(r.sum()) for r in asked)
    assert (logits.argmax(1) == exact.argmax(1)).all()


def test_recheck_measures_the_own_error_only_on_rows_run_in_bf16():
    exact, low, cal, known = _known_rows_case(3, 40)
    measured = ~known
    measured[:8] = True  # 8 of the known rows were run in bf16 too
    low[~measured] = [1e3, -1e3]  # never computed: were they measured, every row would be redone

    def exact_of(rows):
        assert not (rows & known).any()
        return exact[rows]

    logits, n = recheck(low, cal, exact_of, (known, exact[known]), measured)
    np.testing.assert_array_equal(logits[known], exact[known])
    assert (logits.argmax(1) == exact.argmax(1)).all()
    assert n < 15  # the bar comes from the 8 measured known rows, not from the garbage
    with pytest.raises(ValueError, match="every row that was not run in bf16 must be known"):
        recheck(low, cal, exact_of, None, measured)
    fewer = known & (np.arange(100) < 20)
    with pytest.raises(ValueError, match="every row that was not run in bf16 must be known"):
        recheck(low, cal, exact_of, (fewer, exact[fewer]), measured)


def test_full_evaluation_reuses_the_estimates_exact_rows(tiny_session, monkeypatch):
    from prunelens.analysis import checked_path, evaluate

    monkeypatch.setattr(evaluate, "ESTIMATE_SIZE", 16)
    monkeypatch.setattr(checked_path, "KNOWN_GUARD", 4)
    low = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="bf16")
    exact = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="fp32")
    main, rest, rest_rows = low.low_batches
    subset = np.zeros(low.n, dtype=bool)
    subset[low.subset_rows(16, 0)] = True
    # 12 of the default estimate's 16 rows form ``rest``; 4 stay in ``main`` as the guard
    assert rest_rows.sum() == 12 and not (rest_rows & ~subset).any()
    assert sorted(torch.cat([b.index for b in main]).tolist()) == np.flatnonzero(~rest_rows).tolist()
    assert sorted(torch.cat([b.index for b in rest]).tolist()) == np.flatnonzero(rest_rows).tolist()

    masks = Masks(head=np.array([[1, 0, 1, 1], [0, 1, 1, 1]], np.float32))
    ran = []
    logits_of = low.low_encoder().logits
    monkeypatch.setattr(low._low, "logits", lambda batches, m, **kw: ran.append(batches) or logits_of(batches, m, **kw))
    low.subset(size=16).compare(masks)  # the first estimate: exact fp32 on the 16 rows
    rows, known = low._known_exact(masks)
    np.testing.assert_array_equal(rows, subset)
    out = low.outputs(masks)
    assert ran == [main]  # the 12 known rows were not run in bf16
    np.testing.assert_array_equal(out.logits[rows], known)
    reference = exact.outputs(masks)
    np.testing.assert_array_equal(out.logits.argmax(1), reference.logits.argmax(1))
    assert abs(out.loss.mean() - reference.loss.mean()) < 5e-3
    # without an estimate, ``rest`` runs in bf16 too
    other = Masks(head=np.array([[1, 1, 0, 1], [0, 1, 1, 1]], np.float32))
    ran.clear()
    out = low.outputs(other)
    assert ran == [main, rest]
    np.testing.assert_array_equal(out.logits.argmax(1), exact.outputs(other).logits.argmax(1))


def test_a_session_asking_during_the_fast_path_check_waits_for_it(tiny_session):
    import threading
    import time

    ev = Evaluator(tiny_session.loaded, tiny_session.data, precision="bf16")
    slow_reference = ev.reference_outputs

    def reference_outputs(*args, **kwargs):
        time.sleep(0.3)  # the first session is mid-check when the second one asks
        return slow_reference(*args, **kwargs)

    ev.reference_outputs = reference_outputs
    seen = {}
    first = threading.Thread(target=lambda: seen.setdefault("first", ev.fast_encoder()))
    first.start()
    time.sleep(0.1)
    seen["second"] = ev.fast_encoder()
    first.join()
    assert seen["first"] is not None and seen["second"] is seen["first"]
    masks = Masks(head=np.array([[1, 0, 1, 1], [1, 1, 1, 1]], np.float32))
    assert ev.precision_for(masks) == "bf16"


# -- CPUs without native bf16 (simulated: flags hidden or oneDNN capped by ONEDNN_MAX_CPU_ISA) ----


@pytest.fixture()
def no_bf16_cpu(monkeypatch):
    """This process as seen on a CPU whose oneDNN may not use bf16 instructions."""
    precision.native_bf16.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    yield
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    precision.native_bf16.cache_clear()


def test_native_bf16_reads_the_flags_and_the_onednn_isa_cap(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert "avx512_bf16/amx_bf16 absent" in precision.no_native_bf16_reason()
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    for cap, native in (("", True), ("ALL", True), ("avx512_core_bf16", True), ("AVX512_CORE_AMX", True),
                        ("AVX512_CORE_VNNI", False), ("AVX2", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert (precision.no_native_bf16_reason() is None) is native, cap
    assert "ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from bf16" in precision.no_native_bf16_reason()


def test_auto_on_a_cpu_without_native_bf16_is_fp32_and_says_why(tiny_session, no_bf16_cpu):
    assert not precision.native_bf16()
    ev = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="auto")
    path, why = ev.masked_path
    assert path == "fp32" and ev.masked_precision == "fp32" and ev.low_encoder() is None
    assert "no native bf16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in why
    assert "emulated bf16" in why and "int8" in why  # the measured alternatives, and why not
    forced = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="bf16")
    path, why = forced.masked_path
    assert path == "checked-bf16" and "although no native bf16" in why and "calibration error" in why


def test_paths_name_themselves_on_a_native_bf16_cpu(tiny_session, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    ev = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="auto")
    assert ev.masked_path[0] == "checked-bf16" and ev.masked_path[1].startswith("native bf16")
    exact = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="fp32")
    assert exact.masked_path == ("fp32", "fp32 requested (PRUNELENS_PRECISION=fp32 or precision='fp32')")


@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_int8_candidate_under_the_shared_rule_keeps_fp32_predictions(tiny_session, monkeypatch, kind):
    """The int8 candidate measured for such CPUs goes through the same calibration and re-checks."""
    from prunelens.analysis.fastpath import INT8, int8_linear_available

    assert int8_linear_available()
    monkeypatch.setattr(precision, "MAX_RELATIVE_ERROR", float("inf"))  # as --candidates does
    low = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="bf16")
    low.low_dtype = INT8
    exact = Evaluator(tiny_session.loaded, tiny_session.data, batch_size=8, precision="fp32")
    assert low.masked_path[0] == "checked-int8" and low.calibration.error > 0
    rng = np.random.default_rng(2)
    for _ in range(3):
        if kind == "head":
            masks = Masks(head=(rng.random((2, 4)) > 0.5).astype(np.float32))
        else:
            masks = Masks(neuron=(rng.random((2, 24)) > 0.5).astype(np.float32))
        assert low.precision_for(masks) == "int8"
        a, b = low.outputs(masks), exact.outputs(masks)
        np.testing.assert_array_equal(a.logits.argmax(1), b.logits.argmax(1))
        assert low.rechecked >= precision.GUARD_SIZE
        assert 0 < np.abs(a.logits - b.logits).max() < 0.5  # really int8, and close


# ---------------------------------------------------------------------------------------------
# sentence vectors (the embedding objective): nearest neighbours instead of classes


def _unit_circle(degrees):
    angles = np.radians(degrees)
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def test_vector_calibration_by_hand():
    exact = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])  # neighbours 2, 2, 1, gaps 0.45 and more
    low = exact.copy()
    low[0] = [1.0, 0.01]  # turned by atan(0.01): a unit-vector distance of 2 sin(angle / 2)
    cal, reason = precision.calibrate_vectors(exact, low)
    assert reason is None and cal.kind == "vectors" and cal.scale == 1.0
    assert cal.error == pytest.approx(2 * np.sin(np.arctan(0.01) / 2))
    assert cal.agreement == 1.0
    low[0] = [1.0, 1.0]  # 45 degrees: refused
    cal, reason = precision.calibrate_vectors(exact, low)
    assert cal is None and reason == "bf16 moves the unpruned sentence vectors by up to 0.765 (unit length)"
    tie = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # row 2 is as close to row 0 as to row 1
    cal, reason = precision.calibrate_vectors(tie, tie + [[0.0, 0.01], [0.0, 0.0], [0.0, 0.0]])
    assert cal is None and reason.startswith("it would recompute 100% of the sentences in fp32")


def test_uncertain_neighbours_are_a_close_call_and_its_candidates():
    # row 0's best is row 1 (cos 10° = 0.98481) just ahead of row 2 (cos 12° = 0.97815): a gap of
    # 0.00666; rows 1, 2, 3 decide by 0.0146, 0.0212 and 0.0343
    vectors = _unit_circle([0, 10, 12, 90]) * [[1], [2], [3], [4]]  # lengths do not matter
    none_exact = np.zeros(4, dtype=bool)
    assert not precision.uncertain_neighbours(vectors, none_exact, 0.0).any()
    # a bound of 0.002 per vector moves a cosine by up to 0.004004: row 0's gap is below twice that;
    # row 2 could still overtake row 1, row 3 could not
    assert precision.uncertain_neighbours(vectors, none_exact, 0.002).tolist() == [True, True, True, False]
    # once row 0 and its candidates are exact, its neighbour is decided
    exact = np.array([True, True, True, False])
    assert not precision.uncertain_neighbours(vectors, exact, 0.002).any()
    # at 0.004 (cosines move by 0.008016) row 1's gap is a close call too: the same three rows
    assert precision.uncertain_neighbours(vectors, none_exact, 0.004).tolist() == [True, True, True, False]
    # at 0.009 (0.018081) row 3's gap of 0.0343 is one as well
    assert precision.uncertain_neighbours(vectors, none_exact, 0.009).all()


def test_recheck_of_sentence_vectors_keeps_every_nearest_neighbour():
    from prunelens.analysis.objectives import nearest_neighbours

    rng = np.random.default_rng(0)
    exact = rng.normal(size=(300, 16))
    low = exact + rng.normal(size=exact.shape) * 0.001  # the mask rounds worse than calibrated
    cal = Calibration(error=0.0005, scale=1.0, agreement=1.0, kind="vectors")
    asked = []

    def exact_of(rows):
        asked.append(int(rows.sum()))
        return exact[rows]

    vectors, n = recheck(low, cal, exact_of)
    assert (nearest_neighbours(low) != nearest_neighbours(exact)).any()  # bf16 alone would be wrong
    assert (nearest_neighbours(vectors) == nearest_neighbours(exact)).all()
    assert len(asked) >= 3 and n == sum(asked) and precision.GUARD_SIZE < n < len(exact)


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    """A tiny headless encoder (random, mean pooling, normalized) and 40 sentences."""
    from prunelens.analysis.data import load_data
    from prunelens.analysis.models import load_model
    from tests.unit.test_objectives import write_tiny_encoder
    from tests.tiny import tiny_frame

    folder = write_tiny_encoder(tmp_path_factory.mktemp("encoder"), "mean", normalize=True)
    csv = tmp_path_factory.mktemp("sentences") / "text.csv"
    tiny_frame(40)[["text"]].to_csv(csv, index=False)
    return load_model(str(folder)), load_data(str(csv))


def test_bf16_is_refused_where_most_neighbours_are_close_calls(sentences):
    """The tiny random encoder's 40 vectors sit closer together than bf16's error: checking them
    would recompute nearly all, so the evaluator stays exact and says why."""
    ev = Evaluator(*sentences, batch_size=8, precision="bf16", objective="embedding")
    assert ev.low_encoder() is None and ev.precision_for(Masks(head=np.ones((2, 4), np.float32) * 0.5)) == "fp32"
    path, why = ev.masked_path
    assert path == "fp32" and why.startswith("checked bf16 refused: it would recompute")
    assert "of the sentences in fp32 (their nearest-neighbour gaps are below" in why


def test_bf16_sentence_vectors_keep_fp32_nearest_neighbours(sentences, monkeypatch):
    from prunelens.analysis.objectives import nearest_neighbours

    monkeypatch.setattr(precision, "MAX_RECHECK_SHARE", 1.0)  # check them all the same
    low = Evaluator(*sentences, batch_size=8, precision="bf16", objective="embedding")
    exact = Evaluator(*sentences, batch_size=8, precision="fp32", objective="embedding")
    assert low.low_encoder() is not None, low.low_note
    assert low.masked_path[0] == "checked-bf16" and low.calibration.kind == "vectors"
    rng = np.random.default_rng(3)
    for _ in range(4):
        masks = Masks(head=(rng.random((2, 4)) > 0.4).astype(np.float32))
        assert low.precision_for(masks) == "bf16"
        a, b = low.outputs(masks), exact.outputs(masks)
        np.testing.assert_array_equal(nearest_neighbours(a.logits), nearest_neighbours(b.logits))
        assert low.evaluate(masks).extras["neighbour_agreement"] == exact.evaluate(masks).extras["neighbour_agreement"]
        assert abs(low.evaluate(masks).accuracy - exact.evaluate(masks).accuracy) < 5e-3  # mean cosine: rounding
        assert low.rechecked >= precision.GUARD_SIZE


def test_paired_sentences_stay_exact_fp32(tmp_path):
    from prunelens.analysis.data import load_data
    from prunelens.analysis.models import load_model
    from tests.unit.test_objectives import write_tiny_encoder
    from tests.tiny import tiny_frame

    folder = write_tiny_encoder(tmp_path / "encoder", "mean")
    frame = tiny_frame(12)
    pd_frame = frame.assign(text_pair=frame["text"].iloc[::-1].to_numpy(), score=np.arange(12) / 12)
    pd_frame[["text", "text_pair", "score"]].to_csv(tmp_path / "sts.csv", index=False)
    ev = Evaluator(load_model(str(folder)), load_data(str(tmp_path / "sts.csv")), precision="bf16",
                   objective="embedding")
    assert ev.masked_path == ("fp32", "exact fp32: the data pairs its sentences (sts), and the checked bf16 "
                                      "path protects nearest neighbours, not pair ranks")
    assert ev.low_encoder() is None
