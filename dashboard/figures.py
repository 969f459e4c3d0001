"""Plotly figure builders: pure functions of plain data, testable without a server.

The layer × head heatmap carries a transparent scatter overlay with one marker per head whose
``customdata`` is ``[layer, head]``: Streamlit returns no selection for clicks on a heatmap,
but it does for scatter points, so clicking a cell selects its head (see :func:`clicked_unit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

METRIC_LABELS = {"accuracy": "accuracy", "loss": "loss (cross-entropy)", "margin": "margin"}
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#EECA3B")


def _rows(z) -> list[list[float]]:
    return [[float(v) for v in row] for row in z]


def _layout(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(title=title, margin={"l": 50, "r": 20, "t": 50, "b": 40}, template="plotly_white")
    if height:
        fig.update_layout(height=height)
    return fig


def head_heatmap(scores, title: str = "Head importance", colorbar: str = "score",
                 colorscale: str = "Viridis", zmin: float | None = None, zmax: float | None = None,
                 selected: tuple[int, int] | None = None, text_format: str = ".3g") -> go.Figure:
    """Layers (rows, layer 0 on top) × heads (columns), plus the clickable overlay."""
    z = _rows(scores)
    layers, heads = len(z), len(z[0]) if z else 0
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=z, x=list(range(heads)), y=list(range(layers)), colorscale=colorscale, zmin=zmin, zmax=zmax,
        colorbar={"title": colorbar}, hoverinfo="skip", name="scores"))
    xs, ys, custom, hover = [], [], [], []
    for layer in range(layers):
        for head in range(heads):
            xs.append(head)
            ys.append(layer)
            custom.append([layer, head])
            hover.append(f"layer {layer}, head {head}: {z[layer][head]:{text_format}}")
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=custom, text=hover, hoverinfo="text",
        marker={"symbol": "square", "size": max(8, min(40, 360 // max(heads, layers, 1))),
                    "color": "rgba(0,0,0,0)", "line": {"width": 0}},
        showlegend=False, name="heads"))
    if selected is not None:
        fig.add_trace(go.Scatter(
            x=[selected[1]], y=[selected[0]], mode="markers", hoverinfo="skip", showlegend=False,
            marker={"symbol": "square-open", "size": max(10, min(44, 380 // max(heads, layers, 1))),
                        "color": "red", "line": {"width": 3}}, name="selected"))
    fig.update_xaxes(title="head", tickmode="linear", dtick=1, showgrid=False, zeroline=False)
    fig.update_yaxes(title="layer", tickmode="linear", dtick=1, autorange="reversed", showgrid=False,
                     zeroline=False)
    fig.update_layout(clickmode="event+select", dragmode=False)
    return _layout(fig, title, height=max(260, 40 * layers + 120))


def clicked_unit(event: Any) -> tuple[int, int] | None:
    """(layer, head) of the first clicked overlay point in a ``st.plotly_chart`` selection event."""
    if event is None:
        return None
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if selection is None:
        return None
    points = selection.get("points") if isinstance(selection, dict) else getattr(selection, "points", None)
    for point in points or []:
        custom = point.get("customdata")
        if custom is not None and len(custom) >= 2:
            return int(custom[0]), int(custom[1])
    return None


def block_bars(scores: Sequence[float], unit: str, title: str | None = None,
               highlight: Sequence[int] | None = None) -> go.Figure:
    """One bar per layer for attention/FFN block scores (or masks)."""
    values = [float(v) for v in scores]
    colors = [PALETTE[3] if highlight is not None and highlight[i] == 0 else PALETTE[0]
              for i in range(len(values))]
    fig = go.Figure(go.Bar(x=list(range(len(values))), y=values, marker_color=colors,
                           customdata=[[i] for i in range(len(values))],
                           hovertemplate="layer %{x}: %{y:.4g}<extra></extra>", name=unit))
    fig.update_xaxes(title="layer", tickmode="linear", dtick=1)
    fig.update_yaxes(title="score")
    return _layout(fig, title or f"{unit} block importance", height=320)


def neuron_distribution(scores, title: str = "Neuron importance per layer") -> go.Figure:
    """One box (with all points' spread) per layer for neuron scores (layers × ffn)."""
    fig = go.Figure()
    for layer, row in enumerate(_rows(scores)):
        fig.add_trace(go.Box(y=row, name=f"layer {layer}", boxpoints=False, marker_color=PALETTE[0]))
    fig.update_yaxes(title="score")
    fig.update_layout(showlegend=False)
    return _layout(fig, title, height=360)


def mask_heatmap(mask, unit: str, title: str | None = None) -> go.Figure:
    """Kept (1) / pruned (0) units: a two-colour heatmap (heads, neurons) or bars (blocks)."""
    title = title or f"Mask over {unit}s (dark = pruned)"
    rows = mask if hasattr(mask, "__len__") else [mask]
    if rows and not hasattr(rows[0], "__len__"):
        return block_bars([float(v) for v in rows], unit, title, highlight=[int(v) for v in rows])
    z = _rows(rows)
    colorscale = [[0.0, "#2b2b2b"], [0.5, "#2b2b2b"], [0.5, "#8fd694"], [1.0, "#8fd694"]]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(z[0]))), y=list(range(len(z))), zmin=0, zmax=1, colorscale=colorscale,
        showscale=False, xgap=1 if len(z[0]) <= 64 else 0, ygap=1,
        hovertemplate=f"layer %{{y}}, {unit} %{{x}}: %{{z}}<extra></extra>"))
    fig.update_xaxes(title=unit, showgrid=False)
    fig.update_yaxes(title="layer", autorange="reversed", tickmode="linear", dtick=1, showgrid=False)
    return _layout(fig, title, height=max(220, 30 * len(z) + 120))


def delta_bars(delta: dict, metrics: Sequence[str] = ("accuracy", "loss", "margin"),
               label: str = "masked", title: str = "Change against the unpruned model") -> go.Figure:
    """One panel per metric: pruned − unpruned with ± 1 standard-error bars (paired)."""
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS.get(m, m) for m in metrics])
    for i, metric in enumerate(metrics):
        value = float(delta.get(metric, 0.0))
        se = delta.get(f"{metric}_se")
        se = 0.0 if se is None or math.isnan(se) else float(se)
        good = value >= 0 if metric != "loss" else value <= 0
        fig.add_trace(go.Bar(
            x=[label], y=[value], error_y={"type": "data", "array": [se], "visible": True},
            marker_color=PALETTE[2] if good else PALETTE[3], name=metric, showlegend=False,
            hovertemplate=f"Δ {metric}: %{{y:.4g}} ± {se:.3g}<extra></extra>"), row=1, col=i + 1)
        fig.add_hline(y=0, line_color="#888", line_width=1, row=1, col=i + 1)
    return _layout(fig, title, height=320)


def curves(rows: Sequence[dict], metric: str = "accuracy", base: float | None = None,
           title: str | None = None) -> go.Figure:
    """``metric`` versus sparsity, one line per method; the unpruned model as a dashed line."""
    fig = go.Figure()
    methods: list[str] = []
    for row in rows:
        if row["method"] not in methods:
            methods.append(row["method"])
    for i, name in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == name), key=lambda r: r["sparsity"])
        se = [r.get(f"{metric}_se") or 0.0 for r in pts]
        fig.add_trace(go.Scatter(
            x=[r["sparsity"] for r in pts], y=[r[metric] for r in pts], mode="lines+markers", name=name,
            error_y={"type": "data", "array": se, "visible": True, "thickness": 1},
            line={"color": PALETTE[i % len(PALETTE)], "dash": "dot" if name == "random" else "solid"}))
    if base is not None:
        fig.add_hline(y=float(base), line_dash="dash", line_color="black",
                      annotation_text="unpruned", annotation_position="top right")
    fig.update_xaxes(title="sparsity (fraction of units removed)", tickformat=".0%")
    fig.update_yaxes(title=METRIC_LABELS.get(metric, metric))
    return _layout(fig, title or f"{metric} versus sparsity", height=380)


def matrix_heatmap(matrix, labels: Sequence[str], title: str, zmin: float = -1.0, zmax: float = 1.0,
                   colorscale: str = "RdBu") -> go.Figure:
    """A labelled square matrix with its values written in the cells (NaN shown as blank)."""
    z = [[None if v is None or math.isnan(v) else float(v) for v in row] for row in matrix]
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=list(labels), y=list(labels), zmin=zmin, zmax=zmax,
                               colorscale=colorscale, text=text, texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(300, 50 * len(labels) + 150))


def heatmap_grid(maps: dict[str, Any], title: str = "Ranks (1 = most important)",
                 colorbar: str = "rank", zmin: float = 0.0, zmax: float = 1.0, columns: int = 3) -> go.Figure:
    """Several layer × head maps on one shared colour scale."""
    names = list(maps)
    cols = max(1, min(columns, len(names)))
    nrows = (len(names) + cols - 1) // cols
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=names, horizontal_spacing=0.05,
                        vertical_spacing=0.12 if nrows > 1 else 0.1)
    for i, name in enumerate(names):
        z = _rows(maps[name])
        fig.add_trace(go.Heatmap(z=z, coloraxis="coloraxis", name=name,
                                 hovertemplate=f"{name}<br>layer %{{y}}, head %{{x}}: %{{z:.2f}}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": zmin, "cmax": zmax, "colorbar": {"title": colorbar}})
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=260 * nrows + 80)


def sigma_chart(rows: Sequence[dict], cap: float | None = None, title: str = "Largest singular value per matrix") -> go.Figure:
    """Rows ``{"layer", "matrix", "sigma"}``: grouped bars by matrix over layers; the cap as a line."""
    fig = go.Figure()
    matrices: list[str] = []
    for r in rows:
        if r["matrix"] not in matrices:
            matrices.append(r["matrix"])
    for i, name in enumerate(matrices):
        pts = [r for r in rows if r["matrix"] == name]
        fig.add_trace(go.Bar(x=[r["layer"] for r in pts], y=[r["sigma"] for r in pts], name=name,
                             marker_color=PALETTE[i % len(PALETTE)]))
    if cap is not None:
        fig.add_hline(y=float(cap), line_dash="dash", annotation_text=f"cap c = {cap:g}")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="layer", tickmode="linear", dtick=1)
    fig.update_yaxes(title="σ_max")
    return _layout(fig, title, height=380)


def histograms(samples: dict[str, Sequence[float]], title: str, x_title: str = "value",
               bins: int = 60, vline: float | None = None) -> go.Figure:
    """Overlaid histograms of named samples (e.g. with vs without spectral normalization)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(samples.items()):
        fig.add_trace(go.Histogram(x=[float(v) for v in values], name=name, opacity=0.6, nbinsx=bins,
                                   marker_color=PALETTE[i % len(PALETTE)]))
    if vline is not None:
        fig.add_vline(x=float(vline), line_color="red", line_dash="dash", annotation_text="threshold")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count")
    return _layout(fig, title, height=320)


def history_chart(history: Sequence[dict], title: str = "Training history") -> go.Figure:
    """Every numeric field of a run's history against its step (or row number)."""
    fig = go.Figure()
    if not history:
        return _layout(fig, title, height=320)
    xkey = "step" if "step" in history[0] else None
    fields = [k for k, v in history[0].items()
              if k != xkey and isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i, name in enumerate(fields):
        fig.add_trace(go.Scatter(
            x=[h.get(xkey, j) if xkey else j for j, h in enumerate(history)],
            y=[h.get(name) for h in history], mode="lines", name=name,
            line={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_xaxes(title=xkey or "record")
    return _layout(fig, title, height=340)


def bars(labels: Sequence[str], values: Sequence[float], title: str, y_title: str = "",
         errors: Sequence[float] | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(labels), y=[float(v) for v in values],
                           error_y=None if errors is None else {"type": "data", "array": list(errors)},
                           marker_color=PALETTE[0]))
    fig.update_yaxes(title=y_title)
    return _layout(fig, title, height=320)


def binned_histograms(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
                      x_title: str = "value") -> go.Figure:
    """Overlaid histograms given as ``{name: (counts, edges)}`` (``len(edges) == len(counts) + 1``)."""
    fig = go.Figure()
    for i, (name, (counts, edges)) in enumerate(series.items()):
        edges = [float(e) for e in edges]
        fig.add_trace(go.Bar(
            x=[(edges[k] + edges[k + 1]) / 2 for k in range(len(edges) - 1)],
            y=[float(c) for c in counts], width=[edges[k + 1] - edges[k] for k in range(len(edges) - 1)],
            name=name, opacity=0.55, marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count")
    return _layout(fig, title, height=300)
