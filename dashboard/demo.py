"""Demo mode for lectures: ``?demo=1`` hides developer chrome and shows a guided path.

:func:`active` reads the flag (``?demo=1`` turns it on, ``?demo=0`` off; it is kept for the
browser session and in the address bar, so a shared link opens in demo mode too).
:func:`hide_chrome` hides Streamlit's toolbar; pages ask :func:`active` before they draw
developer details (fingerprints, JSON downloads, result-store notes). :func:`guide` draws the
step box at the top of a page: step k of n, what to look at, and a link to the next page.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

KEY = "prunelens.demo"
QUERY = "demo"


@dataclass(frozen=True)
class Step:
    title: str  # the page title in the navigation
    look: str  # one sentence: what to look at on this page


STEPS = (
    Step("Model & data", "Start here: the full model's accuracy is the reference every pruned model "
                         "is compared with; the margin says how sure it is of its answers."),
    Step("Importance", "Each cell is one attention head; bright means the method thinks it matters. "
                       "Click a bright head and a dark one and compare their scores."),
    Step("Prune", "Move the sparsity slider slowly: accuracy often holds while a surprising share of "
                  "the heads is gone, and then falls off."),
    Step("Compare", "Do the methods agree? Read the correlation matrix, then see which curve stays "
                    "above the dotted random line the longest."),
    Step("Spectral", "Capping each matrix's largest stretch keeps activations comparable across "
                     "layers; exact normalization breaks the model, and that is the lesson."),
    Step("Attention", "Type your own sentence: see which words each head looks at, and which heads "
                      "a method would remove."),
)


def _on(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def active() -> bool:
    """Whether demo mode is on for this browser session (and keep ``demo=1`` in the URL)."""
    raw = st.query_params.get(QUERY)
    if raw is not None:
        st.session_state[KEY] = _on(raw)
    on = bool(st.session_state.get(KEY, False))
    if on and st.query_params.get(QUERY) != "1":
        st.query_params[QUERY] = "1"
    elif not on and QUERY in st.query_params:
        del st.query_params[QUERY]
    return on


def step_of(title: str) -> int | None:
    """0-based position of a page on the guided path, or None when it is not on it."""
    return next((i for i, s in enumerate(STEPS) if s.title == title), None)


def hide_chrome() -> None:
    """Hide Streamlit's toolbar and header decoration (the lecture shows only the app)."""
    st.markdown("<style>[data-testid='stToolbar'], [data-testid='stDecoration'], "
                "[data-testid='stStatusWidget'] {display: none !important;}</style>",
                unsafe_allow_html=True)


def _link_query() -> dict[str, str]:
    """The model/data choice and the demo flag, carried to the next page."""
    keep = {k: st.query_params[k] for k in ("model", "data", "limit") if k in st.query_params}
    return {**keep, QUERY: "1"}


def guide(title: str, pages: dict) -> None:
    """The step box for the page ``title``; ``pages`` maps titles to ``st.Page`` objects."""
    k = step_of(title)
    box = st.container(border=True, key="demo.guide")
    if k is None:
        box.markdown("**Guided demo.** This page is not on the path.")
        if STEPS[0].title in pages:
            box.page_link(pages[STEPS[0].title], label=f"Back to step 1: {STEPS[0].title}",
                          icon=":material/restart_alt:", query_params=_link_query())
        return
    step = STEPS[k]
    link = _link_query()
    box.markdown(f"**Guided demo · step {k + 1} of {len(STEPS)}: {step.title}.** {step.look}")
    following = next((s for s in STEPS[k + 1:] if s.title in pages), None)
    if following is not None:
        box.page_link(pages[following.title], label=f"Next: {following.title}",
                      icon=":material/arrow_forward:", query_params=link)
    elif STEPS[0].title in pages:
        box.page_link(pages[STEPS[0].title], label="End of the tour: back to the start",
                      icon=":material/restart_alt:", query_params=link)
