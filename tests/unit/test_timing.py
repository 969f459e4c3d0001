"""The one timing protocol (issue 30 item 5): warm-up untimed, interleaved repeats, medians, the
median per-pair ratio and its spread — checked against a scripted clock."""

from __future__ import annotations

import pytest

from prunelens.analysis import timing


def test_compare_warms_up_interleaves_and_takes_medians(monkeypatch):
    order = []
    ticks = iter([0, 4, 4, 6, 6, 11, 11, 13, 13, 16, 16, 17])  # a: 4, 5, 3; b: 2, 2, 1
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    seen = []
    t = timing.compare(lambda: order.append("a"), lambda: order.append("b"), repeats=3, warmup=1,
                       progress=lambda f, m: seen.append(f))
    assert order == ["a", "b"] * 4  # one untimed warm-up pair, then A, B, A, B, A, B
    assert t.a_runs == [4, 5, 3] and t.b_runs == [2, 2, 1]
    assert (t.a_seconds, t.b_seconds) == (4, 2)
    assert t.ratio == pytest.approx(2.5) and t.spread == pytest.approx((2.0, 3.0))  # ratios 2, 2.5, 3
    assert seen == [i / 8 for i in range(1, 9)]
    assert t.describe() == "2.50x (runs ranged 2.00x–3.00x; median of 3 interleaved runs after 1 warm-up)"
