"""The family contract (issue 32): every encoder family of :data:`prunelens.analysis.layout.FAMILIES`,
on a tiny random checkpoint built from its transformers config (tests/tiny.py), keeps it —

- every unit's gate is exact: a gate of 1 changes no logit;
- masked ≡ physically pruned (|Δ logit| ≤ 1e-4, fp32), with a layer that loses every head, a
  block removed and neurons removed; the pruned copy's parameter count is the real one;
- the per-unit parameter counts are :func:`~prunelens.analysis.layout.per_unit` of ones;
- an export folder loads again with its true head counts, and re-pruning it equals pruning the
  original with the union of both masks;
- the ONNX export runs in onnxruntime and matches torch;
- every method scores with the inventory's shape, or ``is_compatible`` says why not;
- the attention view draws.

Adding a family = one entry in layout.FAMILIES + one config in tests/tiny.FAMILY_CONFIGS.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.layout import FAMILIES, UNITS, encoder_matrices, family_for_type, per_unit, prepare
from prunelens.analysis.pruning import parameter_count, physically_prune
from tests.tiny import FAMILY_CONFIGS, write_tiny_csv, write_tiny_family

NAMES = list(FAMILY_CONFIGS)
SENTENCES = ["good movie very fun", "the plot was bad", "awful"]
# cheap settings: each method's own tests check its numbers; here only that it runs on the family
CHEAP = {"michel": {"examples": 16, "batch_size": 8}, "ablation": {"examples": 16},
         "smp": {"samples": 8, "batch_size": 8}, "pins": {"batches": 1, "batch_size": 8},
         "platon": {"batches": 1, "batch_size": 8},
         "smp-pruner": {"steps": 2, "batch_size": 4, "score_batches": 1}}


def test_every_family_has_a_tiny_checkpoint_and_every_type_a_family():
    assert {family_for_type(FAMILY_CONFIGS[n][1].get("model_type", n)).name for n in NAMES} == set(FAMILIES)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: write_tiny_family(root / name, name) for name in NAMES}


@pytest.fixture(scope="module")
def loaded_families(family_dirs):
    from prunelens.analysis.models import load_model

    return {name: load_model(str(path)) for name, path in family_dirs.items()}


def _inputs(loaded):
    return dict(loaded.tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def _masks(inv, shared: bool) -> Masks:
    """A mask with a layer losing every head, a single head, some neurons and one FFN block.
    Shared layers: the same heads at every depth but one, which removes one more."""
    head = np.ones((inv.layers, inv.heads), dtype=np.float32)
    neuron = np.ones((inv.layers, inv.ffn), dtype=np.float32)
    ffn = np.ones(inv.layers, dtype=np.float32)
    if shared:
        head[:, 0] = 0
        head[1, 2] = 0
        neuron[:, :3] = 0
        neuron[0, 5] = 0
    else:
        head[0] = 0
        head[1, 2] = 0
        neuron[1, :5] = 0
    ffn[-1] = 0
    return Masks(head=head, neuron=neuron, ffn=ffn)


@pytest.mark.parametrize("name", NAMES)
def test_a_gate_of_one_changes_no_logit(name, loaded_families):
    loaded = loaded_families[name]
    model, inv = loaded.model, loaded.inventory
    inputs = _inputs(loaded)
    with torch.no_grad():
        base = model(**inputs).logits
        for unit in UNITS:
            ones = torch.ones(inv.unit_shape(unit), requires_grad=True)  # a gradient: hooks attach
            with gated(model, Masks.for_unit(unit, ones)):
                assert torch.equal(model(**inputs).logits, base), unit


@pytest.mark.parametrize("name", NAMES)
def test_masked_equals_physically_pruned(name, loaded_families):
    loaded = loaded_families[name]
    model, inv = loaded.model, loaded.inventory
    masks = _masks(inv, bool(inv.sharing))
    inputs = _inputs(loaded)
    with torch.no_grad():
        base = model(**inputs).logits
        with gated(model, masks):
            masked = model(**inputs).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small = physically_prune(model, masks)
        physical = small(**inputs).logits
    assert (masked - base).abs().max() > 1e-3  # the mask matters
    assert (physical - masked).abs().max() <= 1e-4
    # the real count: a removed FFN block loses all its neurons (its output bias stays, zeroed);
    # a shared layer loses only what every depth removes
    removed = inv.removed_params("head", masks.head) + inv.removed_params("neuron", masks.neuron * masks.ffn[:, None])
    assert parameter_count(small) == inv.encoder_params - removed
    if not inv.sharing:
        assert small.config.pruned_heads[0] == list(range(inv.heads))


@pytest.mark.parametrize("name", NAMES)
def test_unit_parameter_counts_are_per_unit_of_ones(name, loaded_families):
    loaded = loaded_families[name]
    inv = loaded.inventory
    matrices = encoder_matrices(loaded.model)
    weights = [{n: torch.ones_like(m.weight) for n, m in layer.items()} for layer in matrices]
    biases = [{n: torch.ones_like(m.bias) for n, m in layer.items() if m.bias is not None} for layer in matrices]
    for unit in UNITS:
        counts = per_unit(weights, inv, unit, biases)
        assert counts.shape == inv.unit_shape(unit)
        assert (counts == inv.unit_params(unit)).all(), unit
    assert inv.encoder_params == parameter_count(loaded.model)


@pytest.mark.parametrize("name", NAMES)
def test_an_export_reloads_with_its_heads_and_re_pruning_is_the_union(name, loaded_families, tmp_path):
    from prunelens.analysis.models import load_model
    from prunelens.analysis.pruned_folder import save_pruned

    loaded = loaded_families[name]
    model, inv = loaded.model, loaded.inventory
    first = np.ones((inv.layers, inv.heads), dtype=np.float32)
    first[:, 1] = 0  # the same at every depth: shared layers lose its weights too
    first[0] = 0  # shared layers: gated at depth 0 only, the export keeps those gates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = physically_prune(model, Masks(head=first))
        save_pruned(small, loaded.tokenizer, tmp_path / "E", {})
        again = load_model(str(tmp_path / "E"))
        small.save_pretrained(tmp_path / "HF")  # a transformers folder: config pruned_heads, no manifest
        loaded.tokenizer.save_pretrained(tmp_path / "HF")
        hf = load_model(str(tmp_path / "HF"))
    gone = first.copy()
    for group in inv.sharing or ():  # a shared head's weights go only when every depth removes it
        gone[list(group)] = first[list(group)].max(axis=0)
    assert list(again.inventory.layer_heads) == [int(r.sum()) for r in gone]
    assert again.inventory.absent_heads == [tuple(map(int, ij)) for ij in np.argwhere(gone == 0)]
    assert again.inventory.encoder_params == parameter_count(small)
    # shared layers: what one depth gated off is no unit there either (null in JSON, never selected)
    assert set(again.inventory.gated_off) == {tuple(map(int, ij)) for ij in np.argwhere((first == 0) & (gone == 1))}
    if not inv.sharing:  # a transformers folder holds no per-depth gates
        assert hf.inventory.layer_heads == again.inventory.layer_heads
        assert hf.inventory.encoder_params == parameter_count(small)
    second = np.ones_like(first)
    second[-1, 3] = 0
    inputs = _inputs(loaded)
    with torch.no_grad():
        with gated(model, head=first * second):
            union = model(**inputs).logits
        with gated(again.model, head=second):
            re_masked = again.model(**inputs).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re_physical = physically_prune(again.model, Masks(head=second))(**inputs).logits
    assert (re_masked - union).abs().max() <= 1e-4
    if not inv.sharing:
        with torch.no_grad():
            assert (hf.model(**inputs).logits - again.model(**inputs).logits).abs().max() <= 1e-5
    assert (re_physical - union).abs().max() <= 1e-4


# BERT-layout families: tests/unit/test_export.py exports them (an ONNX export costs ~12 s here)
@pytest.mark.parametrize("name", [n for n in NAMES if family_for_type(n) is not FAMILIES["bert"]])
def test_the_onnx_export_matches_torch(name, loaded_families, tmp_path):
    pytest.importorskip("onnxruntime")
    from prunelens.analysis.data import tokenize_batches
    from prunelens.analysis.export import export_onnx, ort_session

    loaded = loaded_families[name]
    inv = loaded.inventory
    masks = _masks(inv, bool(inv.sharing))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = physically_prune(loaded.model, masks)
    import pandas as pd

    from prunelens.analysis.data import _from_frame

    data = _from_frame(pd.DataFrame({"text": SENTENCES, "label": [1, 0, 0]}), "s", "all")
    batch = tokenize_batches(loaded.tokenizer, data, batch_size=8)[0][0]
    export_onnx(small, batch, tmp_path / "m.onnx")
    feed = {k: v.numpy() for k, v in batch.model_inputs().items()}
    onnx_logits = ort_session(tmp_path / "m.onnx").run(None, feed)[0]
    with torch.no_grad():
        torch_logits = small(**batch.model_inputs()).logits.numpy()
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-4


@pytest.fixture(scope="module")
def family_sessions(loaded_families, tmp_path_factory):
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.operations import open_session

    root = tmp_path_factory.mktemp("family_sessions")
    csv = write_tiny_csv(root / "tiny.csv", n=16)
    return {name: open_session(data=str(csv), loaded=loaded, store=ResultStore(root / name, shipped_dir=None))
            for name, loaded in loaded_families.items()}


@pytest.mark.parametrize("name", NAMES)
def test_every_method_scores_with_the_inventorys_shape_or_says_why_not(name, family_sessions):
    from prunelens.analysis.methods import all_methods

    session = family_sessions[name]
    inv = session.loaded.inventory
    for method_name, method in all_methods().items():
        reason = method.is_compatible(session.loaded, session.data)
        if reason:
            assert isinstance(reason, str) and reason
            continue
        units = method.units if method.joint else method.units[:1]
        scores = method.score_units(session, units, CHEAP.get(method_name))
        for unit, value in scores.items():
            assert value.shape == inv.unit_shape(unit), (method_name, unit)
            assert np.isfinite(value).all(), (method_name, unit)


@pytest.mark.parametrize("name", NAMES)
def test_the_attention_view_draws(name, loaded_families):
    from prunelens.analysis.attention import attention_maps
    from prunelens.dashboard.attention_view import head_figure, view_html

    loaded = loaded_families[name]
    inv = loaded.inventory
    mask = np.ones((inv.layers, inv.heads))
    mask[0, 1] = 0
    maps = attention_maps(loaded, "good movie", head_mask=mask)
    assert maps.attention.shape[:2] == (inv.layers, inv.heads)
    np.testing.assert_allclose(maps.attention.sum(-1), 1.0, atol=1e-5)
    assert "good" in view_html(maps)
    assert head_figure(maps, 1, 0) is not None


@pytest.mark.parametrize("name", NAMES)
def test_a_headless_encoder_gates_and_prunes(name, tmp_path):
    from transformers import AutoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = write_tiny_family(tmp_path / name, name, headless=True)
        model = prepare(AutoModel.from_pretrained(folder)).eval()
    from prunelens.analysis.models import inventory_of

    inv = inventory_of(model)
    masks = _masks(inv, bool(inv.sharing))
    ids = torch.tensor([[2, 5, 9, 16, 3]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        base = model(**inputs).last_hidden_state
        with gated(model, head=torch.ones(inv.layers, inv.heads, requires_grad=True)):
            assert torch.equal(model(**inputs).last_hidden_state, base)
        with gated(model, masks):
            masked = model(**inputs).last_hidden_state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            physical = physically_prune(model, masks)(**inputs).last_hidden_state
    assert (physical - masked).abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------
# bad input


def test_an_unsupported_family_is_refused_by_name_before_any_weight_loads(tmp_path):
    import json

    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.models import load_model

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    (tmp_path / "model.safetensors").write_bytes(b"not read")  # never opened
    with pytest.raises(ModelError) as info:
        load_model(str(tmp_path))
    message = str(info.value)
    assert "'gpt2' model, which prunelens has no family entry for" in message
    assert all(f.name in message for f in FAMILIES.values()) and "docs/FAMILIES.md" in message
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoConfig": "evil.Config"}}))
    with pytest.raises(ModelError, match=r"contains custom code \(auto_map\), which prunelens never runs"):
        load_model(str(tmp_path))


def test_weights_that_disagree_with_the_config_are_refused_naming_the_tensor(family_dirs, tmp_path):
    import json
    import shutil

    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.models import load_model

    folder = shutil.copytree(family_dirs["mpnet"], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 16}))
    with pytest.raises(ModelError, match=r"the weight mpnet\.encoder\.layer\.0\.intermediate\.dense\.weight has "
                                         r"shape \[24, 16\] but config\.json makes it \[16, 16\]"):
        load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 3}))
    with pytest.raises(ModelError, match="hidden_size 16 is not a multiple of num_attention_heads 3"):
        load_model(str(folder))


def test_the_readme_families_table_is_generated_from_the_registry():
    from prunelens.analysis.families_doc import README, current_readme_block, readme_block

    assert current_readme_block(README.read_text(encoding="utf-8")) == readme_block(), \
        "README's families table is stale: run python -m prunelens.analysis.families_doc"


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_paths_prefix_cache_equals_the_plain_forward(name, family_sessions):
    from prunelens.analysis.evaluate import Evaluator

    session = family_sessions[name]
    inv = session.loaded.inventory
    ev = Evaluator(session.loaded, session.data, batch_size=8, fast=False)
    first = np.ones((inv.layers, inv.heads), dtype=np.float32)
    first[-1, 0] = 0
    second = first.copy()
    second[-1, 1] = 0  # agrees with the first mask on every layer but the last
    ev.outputs(Masks(head=first))
    cached = ev.outputs(Masks(head=second))
    assert ev._reference_prefix.skipped_layers == (inv.layers - 1) * len(ev.batches)
    plain = ev.reference_outputs(Masks(head=second))
    np.testing.assert_array_equal(cached.logits, plain.logits)


def test_pruned_heads_naming_a_head_the_config_lacks_is_refused(family_dirs, tmp_path):
    import json
    import shutil

    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.models import load_model

    folder = shutil.copytree(family_dirs["bert"], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "pruned_heads": {"5": [0]}}))
    with pytest.raises(ModelError, match=r"pruned_heads names layers or heads the config does not have "
                                         r"\(2 layers × 4 heads\)"):
        load_model(str(folder))
