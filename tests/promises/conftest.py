"""Fixtures the promise tests share: an isolated store, and a guard that the arguments are
refused before any model or data set loads."""

from __future__ import annotations

import pytest


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """An empty user store of the test's own, and no hub downloads."""
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail if anything opens a model or data set (arguments must be refused first)."""
    import prunelens.analysis.operations

    def refuse(*args, **kwargs):
        raise AssertionError("the model and data were loaded before the arguments were checked")

    monkeypatch.setattr(prunelens.analysis.operations, "open_session", refuse)
