"""dashboard/results.py: memoized page results are keyed by the session's identity (model and data
fingerprints and store, through ``hash_funcs``), not by the Session object."""

from __future__ import annotations

import numpy as np

from prunelens.analysis.cache import ResultStore
from prunelens.analysis.operations import Session


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
