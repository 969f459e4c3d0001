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
