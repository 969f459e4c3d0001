"""Plotly figure builders: pure functions of plain data, testable without a server.

The layer × head heatmap carries a transparent scatter overlay with one marker per head whose
``customdata`` is ``[layer, head]``: Streamlit returns no selection for clicks on a heatmap,
but it does for scatter points, so clicking a cell selects its head (see :func:`clicked_unit`).
Category labels go through :func:`prunelens.dashboard.escape.plotly` (plotly draws ``<b>``, ``<a>`` in
them as markup).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from prunelens.dashboard import escape

METRIC_LABELS = {"accuracy": "accuracy", "loss": "loss (cross-entropy)", "margin": "margin"}
# panel titles sit side by side in half a page at 1024 px: one word each
SHORT_LABELS = {"accuracy": "accuracy", "loss": "loss", "margin": "margin"}
# the plotly toolbar only on hover (it covered titles), no plotly logo
CHART_CONFIG = {"displayModeBar": "hover", "displaylogo": False}
# Streamlit draws the toolbar in the top 30 px of a chart even when the pointer is elsewhere:
# titles (and subplot titles) start below that band
TOOLBAR_BAND = 28
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#EECA3B")


def _labels(labels: Sequence[Any]) -> list[Any]:
    """Category labels as plotly shows them: strings escaped, numbers as they are."""
    return [escape.plotly(v) if isinstance(v, str) else v for v in labels]


def _rows(z) -> list[list[float | None]]:
    """Rows of plain floats; a missing value (``None``/NaN: a head the model no longer has) stays
    ``None``, which plotly leaves blank."""
    return [[None if v is None or v != v else float(v) for v in row] for row in z]


def _layout(fig: go.Figure, title: str, height: int | None = None, top: int = 50) -> go.Figure:
    """Title (left, below the toolbar band), margins (``top``: more room when subplot titles sit
    under the title; the toolbar band comes on top of it), template."""
    fig.update_layout(title={"text": title, "x": 0, "xref": "container", "xanchor": "left",
                             "yref": "container", "y": 1, "yanchor": "top",
                             "pad": {"t": TOOLBAR_BAND, "l": 8}, "font": {"size": 15}},
                      margin={"l": 50, "r": 20, "t": top + TOOLBAR_BAND, "b": 40},
                      template="plotly_white")
    fig.update_annotations(font_size=13)  # subplot titles
    if height:
        fig.update_layout(height=height + TOOLBAR_BAND)
    return fig


def same_height(*figs: go.Figure) -> None:
    """Give figures drawn side by side the tallest one's height, so the rows under them (their
    download buttons) line up."""
    tallest = max((fig.layout.height or 0) for fig in figs)
    if tallest:
        for fig in figs:
            fig.update_layout(height=tallest)


def _legend_on_top(fig: go.Figure) -> go.Figure:
    """A horizontal legend between the title and the plot, so narrow charts keep their width."""
    fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0,
                              "yanchor": "bottom"})
    return fig


@cache
def export_missing() -> str | None:
    """Why figures cannot be saved as PNG/SVG here (kaleido or a Chromium missing), else None."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install 'kaleido>=1')"
    try:
        from choreographer.browsers.chromium import Chromium

        if Chromium.find_browser(skip_local=False):
            return None
    except Exception:  # noqa: BLE001 (an unexpected choreographer version: say what to install)
        pass
    return "no Chromium or Chrome found for kaleido (apt-get install chromium, or set BROWSER_PATH)"


def figure_image(fig: go.Figure, fmt: str = "png", width: int = 1000, scale: float = 2.0) -> bytes:
    """The figure as PNG (``scale`` × ``width`` pixels wide) or SVG bytes, drawn by kaleido."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown image format '{fmt}' (use png or svg)")
    kwargs = {"format": fmt, "width": width, "height": fig.layout.height or 450,
              "scale": scale if fmt == "png" else 1}
    try:
        return fig.to_image(**kwargs)
    except Exception:  # noqa: BLE001 (a browser start that timed out on a busy machine: once more)
        return fig.to_image(**kwargs)


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
            value = z[layer][head]
            hover.append(f"layer {layer}, head {head}: "
                         + ("no longer in the model" if value is None else f"{value:{text_format}}"))
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
    # fixed ranges: the overlay's markers would otherwise pad the axes (a "-1" and a "12" head)
    fig.update_xaxes(title="head", tickmode="linear", dtick=1, showgrid=False, zeroline=False,
                     range=[-0.5, heads - 0.5])
    fig.update_yaxes(title="layer", tickmode="linear", dtick=1, showgrid=False, zeroline=False,
                     range=[layers - 0.5, -0.5])
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
    title = title or f"{unit} mask (dark = pruned)"
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
               label: str = "masked", title: str = "Change vs the unpruned model",
               names: dict[str, str] | None = None) -> go.Figure:
    """One panel per metric: pruned − unpruned with ± 1 standard-error bars (paired); ``names``:
    what the objective calls each metric (agreement, cosine, ...)."""
    names = names or SHORT_LABELS
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[names.get(m, m) for m in metrics],
                        horizontal_spacing=0.2)
    for i, metric in enumerate(metrics):
        value = float(delta.get(metric, 0.0))
        se = delta.get(f"{metric}_se")
        se = 0.0 if se is None or math.isnan(se) else float(se)
        good = value >= 0 if metric != "loss" else value <= 0
        fig.add_trace(go.Bar(
            x=[label], y=[value], error_y={"type": "data", "array": [se], "visible": True},
            marker_color=PALETTE[2] if good else PALETTE[3], name=metric, showlegend=False,
            hovertemplate=f"Δ {names.get(metric, metric)}: %{{y:.4g}} ± {se:.3g}<extra></extra>"),
            row=1, col=i + 1)
        fig.add_hline(y=0, line_color="#888", line_width=1, row=1, col=i + 1)
    fig.update_yaxes(tickfont_size=10)
    fig.update_xaxes(showticklabels=False)  # one bar per panel; its label is in the hover
    return _layout(fig, title, height=340, top=80)


def curves(rows: Sequence[dict], metric: str = "accuracy", base: float | None = None,
           title: str | None = None, names: dict[str, str] | None = None) -> go.Figure:
    """``metric`` versus sparsity, one line per method; the unpruned model as a dashed line;
    ``names``: what the objective calls each metric."""
    shown = (names or METRIC_LABELS).get(metric, metric)
    fig = go.Figure()
    methods = list(dict.fromkeys(r["method"] for r in rows))  # first-seen order
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
    fig.update_yaxes(title=shown)
    return _layout(fig, title or f"{shown} versus sparsity", height=380)


def matrix_heatmap(matrix, labels: Sequence[str], title: str, zmin: float = -1.0, zmax: float = 1.0,
                   colorscale: str = "RdBu") -> go.Figure:
    """A labelled square matrix with its values written in the cells (NaN shown as blank)."""
    z = [[None if v is None or math.isnan(v) else float(v) for v in row] for row in matrix]
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=_labels(labels), y=_labels(labels), zmin=zmin, zmax=zmax,
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
    matrices = list(dict.fromkeys(r["matrix"] for r in rows))  # first-seen order
    for i, name in enumerate(matrices):
        pts = [r for r in rows if r["matrix"] == name]
        fig.add_trace(go.Bar(x=[r["layer"] for r in pts], y=[r["sigma"] for r in pts], name=name,
                             marker_color=PALETTE[i % len(PALETTE)]))
    if cap is not None:
        fig.add_hline(y=float(cap), line_dash="dash", annotation_text=f"cap c = {cap:g}",
                      annotation_position="top left", annotation_bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="layer", tickmode="linear", dtick=1)
    fig.update_yaxes(title="σ_max")
    return _legend_on_top(_layout(fig, title, height=400, top=75))


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


def history_chart(history: Sequence[dict], title: str = "Training history",
                  xkey: str | None = None) -> go.Figure:
    """Every numeric field of a run's history against ``xkey`` (default: ``step``, else
    ``iteration``, else the row number)."""
    fig = go.Figure()
    if not history:
        return _layout(fig, title, height=320)
    xkey = xkey or next((k for k in ("step", "iteration") if k in history[0]), None)
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
    fig = go.Figure(go.Bar(x=_labels(labels), y=[float(v) for v in values],
                           error_y=None if errors is None else {"type": "data", "array": list(errors)},
                           marker_color=PALETTE[0]))
    fig.update_yaxes(title=y_title)
    return _layout(fig, title, height=320)


def binned_histograms(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
                      x_title: str = "value", log_y: bool = False) -> go.Figure:
    """Overlaid histograms given as ``{name: (counts, edges)}`` (``len(edges) == len(counts) + 1``);
    ``log_y``: counts on a log scale (a tall spike no longer flattens the rest)."""
    fig = go.Figure()
    for i, (name, (counts, edges)) in enumerate(series.items()):
        edges = [float(e) for e in edges]
        fig.add_trace(go.Bar(
            x=[(edges[k] + edges[k + 1]) / 2 for k in range(len(edges) - 1)],
            y=[float(c) for c in counts], width=[edges[k + 1] - edges[k] for k in range(len(edges) - 1)],
            name=name, opacity=0.55, marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count (log scale)" if log_y else "count", type="log" if log_y else "linear")
    return _legend_on_top(_layout(fig, title, height=300, top=70))


# ----------------------------------------------------------------------------------------------
# method-specific views (dashboard/method_views.py)


def paired_heatmaps(left, right, titles: tuple[str, str], title: str, shared_scale: bool = False,
                    zmin: float | None = None, zmax: float | None = None,
                    x_title: str = "head") -> go.Figure:
    """Two layer × unit maps side by side: each with its own colour bar, or (``shared_scale``)
    one colour scale for both (``zmin``/``zmax`` fix it)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(titles), horizontal_spacing=0.14)
    for col, z in ((1, _rows(left)), (2, _rows(right))):
        bar = {"x": 0.43 if col == 1 else 1.0, "len": 0.9, "thickness": 12}
        trace = go.Heatmap(z=z, x=list(range(len(z[0]) if z else 0)), y=list(range(len(z))),
                           name=titles[col - 1],
                           hovertemplate=f"{titles[col - 1]}<br>layer %{{y}}, {x_title} %{{x}}: "
                                         f"%{{z:.4g}}<extra></extra>")
        if shared_scale:
            trace.update(coloraxis="coloraxis")
        else:
            trace.update(colorscale="Viridis", colorbar=bar, zmin=zmin, zmax=zmax)
        fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title=x_title, tickmode="linear", dtick=1, row=1, col=col)
        fig.update_yaxes(title="layer", autorange="reversed", tickmode="linear", dtick=1, row=1, col=col)
    if shared_scale:
        fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": zmin, "cmax": zmax})
    layers = len(_rows(left))
    return _layout(fig, title, height=max(300, 36 * layers + 160), top=80)


def grouped_bars(groups: dict[str, Sequence[float]], x_labels: Sequence[Any], title: str,
                 y_title: str = "", x_title: str = "",
                 errors: dict[str, Sequence[float]] | None = None) -> go.Figure:
    """One bar series per group over the same x labels (e.g. before vs after training)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(groups.items()):
        err = (errors or {}).get(name)
        fig.add_trace(go.Bar(x=_labels(x_labels), y=[float(v) for v in values], name=name,
                             marker_color=PALETTE[i % len(PALETTE)],
                             error_y=None if err is None else {"type": "data", "array": list(err)}))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(title=y_title)
    return _layout(fig, title, height=340)


def pattern_heatmap(mask, weights, n: int, m: int, row_start: int = 0, col_start: int = 0,
                    title: str | None = None) -> go.Figure:
    """The N:M keep-mask of a window of one matrix (green kept, dark pruned; the weight in the
    hover), with a line between every block of ``m`` input columns."""
    z = _rows(mask)
    w = _rows(weights)
    rows, cols = len(z), len(z[0]) if z else 0
    xs = [col_start + j for j in range(cols)]
    ys = [row_start + i for i in range(rows)]
    colorscale = [[0.0, "#2b2b2b"], [0.5, "#2b2b2b"], [0.5, "#8fd694"], [1.0, "#8fd694"]]
    fig = go.Figure(go.Heatmap(
        z=z, x=xs, y=ys, zmin=0, zmax=1, colorscale=colorscale, showscale=False, customdata=w,
        xgap=1, ygap=1,
        hovertemplate="output %{y}, input %{x}: weight %{customdata:.4g}, kept %{z}<extra></extra>"))
    for b in range(1, cols // m if m else 0):
        fig.add_vline(x=col_start + b * m - 0.5, line_color="#E45756", line_width=1)
    fig.update_xaxes(title=f"input dimension (blocks of {m})", showgrid=False)
    fig.update_yaxes(title="output dimension", autorange="reversed", showgrid=False)
    return _layout(fig, title or f"{n}:{m} pattern (green = kept)", height=max(260, 18 * rows + 120))


def evaluation_bars(rows: Sequence[dict], metrics: Sequence[str] = ("accuracy", "loss"),
                    label_key: str = "label", title: str = "Evaluation") -> go.Figure:
    """One panel per metric, one bar per row (``row[metric]``, ± ``row[metric + '_se']``)."""
    fig = make_subplots(rows=1, cols=len(metrics),
                        subplot_titles=[SHORT_LABELS.get(m, m) for m in metrics])
    # about as many characters a line as a bar is wide at 1024 px (8 bars in two panels: 10)
    labels = wrapped_labels([str(r[label_key]) for r in rows],
                            width=max(8, min(16, 80 // max(1, len(rows) * len(metrics)))))
    for i, metric in enumerate(metrics):
        values = [r.get(metric) for r in rows]
        se = [r.get(f"{metric}_se") for r in rows]
        se = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in se]
        fig.add_trace(go.Bar(x=labels, y=[None if v is None else float(v) for v in values],
                             error_y={"type": "data", "array": se, "visible": True},
                             marker_color=[PALETTE[k % len(PALETTE)] for k in range(len(rows))],
                             name=metric, showlegend=False,
                             hovertemplate=f"%{{x}}<br>{metric}: %{{y:.4g}}<extra></extra>"),
                      row=1, col=i + 1)
    lines = max((label.count("<br>") + 1 for label in labels), default=1)
    fig.update_xaxes(tickangle=0)  # wrapped, level labels: long names take lines, not the plot's height
    fig = _layout(fig, title, height=400 + 16 * (lines - 1), top=80)
    fig.update_layout(margin={"b": 40 + 16 * lines})
    return fig


def wrapped_labels(labels: Sequence[str], width: int = 14) -> list[str]:
    """Category labels broken into lines of about ``width`` characters (plotly's ``<br>``; each
    part escaped), so long names (variant names, run settings) never squeeze a bar chart."""
    import textwrap

    return ["<br>".join(escape.plotly(part) for part in textwrap.wrap(label, width, break_long_words=False)
                        or [escape.plotly(label)]) for label in labels]


HISTORY_DASHES = ("solid", "dash", "dot", "dashdot")


def history_panels(histories: dict[str, Sequence[dict]], fields: Sequence[str], xkey: str = "step",
                   title: str = "Training history") -> go.Figure:
    """One panel per field (their scales differ), one line per named history."""
    fields = [f for f in fields if any(f in h for hist in histories.values() for h in hist)]
    fig = make_subplots(rows=1, cols=max(1, len(fields)), subplot_titles=list(fields) or [""])
    count = len(histories)
    for i, (name, hist) in enumerate(histories.items()):
        # arms that overlap (a control equal to the trained run until a penalty kicks in) stay
        # visible: each later line is thinner and dashed differently, drawn over the wider ones
        line = {"color": PALETTE[i % len(PALETTE)], "width": 2 + 2.5 * (count - 1 - i),
                "dash": HISTORY_DASHES[i % len(HISTORY_DASHES)]}
        for j, field in enumerate(fields):
            pts = [h for h in hist if h.get(field) is not None]
            fig.add_trace(go.Scatter(
                x=[h.get(xkey, k) for k, h in enumerate(pts)], y=[h[field] for h in pts],
                mode="lines+markers" if len(pts) < 30 else "lines", name=name, legendgroup=name,
                showlegend=j == 0, line=line, opacity=0.9), row=1, col=j + 1)
            fig.update_xaxes(title=xkey, row=1, col=j + 1)
    steps = [h.get(xkey) for hist in histories.values() for h in hist]
    if steps and all(isinstance(x, int) for x in steps):  # whole steps: no 1.5 ticks
        ticks = 8 if len(fields) <= 2 else 3  # narrow panels: fewer ticks, none overlapping
        fig.update_xaxes(dtick=max(1, math.ceil(max(steps) / ticks)))
    fig = _layout(fig, title, height=380, top=80)
    # the legend under the panels: long arm names never take the panels' width
    fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.25, "yanchor": "top"},
                      margin={"b": 90})
    return fig


def sparsity_heatmap(layer_sparsity, columns: Sequence[str], title: str = "Realized sparsity") -> go.Figure:
    """Fraction of weights removed per layer (rows) and matrix (columns), written in the cells."""
    z = _rows(layer_sparsity)
    fig = go.Figure(go.Heatmap(z=z, x=list(columns), y=list(range(len(z))), zmin=0, zmax=1,
                               colorscale="Reds", text=[[f"{v:.0%}" for v in row] for row in z],
                               texttemplate="%{text}", colorbar={"title": "removed"},
                               hovertemplate="layer %{y}, %{x}: %{z:.1%}<extra></extra>"))
    fig.update_yaxes(title="layer", autorange="reversed", tickmode="linear", dtick=1)
    return _layout(fig, title, height=max(260, 30 * len(z) + 120))
