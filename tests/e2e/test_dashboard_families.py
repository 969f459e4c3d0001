"""Every dashboard page opens on a tiny checkpoint of every non-BERT family (issue 32; the BERT
layout's pages are tests/e2e/test_dashboard_pages.py), as a shared link opens it."""

from __future__ import annotations

import warnings

import pytest
from streamlit.testing.v1 import AppTest

from prunelens.analysis.layout import FAMILIES, family_for_type
from tests.conftest import APPTEST_TIMEOUT, DASHBOARD_APP
from tests.tiny import FAMILY_CONFIGS, write_tiny_family

PAGES = ("model_data", "importance", "prune", "compare", "spectral", "attention", "training")
NAMES = [n for n in FAMILY_CONFIGS if family_for_type(n) is not FAMILIES["bert"]]


@pytest.mark.parametrize("name", NAMES)
def test_every_page_opens_on_the_family(name, tiny_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = write_tiny_family(tmp_path / name, name)
    titles = set()
    for page in PAGES:
        at = AppTest.from_file(DASHBOARD_APP, default_timeout=APPTEST_TIMEOUT)
        at.query_params["model"] = str(folder)
        at.query_params["data"] = str(tiny_csv)
        at.session_state["prunelens.page"] = page
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert "4 heads" in at.sidebar.success[0].value
        titles.add(at.title[0].value)
    assert len(titles) == len(PAGES)  # each page opened, not the first one again


def test_pages_open_on_an_already_pruned_checkpoint(tiny_csv, tmp_path, monkeypatch):
    """An export of a tiny MPNet (layer 0 lost every head): absent heads draw blank, no page fails."""
    import numpy as np

    from prunelens.analysis.gates import Masks
    from prunelens.analysis.models import load_model
    from prunelens.analysis.pruned_folder import save_pruned
    from prunelens.analysis.pruning import physically_prune

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(str(write_tiny_family(tmp_path / "mpnet", "mpnet")))
        head = np.ones((2, 4), dtype=np.float32)
        head[0] = 0
        head[1, 2] = 0
        save_pruned(physically_prune(loaded.model, Masks(head=head)), loaded.tokenizer, tmp_path / "E", {})
    for page in ("importance", "prune", "attention"):
        at = AppTest.from_file(DASHBOARD_APP, default_timeout=APPTEST_TIMEOUT)
        at.query_params["model"] = str(tmp_path / "E")
        at.query_params["data"] = str(tiny_csv)
        at.session_state["prunelens.page"] = page
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
