"""Attention maps of one sentence (or sentence pair), computed without touching the shared model.

The loaded model runs with sdpa attention, which returns no attention weights, and it must not be
switched to eager (DESIGN: never mutate a shared model). So :func:`attention_from_inputs` captures
the query and key projections of every layer with forward hooks on
``layer.attention.self.query/key`` (through :func:`prunelens.analysis.hooks.hooked`, removed on exit) and
computes ``softmax(Q Kᵀ · scaling + padding mask)`` per head itself — exactly what the eager
implementation returns with ``output_attentions=True``.

With a head mask the forward pass runs under :func:`prunelens.analysis.gates.gated`, so the maps are those
of the *pruned* model (later layers see the effect of earlier pruning); the pruned heads are
recorded so views can mark or hide them. With or without a mask, hooks and forward pass run under
the model's lock (:func:`prunelens.analysis.hooks.model_lock`, the one ``gated`` holds), so another thread's
gates never reach these maps and its forward passes never reach these hooks. Inputs are cut to
what the model's position embeddings hold (:func:`token_limit`). Attention tensors are never
stored in the result store.
"""

from __future__ import annotations

import io
import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import DataError, ParamError, tokenizer_guard
from prunelens.analysis.gates import gated
from prunelens.analysis.hooks import hooked, model_lock, private_copy
from prunelens.analysis.layout import BERT, encoder_layers, family_of, present_heads, submodule
from prunelens.analysis.models import LoadedModel, usable_positions

MAX_TOKENS = 128


@dataclass
class AttentionMaps:
    """Attention probabilities of one input: ``attention[layer, head, from_token, to_token]``."""

    tokens: list[str]
    attention: np.ndarray  # (layers, heads, seq, seq), rows sum to 1
    head_mask: np.ndarray  # (layers, heads) 0/1; 0 = pruned head
    sentence_b_start: int | None = None
    truncated: bool = False

    @property
    def layers(self) -> int:
        return int(self.attention.shape[0])

    @property
    def heads(self) -> int:
        return int(self.attention.shape[1])

    @property
    def pruned_heads(self) -> list[tuple[int, int]]:
        return [(int(layer), int(head)) for layer, head in np.argwhere(self.head_mask == 0)]

    def head(self, layer: int, head: int) -> np.ndarray:
        """The (seq, seq) map of one head."""
        if not (0 <= layer < self.layers and 0 <= head < self.heads):
            raise ParamError(f"no head ({layer}, {head}) in a {self.layers}x{self.heads} model")
        return self.attention[layer, head]

    def as_json(self, layers: list[int] | None = None, heads: list[int] | None = None) -> dict:
        layers = list(range(self.layers)) if layers is None else list(layers)
        heads = list(range(self.heads)) if heads is None else list(heads)
        sub = self.attention[np.ix_(layers, heads)]
        return {
            "tokens": list(self.tokens),
            "sentence_b_start": self.sentence_b_start,
            "layers": layers,
            "heads": heads,
            "pruned_heads": [[lay, h] for lay, h in self.pruned_heads if lay in layers and h in heads],
            "attention": np.round(sub.astype(np.float64), 6).tolist(),
        }

    def to_csv(self, layers: list[int] | None = None, heads: list[int] | None = None) -> str:
        """Long format: one row per (layer, head, from, to)."""
        layers = list(range(self.layers)) if layers is None else list(layers)
        heads = list(range(self.heads)) if heads is None else list(heads)
        out = io.StringIO()
        out.write("layer,head,pruned,from_index,from_token,to_index,to_token,weight\n")
        tokens = [_csv_field(t) for t in self.tokens]
        for layer in layers:
            for head in heads:
                pruned = int(self.head_mask[layer, head] == 0)
                matrix = self.attention[layer, head]
                for i, src in enumerate(tokens):
                    for j, dst in enumerate(tokens):
                        out.write(f"{layer},{head},{pruned},{i},{src},{j},{dst},{matrix[i, j]:.6g}\n")
        return out.getvalue()


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _check_mask(head_mask, layers: int, heads: int) -> np.ndarray:
    if head_mask is None:
        return np.ones((layers, heads), dtype=np.int8)
    mask = np.asarray(head_mask, dtype=np.float64)
    if mask.shape != (layers, heads):
        raise ParamError(f"head mask has shape {mask.shape}; expected ({layers}, {heads})")
    if not np.isin(mask, (0.0, 1.0)).all():
        raise ParamError("head mask must hold only 0 (pruned) and 1 (kept)")
    return mask.astype(np.int8)


def _additive_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int],
                   dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, 1, seq): 0 where a key may be attended to, the dtype's minimum at padding."""
    batch, seq = shape
    if attention_mask is None:
        return torch.zeros(batch, 1, 1, seq, dtype=dtype)
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


@torch.no_grad()
def attention_from_inputs(model: nn.Module, inputs: dict, head_mask=None) -> torch.Tensor:
    """Attention probabilities (layers, batch, heads, seq, seq) of a tokenized batch.

    Runs one forward pass with read-only hooks on every layer's query and key projections; the
    model's modules, config and parameters are left exactly as they were.
    """
    return attention_and_output(model, inputs, head_mask)[0]


@torch.no_grad()
def attention_and_output(model: nn.Module, inputs: dict, head_mask=None, part: nn.Module | None = None):
    """``(attention probabilities, output)`` of one forward pass: :func:`attention_from_inputs`
    and what ``part`` returned — ``part`` is ``model`` (default) or a module of it that the hooks
    also see, e.g. ``model.base_model`` for the encoder's hidden states (``smp-pruner``); hooks and
    lock are ``model``'s either way."""
    heads = int(model.config.num_attention_heads)
    if family_of(model) is not BERT or any(len(p) < heads for p in present_heads(model)):
        return _returned_attention(model, inputs, head_mask, part)
    layers = encoder_layers(model)
    captured: dict[tuple[int, str], torch.Tensor] = {}

    def keep(index: int, which: str):
        def hook(module, args, output):
            captured[(index, which)] = output.detach()

        return hook

    hooks = [(module, keep(i, which)) for i, layer in enumerate(layers)
             for which, module in (("q", layer.attention.self.query), ("k", layer.attention.self.key))]
    run = model if part is None else part
    with hooked(model, post=hooks):  # re-entrant: gated() below takes the same lock
        if head_mask is not None:
            with gated(model, head=head_mask):
                output = run(**inputs)
        else:
            output = run(**inputs)

    maps = []
    for i, layer in enumerate(layers):
        self_attn = layer.attention.self
        q, k = captured[(i, "q")], captured[(i, "k")]
        batch, seq, width = q.shape
        heads = int(getattr(self_attn, "num_attention_heads", model.config.num_attention_heads))
        size = width // heads
        scaling = float(getattr(self_attn, "scaling", 1.0 / math.sqrt(size)))
        q = q.view(batch, seq, heads, size).transpose(1, 2)
        k = k.view(batch, seq, heads, size).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
        scores = scores + _additive_mask(inputs.get("attention_mask"), (batch, seq), scores.dtype)
        maps.append(torch.softmax(scores, dim=-1))
    return torch.stack(maps), output


_EAGER_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eager(model: nn.Module) -> nn.Module:
    """A model whose attention returns its probabilities: the model itself when its family runs
    transformers' eager code anyway (DeBERTa, MPNet), else a private copy switched to eager
    attention (one per model, kept while the model lives; the shared model is never switched)."""
    if not family_of(model).sdpa:
        return model
    with model_lock(model):
        copy = _EAGER_COPIES.get(model)
        if copy is None:
            copy = private_copy(model)
            copy.set_attn_implementation("eager")
            _EAGER_COPIES[model] = copy
    return copy


def _returned_attention(model: nn.Module, inputs: dict, head_mask, part: nn.Module | None):
    """:func:`attention_and_output` of a family whose probabilities the attention module returns
    (second value, with ``output_attentions``): a forward hook on the family's attention module
    of every layer keeps them; a head the layer no longer has gets zeros."""
    run_model = _eager(model)
    layers = encoder_layers(run_model)
    family = family_of(run_model)
    captured: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, output):
            if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
                captured[index] = output[1].detach()

        return hook

    hooks = [(submodule(layer, family.attention), keep(i)) for i, layer in enumerate(layers)]
    run = run_model
    if part is not None:  # the same module of the copy
        run = run_model.base_model if part is getattr(model, "base_model", None) else part
    with hooked(run_model, post=hooks):
        if head_mask is not None:
            with gated(run_model, head=head_mask):
                output = run(**inputs, output_attentions=True)
        else:
            output = run(**inputs, output_attentions=True)
    batch, seq = inputs["input_ids"].shape
    heads = int(model.config.num_attention_heads)
    maps = []
    for i, present in enumerate(present_heads(run_model)):
        grid = torch.zeros(batch, heads, seq, seq)
        if i in captured:
            probs = captured[i].reshape(batch, len(present), seq, seq)
            grid[:, torch.as_tensor(present)] = probs.float()
        maps.append(grid)
    return torch.stack(maps), output


def token_limit(loaded: LoadedModel, max_length: int = MAX_TOKENS) -> int:
    """``max_length``, cut to the tokens the model's position embeddings hold (a model with 64
    positions reads at most 64 tokens) and to its tokenizer's limit."""
    limit = max_length
    positions = usable_positions(loaded.model.config)
    if positions is not None:
        limit = min(limit, positions)
    tokenizer_max = getattr(loaded.tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and tokenizer_max > 0:
        limit = min(limit, tokenizer_max)
    return limit


def attention_maps(loaded: LoadedModel, text: str, text_pair: str | None = None,
                   head_mask=None, max_length: int = MAX_TOKENS) -> AttentionMaps:
    """Attention maps of one sentence (or pair) under the model, optionally with heads pruned;
    the input is cut to :func:`token_limit` tokens."""
    text = (text or "").strip()
    if not text:
        raise DataError("type a sentence to see its attention (the text is empty)")
    if max_length < 4:
        raise ParamError(f"max_length must be at least 4, got {max_length}")
    max_length = token_limit(loaded, max_length)
    inv = loaded.inventory
    mask = _check_mask(head_mask, inv.layers, inv.heads)
    tokenizer = loaded.tokenizer
    pair = (text_pair or "").strip() or None
    if pair is not None:
        loaded.check_pairs("a second sentence was given", "leave the second sentence empty, or pick a "
                                                          "model trained on sentence pairs")
    with tokenizer_guard(tokenizer, loaded.name):  # a Rust panic is one message, not a hung page
        enc = tokenizer(text, pair, truncation=True, max_length=max_length, return_tensors="pt")
        full = tokenizer(text, pair, truncation=False)["input_ids"]
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    ids = enc["input_ids"][0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    device = next(loaded.model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    probs = attention_from_inputs(loaded.model, inputs, None if mask.all() else mask)
    sentence_b_start = None
    if pair is not None and "token_type_ids" in enc:
        types = enc["token_type_ids"][0].tolist()
        sentence_b_start = types.index(1) if 1 in types else None
    return AttentionMaps(tokens=tokens, attention=probs[:, 0].cpu().numpy().astype(np.float32),
                         head_mask=mask, sentence_b_start=sentence_b_start,
                         truncated=len(full) > len(ids))
