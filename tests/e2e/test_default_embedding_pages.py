"""The second embedded default, ``default-embedding``: every page opens on it and answers from the
shipped store (an empty user store; nothing asks for a click, nothing says "accuracy")."""

from __future__ import annotations

import pytest

PAGES = ("model_data", "importance", "prune", "compare", "spectral", "attention", "training")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers_default_embedding_from_the_shipped_store(open_page, page):
    at = open_page(page, model="default-embedding", data="default")
    texts = " ".join(str(e.value) for e in (*at.info, *at.warning, *at.markdown, *at.caption))
    assert "not in the store yet" not in texts
    assert not [b for b in at.button if b.label.startswith(("Compute", "Draw curves"))]
    labels = [m.label for m in at.metric]
    assert not any("accuracy" in label for label in labels), labels
    if page in ("model_data", "prune"):
        assert any("cosine" in label for label in labels), labels
    if page == "training":
        assert any("gold labels" in str(w.value) for w in at.warning)


@pytest.mark.parametrize("page", ("model_data", "prune"))
def test_pages_speak_agreement_on_data_without_labels(open_page, tmp_path, page):
    """A classifier on a text-only file: the objective is agreement, said on the page, and the
    metric cards are named after it."""
    from tests.tiny import tiny_frame

    path = tmp_path / "text.csv"
    tiny_frame(40)[["text"]].to_csv(path, index=False)
    at = open_page(page, data=str(path), method="magnitude")
    labels = [m.label for m in at.metric]
    assert any("agreement" in label for label in labels) and not any("accuracy" in label for label in labels)
    assert any("the data has no labels" in str(i.value) for i in at.info)
    assert any("objective: **agreement**" in str(s.value) for s in at.sidebar.success)
