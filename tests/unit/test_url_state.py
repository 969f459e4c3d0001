"""dashboard/url_state.py: ``bound`` binds a widget to the URL, draws it and shares its value in
one call; values from a link are checked (options, bounds, cast) before any widget sees them."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from prunelens.dashboard import url_state

    scope = url_state.bound(st.radio, "Scope", "t.scope", "global", "scope", options=["global", "layer"])
    sparsity = url_state.bound(st.slider, "Sparsity", "t.sparsity", 0.5, "sparsity", bounds=(0.0, 0.95),
                               min_value=0.0, max_value=0.95, step=0.05)
    heads = url_state.bound(st.multiselect, "Heads", "t.heads", [0, 1, 2], "heads", options=[0, 1, 2],
                            cast=lambda raw: [int(h) for h in raw.strip("[]").split(",") if h.strip()],
                            omit=[0, 1, 2])
    text = url_state.bound(st.text_input, "Text", "t.text", "", "text", omit="")
    st.write(f"values {scope} {sparsity} {heads} {text!r}")


def _run(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_function(_script, default_timeout=30)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    return at.run()


def _shared(at: AppTest) -> dict[str, str]:
    """The URL parameters after a run (AppTest keeps a link's as lists, the app's as strings)."""
    return {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}


def _values(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("values"))


def test_defaults_are_drawn_and_shared_except_omitted_ones():
    at = _run()
    assert not at.exception
    assert _values(at) == "values global 0.5 [0, 1, 2] ''"
    assert at.radio[0].value == "global" and at.slider[0].value == 0.5
    shared = _shared(at)
    assert shared["scope"] == "global" and shared["sparsity"] == "0.5"
    assert "heads" not in shared and "text" not in shared  # omitted: their default needs no URL


def test_a_link_sets_the_widgets_and_bad_values_fall_back():
    at = _run({"scope": "layer", "sparsity": "7", "heads": "[2,0]", "text": "hi"})
    assert not at.exception
    assert _values(at) == "values layer 0.95 [2, 0] 'hi'"  # 7 clamped into the slider's range
    bad = _run({"scope": "everywhere", "sparsity": "nan"})
    assert _values(bad) == "values global 0.5 [0, 1, 2] ''"  # not an option / not finite: defaults


def test_a_widget_change_is_shared_and_an_omitted_value_leaves_the_url():
    at = _run({"text": "hi"})
    at.radio[0].set_value("layer")
    at.text_input[0].set_value("")
    at.run()
    shared = _shared(at)
    assert shared["scope"] == "layer"
    assert "text" not in shared
