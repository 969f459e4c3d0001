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

import torch
from torch import nn

from prunelens.analysis.errors import ModelError, tokenizer_guard
from prunelens.analysis.files import read_json
from prunelens.analysis.layout import NoHeads, encoder_layers
from prunelens.analysis.model_bounds import MAX_MANIFEST_BYTES, check_manifest_bounds

MANIFEST = "prunelens_pruned.json"
WEIGHTS = "model.safetensors"
FORMAT = 1


def structure_of(model: nn.Module) -> list[dict]:
    """Per layer: heads and FFN neurons left in a (physically pruned) model."""
    rows = []
    for layer in encoder_layers(model):
        attn = layer.attention.self
        heads = int(getattr(attn, "num_attention_heads", 0)) if hasattr(attn, "query") else 0
        rows.append({"heads": heads, "neurons": int(layer.intermediate.dense.out_features)})
    return rows


def save_pruned(model: nn.Module, tokenizer, out: Path, info: dict) -> None:
    """Config, sliced weights (safetensors), tokenizer and the structure manifest."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    manifest = {"format": FORMAT, "head_size": _head_size(model),
                "hidden": int(model.config.hidden_size), "layers": structure_of(model), **info}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _head_size(model: nn.Module) -> int:
    return int(model.config.hidden_size) // int(model.config.num_attention_heads)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zero-element tensors
        return nn.Linear(n_in, n_out)


def rebuild(model: nn.Module, manifest: dict) -> nn.Module:
    """Give an unpruned-shaped model the sliced layer shapes of ``manifest`` (weights unset)."""
    layers = encoder_layers(model)
    spec = manifest.get("layers")
    size = int(manifest.get("head_size", _head_size(model)))
    if not isinstance(spec, list) or len(spec) != len(layers):
        raise ModelError(f"{MANIFEST} does not match the config's {len(layers)} layers "
                         "(export the model again)")
    hidden = int(model.config.hidden_size)
    for layer, row in zip(layers, spec):
        heads, neurons = int(row["heads"]), int(row["neurons"])
        attn = layer.attention.self
        if heads == 0:
            layer.attention.self = NoHeads()
        elif heads != attn.num_attention_heads:
            attn.query, attn.key, attn.value = (_linear(hidden, heads * size) for _ in range(3))
            attn.num_attention_heads, attn.all_head_size = heads, heads * size
        if heads != int(model.config.num_attention_heads):
            layer.attention.output.dense = _linear(heads * size, hidden)
        if neurons != layer.intermediate.dense.out_features:
            layer.intermediate.dense = _linear(hidden, neurons)
            layer.output.dense = _linear(neurons, hidden)
    return model


def load_pruned(path: Path, config):
    """Model and tokenizer of an export folder (called by :func:`prunelens.analysis.models.load_model`)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = f"{path / MANIFEST}"
    manifest = read_json(path / MANIFEST, MAX_MANIFEST_BYTES, where, ModelError, "export the model again")
    if not isinstance(manifest, dict):
        raise ModelError(f"{where} holds a {type(manifest).__name__}, not an object (export the model again)")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{path / MANIFEST} has format {manifest.get('format')!r}, this prunelens "
                         f"reads {FORMAT} (export the model again)")
    if not (path / WEIGHTS).exists():
        raise ModelError(f"pruned model folder {path} has no {WEIGHTS} (export the model again)")
    check_manifest_bounds(manifest, config, where)  # every count bounded before any allocation
    torch.manual_seed(0)  # the weights are all overwritten; keep construction deterministic
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa",
                                                           dtype=torch.float32)
    rebuild(model, manifest)
    state = load_file(str(path / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {path} do not fit {MANIFEST} "
                         f"({str(exc).splitlines()[0][:120]}; export the model again)") from None
    with tokenizer_guard(path, str(path), "loading", exceptions=False):  # a Rust panic is no Exception
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    return model, tokenizer
