"""Prune page parts: the predictions that flip under the mask, and the export of the pruned model.

Streamlit only; the numbers come from :mod:`prunelens.analysis.flips` (in the prune result) and
:func:`prunelens.analysis.export.export`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from prunelens.dashboard import controls, results, run_control

EXPORT_STATE = "prune.export.result"  # (settings key, report, zip bytes) of the last export


def flipped_table(session, result: dict) -> None:
    """An expander listing the examples whose predicted label changes (text shown as text).

    Free when the numbers were computed now (the masked outputs are in the evaluator's cache);
    when they came from the store it costs one pass over the data, so it waits to be asked."""
    from prunelens.analysis.flips import flipped

    if session.objective == "embedding":  # a sentence vector has no predicted label to flip
        return
    with st.expander("Predictions that flip"):
        if result.get("from_store") and not st.toggle(
                "List them (one pass of the pruned model over the data)", key="prune.flips.on"):
            st.caption("These numbers came from the result store without running the model.")
            return
        flip = None
        with run_control.guard(stop=False):
            flip = flipped(session, result["unit"], np.asarray(result["mask"]))
        if flip is None:
            return
        rows, count = flip["rows"], flip["count"]
        st.markdown(f"**{count} of {result['base']['n']} predictions flip.**")
        st.caption("Examples whose predicted label differs between the unpruned and the masked "
                   "model: *before* is the unpruned prediction, *after* the pruned one, *label* "
                   "the right answer." + (f" The first {len(rows)} are listed (as in "
                                          "`prunelens prune --json`)." if count > len(rows) else ""))
        if rows:
            st.dataframe(rows, hide_index=True, key="prune.flipped")
        else:
            st.write("No prediction changes under this mask.")


def export_button(session, method: str, unit: str, params: dict, sparsity: float | None,
                  threshold: float | None, scope: str, keep_one: bool) -> None:
    """Build the physically pruned model (+ ONNX) into a temp folder and offer it as a zip."""
    from prunelens.analysis.export import export, onnx_available, zip_folder

    key = (results.session_id(session), method, unit, results.canonical_params(params), sparsity,
           threshold, scope, keep_one)
    with st.expander("Export the pruned model"):
        st.caption("A folder with the weights really cut out, which `prunelens --model FOLDER` "
                   "loads again (same logits as the masked model), its tokenizer, an ONNX file "
                   "checked with onnxruntime and timed against the unpruned model, and "
                   "export.json with those numbers.")
        has_onnx = onnx_available()
        onnx = st.checkbox("Include ONNX", value=has_onnx, disabled=not has_onnx,
                           key="prune.export.onnx",
                           help=None if has_onnx else "needs pip install -e '.[export]'")
        if st.button("Export the pruned model", key="prune.export"):
            bar, progress = controls.progress_sink("Cutting the weights, exporting and timing…")
            with run_control.guard(stop=False):
                with tempfile.TemporaryDirectory(prefix="prunelens-export-") as tmp:
                    folder = Path(tmp) / "pruned-model"
                    report = export(session, method, sparsity, folder, unit, scope, params,
                                    onnx=onnx, threshold=threshold, keep_one_per_layer=keep_one,
                                    progress=progress)
                    progress(1.0, "zipping the folder")
                    st.session_state[EXPORT_STATE] = (key, report, zip_folder(folder))
            bar.empty()
        saved = st.session_state.get(EXPORT_STATE)
        if saved is None or saved[0] != key:
            return
        report, data = saved[1], saved[2]
        diff = report["max_abs_logit_difference"]
        lines = [f"Encoder parameters: {report['encoder_params']['pruned']:,} of "
                 f"{report['encoder_params']['unpruned']:,}. Loaded again: largest logit "
                 f"difference to the masked model {diff['reloaded_vs_masked']:.2e}."]
        if "onnx" in report:
            o = report["onnx"]
            lines.append(f"ONNX: largest logit difference to torch {diff['onnx_vs_torch_pruned']:.2e}; "
                         f"onnxruntime on {o['examples']} examples {o['seconds_pruned']:.3f} s pruned "
                         f"vs {o['seconds_unpruned']:.3f} s unpruned ({o['speedup']}x as fast).")
        st.caption(" ".join(lines))
        st.download_button("Download the pruned model (zip)", data,
                           file_name=f"pruned_{method}_{unit}.zip", mime="application/zip",
                           key="prune.export.zip")
