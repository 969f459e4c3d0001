"""dashboard/results.py: memoized page results are keyed by the session's identity (model and data
fingerprints and store, through ``hash_funcs``), not by the Session object."""

from __future__ import annotations

import numpy as np

from prunelens.analysis.cache import ResultStore
from prunelens.analysis.session import Session


def test_sessions_on_the_same_model_data_and_store_share_their_entries(tiny_loaded, tiny_session, tmp_path,
                                                                        monkeypatch):
    import prunelens.analysis.operations
    from prunelens.dashboard import results

    computed = []

    class Scored:
        def __init__(self, value):
            self.scores = np.full((2, 4), value)

    def fake_compute(session, method, unit, params):
        computed.append(results.session_id(session))
        return Scored(float(len(computed)))

    monkeypatch.setattr(prunelens.analysis.operations, "compute_scores", fake_compute)
    results._cheap_scores.clear()
    same = Session(tiny_loaded, tiny_session.data, ResultStore(tiny_session.store.user_dir))
    elsewhere = Session(tiny_loaded, tiny_session.data, ResultStore(tmp_path / "elsewhere"))
    assert same is not tiny_session and results.session_id(same) == results.session_id(tiny_session)

    first = results.cheap_scores(tiny_session, "magnitude", "head", {})
    again = results.cheap_scores(same, "magnitude", "head", {})  # another object, same identity
    assert first == again == np.full((2, 4), 1.0).tolist() and len(computed) == 1
    other = results.cheap_scores(elsewhere, "magnitude", "head", {})  # another store: its own entry
    assert other == np.full((2, 4), 2.0).tolist() and len(computed) == 2
    assert results.cheap_scores(tiny_session, "magnitude", "head", {"seed": 1}) == np.full((2, 4), 3.0).tolist()


def test_the_dashboard_finds_every_shipped_entry_the_cli_finds(default_loaded, tmp_path, monkeypatch):
    """Every entry of cached_results/ read as the CLI reads it and as a page reads it, from an
    empty user store: the checked-bf16 entries (the shipped ablation scores) included."""
    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # a user's default: checked-bf16 answers are read
    from prunelens.analysis.batches import training_fingerprint
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import open_session, stored_scores
    from prunelens.dashboard import results

    from prunelens.analysis.models import load_model

    store = ResultStore(tmp_path / "empty")
    embedding = load_model("default-embedding")
    # the shipped entries' sessions: the default (labels, and agreement for docs/FIDELITY.md's
    # label-free section) and default-embedding (embedding), by (model, objective)
    sessions = {(m.fingerprint, objective): open_session(loaded=m, store=store, objective=objective)
                for m, objective in ((default_loaded, "labels"), (default_loaded, "agreement"),
                                     (embedding, "embedding"))}
    entries = store.entries()
    kinds = {e["key"]["kind"] for e in entries}
    assert len(entries) > 500 and {"scores", "mask-eval", "train-run", "spectral-sigmas"} <= kinds
    checked = training_keyed = 0
    for entry in entries:
        key = entry["key"]
        params = dict(key["params"])
        session = sessions[(key["model"], params.pop("objective", "labels"))]
        # the evaluation data's, or a training-split score's own (its old key kept beside it)
        assert key["data"] in (session.data.fingerprint, training_fingerprint(session))
        training_keyed += key["data"] != session.data.fingerprint
        if params.get("precision") == "bf16":  # asked for as the exact setting, found under the checked key
            del params["precision"]
            checked += 1
        cli = session.lookup(key["kind"], key["method"], key["unit"], params)
        page = results.stored(session, key["kind"], key["method"], key["unit"], params)
        assert cli is not None and page == cli, key
        if key["kind"] == "scores" and get_method(key["method"]).validate(params) == params:
            # (an entry stored before a parameter was added, smp's without mask_style, is not a
            # setting anyone can ask for any more: read by its own key above only)
            assert np.array_equal(stored_scores(session, key["method"], key["unit"], params),
                                  np.asarray(page["scores"], dtype=np.float64)), key
    assert checked >= 3  # ablation's head, attention and ffn scores at least
    assert training_keyed >= 40  # michel, ablation, pins, platon, smp, smp-pruner under both defaults


def test_prune_memoized_says_which_settings_prune_result_answered(tiny_session):
    """The Prune page skips the estimate for a setting whose full answer is memoized; the memo
    key is the results module's own (the page does not rebuild it)."""
    from prunelens.dashboard import results

    args = ("magnitude", "head", {}, 0.5, None, "global", False, False)
    results._prune.clear()
    results._memoized_prunes().clear()
    assert not results.prune_memoized(tiny_session, *args)
    first = results.prune_result(tiny_session, *args)
    assert results.prune_memoized(tiny_session, *args)
    assert not results.prune_memoized(tiny_session, "magnitude", "head", {}, 0.25, None, "global", False, False)
    assert results.prune_result(tiny_session, *args) == first
