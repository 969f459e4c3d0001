"""A long session: 500 slider moves in a row on the Prune page of one real server.

Each move is what a browser sends when the sparsity slider (inside ``st.fragment``) moves: a
fragment rerun with the new value. Sparsities walk through 450 distinct values (more than the
page's memo holds), and every 10th move returns to 0.25, which must give the same answer each
time. The server's resident memory (launcher plus
streamlit process) is sampled every 25 moves; the curve is printed and written to
``rss_curve.json`` under the test's tmp dir. After a warm-up it must stay flat: bounded caches,
no hooks or outputs piling up.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.promises.test_concurrency import PRUNE_PAGE, StreamlitClient, start_server, stop_server

MOVES = 500
EVERY = 25
WARM_UP = 100  # moves before the baseline sample (caches fill, allocator settles)
MAX_GROWTH_MB = 40.0  # allowed RSS growth from the baseline to the end


@pytest.mark.slow
def test_500_slider_moves_memory_flat(tmp_path, tiny_csv):
    from tests.tiny import write_tiny_bert

    model = write_tiny_bert(tmp_path / "model", layers=4, heads=4, hidden=64, ffn=128, seed=3)
    server = start_server(tmp_path)
    query = {"model": str(model), "data": str(tiny_csv), "method": "magnitude", "unit": "head",
             "sparsity": "0.5"}
    curve: list[dict] = []
    losses: dict[float, str] = {}

    async def session() -> None:
        async with StreamlitClient(server.port, timeout=600) as tab:
            page = await tab.run(query, PRUNE_PAGE)
            assert page.exceptions() == [] and page.alerts(1) == []
            fragment, slider = page.slider("Sparsity")
            curve.append({"move": 0, "rss_mb": server.rss() / 2**20})
            for move in range(1, MOVES + 1):
                # every 10th move returns to 0.25; the others walk through distinct values
                sparsity = 0.25 if move % 10 == 0 else round((move * 0.0137) % 0.95, 4)
                moved = await tab.run(query, PRUNE_PAGE, widgets={slider.id: sparsity},
                                      fragment_id=fragment)
                assert moved.exceptions() == [], (move, moved.exceptions())
                loss = moved.metrics()["loss"]
                # the same slider value always gives the same answer, however late in the run
                assert losses.setdefault(sparsity, loss) == loss, (move, sparsity)
                if move % EVERY == 0:
                    curve.append({"move": move, "rss_mb": server.rss() / 2**20})

    try:
        asyncio.run(asyncio.wait_for(session(), 1500))
    finally:
        stop_server(server)
    out = tmp_path / "rss_curve.json"
    baseline = next(p["rss_mb"] for p in curve if p["move"] == WARM_UP)
    growth = curve[-1]["rss_mb"] - baseline
    out.write_text(json.dumps({"moves": MOVES, "every": EVERY, "curve": curve,
                               "baseline_move": WARM_UP, "growth_mb": growth}, indent=2))
    print(f"RSS curve ({out}):")
    print(" ".join(f"{p['move']}:{p['rss_mb']:.0f}" for p in curve))
    print(f"growth after move {WARM_UP}: {growth:+.1f} MB; distinct sparsities {len(losses)}")
    assert len(curve) == MOVES // EVERY + 1
    assert len(losses) > 400  # the walk did evaluate many distinct settings (beyond any memo)
    assert growth < MAX_GROWTH_MB, curve
