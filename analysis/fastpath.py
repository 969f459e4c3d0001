"""The fast masked forward pass behind :class:`prunelens.analysis.evaluate.Evaluator`.

Owns a functional re-implementation of the post-LayerNorm encoder block (BERT's, DistilBERT's,
ALBERT's, MPNet's: the families whose layout entry sets ``fast_path``; what differs between them — where a
layer keeps its LayerNorms and activation, the embeddings, the head, a score bias shared by the
layers — is one module each in :mod:`prunelens.analysis.kernels`) that computes what the
hook-gated model computes (to float rounding, ~1e-6), but cheaper:

- **pruned matmuls**: a mask is applied by slicing the weights (fused Q/K/V rows of the kept
  heads, attention-output columns, FFN rows/columns of the kept neurons); float gate values scale
  the output weights; a block gated to 0 is skipped entirely;
- **packed tokens**: hidden states are kept as (real tokens, hidden) with the padding dropped, so
  the linear maps, GELU and LayerNorms skip it; only the attention sees the padded layout;
- **fp32 layers** call oneDNN's linear (``mkldnn._linear_pointwise``) on the plain weights with
  the exact GELU fused into the FFN's first product, 1.3-1.6x F.linear's throughput here
  (:data:`FP32_KERNEL`; ``aten`` keeps F.linear);
- **bf16 layers** (``dtype=torch.bfloat16``, used by :mod:`prunelens.analysis.precision`): matmuls in bf16
  with oneDNN-packed weights and the GELU fused; attention scores in bf16 (the score scale folded
  into the query weights, the key mask added by the batched matmul), their softmax in fp32;
  residual stream, LayerNorms and the last layer stay fp32; ``dtype=INT8`` is the same with
  dynamic int8 matmuls (per-channel weights, per-row activations, ``torch._int_mm``), measured
  as a candidate for CPUs without native bf16 (``benchmarks/precision.py --candidates``) and used
  by nothing else: it does not pay (docs/PERFORMANCE.md);
- **[CLS]-only last layer**: the classifier only reads position 0, so the last layer computes the
  query, the attention, the output projection and the FFN for [CLS] alone, with the key and value
  projections folded into the query (``q·(W_k x + b_k) = (W_kᵀ q)·x + const`` and
  ``Σ p (W_v x + b_v) = W_v (Σ p x) + b_v``): the last layer costs a few percent of a full one.
  A headless sentence encoder (``pooling``, the embedding objective) needs every token of the
  last layer: it runs in full and its output is pooled
  (:func:`prunelens.analysis.objectives.pool`) instead of classified;
- **layer-prefix cache**: the input of layer ``L`` depends only on the mask rows of layers
  ``< L``; inputs (and, where computed, the all-heads attention context) are kept in a
  byte-budgeted LRU keyed by a hash of those rows, so a mask that first differs from a cached one
  at layer ``L`` recomputes from ``L`` only (slider moves, leave-one-out ablation, curves). The
  caches of all batch lists of one encoder share the budget; a computation's new inputs go in
  deepest first, so shallow ones (the likelier start of the next mask) are evicted last.

Only what the classifier needs is computed; the reference path (HF forward under
:func:`prunelens.analysis.gates.gated`) stays the definition, and :class:`FastEncoder` checks itself against
it on first use (see ``Evaluator``). Unsupported models (families without a kernel, BERT with
non-absolute position embeddings, decoders, unknown heads, checkpoints with heads cut out) are
reported by :func:`unsupported_reason` and use the reference path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunelens.analysis.checkpoints import checkpoint
from prunelens.analysis.gates import Masks
from prunelens.analysis.kernels import Kernel, kernel_for
from prunelens.analysis.layout import (
    FAMILIES,
    UNIT_SIZES,
    UNITS,
    encoder_layers,
    family_of,
    layer_matrices,
    present_heads,
    submodule,
)

DEFAULT_CACHE_MB = int(os.environ.get("PRUNELENS_LAYER_CACHE_MB", "384"))
FULL_BUDGET_ROWS = 1024  # batch lists with fewer rows get a proportional share of the budget
# sliced weights of recent masks' layers (a full MiniLM layer is 7 MB in fp32); least recent go first
PLAN_CACHE_MB = 64


def unsupported_reason(model: nn.Module, headless: bool = False) -> str | None:
    """Why the fast path cannot run ``model`` (None when it can); ``headless``: a sentence
    encoder, whose output is pooled, not classified."""
    config = getattr(model, "config", None)
    if config is None:
        return "no config"
    if getattr(config, "is_decoder", False):
        return "decoder models are not supported by the fast path"
    base = getattr(model, "base_model", None)
    if base is None or not hasattr(base, "embeddings") or not (headless or hasattr(model, "classifier")):
        return "no embeddings/classifier"
    try:
        family = family_of(model)
        layers = encoder_layers(model)
    except Exception:  # noqa: BLE001 - any layout problem means: use the reference path
        return "no encoder layers"
    kernel = kernel_for(family)
    if kernel is None:
        fast = ", ".join(f.name for f in FAMILIES.values() if kernel_for(f) is not None)
        return (f"the fast kernel computes the {fast} blocks; a {family.name} layer runs the reference "
                "path (transformers' forward with gates)")
    heads = int(config.num_attention_heads)
    if any(len(p) < heads for p in present_heads(model)):
        return "heads cut out of the weights (a prunelens export or pruned_heads checkpoint)"
    if any(type(m) is not nn.Linear for layer in layers for m in layer_matrices(layer).values()):
        return "a layer's matrices carry fixed gates (a shared-layer export)"
    return kernel.unsupported(model)


# ---------------------------------------------------------------------------------------------
# mask rows and prefix keys


@dataclass(frozen=True)
class LayerRow:
    """The gate values of one layer (``None`` = all ones)."""

    head: np.ndarray | None
    attention: float
    ffn: float
    neuron: np.ndarray | None

    def key(self) -> bytes:
        parts = [b"h", b"" if self.head is None else self.head.tobytes(),
                 b"a", np.float32(self.attention).tobytes(), b"f", np.float32(self.ffn).tobytes(),
                 b"n", b"" if self.neuron is None else self.neuron.tobytes()]
        return b"|".join(parts)


def _np(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def mask_rows(masks: Masks | None, layers: int) -> list[LayerRow]:
    """Per-layer gate rows; rows that are all ones become ``None`` so equal masks share keys."""
    masks = masks or Masks()
    head, neuron = _np(masks.head), _np(masks.neuron)
    attention, ffn = _np(masks.attention), _np(masks.ffn)
    values = {"head": head, "attention": attention, "ffn": ffn, "neuron": neuron}
    for name in UNITS:
        value, dims = values[name], 1 if UNIT_SIZES[name] is None else 2
        if value is not None and (value.ndim != dims or value.shape[0] != layers):
            raise ValueError(f"{name} mask has shape {tuple(value.shape)}; expected {layers} layers")
    rows = []
    for i in range(layers):
        h = None if head is None or np.all(head[i] == 1) else np.ascontiguousarray(head[i])
        n = None if neuron is None or np.all(neuron[i] == 1) else np.ascontiguousarray(neuron[i])
        rows.append(LayerRow(h, 1.0 if attention is None else float(attention[i]),
                             1.0 if ffn is None else float(ffn[i]), n))
    return rows


def prefix_keys(rows: list[LayerRow]) -> list[bytes]:
    """``keys[L]`` identifies the input of layer ``L`` (it depends on rows ``< L`` only)."""
    h = hashlib.blake2b(digest_size=16)
    keys = [h.digest()]
    for row in rows:
        h.update(row.key())
        keys.append(h.copy().digest())
    return keys


# ---------------------------------------------------------------------------------------------
# the byte-budgeted LRU of layer inputs


@dataclass
class PrefixEntry:
    states: list[torch.Tensor]  # input of the layer, one tensor per batch
    context: list[torch.Tensor] | None = None  # all-heads attention context at that layer

    @property
    def nbytes(self) -> int:
        total = sum(t.numel() * t.element_size() for t in self.states)
        if self.context is not None:
            total += sum(t.numel() * t.element_size() for t in self.context)
        return total


class PrefixCache:
    """LRU of :class:`PrefixEntry` keyed by (layer, prefix key), capped at ``budget_bytes``."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, bytes], PrefixEntry] = OrderedDict()
        self.pinned: set[tuple[int, bytes]] = set()  # the unpruned model's layer inputs
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, layer: int, key: bytes) -> PrefixEntry | None:
        entry = self.entries.get((layer, key))
        if entry is not None:
            self.entries.move_to_end((layer, key))
        return entry

    def put(self, layer: int, key: bytes, entry: PrefixEntry, pin: bool = False) -> None:
        """Insert, then evict least recently used unpinned entries down to the budget."""
        old = self.entries.pop((layer, key), None)
        if old is not None:
            self.bytes -= old.nbytes
        size = entry.nbytes
        if size > self.budget - self._pinned_bytes():
            self.pinned.discard((layer, key))
            return
        self.entries[(layer, key)] = entry
        self.bytes += size
        if pin:
            self.pinned.add((layer, key))
        for name in [k for k in self.entries if k not in self.pinned]:
            if self.bytes <= self.budget:
                break
            self.bytes -= self.entries.pop(name).nbytes

    def _pinned_bytes(self) -> int:
        return sum(self.entries[k].nbytes for k in self.pinned if k in self.entries)

    def clear(self) -> None:
        self.entries.clear()
        self.pinned.clear()
        self.bytes = 0


# ---------------------------------------------------------------------------------------------
# per-layer weights and plans


@functools.cache
def packed_linear_available() -> bool:
    """Whether oneDNN's packed bf16 linear (``torch.ops.mkldnn._linear_pointwise``) runs here and
    agrees with ``F.linear``; otherwise bf16 layers use ``F.linear``."""
    try:
        gen = torch.Generator().manual_seed(0)
        w, b, x = (torch.randn(*shape, generator=gen).bfloat16() for shape in ((8, 16), (8,), (2, 3, 16)))
        y = torch.ops.mkldnn._linear_pointwise(x, pack_weight(w), b, "gelu", [], "none")
        return bool(torch.allclose(y.float(), F.gelu(F.linear(x.float(), w.float(), b.float())),
                                   atol=0.1, rtol=0.02))
    except Exception:  # noqa: BLE001 - any failure of the private op means: do not use it
        return False


# fp32 matmuls through oneDNN (``mkldnn._linear_pointwise`` on the plain weights, GELU fused): on
# the 2-core AVX-512 machine 1.3-1.6x the throughput of F.linear (MKL) on MiniLM's shapes, packed
# weights only ~5 % faster still, so none are kept (docs/PERFORMANCE.md, "CPUs without native
# bf16"); ``PRUNELENS_FP32_KERNEL=aten`` (or ``FP32_KERNEL = "aten"``) keeps F.linear
FP32_KERNEL = os.environ.get("PRUNELENS_FP32_KERNEL", "onednn").strip().lower()


@functools.cache
def onednn_fp32_available() -> bool:
    """Whether oneDNN's fp32 linear (plain weights, fused exact GELU) runs here and matches
    ``F.linear`` to fp32 rounding."""
    try:
        gen = torch.Generator().manual_seed(0)
        w, b, x = (torch.randn(*shape, generator=gen) for shape in ((8, 16), (8,), (6, 16)))
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
        return bool(torch.allclose(y, F.gelu(F.linear(x, w, b)), atol=1e-5, rtol=1e-5))
    except Exception:  # noqa: BLE001 - any failure of the private op means: do not use it
        return False


def fp32_kernel(device: torch.device | str = "cpu") -> str:
    """The fp32 matmul kernel fast-path layers use on ``device``: ``onednn`` or ``aten``."""
    cpu = torch.device(device).type == "cpu"
    return "onednn" if cpu and FP32_KERNEL != "aten" and onednn_fp32_available() else "aten"


def pack_weight(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 2048)


# the "dtype" of int8 layers: per-channel int8 weights, per-row dynamic int8 activations (measured
# only: too inexact for the checked-prediction rule to pay, docs/PERFORMANCE.md)
INT8 = torch.qint8


def pack_int8(w: torch.Tensor, b: torch.Tensor | None) -> tuple:
    """``w`` (fp32) quantized per output channel (symmetric int8), with its scales and bias."""
    w = w.detach().float()
    scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).to(torch.int8)
    return q.t(), scale, None if b is None else b.detach().float()


@functools.cache
def int8_linear_available() -> bool:
    """Whether ``torch._int_mm`` runs here and agrees with ``F.linear`` roughly."""
    try:
        gen = torch.Generator().manual_seed(0)
        w, b, x = (torch.randn(*shape, generator=gen) for shape in ((8, 16), (8,), (6, 16)))
        y = int8_linear(x, pack_int8(w, b))
        return bool(torch.allclose(y, F.linear(x, w, b), atol=0.3, rtol=0.05))
    except Exception:  # noqa: BLE001 - any failure of the op means: do not use it
        return False


def int8_linear(x: torch.Tensor, packed: tuple) -> torch.Tensor:
    """``x @ w.T + b`` with ``x`` quantized per row (symmetric int8), int32 accumulation."""
    q, col, b = packed
    x = x.float()
    row = x.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(127.0)
    xq = torch.round(x / row).to(torch.int8)
    y = torch._int_mm(xq, q).float().mul_(row).mul_(col)
    return y.add_(b) if b is not None else y


def _is_exact_gelu(act) -> bool:
    """Whether ``act`` is the erf GELU (HF's ``gelu``), which oneDNN can fuse."""
    probe = torch.linspace(-4, 4, 33)
    try:
        return bool(torch.allclose(act(probe), F.gelu(probe), atol=1e-6))
    except Exception:  # noqa: BLE001
        return False


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` itself on the CPU; elsewhere a copy on ``device`` (the model is never moved)."""
    if device.type == "cpu":
        return module
    from prunelens.analysis.hooks import private_copy

    return private_copy(module, device)


def attention_bias(keep: torch.Tensor) -> torch.Tensor:
    """Additive key mask (batch, 1, 1, seq) from ``keep`` (batch, seq) bool: 0 where a key may
    be attended to, -inf at padding."""
    return torch.zeros(keep.shape, device=keep.device).masked_fill_(~keep, float("-inf"))[:, None, None, :]


@dataclass
class Tokens:
    """Where one batch's real tokens sit. Hidden states are kept *packed*, (tokens, hidden) with
    the padding dropped, so every per-token operation (the linear maps, GELU, LayerNorm) skips
    it; only the attention itself sees the padded (batch, seq) layout."""

    keep: torch.Tensor  # (B, T) bool
    attend: torch.Tensor  # (B, 1, 1, T) additive key mask
    pos: torch.Tensor  # (N,) positions of the real tokens in the flattened (B * T)
    # the family's score bias shared by all layers (1, heads, T, T) (MPNet's relative positions)
    scores: torch.Tensor | None = None

    @classmethod
    def of(cls, keep: torch.Tensor, scores: torch.Tensor | None = None) -> Tokens:
        return cls(keep, attention_bias(keep), keep.reshape(-1).nonzero().squeeze(1), scores)

    def score_bias(self, ids: torch.Tensor | None) -> torch.Tensor | None:
        """The shared score bias of the heads ``ids`` (None: all), (1, heads, T, T), or None."""
        if self.scores is None or ids is None:
            return self.scores
        return self.scores.index_select(1, ids.to(self.scores.device))

    def key_bias(self, heads: int, dtype: torch.dtype, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The key mask per (batch x head), (B * heads, 1, T), in ``dtype`` (0 and -inf are exact);
        with a shared score bias, that bias plus the key mask, (B * heads, T, T)."""
        b, t = self.keep.shape
        bias = self.score_bias(ids)
        if bias is None:
            return self.attend.to(dtype).expand(b, heads, 1, t).reshape(b * heads, 1, t)
        return (bias + self.attend).to(dtype).reshape(b * heads, t, t)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C)."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.pos)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C), zeros at padding."""
        b, t = self.keep.shape
        out = x.new_zeros(b * t, x.shape[-1])
        return out.index_copy_(0, self.pos, x).view(b, t, -1)


@dataclass
class LayerPlan:
    """Sliced, gate-scaled weights of one layer for one mask row."""

    heads: torch.Tensor  # kept head ids
    qkv_w: torch.Tensor | None  # (3 * kept * d, H): Q rows, K rows, V rows of the kept heads
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor | None  # (H, kept * d), scaled by head and block gates
    o_b: torch.Tensor  # scaled by the block gate
    i_w: torch.Tensor | None  # (kept neurons, H)
    i_b: torch.Tensor | None
    f_w: torch.Tensor | None  # (H, kept neurons), scaled by neuron and block gates
    f_b: torch.Tensor
    all_heads: bool
    packed: dict[str, torch.Tensor] | None = None  # oneDNN-packed bf16 weights: qkv, o, i, f

    def pack(self, name: str) -> torch.Tensor | None:
        return None if self.packed is None else self.packed.get(name)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors it holds, the layer's shared unsliced ones included (an upper
        bound for the plan LRU)."""
        tensors = [self.qkv_w, self.qkv_b, self.o_w, self.o_b, self.i_w, self.i_b, self.f_w, self.f_b]
        total = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        for pack in (self.packed or {}).values():  # an int8 pack: (weights, scales, bias)
            parts = pack if isinstance(pack, tuple) else (pack,)
            total += sum(t.numel() * t.element_size() for t in parts if t is not None)
        return total

    @property
    def attention_active(self) -> bool:
        return self.qkv_w is not None

    @property
    def ffn_active(self) -> bool:
        return self.i_w is not None


class _Layer:
    """Read-only views of one encoder layer's parameters (fused Q/K/V is a one-time copy); where
    the LayerNorms and the activation sit is the family's :class:`~prunelens.analysis.kernels.Kernel`."""

    def __init__(self, layer: nn.Module, heads: int, kernel: Kernel, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None):
        attn = submodule(layer, family_of(layer).attention)
        m = layer_matrices(layer)
        device = torch.device("cpu") if device is None else torch.device(device)
        self.heads = heads
        self.dtype = dtype  # of the matmuls; the residual stream and LayerNorms stay fp32
        self.size = m["query"].out_features // heads
        self.scale = float(getattr(attn, "scaling", self.size ** -0.5))

        def cast(t: torch.Tensor) -> torch.Tensor:  # int8 layers keep fp32 weights (packs are int8)
            # no copy when dtype and device match (the CPU path reads the model's own tensors)
            return t.detach().to(device=device, dtype=torch.float32 if dtype == INT8 else dtype)

        # reduced precision folds the score scale into the query projection (before rounding), so
        # the scores need no extra pass; fp32 layers keep HF's order of operations exactly
        self.int8 = dtype == INT8
        self.q_scaled = dtype == torch.bfloat16
        q_scale = self.scale if self.q_scaled else 1.0
        q, k, v = m["query"], m["key"], m["value"]
        self.qkv_w = cast(torch.cat([q.weight * q_scale, k.weight, v.weight]))
        self.qkv_b = cast(torch.cat([q.bias * q_scale, k.bias, v.bias]))
        self.o_w = cast(m["attention_output"].weight)
        self.o_b = cast(m["attention_output"].bias)
        self.ln1 = on_device(submodule(layer, kernel.attention_norm), device)
        self.i_w = cast(m["intermediate"].weight)
        self.i_b = cast(m["intermediate"].bias)
        self.act = submodule(layer, kernel.activation)
        self.f_w = cast(m["output"].weight)
        self.f_b = cast(m["output"].bias)
        self.ln2 = on_device(submodule(layer, kernel.output_norm), device)
        # bf16 weights are pre-packed for oneDNN once per plan, and the exact (erf) GELU is fused
        # into the FFN's first matmul (applied to the fp32 accumulator, before rounding)
        self.packs = dtype == torch.bfloat16 and device.type == "cpu" and packed_linear_available()
        # fp32 layers call oneDNN on the plain weights (no packed copy: see FP32_KERNEL)
        self.onednn = dtype == torch.float32 and fp32_kernel(device) == "onednn"
        self.fused_gelu = (self.packs or self.onednn) and _is_exact_gelu(self.act)
        self.full = {"qkv": self.qkv_w, "o": self.o_w, "i": self.i_w, "f": self.f_w}
        self.full_bias = {"qkv": self.qkv_b, "o": self.o_b, "i": self.i_b, "f": self.f_b}
        if self.int8:
            self.full_packs = {name: pack_int8(w, self.full_bias[name]) for name, w in self.full.items()}
        else:
            self.full_packs = {name: pack_weight(w) for name, w in self.full.items()} if self.packs else {}

    def matmul(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
               packed: torch.Tensor | None = None, act: bool = False) -> torch.Tensor:
        """``x @ w.T + b`` in this layer's matmul dtype (then the FFN activation when ``act``)."""
        if self.int8:  # the bias is in the pack
            y = int8_linear(x, packed) if packed is not None else F.linear(x.float(), w, b)
            return self.act(y) if act else y
        x = x.to(self.dtype)
        if packed is not None or self.onednn:
            fuse = act and self.fused_gelu
            y = torch.ops.mkldnn._linear_pointwise(x.contiguous(), w if packed is None else packed, b,
                                                   "gelu" if fuse else "none", [], "none" if fuse else "")
            return self.act(y) if act and not fuse else y
        y = F.linear(x, w, b)
        return self.act(y) if act else y

    def plan(self, row: LayerRow) -> LayerPlan:
        d, width = self.size, self.heads * self.size
        head = np.ones(self.heads, np.float32) if row.head is None else row.head
        kept = np.flatnonzero(head != 0)
        g_a = row.attention
        o_b = self.o_b * g_a if g_a != 1 else self.o_b
        qkv_w = qkv_b = o_w = None
        if len(kept) and g_a != 0:
            if len(kept) == self.heads:
                qkv_w, qkv_b = self.qkv_w, self.qkv_b
                o_w = self.o_w
            else:
                cols = torch.as_tensor((kept[:, None] * d + np.arange(d)).reshape(-1))
                rows = torch.cat([cols, cols + width, cols + 2 * width])
                qkv_w, qkv_b = self.qkv_w[rows], self.qkv_b[rows]
                o_w = self.o_w[:, cols]
            scale = np.repeat(head[kept], d) * g_a
            if np.any(scale != 1):
                o_w = o_w * torch.as_tensor(scale, dtype=o_w.dtype, device=o_w.device)
        neuron = row.neuron
        g_f = row.ffn
        f_b = self.f_b * g_f if g_f != 1 else self.f_b
        i_w = i_b = f_w = None
        keep_n = None if neuron is None else np.flatnonzero(neuron != 0)
        if g_f != 0 and (keep_n is None or len(keep_n)):
            if keep_n is None:
                i_w, i_b, f_w = self.i_w, self.i_b, self.f_w
                scale_n = None
            else:
                idx = torch.as_tensor(keep_n)
                i_w, i_b, f_w = self.i_w[idx], self.i_b[idx], self.f_w[:, idx]
                scale_n = neuron[keep_n]
            scale = np.ones(1, np.float32) * g_f if scale_n is None else scale_n * g_f
            if np.any(scale != 1):
                f_w = f_w * torch.as_tensor(np.broadcast_to(scale, (f_w.shape[1],)).copy(),
                                            dtype=f_w.dtype, device=f_w.device)
        packed = None
        if self.int8:  # (int8 packs hold the bias too: reuse the layer's own only when it is the same)
            biases = {"qkv": qkv_b, "o": o_b, "i": i_b, "f": f_b}
            packed = {name: self.full_packs[name]
                      if w is self.full[name] and biases[name] is self.full_bias[name]
                      else pack_int8(w, biases[name])
                      for name, w in (("qkv", qkv_w), ("o", o_w), ("i", i_w), ("f", f_w))
                      if w is not None}
        elif self.packs:  # unsliced, unscaled weights reuse the layer's own packed copy
            packed = {name: self.full_packs[name] if w is self.full[name] else pack_weight(w)
                      for name, w in (("qkv", qkv_w), ("o", o_w), ("i", i_w), ("f", f_w))
                      if w is not None}
        return LayerPlan(torch.as_tensor(kept), qkv_w, qkv_b, o_w, o_b, i_w, i_b, f_w, f_b,
                         all_heads=len(kept) == self.heads, packed=packed)

    # -- full layer ---------------------------------------------------------------------------

    def context(self, x: torch.Tensor, tokens: Tokens, qkv_w, qkv_b, heads: int,
                packed: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Attention context (N, heads * d), packed, of the heads whose fused rows are given
        (``ids``: which heads they are, for a shared score bias; None: all)."""
        qkv = tokens.pad(self.matmul(x, qkv_w, qkv_b, packed))
        b, t, _ = qkv.shape
        qkv = qkv.view(b, t, 3, heads, self.size).permute(2, 0, 3, 1, 4)
        # plain matmul-softmax-matmul (as HF's eager attention): 2-3x faster than
        # scaled_dot_product_attention on the CPU at these short lengths
        if self.q_scaled:  # bf16 scores, the key mask added by the matmul itself; the softmax
            # in fp32 (CPU softmax is 2x slower on bf16 input), its output rounded to bf16
            q, k = (qkv[i].reshape(b * heads, t, self.size) for i in (0, 1))
            scores = torch.baddbmm(tokens.key_bias(heads, self.dtype, ids), q, k.transpose(1, 2))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(self.dtype).view(b, heads, t, t)
        else:
            scores = torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) * self.scale
            bias = tokens.score_bias(ids)
            probs = torch.softmax((scores if bias is None else scores + bias) + tokens.attend, dim=-1)
        ctx = torch.matmul(probs, qkv[2])
        return tokens.pack(ctx.transpose(1, 2).reshape(b, t, heads * self.size))

    def full_context(self, x: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        return self.context(x, tokens, self.qkv_w, self.qkv_b, self.heads, self.full_packs.get("qkv"))

    def forward(self, x: torch.Tensor, tokens: Tokens, plan: LayerPlan,
                full_context: torch.Tensor | None = None) -> torch.Tensor:
        """The layer on packed hidden states (N, H) -> (N, H)."""
        if plan.attention_active:
            if full_context is not None:
                ctx = full_context if plan.all_heads else full_context.view(
                    len(full_context), self.heads, self.size)[:, plan.heads].flatten(1)
            else:
                ctx = self.context(x, tokens, plan.qkv_w, plan.qkv_b, len(plan.heads), plan.pack("qkv"),
                                   None if plan.all_heads else plan.heads)
            # the residual stream stays fp32: a mixed-dtype add converts on the fly (one pass)
            a = self.ln1(x + self.matmul(ctx, plan.o_w, plan.o_b, plan.pack("o")))
        else:
            a = self.ln1(x + plan.o_b.float())
        if plan.ffn_active:
            inner = self.matmul(a, plan.i_w, plan.i_b, plan.pack("i"), act=True)
            return self.ln2(a + self.matmul(inner, plan.f_w, plan.f_b, plan.pack("f")))
        return self.ln2(a + plan.f_b.float())

    # -- [CLS]-only last layer ----------------------------------------------------------------

    def forward_cls(self, packed: torch.Tensor, tokens: Tokens, plan: LayerPlan) -> torch.Tensor:
        """Output of this layer at position 0 only, (B, H), from packed hidden states."""
        x, keep = tokens.pad(packed), tokens.keep
        cls = x[:, 0]
        if plan.attention_active:
            k, d = len(plan.heads), self.size
            hidden = x.shape[-1]
            w = plan.qkv_w.view(3, k, d, hidden)
            bias = plan.qkv_b.view(3, k, d)
            q = (F.linear(cls, plan.qkv_w[: k * d], plan.qkv_b[: k * d]).view(-1, k, d)) * self.scale
            u = torch.einsum("bhd,hdc->bhc", q, w[1])  # folded key projection (B, k, H)
            scores = torch.bmm(u, x.transpose(1, 2))  # (B, k, T); the q·b_k term cancels
            shared = tokens.score_bias(plan.heads)
            if shared is not None:  # the shared score bias of the kept heads, query position 0
                scores = scores + shared[:, :, 0, :]
            scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
            z = torch.bmm(torch.softmax(scores, dim=-1), x)  # (B, k, H)
            ctx = torch.einsum("bhc,hdc->bhd", z, w[2]) + bias[2]
            a = self.ln1(F.linear(ctx.reshape(len(cls), k * d), plan.o_w, plan.o_b) + cls)
        else:
            a = self.ln1(cls + plan.o_b)
        if plan.ffn_active:
            return self.ln2(F.linear(self.act(F.linear(a, plan.i_w, plan.i_b)), plan.f_w, plan.f_b) + a)
        return self.ln2(a + plan.f_b)


class FastEncoder:
    """Masked forward of a classifier of a family with a fast kernel: embeddings → layers →
    [CLS] → head (the family's :class:`~prunelens.analysis.kernels.Ends`).

    Holds a :class:`PrefixCache` per batch list (see :meth:`logits`). Never changes the model.
    """

    def __init__(self, model: nn.Module, cache_bytes: int = DEFAULT_CACHE_MB << 20,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 pooling=None):
        reason = unsupported_reason(model, headless=pooling is not None)
        if reason:
            raise ValueError(f"fast path unsupported: {reason}")
        self.model = model
        self.base = model.base_model
        # on a GPU the encoder holds its own copies of the weights there; the model stays where it
        # is (the CPU), so every other use of it is unchanged
        self.device = torch.device(device)
        heads = int(model.config.num_attention_heads)
        layers = encoder_layers(model)
        kernel = kernel_for(family_of(model))
        # the [CLS]-only last layer costs a few percent: it stays fp32 whatever ``dtype`` is
        self.layers = [_Layer(layer, heads, kernel, dtype if i < len(layers) - 1 else torch.float32,
                              self.device) for i, layer in enumerate(layers)]
        self.pooling = pooling  # a headless encoder: pooled sentence vectors instead of logits
        self.ends = kernel.ends(model, self.device, headless=pooling is not None)
        self.cache_bytes = cache_bytes
        self._plans: OrderedDict[tuple[int, bytes], LayerPlan] = OrderedDict()  # LRU, by bytes
        self._plan_bytes = 0
        self._lock = threading.RLock()
        self.caches: dict[int, tuple[list, PrefixCache]] = {}  # id(batches) -> (batches, cache)

    # -- pieces -------------------------------------------------------------------------------

    def embed(self, batch) -> torch.Tensor:
        return self.ends.embed(batch)

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        return self.ends.classify(cls)

    def tokens(self, batch) -> Tokens:
        """Where ``batch``'s real tokens are, with the family's shared score bias for its length."""
        return Tokens.of(batch.attention_mask.bool(), self.ends.score_bias(batch.attention_mask.shape[1]))

    def plan(self, i: int, row: LayerRow) -> LayerPlan:
        key = (i, row.key())
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = self._plans[key] = self.layers[i].plan(row)
        self._plan_bytes += plan.nbytes
        while self._plan_bytes > PLAN_CACHE_MB << 20 and len(self._plans) > len(self.layers):
            self._plan_bytes -= self._plans.popitem(last=False)[1].nbytes
        return plan

    def cache_for(self, batches: list) -> PrefixCache:
        held = self.caches.pop(id(batches), None)
        if held is None:  # holding the list keeps its id from being reused
            # a small batch list (the 96-example estimate subset) gets a proportionally small budget
            rows = sum(len(batch.index) for batch in batches)
            budget = int(self.cache_bytes * min(1.0, rows / FULL_BUDGET_ROWS))
            held = (batches, PrefixCache(budget))
            # all lists' caches together stay within ``cache_bytes``: least recently used go first
            while self.caches and budget + sum(c.budget for _, c in self.caches.values()) > self.cache_bytes:
                self.caches.pop(next(iter(self.caches)))
        self.caches[id(batches)] = held  # most recently used last
        return held[1]

    # -- the forward --------------------------------------------------------------------------

    def logits(self, batches: list, masks: Masks | None = None, use_cache: bool = True) -> list[torch.Tensor]:
        """Logits per batch under ``masks``; starts from the deepest cached layer input.

        One call at a time per encoder (sessions sharing it wait): the plan and layer caches are
        shared, and two forwards at once on 2 cores would only thrash."""
        with self._lock:
            return self._logits(batches, masks, use_cache)

    def _logits(self, batches: list, masks: Masks | None, use_cache: bool) -> list[torch.Tensor]:
        n_layers = len(self.layers)
        rows = mask_rows(masks, n_layers)
        keys = prefix_keys(rows)
        plans = [self.plan(i, row) for i, row in enumerate(rows)]
        cache = self.cache_for(batches) if use_cache else PrefixCache(0)
        start, entry = 0, None
        for layer in range(n_layers - 1, 0, -1):
            entry = cache.get(layer, keys[layer])
            if entry is not None:
                start = layer
                break
        # the start layer (when it is not the [CLS]-only last layer) computes the all-heads context
        # once and keeps it: the next mask that first differs there only slices it
        want_context = use_cache and start < n_layers - 1 and (entry is None or entry.context is None)
        new_states: dict[int, list[torch.Tensor]] = {i: [] for i in range(start + 1, n_layers)}
        if start == 0 and entry is None:
            entry = cache.get(0, keys[0])
            new_states[0] = [] if entry is None else None
        new_context: list[torch.Tensor] = []
        out = []
        with torch.inference_mode():
            for b, batch in enumerate(batches):
                checkpoint()  # a stale dashboard evaluation stops here (caches are filled below)
                if self.device.type != "cpu":
                    batch = batch.to(self.device)
                tokens = self.tokens(batch)
                if entry is not None:
                    x = entry.states[b]
                else:
                    x = tokens.pack(self.embed(batch))
                    if use_cache:
                        new_states[0].append(x)
                for i in range(start, n_layers):
                    if i > start and use_cache:
                        new_states[i].append(x)
                    if i == n_layers - 1 and self.pooling is None:
                        x = self.layers[i].forward_cls(x, tokens, plans[i])
                        break
                    full = None
                    if i == start and entry is not None and entry.context is not None:
                        full = entry.context[b]
                    elif i == start and want_context and plans[i].attention_active:
                        full = self.layers[i].full_context(x, tokens)
                        new_context.append(full)
                    x = self.layers[i].forward(x, tokens, plans[i], full)
                if self.pooling is not None:
                    from prunelens.analysis.objectives import pool

                    out.append(pool(tokens.pad(x.float()), tokens.keep, self.pooling).cpu())
                    continue
                out.append(self.classify(x).cpu())  # (the CPU's own tensor: no copy)
        if use_cache:
            # the unpruned model's layer inputs are pinned: every mask starts from one of them
            base = prefix_keys([LayerRow(None, 1.0, 1.0, None)] * n_layers)
            if new_states.get(0):
                entry = PrefixEntry(new_states.pop(0))
                cache.put(0, keys[0], entry, pin=True)
            else:
                new_states.pop(0, None)
            # deepest first: a shallow entry is the likelier start of the next mask (a slider step
            # usually changes an early layer too), so it is the last to be evicted
            for i, states in sorted(new_states.items(), reverse=True):
                if states:
                    cache.put(i, keys[i], PrefixEntry(states), pin=keys[i] == base[i])
            if new_context and entry is not None and len(new_context) == len(batches):
                cache.put(start, keys[start], PrefixEntry(entry.states, new_context),
                          pin=keys[start] == base[start])
        return out
