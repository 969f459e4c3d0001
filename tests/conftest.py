"""Shared fixtures: a tiny random BERT (2 layers, 4 heads) and tiny data written to temp folders,
loaded through the real loading code; an isolated result store per test."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# exactness tests compare with the reference forward: fp32 everywhere unless a test asks for
# bf16 (tests/unit/test_precision.py checks the checked-bf16 path and the ``auto`` default)
os.environ.setdefault("PRUNELENS_PRECISION", "fp32")
# the store's signing secret of this test run (servers the tests start inherit it), not the user's
os.environ.setdefault("PRUNELENS_SECRET_FILE", os.path.join(tempfile.mkdtemp(prefix="prunelens-secret-"),
                                                            "store-key"))
# the dashboard reads data files and model folders only inside its data roots (dashboard/
# data_roots.py): the tests' temp folders and this checkout (servers the tests start inherit it)
os.environ.setdefault("PRUNELENS_DATA_ROOTS", os.pathsep.join(
    [tempfile.gettempdir(), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]))
torch.set_num_threads(min(2, torch.get_num_threads()))

from tests.tiny import write_tiny_bert, write_tiny_csv  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory):
    return write_tiny_csv(tmp_path_factory.mktemp("tiny_data") / "tiny.csv")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_bert_dir):
    from prunelens.analysis.models import load_model

    return load_model(str(tiny_bert_dir))


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """An empty user store in a temp folder and no shipped results."""
    from prunelens.analysis.cache import ResultStore

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    return ResultStore(tmp_path / "store", shipped_dir=None)


@pytest.fixture()
def tiny_session(tiny_loaded, tiny_csv, store):
    from prunelens.analysis.operations import open_session

    torch.manual_seed(0)
    return open_session(data=str(tiny_csv), loaded=tiny_loaded, store=store)


@pytest.fixture(scope="session")
def default_loaded():
    from prunelens.analysis.models import load_model

    return load_model("default")


DASHBOARD_APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dashboard", "app.py")
APPTEST_TIMEOUT = 120


@pytest.fixture()
def open_page(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    """Open a dashboard page under Streamlit's AppTest, as a shared link would: the page from
    ``st.session_state["prunelens.page"]``, model/data (the tiny ones by default) and any other
    settings from query parameters, an empty store in a temp folder."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))

    def _open(page: str, model: str | None = None, data: str | None = None, **query) -> AppTest:
        at = AppTest.from_file(DASHBOARD_APP, default_timeout=APPTEST_TIMEOUT)
        at.query_params["model"] = model or str(tiny_bert_dir)
        at.query_params["data"] = data or str(tiny_csv)
        for k, v in query.items():
            at.query_params[k] = v
        at.session_state["prunelens.page"] = page
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return _open
