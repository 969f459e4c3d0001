"""Spectral norms, spectral normalization, and activation statistics for histograms.

Owns the numerics behind the ``snip`` method (Lin et al. 2020, spectral-normalized identity
prior) and the dashboard's Spectral page:

- :func:`sigma_max`: the largest singular value of a matrix by (block) power iteration;
- :func:`spectral_norms`: σ_max of every Q, K, V, attention-output, intermediate and output dense
  matrix of every encoder layer, as a table (``layer``, ``matrix``, ``sigma``);
- :func:`spectrally_normalized`: a normalized *copy* of a model, W ← W / max(1, σ_max(W)/c)
  (``c=None``: exactly W/σ_max); the model given is never changed;
- :func:`normalization_effect`: accuracy/loss/margin of the normalized copy for several caps c;
- :func:`activation_statistics`: per layer, histograms (and capped samples) of post-GELU
  activations (the input of ``output.dense``) and of per-token output norms of the attention
  block (``attention.output.dense`` output before the residual add) and of the FFN block
  (``output.dense`` output before the residual add), with and without normalization.

Everything returns plain numbers, numpy arrays, pandas tables or dataclasses; no plotting.
Every hook attached here goes through :func:`prunelens.analysis.hooks.hooked` (under the model's lock) and
is removed before the function returns, also on errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunelens.analysis.errors import ParamError
from prunelens.analysis.hooks import hooked, private_copy
from prunelens.analysis.layout import MATRICES, encoder_layers, layer_matrices  # noqa: F401 (MATRICES: re-exported, documented here)
from prunelens.analysis.models import LoadedModel
from prunelens.analysis.store_schema import ACTIVATION_QUANTITIES

def _as_module(model) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


# ---------------------------------------------------------------------------------------------
# σ_max


def top_singular(W: torch.Tensor, iters: int = 100, seed: int = 0, vectors: int = 4,
                 tol: float = 1e-12) -> tuple[float, torch.Tensor, torch.Tensor]:
    """σ_max of ``W`` and its left/right singular vectors (u, v) by power iteration on WᵀW,
    in float64; see :func:`sigma_max`."""
    if iters < 1:
        raise ParamError(f"power iteration needs iters >= 1, got {iters}")
    W = W.detach().to(torch.float64)
    if W.dim() != 2:
        raise ParamError(f"sigma_max needs a matrix, got shape {tuple(W.shape)}")
    m, n = W.shape
    if W.numel() == 0 or not torch.any(W != 0):
        u = torch.zeros(m, dtype=torch.float64, device=W.device)
        v = torch.zeros(n, dtype=torch.float64, device=W.device)
        if m and n:
            u[0], v[0] = 1.0, 1.0
        return 0.0, u, v
    k = max(1, min(int(vectors), m, n))
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64).to(W.device))
    sigma = 0.0
    for _ in range(iters):
        B = W @ V
        new = float(torch.linalg.svdvals(B)[0]) if k > 1 else float(B.norm())
        done = abs(new - sigma) <= tol * max(new, 1e-300)
        sigma = new
        if done:
            break
        V, _ = torch.linalg.qr(W.T @ B)
    # Rayleigh-Ritz: the best rank-one fit inside the final block
    B = W @ V
    U_b, S_b, Vh_b = torch.linalg.svd(B, full_matrices=False)
    v = V @ Vh_b[0]
    u = U_b[:, 0]
    return float(S_b[0]), u, v


def sigma_max(W: torch.Tensor, iters: int = 100, seed: int = 0, vectors: int = 4,
              tol: float = 1e-12) -> float:
    """Largest singular value of ``W`` by power iteration on WᵀW, in float64.

    With ``vectors`` > 1 this is block (orthogonal) power iteration with a Rayleigh-Ritz step:
    it converges like (σ_{k+1}/σ_1)^2 per step instead of (σ_2/σ_1)^2, which matters for
    pretrained matrices whose top two singular values are within 1% of each other. ``vectors=1``
    is the textbook method (σ = ||W v|| for the iterate v). Stops early when the estimate moves by
    less than ``tol`` (relative). The starting block is drawn from ``seed``.
    """
    return top_singular(W, iters, seed, vectors, tol)[0]


def spectral_norms(loaded, iters: int = 100, seed: int = 0) -> pd.DataFrame:
    """σ_max of every dense matrix of every encoder layer.

    Columns: ``layer`` (0-based), ``matrix`` (one of :data:`MATRICES`), ``sigma``,
    ``rows``, ``cols`` (the weight's shape, out × in).
    """
    rows = []
    for i, layer in enumerate(encoder_layers(_as_module(loaded))):
        for name, linear in layer_matrices(layer).items():
            w = linear.weight
            rows.append({"layer": i, "matrix": name, "sigma": sigma_max(w, iters, seed),
                         "rows": int(w.shape[0]), "cols": int(w.shape[1])})
    return pd.DataFrame(rows, columns=["layer", "matrix", "sigma", "rows", "cols"])


def check_cap(c: float | None) -> float | None:
    """``c`` must be None (exact normalization) or a positive finite number."""
    if c is None:
        return None
    try:
        value = float(c)
    except (TypeError, ValueError):
        raise ParamError(f"spectral cap c must be a positive number or None, got {c!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ParamError(
            f"spectral cap c must be a positive number (or None for exact W/σ), got {c!r}")
    return value


def normalization_factor(sigma: float, c: float | None) -> float:
    """The divisor of W: σ (exact, ``c=None``) or max(1, σ/c) (capped)."""
    if sigma <= 0:
        return 1.0
    return sigma if c is None else max(1.0, sigma / c)


def spectrally_normalized(model, c: float | None = None, iters: int = 100, seed: int = 0,
                          sigmas: pd.DataFrame | None = None) -> nn.Module:
    """A deep copy of ``model`` (an ``nn.Module`` or a :class:`LoadedModel`) whose Q, K, V,
    attention-output, intermediate and output dense weights are W / max(1, σ_max(W)/c), or exactly
    W / σ_max(W) when ``c`` is None. Biases are kept. The model given is not changed.
    ``sigmas`` (a :func:`spectral_norms` table of this model) avoids recomputing σ_max."""
    c = check_cap(c)
    known = {} if sigmas is None else {(int(r.layer), r.matrix): float(r.sigma)
                                       for r in sigmas.itertuples()}
    copied = private_copy(_as_module(model))
    seen: set[int] = set()  # shared layers (ALBERT): each weight is normalized once
    with torch.no_grad():
        for i, layer in enumerate(encoder_layers(copied)):
            for name, linear in layer_matrices(layer).items():
                if id(linear.weight) in seen:
                    continue
                seen.add(id(linear.weight))
                sigma = known.get((i, name))
                if sigma is None:
                    sigma = sigma_max(linear.weight, iters, seed)
                factor = normalization_factor(sigma, c)
                if factor != 1.0:
                    linear.weight.div_(factor)
    copied.eval()
    return copied


def normalization_effect(loaded: LoadedModel, evaluator, caps, seed: int = 0) -> pd.DataFrame:
    """Accuracy, loss and margin of the spectrally normalized copy for each cap in ``caps``
    (None = exact W/σ), next to the unnormalized model (``c`` = inf), on ``evaluator``'s data.
    Also the number of matrices each cap rescales. σ_max is computed once."""
    sigmas = spectral_norms(loaded, seed=seed)
    base = evaluator.base
    rows = [{"c": float("inf"), "exact": False, "matrices_rescaled": 0, "accuracy": base.accuracy,
             "loss": base.loss, "margin": base.margin}]
    for c in caps:
        c = check_cap(c)
        normed = spectrally_normalized(loaded, c, seed=seed, sigmas=sigmas)
        result = evaluator.evaluate(model=normed)
        rescaled = len(sigmas) if c is None else int((sigmas["sigma"] > c).sum())
        rows.append({"c": float("nan") if c is None else c, "exact": c is None,
                     "matrices_rescaled": rescaled, "accuracy": result.accuracy,
                     "loss": result.loss, "margin": result.margin})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# capturing module inputs/outputs


@dataclass
class LayerCapture:
    """What one encoder layer saw on the current batch (padded; filled by hooks)."""

    # the matrices by role (prunelens.analysis.layout): in BERT attention.self.query, ...
    layer_input: torch.Tensor | None = None  # input of Q / QKV (the attention block's input)
    context: torch.Tensor | None = None  # input of the attention output (per-head context)
    attention_out: torch.Tensor | None = None  # attention-output output, before residual
    ffn_input: torch.Tensor | None = None  # input of the FFN's intermediate (the FFN's input)
    gelu: torch.Tensor | None = None  # input of the FFN output (post-activation, GLU-gated)
    ffn_out: torch.Tensor | None = None  # FFN output's output, before residual

    def clear(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, None)


@contextmanager
def captured(model: nn.Module, detach: bool = True):
    """Hooks that fill one :class:`LayerCapture` per layer on each forward pass inside the block
    (yields that list), through :func:`prunelens.analysis.hooks.hooked`: under the model's lock, removed on
    exit. ``detach=False`` keeps the autograd graph."""
    keep = (lambda t: t.detach()) if detach else (lambda t: t)

    def pre(capture: LayerCapture, attr: str):
        def hook(module, args):
            setattr(capture, attr, keep(args[0]))
        return hook

    def post(capture: LayerCapture, attr: str):
        def hook(module, args, output):
            setattr(capture, attr, keep(output))
        return hook

    captures, before, after = [], [], []
    for layer in encoder_layers(model):
        cap = LayerCapture()
        captures.append(cap)
        m = layer_matrices(layer)
        first = next(iter(m.values()))  # Q (or a fused QKV): reads the attention block's input
        before += [(first, pre(cap, "layer_input")), (m["attention_output"], pre(cap, "context")),
                   (m["intermediate"], pre(cap, "ffn_input")), (m["output"], pre(cap, "gelu"))]
        after += [(m["attention_output"], post(cap, "attention_out")), (m["output"], post(cap, "ffn_out"))]
    with hooked(model, before, after):
        yield captures


# ---------------------------------------------------------------------------------------------
# activation statistics


@dataclass
class Histogram:
    """Counts over ``edges`` (len(counts) + 1), summary statistics, and a capped random sample."""

    counts: np.ndarray
    edges: np.ndarray
    n: int
    mean: float
    std: float
    min: float
    max: float
    samples: np.ndarray

    def as_dict(self) -> dict:
        return {"counts": self.counts.tolist(), "edges": self.edges.tolist(), "n": self.n,
                "mean": self.mean, "std": self.std, "min": self.min, "max": self.max}


@dataclass
class LayerActivations:
    """Histograms of one layer: post-GELU values and per-token block output norms."""

    layer: int
    gelu: Histogram
    attention_norm: Histogram
    ffn_norm: Histogram


@dataclass
class ActivationStatistics:
    """Per-layer histograms without (``plain``) and with (``normalized``) spectral normalization.
    Both sides of one layer and quantity share their bin edges, so counts compare directly."""

    c: float | None
    tokens: int
    examples: int
    plain: list[LayerActivations]
    normalized: list[LayerActivations]
    sigma: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    QUANTITIES = ACTIVATION_QUANTITIES  # the store schema checks the same three

    def table(self) -> pd.DataFrame:
        """Long table of summary statistics: version, layer, quantity, n, mean, std, min, max."""
        rows = []
        for version, layers in (("plain", self.plain), ("normalized", self.normalized)):
            for la in layers:
                for q in self.QUANTITIES:
                    h: Histogram = getattr(la, q)
                    rows.append({"version": version, "layer": la.layer, "quantity": q, "n": h.n,
                                 "mean": h.mean, "std": h.std, "min": h.min, "max": h.max})
        return pd.DataFrame(rows)


@dataclass
class _Raw:
    gelu: list[np.ndarray] = field(default_factory=list)
    attention_norm: list[np.ndarray] = field(default_factory=list)
    ffn_norm: list[np.ndarray] = field(default_factory=list)


def _token_norms(output: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    return output[keep].double().norm(dim=-1).cpu().numpy()


def _collect(model: nn.Module, batches, gelu_cap: int, rng: np.random.Generator) -> list[_Raw]:
    """Run ``batches`` through ``model`` and keep, per layer, non-padding tokens' block output
    norms (all of them) and at most ``gelu_cap`` post-GELU values per batch (seeded sample)."""
    layers = encoder_layers(model)
    raws = [_Raw() for _ in layers]
    device = next(model.parameters()).device
    with captured(model) as captures, torch.inference_mode():
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.model_inputs().items()}
            model(**inputs)
            keep = inputs["attention_mask"].bool()
            for raw, cap in zip(raws, captures):
                raw.attention_norm.append(_token_norms(cap.attention_out, keep))
                raw.ffn_norm.append(_token_norms(cap.ffn_out, keep))
                values = cap.gelu[keep].reshape(-1).cpu().numpy()
                if values.size > gelu_cap:
                    values = values[rng.choice(values.size, gelu_cap, replace=False)]
                raw.gelu.append(values.astype(np.float64))
            for cap in captures:  # free the batch tensors
                cap.clear()
    return raws


def _histogram(values: np.ndarray, edges: np.ndarray, max_samples: int,
               rng: np.random.Generator) -> Histogram:
    counts, _ = np.histogram(values, bins=edges)
    samples = values
    if values.size > max_samples:
        samples = values[rng.choice(values.size, max_samples, replace=False)]
    empty = values.size == 0
    return Histogram(counts=counts.astype(np.int64), edges=edges, n=int(values.size),
                     mean=float("nan") if empty else float(values.mean()),
                     std=float("nan") if empty else float(values.std()),
                     min=float("nan") if empty else float(values.min()),
                     max=float("nan") if empty else float(values.max()),
                     samples=samples.astype(np.float32))


def _edges(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    both = np.concatenate([a, b])
    if both.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def activation_statistics(loaded: LoadedModel, data=None, *, batches=None, c: float | None = None,
                          limit: int = 64, batch_size: int = 32, bins: int = 60,
                          max_samples: int = 5000, gelu_values_per_batch: int = 50_000,
                          seed: int = 0, normalized_model: nn.Module | None = None
                          ) -> ActivationStatistics:
    """Histograms of post-GELU activations and of attention/FFN block output norms per layer,
    for the model as loaded and for its spectrally normalized copy (cap ``c``; None = exact).

    Data: ``batches`` (e.g. an evaluator's) or the first ``limit`` examples of ``data``.
    Padding tokens are excluded. Post-GELU values are sampled (at most
    ``gelu_values_per_batch`` per batch and layer, seeded); norms use every token.
    ``samples`` in each histogram hold at most ``max_samples`` values.
    """
    from prunelens.analysis.data import tokenize_batches

    c = check_cap(c)
    if bins < 1:
        raise ParamError(f"bins must be >= 1, got {bins}")
    if batches is None:
        if data is None:
            raise ParamError("activation statistics need data or batches")
        batches, _ = tokenize_batches(loaded.tokenizer, data.subset(limit), batch_size)
    model = loaded.model
    sigma = spectral_norms(model, seed=seed)
    normed = (normalized_model if normalized_model is not None
              else spectrally_normalized(model, c, seed=seed, sigmas=sigma))
    plain_raw = _collect(model, batches, gelu_values_per_batch, np.random.default_rng(seed))
    norm_raw = _collect(normed, batches, gelu_values_per_batch, np.random.default_rng(seed))
    plain, normalized = [], []
    for i, (p, q) in enumerate(zip(plain_raw, norm_raw)):
        hists = {}
        for quantity in ActivationStatistics.QUANTITIES:
            a = np.concatenate(getattr(p, quantity)) if getattr(p, quantity) else np.zeros(0)
            b = np.concatenate(getattr(q, quantity)) if getattr(q, quantity) else np.zeros(0)
            edges = _edges(a, b, bins)
            rng = np.random.default_rng(seed + i)
            hists[quantity] = (_histogram(a, edges, max_samples, rng),
                               _histogram(b, edges, max_samples, rng))
        plain.append(LayerActivations(i, *(hists[q][0] for q in ActivationStatistics.QUANTITIES)))
        normalized.append(
            LayerActivations(i, *(hists[q][1] for q in ActivationStatistics.QUANTITIES)))
    tokens = int(sum(int(b.attention_mask.sum()) for b in batches))
    examples = int(sum(len(b.index) for b in batches))
    return ActivationStatistics(c=c, tokens=tokens, examples=examples, plain=plain,
                                normalized=normalized, sigma=sigma)
