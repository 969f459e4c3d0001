"""The bertviz head and model views as self-contained HTML that renders without network.

bertviz (``html_action='return'``) emits a ``<script src=…require.min.js>`` from a CDN and a
``require.config`` that points d3 and jQuery at CDNs. :func:`offline` replaces both: the vendored
copies in ``dashboard/assets/`` are inlined (d3 and jQuery first, as globals; then require.js;
then named AMD modules ``d3`` and ``jquery`` that hand the globals to bertviz's ``requirejs``
call). Pruned heads are marked with a grey veil and a red cross (model view: on the head's
thumbnail; head view: on the head's colour box), and can be hidden (their weights drawn as 0).

Pure string building; the attention numbers come from :mod:`prunelens.analysis.attention`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import torch

from prunelens.analysis.attention import AttentionMaps
from prunelens.dashboard import escape

ASSETS = Path(__file__).parent / "assets"
VIEWS = ("head", "model")

_REQUIRE_TAG = re.compile(r"<script\s+src=\"[^\"]*require[^\"]*\.js\"\s*>\s*</script>")
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.DOTALL)
# bertviz writes the params twice: in the code and in the comment after it (one line)
_PARAMS = re.compile(r"const params = (\{.*?\}); // HACK[^\n]*", re.DOTALL)
_INLINED_PARAMS = re.compile(r"const params = (\{.*?\}); // (?:HACK|prunelens)", re.DOTALL)
_ROOT_ID = re.compile(r"id=\"(bertviz-[0-9a-f]+)\"")

_AMD_SHIM = (
    "define('d3', [], function () { return window.d3; });\n"
    "define('jquery', [], function () { return window.jQuery; });"
)

# Marks pruned heads after bertviz draws, and again whenever it redraws (layer/filter change).
_MARK_JS = """
(function () {
  const cfg = PRUNELENS_MARKS;
  const root = document.getElementById(cfg.root);
  if (!root) { return; }
  const vis = root.querySelector('#vis');
  const NS = 'http://www.w3.org/2000/svg';
  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) { node.setAttribute(k, attrs[k]); }
    node.setAttribute('pointer-events', 'none');
    node.classList.add('prunelens-pruned');
    return node;
  }
  function cross(parent, x, y, w, h) {
    parent.appendChild(el('rect', {x: x, y: y, width: w, height: h, fill: '#777',
                                   'fill-opacity': 0.55}));
    parent.appendChild(el('line', {x1: x + 2, y1: y + 2, x2: x + w - 2, y2: y + h - 2,
                                   stroke: '#d62728', 'stroke-width': 2}));
    parent.appendChild(el('line', {x1: x + w - 2, y1: y + 2, x2: x + 2, y2: y + h - 2,
                                   stroke: '#d62728', 'stroke-width': 2}));
  }
  function apply() {
    const svg = vis.querySelector('svg');
    if (!svg || svg.querySelector('.prunelens-pruned')) { return; }
    if (cfg.view === 'model') {
      cfg.pruned.forEach(function (lh) {
        const li = cfg.layers.indexOf(lh[0]);
        const hi = cfg.heads.indexOf(lh[1]);
        if (li < 0 || hi < 0) { return; }
        const bg = svg.querySelector('#attn_background_' + li + '_' + hi);
        if (!bg) { return; }
        cross(svg, +bg.getAttribute('x'), +bg.getAttribute('y'),
              +bg.getAttribute('width'), +bg.getAttribute('height'));
      });
    } else {
      const select = root.querySelector('#layer');
      const layer = select ? +select.value : cfg.layers[0];
      const groups = svg.querySelectorAll(':scope > g');
      const boxes = groups.length ? groups[groups.length - 1] : null;
      if (!boxes) { return; }
      const rects = boxes.querySelectorAll('rect');
      cfg.pruned.forEach(function (lh) {
        if (lh[0] !== layer || !rects[lh[1]]) { return; }
        const r = rects[lh[1]];
        cross(svg, +r.getAttribute('x'), +r.getAttribute('y'),
              +r.getAttribute('width'), +r.getAttribute('height'));
      });
    }
    svg.setAttribute('data-prunelens-marked', String(cfg.pruned.length));
  }
  new MutationObserver(function () { window.setTimeout(apply, 0); })
    .observe(vis, {childList: true, subtree: true});
  window.setTimeout(apply, 0);
})();
"""


# Model view: bertviz draws a fixed 970 px wide SVG (wider than the page at 1400 px and below);
# give it a viewBox so it scales down to the frame's width instead of scrolling sideways.
_FIT_JS = """
(function () {
  const root = document.getElementById(PRUNELENS_ROOT);
  if (!root) { return; }
  const vis = root.querySelector('#vis');
  function fit() {
    const svg = vis.querySelector('svg');
    if (!svg || svg.getAttribute('viewBox')) { return; }
    const w = +svg.getAttribute('width'), h = +svg.getAttribute('height');
    if (!w || !h) { return; }
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.setAttribute('preserveAspectRatio', 'xMinYMin meet');
    svg.setAttribute('width', '100%');
    svg.removeAttribute('height');
    svg.style.maxWidth = w + 'px';
    svg.style.height = 'auto';
  }
  new MutationObserver(function () { window.setTimeout(fit, 0); })
    .observe(vis, {childList: true, subtree: true});
  window.setTimeout(fit, 0);
})();
"""


@cache
def _asset(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    return text.replace("</script", "<\\/script")


def vendored_scripts() -> str:
    """The inline ``<script>`` blocks that stand in for bertviz's CDN loads."""
    return "".join(f"<script>\n{_asset(name)}\n</script>\n"
                   for name in ("d3.min.js", "jquery.min.js", "require.js")) + (
        f"<script>\n{_AMD_SHIM}\n</script>\n")


def offline(html: str) -> str:
    """Rewrite bertviz HTML so that every script it needs is inline (no network at all)."""
    if not _REQUIRE_TAG.search(html):
        raise ValueError("bertviz HTML has no require.js <script src> tag to replace")
    html = _REQUIRE_TAG.sub(lambda _: vendored_scripts(), html, count=1)
    html = _REQUIRE_CONFIG.sub("require.config({});", html)
    # a token such as "</script>" must not end the script early
    return _PARAMS.sub(lambda m: "const params = " + _script_json(json.loads(m.group(1)))
                       + "; // prunelens: params inlined", html, count=1)


def _script_json(value) -> str:
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def embedded_params(html: str) -> dict:
    """The ``params`` object bertviz embeds in its script (for tests and debugging)."""
    match = _INLINED_PARAMS.search(html)
    if not match:
        raise ValueError("no bertviz params in this HTML")
    return json.loads(match.group(1))


def _bertviz_html(maps: AttentionMaps, view: str, layers: list[int], layer: int | None,
                  heads: list[int] | None, hide_pruned: bool) -> str:
    from bertviz import head_view, model_view

    attention = maps.attention.astype(np.float32, copy=True)
    if hide_pruned:
        attention[maps.head_mask == 0] = 0.0
    tensors = [torch.from_numpy(attention[i])[None] for i in range(maps.layers)]
    common = {"attention": tensors, "tokens": list(maps.tokens),
              "sentence_b_start": maps.sentence_b_start, "include_layers": list(layers),
              "html_action": "return"}
    if view == "head":
        return head_view(layer=layer, heads=heads, **common).data
    return model_view(include_heads=heads, display_mode="light", **common).data


def view_html(maps: AttentionMaps, view: str = "head", layers: list[int] | None = None,
              layer: int | None = None, heads: list[int] | None = None,
              hide_pruned: bool = False) -> str:
    """Self-contained HTML of the bertviz ``head`` or ``model`` view with pruned heads marked.

    ``layers`` limits the layers shown; ``layer`` is the head view's first layer; ``heads`` are
    the head view's initially selected heads / the model view's shown heads.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view '{view}' (use head or model)")
    layers = list(range(maps.layers)) if layers is None else sorted({int(x) for x in layers})
    if not layers or not all(0 <= x < maps.layers for x in layers):
        raise ValueError(f"layers must be a non-empty subset of 0..{maps.layers - 1}")
    if layer is not None and layer not in layers:
        layer = layers[0]
    if heads is not None:
        heads = sorted({int(h) for h in heads})
        if not heads or not all(0 <= h < maps.heads for h in heads):
            raise ValueError(f"heads must be a non-empty subset of 0..{maps.heads - 1}")
    html = offline(_bertviz_html(maps, view, layers, layer, heads, hide_pruned))
    root = _ROOT_ID.search(html).group(1)
    shown_heads = heads if (view == "model" and heads is not None) else list(range(maps.heads))
    marks = {"root": root, "view": view, "layers": layers, "heads": shown_heads,
             "pruned": [[lay, h] for lay, h in maps.pruned_heads]}
    legend = _legend(maps, hide_pruned)
    script = _MARK_JS.replace("PRUNELENS_MARKS", json.dumps(marks))
    if view == "model":
        script += _FIT_JS.replace("PRUNELENS_ROOT", json.dumps(root))
        style = ""
    else:  # the page's Layer selector picks the layer: hide bertviz's own (one selector, not two)
        style = f"<style>#{root} > span {{ display: none; }}</style>\n"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">{style}</head>\n"
            f"<body style=\"margin:0;background:white;overflow-x:hidden\">\n{legend}{html}\n"
            f"<script>\n{script}\n</script>\n</body></html>\n")


def _legend(maps: AttentionMaps, hide_pruned: bool) -> str:
    pruned = maps.pruned_heads
    if not pruned:
        return ""
    names = ", ".join(f"L{lay} H{h}" for lay, h in pruned)
    how = "drawn with zero weight and " if hide_pruned else ""
    return (f"<div id=\"prunelens-legend\" style=\"font:13px Helvetica, Arial, sans-serif;"
            f"margin:2px 0 6px 0;color:#444\">Pruned heads ({len(pruned)}), {how}marked "
            f"<span style=\"color:#d62728;font-weight:bold\">&#x2715;</span>: {names}</div>\n")


def view_height(maps: AttentionMaps, view: str, layers: list[int] | None = None,
                heads: list[int] | None = None) -> int:
    """Pixel height the view needs (bertviz's own layout constants), for the Streamlit frame."""
    seq = len(maps.tokens)
    extra = 60 + (24 if maps.pruned_heads else 0)
    if view == "head":
        return int(seq * 22.5 + 30 + extra)
    n_layers = maps.layers if layers is None else len(layers)
    n_heads = maps.heads if heads is None else len(heads)
    box = 7 * (12 / n_heads)
    thumb = seq * box + 10
    detail = seq * 18 + 30 + 25
    return int(max(n_layers * thumb + 38, detail) + extra)


def head_figure(maps: AttentionMaps, layer: int, head: int):
    """Plotly heatmap of one head's map: rows attend (from), columns are attended to (to)."""
    import plotly.graph_objects as go

    matrix = maps.head(layer, head)
    labels = [escape.plotly(f"{i}:{t}") for i, t in enumerate(maps.tokens)]  # a token "<b>" is text
    pruned = maps.head_mask[layer, head] == 0
    fig = go.Figure(go.Heatmap(
        z=matrix.tolist(), x=labels, y=labels, zmin=0.0, zmax=1.0, colorscale="Blues",
        colorbar={"title": "weight"},
        hovertemplate="from %{y}<br>to %{x}<br>weight %{z:.3f}<extra></extra>"))
    title = f"Layer {layer}, head {head}" + (" (pruned)" if pruned else "")
    side = max(320, min(720, 26 * len(labels) + 140))
    fig.update_layout(title={"text": title, "yref": "container", "y": 1, "yanchor": "top",
                             "pad": {"t": 28}},  # below the chart toolbar
                      height=side + 28, margin={"l": 10, "r": 10, "t": 68, "b": 10},
                      xaxis={"title": "attended to", "tickangle": -60},
                      yaxis={"title": "attending token", "autorange": "reversed"})
    return fig
