"""Figure builders are pure functions: trace types, shapes, the clickable overlay."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from prunelens.dashboard import figures


def test_head_heatmap_has_one_overlay_point_per_head_with_layer_head_customdata():
    scores = np.arange(12, dtype=float).reshape(3, 4)
    fig = figures.head_heatmap(scores, "t")
    heat, overlay = fig.data[0], fig.data[1]
    assert isinstance(heat, go.Heatmap) and isinstance(overlay, go.Scatter)
    assert np.array(heat.z).shape == (3, 4)
    assert len(overlay.x) == 12 and len(overlay.customdata) == 12
    for x, y, (layer, head) in zip(overlay.x, overlay.y, overlay.customdata):
        assert (x, y) == (head, layer)
        assert scores[layer, head] == heat.z[layer][head]
    assert overlay.marker.color == "rgba(0,0,0,0)"  # invisible but clickable
    assert "layer 2, head 3: 11" in overlay.text[-1]


def test_head_heatmap_marks_selected_head():
    fig = figures.head_heatmap(np.zeros((2, 2)), "t", selected=(1, 0))
    assert len(fig.data) == 3
    assert list(fig.data[2].x) == [0] and list(fig.data[2].y) == [1]


@pytest.mark.parametrize("event, expected", [
    ({"selection": {"points": [{"customdata": [1, 3], "x": 3, "y": 1}]}}, (1, 3)),
    ({"selection": {"points": [{"x": 3, "y": 1}]}}, None),  # a heatmap point carries no customdata
    ({"selection": {"points": []}}, None),
    (None, None),
])
def test_clicked_unit_reads_customdata(event, expected):
    assert figures.clicked_unit(event) == expected


def test_delta_bars_one_panel_per_metric_with_error_bars():
    delta = {"accuracy": -0.1, "accuracy_se": 0.02, "loss": 0.3, "loss_se": 0.05, "margin": -0.2,
             "margin_se": float("nan")}
    fig = figures.delta_bars(delta)
    assert [t.name for t in fig.data] == ["accuracy", "loss", "margin"]
    assert [t.y[0] for t in fig.data] == [-0.1, 0.3, -0.2]
    assert [t.error_y.array[0] for t in fig.data] == [0.02, 0.05, 0.0]


def test_mask_heatmap_for_heads_and_blocks():
    heads = figures.mask_heatmap([[1, 0], [0, 1]], "head")
    assert isinstance(heads.data[0], go.Heatmap) and [list(r) for r in heads.data[0].z] == [[1.0, 0.0], [0.0, 1.0]]
    blocks = figures.mask_heatmap([1, 0, 1], "ffn")
    assert isinstance(blocks.data[0], go.Bar) and list(blocks.data[0].y) == [1.0, 0.0, 1.0]


def test_curves_one_line_per_method_and_unpruned_line():
    rows = [{"method": m, "sparsity": s, "accuracy": a, "accuracy_se": 0.01}
            for m, pts in {"a": [(0.5, 0.6), (0.0, 0.9)], "random": [(0.0, 0.9), (0.5, 0.5)]}.items()
            for s, a in pts]
    fig = figures.curves(rows, "accuracy", base=0.9)
    assert [t.name for t in fig.data] == ["a", "random"]
    assert list(fig.data[0].x) == [0.0, 0.5] and list(fig.data[0].y) == [0.9, 0.6]  # sorted by sparsity
    assert fig.data[1].line.dash == "dot"
    assert any(s.y0 == 0.9 for s in fig.layout.shapes)


def test_matrix_heatmap_blanks_nan_and_keeps_labels():
    fig = figures.matrix_heatmap([[1.0, float("nan")], [float("nan"), 1.0]], ["a", "b"], "t")
    assert fig.data[0].z[0][1] is None and fig.data[0].text[0][0] == "1.00"
    assert list(fig.data[0].x) == ["a", "b"]


def test_heatmap_grid_shares_one_colour_axis():
    fig = figures.heatmap_grid({"a": [[0, 1]], "b": [[1, 0]], "c": [[0.5, 0.5]], "d": [[0, 0]]}, columns=3)
    assert len(fig.data) == 4 and {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1


def test_sigma_chart_groups_by_matrix_and_shows_cap():
    rows = [{"layer": layer, "matrix": m, "sigma": 1.0 + layer} for layer in range(2) for m in ("query", "key")]
    fig = figures.sigma_chart(rows, cap=1.5)
    assert [t.name for t in fig.data] == ["query", "key"]
    assert list(fig.data[0].y) == [1.0, 2.0]
    assert fig.layout.shapes[0].y0 == 1.5


def test_histograms_and_binned_histograms():
    fig = figures.histograms({"plain": [1, 2, 3], "normalized": [0.1, 0.2]}, "t", vline=2)
    assert [len(t.x) for t in fig.data] == [3, 2]
    binned = figures.binned_histograms({"a": ([1, 2], [0.0, 1.0, 3.0])}, "t")
    assert list(binned.data[0].x) == [0.5, 2.0] and list(binned.data[0].width) == [1.0, 2.0]


def test_history_chart_plots_numeric_fields_against_step():
    fig = figures.history_chart([{"step": 0, "loss": 1.0, "phase": "a"}, {"step": 5, "loss": 0.5, "phase": "b"}])
    assert [t.name for t in fig.data] == ["loss"]
    assert list(fig.data[0].x) == [0, 5]


def test_block_bars_and_neuron_distribution():
    bars = figures.block_bars([0.1, 0.2, 0.3], "attention")
    assert list(bars.data[0].y) == [0.1, 0.2, 0.3]
    boxes = figures.neuron_distribution(np.ones((3, 5)))
    assert len(boxes.data) == 3 and len(boxes.data[0].y) == 5


def test_long_variant_names_wrap_instead_of_squeezing_the_bars():
    # issue 30 item 9: long names were tilted under the bars and took the plot's height
    from prunelens.dashboard import figures

    rows = [{"variant": "one-shot magnitude + the same SR-STE steps <b>", "accuracy": 0.8, "loss": 0.4},
            {"variant": "ADMM", "accuracy": 0.7, "loss": 0.5}]
    fig = figures.evaluation_bars(rows, label_key="variant")
    label = fig.data[0].x[0]
    assert label.split("<br>")[0] == "one-shot" and all(len(p) <= 16 for p in label.split("<br>"))
    many = figures.evaluation_bars(rows * 2, label_key="variant")  # 4 bars x 2 panels: narrower lines
    import html

    assert all(len(html.unescape(p)) <= 10 for p in many.data[0].x[0].split("<br>"))
    assert "&lt;b&gt;" in label and fig.data[0].x[1] == "ADMM"
    assert fig.layout.xaxis.tickangle == 0
    lines = label.count("<br>") + 1
    short = figures.evaluation_bars([{**r, "variant": "a"} for r in rows], label_key="variant")
    assert fig.layout.height - short.layout.height == 16 * (lines - 1)  # the lines get room
    assert fig.layout.margin.b == 40 + 16 * lines


def test_overlapping_history_lines_stay_visible():
    from prunelens.dashboard import figures

    same = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]
    fig = figures.history_panels({"trained": same, "control": same, "untrained": same}, ["loss"])
    widths = [t.line.width for t in fig.data]
    dashes = [t.line.dash for t in fig.data]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3  # later lines thinner
    assert len(set(dashes)) == 3
    assert fig.layout.legend.orientation == "h"  # under the panels: names never squeeze them
