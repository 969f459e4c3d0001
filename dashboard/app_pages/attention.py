"""Attention page: bertviz head and model views of a typed sentence, offline, pruned heads marked."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import streamlit as st

from prunelens.analysis.attention import AttentionMaps, attention_maps, token_limit
from prunelens.analysis.methods import all_methods
from prunelens.analysis.pruning import check_sparsity, select
from prunelens.dashboard import attention_view, controls, loading, results, run_control, url_state

NONE = "none"
VIEWS = {"head": "Head view (one layer)", "model": "Model view (all heads)"}
SCOPES = ("global", "layer")
SPARSITY_RANGE = (0.0, 0.95)  # the slider's bounds: a shared link's value is clamped into them


def _int_list(allowed: list[int]):
    def cast(raw: str) -> list[int]:
        values = [int(x) for x in raw.strip("[]").split(",") if x.strip()]
        if not values or any(v not in allowed for v in values):
            raise ValueError(raw)
        return values

    return cast


st.title("Attention")
controls.explain(
    "Each attention head decides, for every word, which other words to look at. Type a sentence "
    "and see it: in the <b>head view</b>, lines join each word on the left to the words it "
    "attends to on the right (thicker = more attention; one colour per head, click the coloured "
    "boxes to pick heads). The <b>model view</b> draws every head of every layer as a small "
    "picture; click one to enlarge it. Choose a pruning method and a sparsity to see which heads "
    "it would remove: they are greyed out and crossed in red, and the patterns are those of the "
    "pruned model (later layers change when earlier heads are gone).")

session = loading.current_session()
loaded = session.loaded
inv = loaded.inventory
layers_all = list(range(inv.layers))
heads_all = list(range(inv.heads))

first_text = session.data.texts[0] if len(session.data) else "a gripping, funny and moving film"
max_tokens = token_limit(loaded)  # the model's position embeddings may hold fewer than 128
text = url_state.bound(st.text_input, "Sentence", "att.text", first_text, "text", max_chars=400,
                       help=f"Any text; it is cut at {max_tokens} tokens.")
with st.expander("Second sentence (for sentence-pair tasks)"):
    pair = url_state.bound(st.text_input, "Second sentence (optional)", "att.pair", "", "pair", omit="",
                           max_chars=400)

c1, c2 = st.columns([2, 3])
view = url_state.bound(c1.radio, "View", "att.view", "head", "view", options=list(VIEWS),
                       format_func=VIEWS.get,
                       help="head view: lines between the tokens of one layer; model view: every "
                            "layer × head as a thumbnail")
selected = st.session_state.get(url_state.SELECTED_HEAD) or (0, 0)
l1, l2 = c2.columns(2)
layer = url_state.bound(l1.selectbox, "Layer", "att.layer", min(selected[0], inv.layers - 1), "layer",
                        options=layers_all,
                        help="the layer the head view draws, and the layer of the matrix below")
head = url_state.bound(l2.selectbox, "Head", "att.head", min(selected[1], inv.heads - 1), "head",
                       options=heads_all, help="the head in the matrix below")


def _show_all_heads() -> None:
    st.session_state["att.heads"] = heads_all


# pills, the full width: every head is visible (multiselect chips were cut at 1024 and 1440 px)
shown_heads = url_state.bound(st.pills, "Heads shown", "att.heads", heads_all, "heads",
                              options=heads_all, cast=_int_list(heads_all), omit=heads_all,
                              selection_mode="multi",
                              help="head view: heads selected at first; model view: columns drawn")
shown_heads = sorted(shown_heads or [])
st.button("All heads", key="att.all_heads", on_click=_show_all_heads, icon=":material/select_all:",
          disabled=len(shown_heads) == len(heads_all), help="show every head of the layer")
shown_layers = layers_all  # the model view draws every layer; one layer selector (above) only
st.session_state[url_state.SELECTED_HEAD] = (layer, head)

st.subheader("Pruned heads")
head_methods = [name for name, m in all_methods().items() if "head" in m.units]
# the method on its own row, as on the Prune page: a long method name is never cut (1024 px)
mask_method = url_state.bound(st.selectbox, "Mark the heads this method prunes", "att.mask_method", NONE,
                              "mask", options=[NONE, *head_methods], omit=NONE,
                              format_func=lambda n: "nothing (unpruned model)" if n == NONE
                              else controls.method_label(n))
unmasked = mask_method == NONE
p2, p3 = st.columns([3, 1])
sparsity = url_state.bound(p2.slider, "Sparsity (fraction of heads removed)", "att.sparsity", 0.3, "sparsity",
                           cast=float, bounds=SPARSITY_RANGE, min_value=SPARSITY_RANGE[0],
                           max_value=SPARSITY_RANGE[1], step=0.05, disabled=unmasked)
scope = url_state.bound(p3.selectbox, "Scope", "att.scope", "global", "scope", options=list(SCOPES),
                        disabled=unmasked,
                        help="global: lowest scores anywhere; layer: the same count in every layer")
if unmasked:  # the sparsity and scope of no mask are not part of the view
    url_state.share(sparsity=None, scope=None)
o1, o2 = st.columns(2)
run_pruned = url_state.bound(o1.checkbox, "Show the pruned model's attention", "att.pruned_model", True,
                             "pruned_model", omit=True, disabled=unmasked,
                             help="off: the unpruned model's patterns, with the pruned heads only marked")
hide = url_state.bound(o2.checkbox, "Hide pruned heads", "att.hide", False, "hide", omit=False,
                       disabled=unmasked, help="draw the pruned heads' attention weights as 0")

mask = np.ones((inv.layers, inv.heads), dtype=np.int8)
if mask_method != NONE:
    method = all_methods()[mask_method]
    controls.method_caption(method)
    if method.params:
        with st.expander(f"{method.title} parameters"):
            params = controls.param_controls(method, "att")
    else:
        params = {}
    scores = controls.obtain_scores(session, method, "head", params, key=f"att.{method.name}")
    if scores is None:
        st.caption("No scores yet: showing the unpruned model.")
    else:
        with run_control.guard():
            mask = select(scores, sparsity=check_sparsity(sparsity), scope=scope).astype(np.int8)
        removed = int((mask == 0).sum())
        st.caption(f"{method.title} at {sparsity:.0%} ({scope}) removes {removed} of {mask.size} heads.")

url_state.share(layers=None)  # an older link's layer selection: every layer is drawn now


@st.cache_data(show_spinner="Computing attention…", max_entries=64, hash_funcs=results.BY_SESSION)
def _maps(session, text: str, pair: str, mask_bytes: bytes, run_mask: bool) -> AttentionMaps:
    mask = np.frombuffer(mask_bytes, dtype=np.int8).reshape(session.loaded.inventory.layers, -1)
    maps = attention_maps(session.loaded, text, pair or None,
                          head_mask=mask if run_mask else None)
    maps.head_mask = mask.copy()  # marks, also when the unpruned model's patterns are shown
    return maps


if not text.strip():
    st.info("Type a sentence above.")
    st.stop()
if not shown_heads or not shown_layers:
    st.info("Pick at least one head and one layer to show.")
    st.stop()
with run_control.guard():
    maps = _maps(session, text, pair, mask.tobytes(),
                 run_pruned and mask_method != NONE)
if maps.truncated:
    st.warning(f"The text was cut to {len(maps.tokens)} tokens.")

html = attention_view.view_html(maps, view=view, layers=shown_layers, layer=layer,
                                heads=shown_heads, hide_pruned=hide and mask_method != NONE)
height = attention_view.view_height(maps, view, shown_layers,
                                    shown_heads if view == "model" else None)
if hasattr(st, "iframe"):  # Streamlit >= 1.5x; st.components.v1.html is deprecated there
    st.iframe(html, height=height)
else:
    import streamlit.components.v1 as components

    components.html(html, height=height, scrolling=True)

digest = hashlib.sha256(text.encode()).hexdigest()[:8]
name = f"attention_{loaded.name.rsplit('/', 1)[-1]}_{digest}"
d1, d2, d3 = st.columns(3)
d1.download_button("View (HTML)", html, file_name=f"{name}_{view}_view.html",
                   mime="text/html", key="att.dl.html", on_click="ignore", icon=":material/download:",
                   help="the interactive view as one HTML file that works offline")
if controls.developer():  # demo mode hides raw JSON
    d2.download_button("Attention (JSON)", lambda: json.dumps(maps.as_json()),
                       file_name=f"{name}.json", mime="application/json", key="att.dl.json",
                       on_click="ignore", icon=":material/download:")
d3.download_button("Attention (CSV)", lambda: maps.to_csv(), file_name=f"{name}.csv",
                   mime="text/csv", key="att.dl.csv", on_click="ignore", icon=":material/download:")

st.subheader(f"Layer {layer}, head {head} as a matrix")
controls.show_figure(attention_view.head_figure(maps, layer, head), f"{name}_L{layer}_H{head}",
                     "att.matrix")
controls.share_link_note()
