"""Importance page: one method's scores for one unit kind; click a head for its details."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prunelens.analysis import compare
from prunelens.analysis.layout import BLOCK_UNITS
from prunelens.dashboard import controls, figures, loading, method_views, results, run_control, url_state

st.title("Importance")
controls.explain(
    "An importance method gives every unit (an attention head, a whole attention or feed-forward "
    "block, or one neuron) a score: <b>higher means the model needs it more</b>. Methods disagree, "
    "which is the point of comparing them. Pick a method and its settings; the heatmap shows one "
    "cell per head (rows are layers). Click a cell to see how that head scores under every method.")

session = loading.current_session()
controls.explain_objective(session)
inv = session.loaded.inventory

c1, c2 = st.columns([3, 1])  # the method box gets the width: its name is never cut at 1024 px
method = controls.pick_method("imp.method", container=c1)
unit = controls.pick_unit(f"imp.unit.{method.name}", method.units, container=c2)
controls.method_caption(method)
if controls.developer():
    st.caption(method.summary + (f" — {method.paper}" if method.paper else ""))
if method.params:
    with st.expander("Parameters", expanded=controls.developer()):  # demo mode: closed
        params = controls.param_controls(method, "imp")
else:
    params = {}

scores = controls.obtain_scores(session, method, unit, params, key=f"imp.{method.name}.{unit}")


def about_this_method() -> None:
    """The method's summary, paper and its own views (drawn only while the expander is open)."""
    url_state.bind("imp.about", False, query="about")
    about = st.expander(f"About this method: {method.title or method.name}", key="imp.about",
                        on_change="rerun", icon=":material/info:")
    url_state.share(about="true" if st.session_state.get("imp.about") else None)
    if about.open:
        with about:
            method_views.render_about(session, method, unit, params, scores, key="imp.about")


if scores is None:
    about_this_method()
    st.stop()

flat = compare.constant_scores_warning(scores, method.name)
if flat:
    st.warning(flat, icon=":material/warning:")


def selected_head(chart_state) -> tuple[int, int] | None:
    """The head this run shows: a new click on the heatmap (one that differs from the head the
    figure was last drawn with), else the head chosen earlier (a click, the pickers, a link)."""
    clicked = figures.clicked_unit(chart_state)
    if clicked is not None and clicked != st.session_state.get("imp.heatmap.drawn"):
        layer, head = min(clicked[0], inv.layers - 1), min(clicked[1], inv.heads - 1)
        st.session_state[url_state.SELECTED_HEAD] = (layer, head)
        st.session_state["imp.layer"], st.session_state["imp.head"] = layer, head
    return chosen_head()


def chosen_head() -> tuple[int, int] | None:
    """The head chosen in this session (a click or the pickers) or by a link's layer and head;
    None until one is: the page then asks for a click and shares no head in the URL."""
    sel = st.session_state.get(url_state.SELECTED_HEAD)
    if sel is None:
        try:
            sel = (int(st.query_params["layer"]), int(st.query_params["head"]))
        except (KeyError, ValueError):
            return None
    if not (0 <= sel[0] < inv.layers and 0 <= sel[1] < inv.heads):
        return None
    st.session_state[url_state.SELECTED_HEAD] = sel
    return sel


title = f"{method.name}: {unit} importance"
name = f"{method.name}_{unit}_scores"
if unit == "head":
    # the selection is decided before the figure is drawn: a click from the last run (the
    # chart's state, read before the chart) is applied first, so the figure drawn now already
    # marks it. Drawing first and selecting after would change the figure in the next run, and
    # Streamlit gives a changed figure a new element whose selection state is empty: the first
    # click of a session would be lost.
    selected = selected_head(st.session_state.get("imp.heatmap"))
    st.session_state["imp.heatmap.drawn"] = selected
    # a head an already-pruned checkpoint no longer has: blank
    fig = figures.head_heatmap(session.loaded.inventory.absent_as_nan(unit, scores), title, selected=selected)
    controls.show_figure(fig, name, "imp.heatmap", on_select="rerun", selection_mode="points")
elif unit == "neuron":
    fig = figures.neuron_distribution(scores, title)
    controls.show_figure(fig, name, "imp.neurons")
else:
    fig = figures.block_bars(scores, unit, title)
    controls.show_figure(fig, name, "imp.blocks")

if unit not in BLOCK_UNITS:
    table = pd.DataFrame([{"layer": layer, unit: i, "score": v}
                          for layer, row in enumerate(scores) for i, v in enumerate(row)])
else:
    table = pd.DataFrame([{"layer": layer, "score": v} for layer, v in enumerate(scores)])
controls.download_table(table, name, "imp.table")
about_this_method()

if unit == "head":
    st.subheader("Head details")
    st.caption("Click a cell above, or pick a head here.")
    sel = chosen_head()

    def _picked() -> None:
        layer, head = st.session_state["imp.layer"], st.session_state["imp.head"]
        st.session_state[url_state.SELECTED_HEAD] = (layer or 0, head or 0)

    # no head in the URL until one is chosen: the pickers show a placeholder meanwhile
    st.session_state["imp.layer"], st.session_state["imp.head"] = sel if sel else (None, None)
    h1, h2 = st.columns(2)
    layer = h1.selectbox("Layer", list(range(inv.layers)), key="imp.layer", on_change=_picked,
                         placeholder="pick a layer")
    head = h2.selectbox("Head", list(range(inv.heads)), key="imp.head", on_change=_picked,
                        placeholder="pick a head")
    if sel is None:
        url_state.share(layer=None, head=None)
        st.info("Click a head in the heatmap (or pick one above) to see its scores under every method.")
        controls.share_link_note()
        st.stop()
    url_state.share(layer=layer, head=head)
    with run_control.guard():
        rows = results.unit_scores(session, "head", (layer, head))
    shown = [{"method": r["title"] or r["method"], "score": r["score"],
              "rank": None if r["rank"] is None else f"{r['rank']} of {r['of']}",
              "source": {"store": "result store", "computed": "computed now (default parameters)",
                         "missing": "expensive: not in the store (compute it above)"}[r["source"]]}
             for r in rows]
    st.markdown(f"**Layer {layer}, head {head}** under every method (default parameters; rank 1 = most important):")
    st.dataframe(shown, hide_index=True)
    controls.download_table(rows, f"head_L{layer}_H{head}", "imp.details")
    pages = st.session_state.get("prunelens.pages", {})
    if "Attention" in pages and st.button(f"Attention pattern of layer {layer}, head {head} →",
                                          key="imp.to_attention", icon=":material/visibility:"):
        # the Attention page reads its head from these keys (and the selected head); it opens
        # on this one head (its other heads are one click away there)
        st.session_state["att.layer"], st.session_state["att.head"] = layer, head
        st.session_state["att.heads"] = [head]
        st.session_state.setdefault(url_state.KEPT_KEY, {})["att.heads"] = [head]
        st.switch_page(pages["Attention"], query_params={**{k: v for k, v in loading.current_choice().query().items() if v},
                                     "layer": str(layer), "head": str(head), "heads": f"[{head}]"})
controls.share_link_note()
