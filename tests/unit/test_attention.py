"""Attention maps (prunelens.analysis.attention) against the eager implementation, and the offline
bertviz HTML (prunelens.dashboard.attention_view)."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prunelens.analysis.fingerprints import weights_digest
from prunelens.analysis.attention import AttentionMaps, attention_from_inputs, attention_maps
from prunelens.analysis.errors import DataError, ParamError
from prunelens.analysis.gates import gated, hook_count
from prunelens.analysis.layout import encoder_layers

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
SENTENCE = "the movie was not very good but the actors were fun"


def _eager_copy(model):
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    return eager


def _eager_attentions(model, inputs, head_mask=None) -> np.ndarray:
    with torch.no_grad():
        if head_mask is not None:
            with gated(model, head=head_mask):
                out = model(**inputs, output_attentions=True)
        else:
            out = model(**inputs, output_attentions=True)
    return torch.stack(out.attentions).numpy()


def _inputs(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_matches_eager_output_attentions(tiny_loaded):
    maps = attention_maps(tiny_loaded, SENTENCE)
    inv = tiny_loaded.inventory
    seq = len(maps.tokens)
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
    assert maps.attention.shape == (inv.layers, inv.heads, seq, seq)
    np.testing.assert_allclose(maps.attention.sum(-1), 1.0, atol=1e-5)
    eager = _eager_copy(tiny_loaded.model)
    ref = _eager_attentions(eager, _inputs(tiny_loaded.tokenizer, [SENTENCE]))[:, 0]
    np.testing.assert_allclose(maps.attention, ref, atol=1e-6)
    assert maps.pruned_heads == [] and maps.head_mask.sum() == inv.layers * inv.heads


def test_padded_batch_matches_eager(tiny_loaded):
    texts = ["good", "the plot was boring and the actors were awful"]
    inputs = _inputs(tiny_loaded.tokenizer, texts)
    assert inputs["attention_mask"][0].sum() < inputs["attention_mask"].shape[1]  # really padded
    ours = attention_from_inputs(tiny_loaded.model, inputs).numpy()
    ref = _eager_attentions(_eager_copy(tiny_loaded.model), inputs)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # padding keys get no attention
    n = int(inputs["attention_mask"][0].sum())
    assert np.abs(ours[:, 0, :, :, n:]).max() < 1e-12


def test_shared_model_is_not_mutated(tiny_loaded):
    model = tiny_loaded.model
    impl = model.config._attn_implementation
    before = weights_digest(model)
    attention_maps(tiny_loaded, SENTENCE, head_mask=np.array([[1, 0, 1, 1], [1, 1, 1, 1]]))
    assert model.config._attn_implementation == impl == "sdpa"
    assert hook_count(model) == 0
    for layer in encoder_layers(model):
        for mod in (layer.attention.self.query, layer.attention.self.key):
            assert len(mod._forward_hooks) == 0 and len(mod._forward_pre_hooks) == 0
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training

    assert weights_digest(model) == before


def test_hooks_removed_when_forward_fails(tiny_loaded):
    bad = {"input_ids": torch.tensor([[2, 999, 3]])}  # id outside the vocabulary
    with pytest.raises(IndexError):
        attention_from_inputs(tiny_loaded.model, bad)
    for layer in encoder_layers(tiny_loaded.model):
        assert len(layer.attention.self.query._forward_hooks) == 0


def test_head_mask_gives_pruned_model_maps(tiny_loaded):
    mask = np.ones((2, 4))
    mask[0, 1] = 0
    mask[0, 3] = 0
    full = attention_maps(tiny_loaded, SENTENCE)
    pruned = attention_maps(tiny_loaded, SENTENCE, head_mask=mask)
    assert pruned.pruned_heads == [(0, 1), (0, 3)]
    # layer 0 sees the same input; layer 1 sees the pruned layer-0 output
    np.testing.assert_allclose(pruned.attention[0], full.attention[0], atol=1e-7)
    assert np.abs(pruned.attention[1] - full.attention[1]).max() > 1e-3
    eager = _eager_copy(tiny_loaded.model)
    ref = _eager_attentions(eager, _inputs(tiny_loaded.tokenizer, [SENTENCE]), mask)[:, 0]
    np.testing.assert_allclose(pruned.attention, ref, atol=1e-6)


def test_sentence_pair_start(tiny_loaded):
    maps = attention_maps(tiny_loaded, "good movie", text_pair="the plot")
    expected = tiny_loaded.tokenizer.convert_ids_to_tokens(
        tiny_loaded.tokenizer("good movie", "the plot")["input_ids"])
    assert maps.tokens == expected and len(expected) == 7
    assert maps.tokens[0] == "[CLS]" and maps.tokens[3] == maps.tokens[6] == "[SEP]"
    assert maps.sentence_b_start == 4
    assert maps.attention.shape[2:] == (7, 7)


def test_errors(tiny_loaded):
    with pytest.raises(DataError, match="empty"):
        attention_maps(tiny_loaded, "   ")
    with pytest.raises(ParamError, match=r"expected \(2, 4\)"):
        attention_maps(tiny_loaded, SENTENCE, head_mask=np.ones((3, 4)))
    with pytest.raises(ParamError, match="only 0"):
        attention_maps(tiny_loaded, SENTENCE, head_mask=np.full((2, 4), 0.5))
    maps = attention_maps(tiny_loaded, SENTENCE)
    with pytest.raises(ParamError, match="no head"):
        maps.head(2, 0)


def test_truncation_flag(tiny_loaded):
    long = " ".join(["good"] * 40)
    maps = attention_maps(tiny_loaded, long, max_length=16)
    assert len(maps.tokens) == 16 and maps.truncated
    assert not attention_maps(tiny_loaded, "good").truncated


def test_json_and_csv_exports():
    att = np.zeros((2, 2, 3, 3), dtype=np.float32)
    att[..., 0] = 0.25
    att[..., 1] = 0.75
    att[1, 0, 2] = [0.5, 0.0, 0.5]
    maps = AttentionMaps(tokens=["[CLS]", "a,b", "[SEP]"], attention=att,
                         head_mask=np.array([[1, 1], [0, 1]], dtype=np.int8))
    data = maps.as_json()
    assert data["tokens"] == ["[CLS]", "a,b", "[SEP]"]
    assert data["pruned_heads"] == [[1, 0]]
    assert np.array_equal(np.array(data["attention"]), att.astype(np.float64))
    json.dumps(data)
    sub = maps.as_json(layers=[1], heads=[0])
    assert np.array(sub["attention"]).shape == (1, 1, 3, 3)
    assert sub["attention"][0][0][2] == [0.5, 0.0, 0.5]
    frame = pd.read_csv(io.StringIO(maps.to_csv()))
    assert len(frame) == 2 * 2 * 3 * 3
    assert list(frame.columns) == ["layer", "head", "pruned", "from_index", "from_token",
                                   "to_index", "to_token", "weight"]
    assert set(frame["from_token"]) == {"[CLS]", "a,b", "[SEP]"}
    row = frame[(frame.layer == 1) & (frame["head"] == 0) & (frame.from_index == 2)]
    assert row["weight"].tolist() == [0.5, 0.0, 0.5]
    assert frame.groupby(["layer", "head"])["pruned"].first().to_dict() == {
        (0, 0): 0, (0, 1): 0, (1, 0): 1, (1, 1): 0}


# --- the offline bertviz HTML ------------------------------------------------------------------

def _maps():
    att = np.full((2, 4, 3, 3), 1 / 3, dtype=np.float32)
    mask = np.ones((2, 4), dtype=np.int8)
    mask[1, 2] = 0
    return AttentionMaps(tokens=["[CLS]", "good", "[SEP]"], attention=att, head_mask=mask)


@pytest.mark.parametrize("view", ["head", "model"])
def test_view_html_is_offline(view):
    from prunelens.dashboard.attention_view import view_html

    html = view_html(_maps(), view=view)
    assert "<script src=" not in html.replace(" ", "")
    quoted_urls = set(re.findall(r"[\"'](https?://[^\"'\s]*)", html))
    assert all(u.startswith("http://www.w3.org/") for u in quoted_urls), quoted_urls
    assert "cdnjs" not in html and "cdn." not in html
    # the vendored libraries are inlined
    assert "RequireJS 2.3.6" in html and "d3js.org v5" in html and "jQuery v3" in html
    assert "define('d3'" in html and "define('jquery'" in html
    assert '"pruned": [[1, 2]]' in html or '"pruned":[[1,2]]' in html


def test_view_hide_zeroes_pruned_heads():
    from prunelens.dashboard.attention_view import embedded_params, view_html

    params = embedded_params(view_html(_maps(), view="model", hide_pruned=True))
    attn = np.array(params["attention"][0]["attn"])
    assert attn.shape == (2, 4, 3, 3)
    assert np.all(attn[1, 2] == 0) and np.all(attn[0, 2] == pytest.approx(1 / 3))
    kept = embedded_params(view_html(_maps(), view="model", hide_pruned=False))
    assert np.all(np.array(kept["attention"][0]["attn"])[1, 2] == pytest.approx(1 / 3))
    with pytest.raises(ValueError, match="view"):
        view_html(_maps(), view="neuron")


def test_view_layer_and_head_choices():
    from prunelens.dashboard.attention_view import embedded_params, view_html

    params = embedded_params(view_html(_maps(), view="head", layers=[1], layer=1, heads=[0, 3]))
    assert params["include_layers"] == [1] and params["layer"] == 1 and params["heads"] == [0, 3]
    assert np.array(params["attention"][0]["attn"]).shape == (1, 4, 3, 3)
    assert params["attention"][0]["left_text"] == ["[CLS]", "good", "[SEP]"]
    with pytest.raises(ValueError, match="layers"):
        view_html(_maps(), layers=[5])


def test_legend_lists_pruned_heads():
    from prunelens.dashboard.attention_view import view_html

    assert "L1 H2" in view_html(_maps())
    unpruned = AttentionMaps(tokens=["a"], attention=np.ones((2, 4, 1, 1), dtype=np.float32),
                             head_mask=np.ones((2, 4), dtype=np.int8))
    assert "prunelens-legend" not in view_html(unpruned)


def test_head_figure():
    from prunelens.dashboard.attention_view import head_figure

    maps = _maps()
    maps.attention[1, 2, 0] = [0.5, 0.25, 0.25]
    fig = head_figure(maps, 1, 2)
    assert fig.data[0].z[0] == (0.5, 0.25, 0.25) or list(fig.data[0].z[0]) == [0.5, 0.25, 0.25]
    assert list(fig.data[0].x) == ["0:[CLS]", "1:good", "2:[SEP]"]
    assert "(pruned)" in fig.layout.title.text
    assert "(pruned)" not in head_figure(maps, 0, 0).layout.title.text


def test_view_html_escapes_script_tokens():
    from prunelens.dashboard.attention_view import embedded_params, view_html

    maps = _maps()
    maps.tokens[1] = "</script><b>"
    html = view_html(maps, view="head")
    assert "</script><b>" not in html
    assert embedded_params(html)["attention"][0]["left_text"][1] == "</script><b>"


# --- the page under AppTest ---------------------------------------------------------------------

def _marks(at) -> dict:
    html = at.get("iframe")[0].proto.srcdoc
    match = re.search(r"const cfg = (\{.*?\});", html)
    assert match, "no pruned-head marks config in the view"
    return json.loads(match.group(1))


def test_attention_page(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"model": str(tiny_bert_dir), "data": str(tiny_csv),
                            "mask": "magnitude", "sparsity": "0.25", "text": SENTENCE})
    at.session_state["prunelens.page"] = "attention"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Attention"
    assert at.text_input(key="att.text").value == SENTENCE
    assert any("removes 2 of 8 heads" in c.value for c in at.caption)
    marks = _marks(at)
    assert marks["view"] == "head" and len(marks["pruned"]) == 2
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"View (HTML)", "Attention (JSON)", "Attention (CSV)"} <= set(labels)

    at.slider(key="att.sparsity").set_value(0.5).run()
    assert not at.exception
    assert any("removes 4 of 8 heads" in c.value for c in at.caption)
    assert len(_marks(at)["pruned"]) == 4
    assert at.query_params["sparsity"] in ("0.5", ["0.5"])

    at.radio(key="att.view").set_value("model").run()
    assert not at.exception and _marks(at)["view"] == "model"
    at.selectbox(key="att.mask_method").set_value("none").run()
    assert _marks(at)["pruned"] == []

    at.text_input(key="att.text").set_value("  ").run()
    assert not at.exception
    assert any("Type a sentence" in i.value for i in at.info)
