"""The folder format of a physically pruned model (what ``prunelens export`` writes and
:func:`prunelens.analysis.models.load_model` reads back): the unpruned model's ``config.json``, the sliced
weights in ``model.safetensors``, the tokenizer, and ``prunelens_pruned.json``, the per-layer
structure (heads and FFN neurons kept) that a ``BertConfig`` cannot express.

One owner for both directions: :func:`save_pruned` writes the folder, :func:`load_pruned`
rebuilds the sliced layer shapes (:func:`rebuild`) before loading the weights, once the manifest
passed :func:`prunelens.analysis.model_bounds.check_manifest_bounds` (nothing is allocated before).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import ModelError, ParamError, tokenizer_guard
from prunelens.analysis.files import read_json
from prunelens.analysis.gates import Masks
from prunelens.analysis.layout import (
    FFN_OUTPUT,
    UNITS,
    attention_implementation,
    encoder_layers,
    family_of,
    matrix,
    present_heads,
)
from prunelens.analysis.model_bounds import MAX_MANIFEST_BYTES, check_manifest_bounds
from prunelens.analysis.slicing import GatedLinear, physically_prune

MANIFEST = "prunelens_pruned.json"
WEIGHTS = "model.safetensors"
FORMAT = 1


def structure_of(model: nn.Module) -> list[dict]:
    """Per layer: heads and FFN neurons left in a (physically pruned) model."""
    present = present_heads(model)
    return [{"heads": len(heads), "neurons": int(matrix(layer, FFN_OUTPUT).in_features)}
            for heads, layer in zip(present, encoder_layers(model))]


def save_pruned(model: nn.Module, tokenizer, out: Path, info: dict) -> None:
    """Config (with ``pruned_heads``: which heads each layer lost), sliced weights (safetensors),
    tokenizer and the structure manifest."""
    from safetensors.torch import save_file

    depth_masks = getattr(model, "prunelens_depth_masks", None)
    gated = any(isinstance(m, GatedLinear) for layer in encoder_layers(model) for m in layer.modules())
    if gated and not depth_masks:
        raise ParamError("this model has per-depth gates on shared layers but no record of their masks "
                         "(prune it with prunelens' physically_prune before saving)")
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    manifest = {"format": FORMAT, "head_size": family_of(model).head_size(model.config),
                "hidden": int(model.config.hidden_size), "layers": structure_of(model), **info}
    if gated:  # shared layers: the masks whose per-depth gates the weights alone do not hold
        manifest["depth_masks"] = depth_masks
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _pruned_heads(config) -> dict[int, list[int]]:
    raw = getattr(config, "pruned_heads", None) or {}
    try:
        return {int(k): sorted({int(h) for h in v}) for k, v in raw.items()}
    except (TypeError, ValueError, AttributeError):
        raise ModelError("config.json's pruned_heads is not a map of layer → head indices "
                         "(fix config.json)") from None


def rebuild(model: nn.Module, manifest: dict | None) -> nn.Module:
    """An unpruned-shaped model (built from its config) with the sliced layer shapes its config's
    ``pruned_heads`` and the ``manifest`` (FFN neurons kept; heads kept when the config has no
    ``pruned_heads``: an older export) describe; weights unset. Returns the sliced model."""
    config = model.config
    heads = int(config.num_attention_heads)
    layers = encoder_layers(model)
    pruned = _pruned_heads(config)
    if any(not 0 <= i < len(layers) or any(not 0 <= h < heads for h in hs) for i, hs in pruned.items()):
        raise ModelError(f"config.json's pruned_heads names layers or heads the config does not have "
                         f"({len(layers)} layers × {heads} heads) (fix config.json)")
    spec = (manifest or {}).get("layers")
    if manifest is not None and (not isinstance(spec, list) or len(spec) != len(layers)):
        raise ModelError(f"{MANIFEST} does not match the config's {len(layers)} layers "
                         "(export the model again)")
    head_mask = np.ones((len(layers), heads), dtype=np.float32)
    for i, hs in pruned.items():
        head_mask[i, hs] = 0
    ffn = matrix(layers[0], FFN_OUTPUT).in_features
    neuron_mask = np.ones((len(layers), ffn), dtype=np.float32)
    for i, row in enumerate(spec or ()):
        if not pruned:  # an older export: the first heads stand for the kept ones
            head_mask[i, int(row["heads"]):] = 0
        elif int(row["heads"]) != int(head_mask[i].sum()):
            raise ModelError(f"{MANIFEST} says layer {i} keeps {int(row['heads'])} heads but config.json's "
                             f"pruned_heads leaves {int(head_mask[i].sum())}: the two do not fit "
                             "(export the model again)")
        neuron_mask[i, int(row["neurons"]):] = 0
    if hasattr(config, "pruned_heads"):
        config.pruned_heads = {}
    depth = (manifest or {}).get("depth_masks")
    if depth:  # shared layers gated per depth: the masks rebuild weights and gates alike
        try:
            masks = Masks(**{k: None if v is None else np.asarray(v, dtype=np.float32)
                             for k, v in depth.items() if k in UNITS})
        except (TypeError, ValueError):
            raise ModelError(f"{MANIFEST}'s depth_masks are not 0/1 grids (export the model again)") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return physically_prune(model, masks)
        except (IndexError, ValueError, ParamError) as exc:
            raise ModelError(f"{MANIFEST}'s depth_masks do not fit the config ({str(exc)[:120]}; "
                             "export the model again)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zero-element tensors
        return physically_prune(model, Masks(head=head_mask, neuron=neuron_mask))


def is_pruned_checkpoint(config) -> bool:
    """A folder config that lists heads already cut out (transformers' ``pruned_heads``)."""
    return bool(getattr(config, "pruned_heads", None))


def without_pooler(config) -> dict:
    """The keyword that keeps transformers from building a pooler into a headless model (its
    sentence vector is pooled by prunelens): ``add_pooling_layer=False`` where the family's bare
    model takes it (BERT, ALBERT, MPNet), nothing where it has no pooler (DistilBERT, DeBERTa-v2,
    ModernBERT, whose ``__init__`` refuses the keyword)."""
    import inspect

    from transformers import MODEL_MAPPING

    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        return {}
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(cls.__init__).parameters else {}


def load_pruned(path: Path, config, headless: bool = False):
    """Model and tokenizer of an export folder, or of a folder whose config lists ``pruned_heads``
    (called by :func:`prunelens.analysis.models.load_model`); ``headless``: a sentence encoder (no
    pooler: its vector is pooled by prunelens)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    where = f"{path / MANIFEST}"
    manifest = None
    if (path / MANIFEST).exists():
        manifest = read_json(path / MANIFEST, MAX_MANIFEST_BYTES, where, ModelError, "export the model again")
        if not isinstance(manifest, dict):
            raise ModelError(f"{where} holds a {type(manifest).__name__}, not an object (export the model again)")
    if manifest is not None and manifest.get("format") != FORMAT:
        raise ModelError(f"{path / MANIFEST} has format {manifest.get('format')!r}, this prunelens "
                         f"reads {FORMAT} (export the model again)")
    if not (path / WEIGHTS).exists():
        raise ModelError(f"pruned model folder {path} has no {WEIGHTS} (export the model again)")
    if manifest is not None:
        check_manifest_bounds(manifest, config, where)  # every count bounded before any allocation
    torch.manual_seed(0)  # the weights are all overwritten; keep construction deterministic
    if headless:
        model = AutoModel.from_config(config, attn_implementation=attention_implementation(config),
                                      dtype=torch.float32, **without_pooler(config))
    else:
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation=attention_implementation(config), dtype=torch.float32)
    model = rebuild(model, manifest)
    state = load_file(str(path / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {path} do not fit the pruned structure its config.json "
                         f"(pruned_heads) and {MANIFEST} describe ({str(exc).splitlines()[0][:120]}; "
                         "export the model again)") from None
    with tokenizer_guard(path, str(path), "loading", exceptions=False):  # a Rust panic is no Exception
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    return model, tokenizer
