"""SMP's panel: which heads the paper's default keeps (the top half of every layer)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from prunelens.analysis.methods.base import Method
from prunelens.analysis.session import Session
from prunelens.analysis.pruning import select
from prunelens.dashboard import controls, figures
from prunelens.dashboard.method_views.common import register


def smp_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    st.markdown("##### Kept heads at the paper's default: the top half of every layer")
    if scores is None or unit != "head":
        st.caption("Compute the head scores above to see which heads SMP keeps.")
        return
    mask = select(scores, sparsity=0.5, scope="layer")
    controls.show_figure(figures.mask_heatmap(mask.tolist(), "head", "Top half per layer (green = kept)"),
                         "smp_top_half", f"{key}.smp.mask")
    table = [{"layer": layer, "kept heads": ", ".join(str(h) for h, keep in enumerate(row) if keep),
              "kept": int(sum(row)), "of": len(row)} for layer, row in enumerate(mask.tolist())]
    st.dataframe(pd.DataFrame(table), hide_index=True)


register("smp", about=smp_about)
