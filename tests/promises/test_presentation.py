"""Presentation: figure export (PNG/SVG), demo mode, teaching texts, short labels, chrome.

AppTest pages run on the tiny random BERT (see tests/e2e/test_dashboard_pages.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAX_LABEL = 12  # characters: five metrics share a row at 1024 px

def _downloads(at: AppTest) -> list[str]:
    return [b.proto.label for b in at.get("download_button")]


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [i.value for i in at.info]
    return "\n".join(parts)


# ---------------------------------------------------------------- figure export


def _small_figure():
    from prunelens.dashboard import figures

    return figures.delta_bars({"accuracy": -0.1, "loss": 0.2, "margin": -0.3,
                               "accuracy_se": 0.01, "loss_se": 0.02, "margin_se": 0.03})


def test_figure_exports_png_and_svg():
    from prunelens.dashboard import figures

    missing = figures.export_missing()
    if missing:
        pytest.skip(f"PNG/SVG export unavailable here: {missing}")
    png = figures.figure_image(_small_figure(), "png", width=400, scale=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    svg = figures.figure_image(_small_figure(), "svg", width=400)
    assert svg.lstrip().startswith(b"<svg") and svg.rstrip().endswith(b"</svg>")
    with pytest.raises(ValueError, match="png or svg"):
        figures.figure_image(_small_figure(), "gif")


def test_show_figure_offers_png_and_svg_beside_html(open_page):
    from prunelens.dashboard import figures

    at = open_page("spectral")
    labels = _downloads(at)
    assert "HTML" in labels
    if figures.export_missing():
        assert not {"PNG", "SVG"} & set(labels)
        assert any("PNG/SVG downloads are off" in c.value for c in at.caption)
    else:
        assert labels.count("PNG") == labels.count("SVG") == labels.count("HTML")


# ---------------------------------------------------------------- demo mode


def test_demo_mode_hides_developer_chrome_and_guides(open_page):
    plain = open_page("model_data")
    assert "JSON" in _downloads(plain)
    assert "fingerprint" in _texts(plain)
    assert "Guided demo" not in _texts(plain)

    at = open_page("model_data", demo="1")
    assert not at.error
    labels = _downloads(at)
    assert labels and not any("JSON" in label for label in labels), labels
    text = _texts(at)
    assert "Guided demo · step 1 of 6: Model & data." in text
    assert "fingerprint" not in text
    assert "`" not in at.sidebar.success[0].value  # no fingerprint in the sidebar either
    links = [e.proto.label for e in at.get("page_link")]
    assert "Next: Importance" in links


def test_demo_mode_guides_the_prune_page(open_page):
    at = open_page("prune", demo="1", method="random", sparsity="0.25")
    assert not at.exception and not at.error
    assert "Guided demo · step 3 of 6: Prune." in _texts(at)
    assert not any("JSON" in label for label in _downloads(at))


# ---------------------------------------------------------------- teaching texts


def test_every_method_has_a_plain_sentence():
    from prunelens.analysis.methods import all_methods

    for name, method in all_methods().items():
        assert method.plain.strip(), name
        assert method.plain != method.summary, name
        assert "ξ" not in method.plain and "∂" not in method.plain, name


def test_spectral_page_says_chance_accuracy_is_the_lesson(open_page):
    at = open_page("spectral", exact="true")
    assert "chance accuracy" in _texts(at)  # said up front, before evaluating
    at.toggle(key="spec.evaluate").set_value(True).run()
    assert not at.exception and not at.error
    assert any("Chance accuracy here is the expected result" in i.value for i in at.info)


def test_margin_is_explained_where_it_is_shown(open_page):
    for page, query in (("model_data", {}), ("prune", {"method": "random"})):
        at = open_page(page, **query)
        assert "<b>margin</b>" in _texts(at), page
        margin = next(m for m in at.metric if m.label.endswith("margin"))
        assert "correct answer" in margin.help, page


def test_metric_labels_are_short(open_page):
    pages = (("model_data", {}), ("prune", {"method": "random", "sparsity": "0.5"}),
             ("spectral", {"exact": "true"}))
    for page, query in pages:
        at = open_page(page, **query)
        if page == "spectral":
            at.toggle(key="spec.evaluate").set_value(True).run()
        labels = [m.label for m in at.metric]
        assert labels, page
        assert all(len(label) <= MAX_LABEL for label in labels), (page, labels)


def test_figure_panel_titles_fit():
    from prunelens.dashboard import figures

    fig = _small_figure()
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["accuracy", "loss", "margin"]
    assert figures.CHART_CONFIG["displayModeBar"] == "hover"


# ---------------------------------------------------------------- chrome


def test_deploy_button_is_hidden(monkeypatch):
    from prunelens.analysis import cli

    seen = {}
    monkeypatch.setattr(cli, "_launch", lambda cmd, env=None: seen.setdefault("cmd", cmd) and 0)
    cli.main(["dashboard", "--port", "8599"])
    cmd = seen["cmd"]
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "viewer"
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"


def test_every_cached_function_has_a_human_spinner():
    source = "\n".join(p.read_text() for p in sorted((ROOT / "dashboard").rglob("*.py")))
    decorators = re.findall(r"@st\.cache_(?:data|resource)(\([^)]*\))?", source)
    assert len(decorators) >= 10  # loading.py and results.py
    for args in decorators:
        assert args and "show_spinner=" in args, args


def test_attention_views_fit_and_have_one_layer_selector():
    import numpy as np

    from prunelens.analysis.attention import AttentionMaps
    from prunelens.dashboard.attention_view import view_html

    maps = AttentionMaps(tokens=["[CLS]", "good", "[SEP]"],
                         attention=np.full((2, 4, 3, 3), 1 / 3, dtype=np.float32),
                         head_mask=np.ones((2, 4), dtype=np.int8))
    head = view_html(maps, view="head")
    root = re.search(r'id="(bertviz-[0-9a-f]+)"', head).group(1)
    assert f"#{root} > span {{ display: none; }}" in head  # bertviz's own Layer: dropdown
    model = view_html(maps, view="model")
    assert "viewBox" in model and "preserveAspectRatio" in model


def test_spectral_lesson_follows_chance_not_the_exact_box(open_page, monkeypatch):
    # issue 30 item 11: cap 1 falls to chance too, but the note showed only with Exact; the
    # delta chart of a normalized copy said "vs the unpruned model"
    from prunelens.dashboard import results

    def fake(accuracy):
        metrics = {"accuracy": accuracy, "accuracy_se": 0.01, "loss": 0.7, "margin": 0.0}
        return lambda session, cap: {"pruned": metrics, "delta": {"accuracy": accuracy - 0.8,
                                                                  "loss": 0.2, "margin": -0.1}}

    for accuracy, cap, lesson in ((0.5, "1.0", True), (0.79, "5.0", False)):
        monkeypatch.setattr(results, "normalized_eval", fake(accuracy))
        at = open_page("spectral", cap=cap)
        at.toggle(key="spec.evaluate").set_value(True).run()
        assert not at.exception
        shown = any("Chance accuracy here is the expected result" in i.value for i in at.info)
        assert shown is lesson, (accuracy, cap)
        [chart] = [c for c in at.get("plotly_chart") if "Change vs" in c.proto.spec]
        assert "Change vs the model as loaded" in chart.proto.spec


def test_demo_mode_closes_the_parameters_and_the_unit_shares_are_explained(open_page):
    at = open_page("importance", method="pins", demo="1")
    [params] = [e for e in at.expander if e.label == "Parameters"]
    assert params.proto.expanded is False
    at = open_page("importance", method="pins")
    [params] = [e for e in at.expander if e.label == "Parameters"]
    assert params.proto.expanded is True
    at = open_page("model_data")
    assert any("adds up to about 200 %" in c.value for c in at.caption)
