"""A burst of slider moves on the real server: the newest move wins, the stale ones are stopped
(issue 18, item 5).

One websocket session (Streamlit's own protocol, tests/promises/test_concurrency.StreamlitClient) opens the
Prune page on a data set big enough that a full evaluation takes a while, then sends four
slider moves 50 ms apart, as arrow presses do, without waiting for answers. Each move that is
not the last must be stopped at its next evaluation batch (analysis/checkpoints.py): only the last
move's evaluation lands in the result store, and the page ends showing the last position. Before
the fix every move ran to the end in turn.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.promises.test_concurrency import PRUNE_PAGE, Page, StreamlitClient, start_server, stop_server

FINISHED_EARLY_FOR_RERUN, FINISHED_FRAGMENT_RUN = 2, 3


def _mask_evaluations(store) -> int:
    return sum(json.loads(p.read_text())["key"]["kind"] == "mask-eval" for p in store.glob("*/*.json"))


async def _burst(tab: StreamlitClient, query: dict, fragment: str, slider_id: str,
                 sparsities: list[float]) -> list[Page]:
    """Send the moves 50 ms apart, then read runs until the last position is drawn."""
    for s in sparsities:
        await tab.send({**query, "sparsity": str(s)}, PRUNE_PAGE, {slider_id: s}, fragment)
        await asyncio.sleep(0.05)
    runs = []
    while True:
        runs.append(await tab.read_run())
        if runs[-1].status == FINISHED_FRAGMENT_RUN and runs[-1].metrics().get("units cut") == "75.0%":
            return runs


@pytest.mark.slow
def test_a_burst_of_moves_evaluates_only_the_last(tmp_path):
    from tests.tiny import write_tiny_bert, write_tiny_csv

    model = write_tiny_bert(tmp_path / "model", layers=4, heads=4, hidden=64, ffn=256, seed=1)
    data = write_tiny_csv(tmp_path / "big.csv", n=12000, seed=2)
    server = start_server(tmp_path)
    store = tmp_path / "store"
    query = {"model": str(model), "data": str(data), "method": "magnitude", "unit": "head",
             "sparsity": "0.0"}
    try:
        async def session() -> tuple[Page, list[Page], int, int]:
            async with StreamlitClient(server.port) as tab:
                first = await tab.run(query, PRUNE_PAGE)
                fragment, slider = first.slider("Sparsity")
                before = _mask_evaluations(store)
                runs = await _burst(tab, query, fragment, slider.id, [0.25, 0.5, 0.625, 0.75])
                return first, runs, before, _mask_evaluations(store)

        first, runs, before, after = asyncio.run(session())
    finally:
        stop_server(server)
    assert first.exceptions() == [] and runs[-1].exceptions() == []
    assert after - before == 1, (f"{after - before} evaluations landed for 4 moves "
                                 f"(run endings {[r.status for r in runs]})")
    assert FINISHED_EARLY_FOR_RERUN in [r.status for r in runs]  # stale runs were stopped
