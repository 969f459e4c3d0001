"""The prunelens dashboard: navigation over the pages and the sidebar's model/data choice.

Run with ``prunelens dashboard``, which starts ``dashboard/server.py`` (``streamlit run`` with
a Host/Origin check; a bare ``streamlit run dashboard/app.py`` has none). Nothing expensive
happens at start: the sidebar loads the chosen model and data (cached); pages compute on demand
and read precomputed results from the store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from a source checkout
    sys.path.insert(0, str(ROOT))

from prunelens.analysis.data import GLUE_TASKS  # noqa: E402
from prunelens.analysis.errors import PrunelensError  # noqa: E402
from prunelens.dashboard import data_roots, demo, escape, jobs, loading, url_state  # noqa: E402

MAX_LIMIT = 10_000_000  # evaluation examples a link may ask for (a widget limit, not a work bound)

HERE = Path(__file__).resolve().parent
# (file, title, icon, url path). The pages live in app_pages/, not pages/: Streamlit takes a
# pages/ folder beside the main script for its legacy multipage app. The url paths are those
# shared links already use.
PAGES = [
    ("app_pages/model_data.py", "Model & data", ":material/database:", "model-and-data"),
    ("app_pages/importance.py", "Importance", ":material/grid_on:", "unit-importance"),
    ("app_pages/prune.py", "Prune", ":material/content_cut:", "live-pruning"),
    ("app_pages/compare.py", "Compare", ":material/compare_arrows:", "compare-methods"),
    ("app_pages/spectral.py", "Spectral", ":material/equalizer:", "spectral-norms"),
    ("app_pages/attention.py", "Attention", ":material/visibility:", "attention-view"),
    ("app_pages/training.py", "Training runs", ":material/model_training:", "training-runs"),
]

MODEL_KINDS = {"default": "Default (MiniLM-L6, Rotten Tomatoes)",
               "default-embedding": "Default embedding (all-MiniLM-L6-v2, not fine-tuned)",
               "folder": "Local folder", "hub": "Hub id"}
# the sidebar's objective choice: "auto" = the model's and data's default
OBJECTIVE_CHOICES = {"auto": "automatic", "labels": "labels", "agreement": "agreement (no labels)",
                     "embedding": "embedding (sentence vectors)"}
DATA_KINDS = {"default": "Rotten Tomatoes (default)", "glue": "GLUE task", "upload": "Upload CSV/JSONL",
              "file": "File path"}


def _model_kind(spec: str) -> str:
    if spec in ("default", "default-embedding"):
        return spec
    return "folder" if data_roots.is_model_path(spec) else "hub"  # (a name too long: a folder)


def _data_kind(spec: str) -> str:
    if spec in ("default", "rt", "rotten_tomatoes"):
        return "default"
    if spec.startswith("glue:"):
        return "glue"
    if spec.startswith("upload:"):
        return "upload"
    return "file"


def sidebar() -> None:
    initial = loading.current_choice()
    sb = st.sidebar
    sb.subheader("Model")
    kind = url_state.bound(sb.radio, "Model", "sb.model_kind", _model_kind(initial.model), options=list(MODEL_KINDS),
                           format_func=MODEL_KINDS.get, label_visibility="collapsed")
    model = "default-embedding" if kind == "default-embedding" else "default"
    if kind == "folder":
        model = url_state.bound(sb.text_input, "Folder saved with save_pretrained", "sb.model_folder",
                                initial.model if _model_kind(initial.model) == "folder" else "").strip()
    elif kind == "hub":
        model = url_state.bound(sb.text_input, "Hub id (from the local cache when offline)", "sb.model_hub",
                                initial.model if _model_kind(initial.model) == "hub" else "").strip()

    sb.subheader("Data")
    dkind = url_state.bound(sb.radio, "Data", "sb.data_kind", _data_kind(initial.data), options=list(DATA_KINDS),
                            format_func=DATA_KINDS.get, label_visibility="collapsed")
    data = "default"
    upload_digest = None
    if dkind == "glue":
        tasks = sorted(GLUE_TASKS)
        first = initial.data.split(":", 1)[1] if initial.data.startswith("glue:") else "sst2"
        data = "glue:" + url_state.bound(sb.selectbox, "GLUE task", "sb.glue", first, options=tasks)
    elif dkind == "file":
        data = url_state.bound(sb.text_input, "CSV/JSONL file (text[,text_pair],label)", "sb.data_file",
                               initial.data if _data_kind(initial.data) == "file" else "").strip()
    elif dkind == "upload":
        upload = sb.file_uploader("CSV/JSONL with text[,text_pair],label", type=["csv", "jsonl", "json", "tsv"],
                                  key="sb.upload")
        if upload is not None:
            raw = upload.getvalue()
            st.session_state[loading.UPLOAD_KEY] = (upload.name, raw)
            upload_digest = loading.digest(raw)
            data = f"upload:{upload.name}"
        else:
            sb.caption("Uploaded data cannot be restored from a link; it stays for this browser session.")
            held = st.session_state.get(loading.UPLOAD_KEY)
            if held:
                data, upload_digest = f"upload:{held[0]}", loading.digest(held[1])
    limit = url_state.bound(sb.number_input, "Evaluation examples (0 = the whole split)", "sb.limit",
                            initial.limit or 0, bounds=(0, MAX_LIMIT), min_value=0, max_value=MAX_LIMIT, step=32,
                            help="fewer examples = faster; shipped precomputed results are for the whole split")

    objective = url_state.bound(sb.selectbox, "Objective", "sb.objective", initial.objective or "auto",
                                options=list(OBJECTIVE_CHOICES), format_func=OBJECTIVE_CHOICES.get,
                                help="what a pruned model is measured against: the gold labels, the unpruned "
                                     "model's predictions (agreement: no labels needed) or a sentence encoder's "
                                     "vectors (embedding); automatic: labels for a classifier on labelled data, "
                                     "agreement without labels, embedding for a model without a head")
    objective = None if objective == "auto" else objective

    device = "cpu"
    devices = loading.available_devices()
    if len(devices) > 1:  # a GPU is there: masked evaluation may run on it (CPU stays the reference)
        device = url_state.bound(sb.radio, "Device", "sb.device", initial.device, options=devices, horizontal=True,
                                 help="cuda: masked evaluation on the GPU (checked bf16, or exact fp32 with "
                                      "PRUNELENS_PRECISION=fp32); gradients and training stay on the CPU")

    missing = []
    if kind in ("folder", "hub") and not model:
        missing.append("a model folder or hub id")
    if dkind in ("file", "upload") and data in ("", "default"):
        missing.append("a data file")
    if missing:
        sb.info(f"Give {' and '.join(missing)} to load it; still showing the previous choice.")
        _keep(initial)
        return
    _keep(loading.Choice(model, data, int(limit) or None, upload_digest, device, objective))


def _keep(choice: loading.Choice) -> None:
    loading.set_choice(choice)
    sb = st.sidebar
    try:
        with st.spinner("Loading…"):
            session = loading.open_session(choice)
    except PrunelensError as exc:
        sb.error(escape.markdown(exc))
        return
    inv = session.loaded.inventory
    fingerprint = "" if demo.active() else f" · `{session.loaded.fingerprint[:8]}`"
    sb.success(f"**{escape.markdown(session.loaded.name)}** · {inv.layers} layers × {inv.heads} heads"
               f"{fingerprint}\n\n**{escape.markdown(session.data.name)}** "
               f"({escape.markdown(session.data.split)}) · {len(session.data)} examples\n\n"
               f"objective: **{session.objective}**")
    if session.objective_note:
        sb.caption(escape.markdown(session.objective_note))
    for job in jobs.BOARD.running():  # this session's runs only
        sb.progress(job.fraction, text=escape.markdown(f"training {job.method}: {job.message}"))


START_PAGE = "prunelens.page"  # file stem of the page to open first (tests set it)


def main() -> None:
    st.set_page_config(page_title="prunelens", page_icon="✂️", layout="wide")
    start = st.session_state.get(START_PAGE, "model_data")
    present = [row for row in PAGES if (HERE / row[0]).exists()]
    stems = [Path(row[0]).stem for row in present]
    start = start if start in stems else stems[0]
    pages = [st.Page(str(HERE / path), title=title, icon=icon, url_path=url,
                     default=Path(path).stem == start)
             for path, title, icon, url in present]
    st.session_state["prunelens.pages"] = {p.title: p for p in pages}
    nav = st.navigation(pages)
    dropped = url_state.dropped_query()
    if dropped:  # Streamlit ignored the whole link: say so instead of silently showing the defaults
        st.warning(f"This link's settings were ignored ({escape.markdown(dropped)}): showing the "
                   "defaults. Shorten the link, or pick the model and data in the sidebar.")
    sidebar()
    if demo.active():  # ?demo=1: a lecture's guided path, without developer chrome
        demo.hide_chrome()
        demo.guide(nav.title, {p.title: p for p in pages})
    nav.run()


main()
