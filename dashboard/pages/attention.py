"""Attention page: bertviz head and model views of a typed sentence, offline, pruned heads marked."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import streamlit as st

from analysis.attention import AttentionMaps, attention_maps, token_limit
from analysis.methods import all_methods
from analysis.pruning import check_sparsity, select
from dashboard import attention_view, controls, state

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

session = state.current_session()
loaded = session.loaded
inv = loaded.inventory
layers_all = list(range(inv.layers))
heads_all = list(range(inv.heads))

first_text = session.data.texts[0] if len(session.data) else "a gripping, funny and moving film"
max_tokens = token_limit(loaded)  # the model's position embeddings may hold fewer than 128
state.bind("att.text", first_text, query="text")
text = st.text_input("Sentence", key="att.text", max_chars=400,
                     help=f"Any text; it is cut at {max_tokens} tokens.")
with st.expander("Second sentence (for sentence-pair tasks)"):
    state.bind("att.pair", "", query="pair")
    pair = st.text_input("Second sentence (optional)", key="att.pair", max_chars=400)

c1, c2, c3 = st.columns([2, 1, 2])
state.bind("att.view", "head", query="view", options=list(VIEWS))
view = c1.radio("View", list(VIEWS), key="att.view", format_func=VIEWS.get,
                help="head view: lines between the tokens of one layer; model view: every "
                     "layer × head as a thumbnail")
selected = st.session_state.get(state.SELECTED_HEAD) or (0, 0)
state.bind("att.layer", min(selected[0], inv.layers - 1), query="layer", options=layers_all)
layer = c2.selectbox("Layer", layers_all, key="att.layer",
                     help="the layer the head view draws, and the layer of the matrix below")
state.bind("att.head", min(selected[1], inv.heads - 1), query="head", options=heads_all)
head = c2.selectbox("Head", heads_all, key="att.head", help="the head in the matrix below")
state.bind("att.heads", heads_all, query="heads", cast=_int_list(heads_all))
shown_heads = c3.multiselect("Heads shown", heads_all, key="att.heads",
                             help="head view: heads selected at first; model view: columns drawn")
shown_layers = layers_all  # the model view draws every layer; one layer selector (above) only
st.session_state[state.SELECTED_HEAD] = (layer, head)

st.subheader("Pruned heads")
head_methods = [name for name, m in all_methods().items() if "head" in m.units]
p1, p2, p3 = st.columns([2, 2, 1])
state.bind("att.mask_method", NONE, query="mask", options=[NONE, *head_methods])
mask_method = p1.selectbox("Mark the heads this method prunes", [NONE, *head_methods],
                           key="att.mask_method",
                           format_func=lambda n: "nothing (unpruned model)" if n == NONE
                           else controls.method_label(n))
state.bind("att.sparsity", 0.3, query="sparsity", cast=float, bounds=SPARSITY_RANGE)
sparsity = p2.slider("Sparsity (fraction of heads removed)", *SPARSITY_RANGE, step=0.05,
                     key="att.sparsity", disabled=mask_method == NONE)
state.bind("att.scope", "global", query="scope", options=list(SCOPES))
scope = p3.selectbox("Scope", SCOPES, key="att.scope", disabled=mask_method == NONE,
                     help="global: lowest scores anywhere; layer: the same count in every layer")
o1, o2 = st.columns(2)
state.bind("att.pruned_model", True, query="pruned_model")
run_pruned = o1.checkbox("Show the pruned model's attention", key="att.pruned_model",
                         disabled=mask_method == NONE,
                         help="off: the unpruned model's patterns, with the pruned heads only marked")
state.bind("att.hide", False, query="hide")
hide = o2.checkbox("Hide pruned heads", key="att.hide", disabled=mask_method == NONE,
                   help="draw the pruned heads' attention weights as 0")

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
        with state.guard():
            mask = select(scores, sparsity=check_sparsity(sparsity), scope=scope).astype(np.int8)
        removed = int((mask == 0).sum())
        st.caption(f"{method.title} at {sparsity:.0%} ({scope}) removes {removed} of {mask.size} heads.")

state.share(text=text, pair=pair or None, view=view, layer=layer, head=head,
            heads=shown_heads if shown_heads != heads_all else None,
            layers=shown_layers if shown_layers != layers_all else None,
            mask=mask_method if mask_method != NONE else None,
            sparsity=sparsity if mask_method != NONE else None,
            scope=scope if mask_method != NONE else None,
            pruned_model=None if run_pruned else "false", hide="true" if hide else None)


@st.cache_data(show_spinner="Computing attention…", max_entries=64)
def _maps(_session, sid: str, text: str, pair: str, mask_bytes: bytes, run_mask: bool) -> AttentionMaps:
    mask = np.frombuffer(mask_bytes, dtype=np.int8).reshape(_session.loaded.inventory.layers, -1)
    maps = attention_maps(_session.loaded, text, pair or None,
                          head_mask=mask if run_mask else None)
    maps.head_mask = mask.copy()  # marks, also when the unpruned model's patterns are shown
    return maps


if not text.strip():
    st.info("Type a sentence above.")
    st.stop()
if not shown_heads or not shown_layers:
    st.info("Pick at least one head and one layer to show.")
    st.stop()
with state.guard():
    maps = _maps(session, state.session_id(session), text, pair, mask.tobytes(),
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
