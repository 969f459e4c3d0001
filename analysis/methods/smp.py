"""``smp``: the *ridge surrogate* of Single-Shot Meta-Pruning (Zhang et al., arXiv 2011.03770).

SMP keeps the *distribution of text representations* of the encoder: its loss is the KL divergence
between the in-batch similarity distributions of sentence vectors of the full and the head-pruned
encoder (for each sentence i, a softmax over its similarities to the other sentences j ≠ i of the
batch). The paper learns a pruner network by meta-learning (that is ``smp-pruner``,
:mod:`prunelens.analysis.methods.smp_pruner`); this *ridge surrogate* estimates the same quantity with a
randomized design instead:

1. sample ``samples`` random head masks. ``mask_style=official`` (default): the official code's
   pattern — in every mask a random half of the layers stays intact and in each other layer
   ``round(keep_rate x heads)`` heads are kept, drawn uniformly (there is no pruner to draw them
   from); the number of removed heads is then the same in every mask, so only *differences*
   between heads are identified and the ridge penalty fixes the common shift (the coefficients
   sum to 0). ``mask_style=independent`` (0.1): every head kept independently with probability
   ``keep_rate``;
2. for each mask, the KL (full ‖ pruned) of the similarity distributions, averaged over
   ``batches`` seeded batches of the task's sentences; the encoder alone is used
   (``model.base_model``), so no task head is needed;
3. a ridge regression (closed form, intercept, penalty ``alpha``) of the KL on the removed-head
   indicators; a head's importance is its coefficient: the expected KL increase when it is removed.

Sentence vector: the [CLS] vector or the mean over non-padding tokens of the last hidden state
(declared). Similarity: centred-cosine (the official code: cosine of the batch-centred vectors,
divided by ``temperature`` 0.1, i.e. 10 x cosine; the default), cosine, or dot product (divided by
``sqrt(hidden)`` and ``temperature``). The ``batch_size * batches`` sentences are a seeded random
sample of the data split into random batches; the encoder runs each batch as length-sorted chunks
of 8 rows (little padding, so a mask costs about half as much); the full-model vectors are
computed once.

Noise: the KL of a half-pruned encoder is mostly explained by *how many* heads are removed, so the
per-head differences need many masks (official-style masks remove the same count every time, which
takes that part out of the design). On pretrained MiniLM-L6 (72 heads, 32 RT sentences), with
independent masks, two independent designs of 160 masks gave scores with Spearman ≈ 0.66 (64 masks: ≈ 0.1; alpha 1 was
the best of 0.1…100). Raise ``samples`` for steadier scores; the cost is one encoder pass per mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from prunelens.analysis.batches import training_data
from prunelens.analysis.data import tokenize_batches
from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import gated
from prunelens.analysis.methods.base import SEED, Session, Deviation, Method, Param, Work


def sentence_vectors(hidden: torch.Tensor, attention_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """(batch, hidden) sentence vectors from a last hidden state: ``cls`` or ``mean`` (non-padding)."""
    if kind == "cls":
        return hidden[:, 0]
    if kind == "mean":
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown sentence vector '{kind}'")


def similarity_logits(vecs: torch.Tensor, temperature: float = 0.1,
                      similarity: str = "cosine") -> torch.Tensor:
    """Pairwise similarity logits (batch, batch) with the diagonal (self) set to -inf."""
    vecs = vecs.double()
    if similarity == "centred-cosine":  # the official code: cosine of batch-centred vectors
        vecs = vecs - vecs.mean(0, keepdim=True)
    if similarity in ("cosine", "centred-cosine"):
        unit = F.normalize(vecs, dim=-1)
        sims = unit @ unit.T
    elif similarity == "dot":
        sims = vecs @ vecs.T / math.sqrt(vecs.shape[-1])
    else:
        raise ValueError(f"unknown similarity '{similarity}'")
    sims = sims / temperature
    eye = torch.eye(len(vecs), dtype=torch.bool, device=vecs.device)
    return sims.masked_fill(eye, float("-inf"))


def similarity_kl_tensor(full_vecs: torch.Tensor, pruned_vecs: torch.Tensor, temperature: float = 0.1,
                         similarity: str = "cosine") -> torch.Tensor:
    """:func:`similarity_kl` as a differentiable float64 scalar tensor (gradients flow to both
    arguments; ``smp-pruner`` trains on it). The diagonal is dropped before the softmax, so no
    ``-inf - -inf`` enters the graph."""
    if full_vecs.shape != pruned_vecs.shape or full_vecs.dim() != 2 or len(full_vecs) < 2:
        raise ValueError("similarity_kl needs two (batch >= 2, hidden) arrays of the same shape")
    n = len(full_vecs)
    off = ~torch.eye(n, dtype=torch.bool, device=full_vecs.device)

    def log_rows(vecs):  # (n, n - 1): log-softmax over j != i
        return F.log_softmax(similarity_logits(vecs, temperature, similarity).masked_select(off)
                             .reshape(n, n - 1), dim=-1)

    log_p, log_q = log_rows(full_vecs), log_rows(pruned_vecs)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def similarity_kl(full_vecs: torch.Tensor, pruned_vecs: torch.Tensor, temperature: float = 0.1,
                  similarity: str = "cosine") -> float:
    """Mean over sentences i of KL(P_i ‖ Q_i), P/Q the softmax over j ≠ i of the full / pruned
    similarities. 0 for identical vectors; needs at least 2 sentences."""
    with torch.no_grad():
        return float(similarity_kl_tensor(full_vecs, pruned_vecs, temperature, similarity).clamp_min(0.0))


def ridge_importance(indicators: np.ndarray, losses: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Coefficients w of the ridge fit ``losses ≈ b + indicators @ w`` (intercept not penalized),
    closed form on centred data: w = (XᵀX + αI)⁻¹ Xᵀy."""
    x = np.asarray(indicators, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"indicators (samples, features) and losses (samples,) expected, got "
                         f"{x.shape} and {y.shape}")
    if alpha < 0:
        raise ValueError("alpha must be >= 0")
    xc = x - x.mean(0, keepdims=True)
    yc = y - y.mean()
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    return np.linalg.lstsq(gram, xc.T @ yc, rcond=None)[0]


def sample_masks(layers: int, heads: int, samples: int, keep_rate: float, seed: int) -> np.ndarray:
    """(samples, layers, heads) 0/1 keep-masks; each head kept independently with ``keep_rate``."""
    rng = np.random.default_rng(seed)
    return (rng.random((samples, layers, heads)) < keep_rate).astype(np.float32)


def official_keep(heads: int, keep_rate: float) -> int:
    """Heads kept in a pruned layer of an official-style mask: ``round(keep_rate x heads)``."""
    return int(min(heads, max(0, round(keep_rate * heads))))


def layer_split(layers: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(intact, pruned) layers of one official-style mask: a random ``layers // 2`` stay intact
    (the official ``random.sample``), the others, in the order drawn, are pruned."""
    order = rng.permutation(layers)
    return order[: layers // 2], order[layers // 2:]


def sample_official_masks(layers: int, heads: int, samples: int, keep_rate: float, seed: int) -> np.ndarray:
    """(samples, layers, heads) 0/1 keep-masks in the official code's pattern (thunlp/SMP
    ``pruner/pruner.py``): in each mask ``layers // 2`` layers drawn at random stay intact, and in
    each other layer exactly :func:`official_keep` heads, drawn uniformly, are kept."""
    rng = np.random.default_rng(seed)
    keep = official_keep(heads, keep_rate)
    masks = np.ones((samples, layers, heads), dtype=np.float32)
    for m in range(samples):
        for layer in layer_split(layers, rng)[1]:
            row = np.zeros(heads, dtype=np.float32)
            row[rng.permutation(heads)[:keep]] = 1.0
            masks[m, layer] = row
    return masks


MASK_STYLES = {"official": sample_official_masks, "independent": sample_masks}


CHUNK = 8  # rows per encoder pass: a similarity batch runs as length-sorted chunks


def _sentence_batches(ctx: Session, batch_size: int, batches: int, seed: int, sentences: str = "train"):
    """``batches`` seeded random groups of sentences; each group is a list of length-sorted
    chunks of at most :data:`CHUNK` rows (less padding; the encoder costs per padded token).
    Sentences of the training split (:func:`prunelens.analysis.batches.training_data`), as SMP trains its
    pruner on training data; a data set without a known train split gives its own."""
    data = training_data(ctx)[0] if sentences == "train" else ctx.data
    if len(data) < 2:
        raise ParamError("smp needs at least 2 sentences in the data")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))[:min(len(data), batch_size * batches)]
    groups = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if len(rows) < 2:
            continue
        chunks, _ = tokenize_batches(ctx.loaded.tokenizer, data.rows(rows), CHUNK, sort_by_length=True)
        groups.append(chunks)
    return groups


def smp_losses(ctx: Session, masks: np.ndarray, params: dict) -> np.ndarray:
    """The similarity KL of every mask in ``masks`` (samples, layers, heads), batch-averaged."""
    model = ctx.loaded.model
    encoder = model.base_model
    groups = _sentence_batches(ctx, params["batch_size"], params["batches"], params["seed"],
                               params["sentences"])
    kind, temp, sim = params["sentence_vector"], params["temperature"], params["similarity"]

    def vectors(chunks):
        out = []
        for chunk in chunks:
            inputs = chunk.to(ctx.device).model_inputs()
            hidden = encoder(**inputs).last_hidden_state
            out.append(sentence_vectors(hidden, inputs["attention_mask"], kind))
        return torch.cat(out)

    losses = np.zeros(len(masks))
    with torch.inference_mode():
        full = [vectors(g) for g in groups]
        for m, mask in enumerate(masks):
            with gated(model, head=torch.as_tensor(mask)):
                kls = [similarity_kl(f, vectors(g), temp, sim) for f, g in zip(full, groups)]
            losses[m] = float(np.mean(kls))
            ctx.progress((m + 1) / len(masks), f"smp mask {m + 1}/{len(masks)}")
    return losses


def smp_cost(params: dict, inventory, unit) -> Work:
    """An encoder pass over ``batches`` x ``batch_size`` sentences for every mask and once
    unpruned (fewer when the data is smaller)."""
    masks = (params["samples"] + 1) * params["batches"]
    return Work(fixed=masks * params["batch_size"],
                what="(samples + 1) x batches x batch_size sentence passes",  # no gradients
                calls=masks * math.ceil(params["batch_size"] / CHUNK))  # one call per chunk


class SMP(Method):
    def compute(self, ctx, unit, params):
        inv = ctx.loaded.inventory
        masks = MASK_STYLES[params["mask_style"]](inv.layers, inv.heads, params["samples"],
                                                  params["keep_rate"], params["seed"])
        losses = smp_losses(ctx, masks, params)
        removed = 1.0 - masks.reshape(len(masks), -1)
        coef = ridge_importance(removed, losses, params["alpha"])
        return coef.reshape(inv.layers, inv.heads)


METHOD = SMP(
    needs_classes=True,
    name="smp",
    training_split=lambda params: params.get("sentences", "train") == "train",  # scores from the training split alone (the store keys them by it)
    title="SMP ridge surrogate (representation KL)",
    plain="Switch random sets of heads off many times and learn which heads change the sentence representations most; needs no labels.",
    summary="Ridge regression, over random head masks, of the KL between the in-batch sentence "
            "similarity distributions of the full and the pruned encoder; needs no task head.",
    units=("head",),
    params=(
        Param("samples", "int", 160, "number of random head masks M", 8, 1024),
        Param("mask_style", "choice", "official", "official: a random half of the layers intact, "
              "round(keep_rate x heads) heads kept in each other layer (the official code's pattern); "
              "independent: every head kept independently with keep_rate (0.1)",
              choices=tuple(MASK_STYLES)),
        Param("keep_rate", "float", 0.5, "share of heads kept: in each pruned layer (official) or "
              "the probability of each head (independent)", 0.05, 0.95),
        Param("batch_size", "int", 32, "sentences per batch (the similarity distribution)", 2, 128),
        Param("batches", "int", 1, "batches of the task's sentences each mask is evaluated on", 1, 16),
        Param("sentence_vector", "choice", "mean", "sentence vector: [CLS] or mean of tokens",
              choices=("cls", "mean")),
        Param("similarity", "choice", "centred-cosine", "centred-cosine (the official code: cosine of "
              "batch-centred sentence vectors), cosine, or dot product / sqrt(hidden)",
              choices=("centred-cosine", "cosine", "dot")),
        Param("temperature", "float", 0.1, "similarities are divided by it before the softmax",
              1e-3, 100.0, log=True),
        Param("alpha", "float", 1.0, "ridge penalty of the regression", 0.0, 1e6, log=True),
        Param("sentences", "choice", "train", "whose sentences: train (the training split when one is "
              "known, as SMP trains on training data) or eval (the evaluation data, 0.1)", choices=("train", "eval")),
        SEED,
    ),
    cost=smp_cost,
    default_scope="layer",
    default_sparsity=0.5,
    paper="Zhang, Qi, Liu, Chang & Sun, arXiv 2011.03770 (2020)",
    deviations=(
        Deviation("what is learned", "a pruner network (a small CNN over each head's attention map) trained "
                  "by meta-learning with hard Gumbel straight-through masks on the pre-trained encoder",
                  "no network: a ridge regression of the same KL on removed-head indicators over random "
                  "masks (a surrogate, cheap and live); the learned pruner is the method smp-pruner"),
        Deviation("objective", "KL of in-batch similarity distributions, 10 × cosine of batch-centred "
                  "sentence vectors", "the same by default (centred-cosine, temperature 0.1)"),
        Deviation("masks", "half the layers intact; in the others 6 of 12 heads drawn by hard Gumbel "
                  "from the pruner's scores",
                  "mask_style=official (default): half the layers intact, in the others keep_rate 0.5 "
                  "of the heads drawn uniformly (no pruner to draw from; the count removed is fixed, "
                  "so only differences between heads are identified); independent: every head kept "
                  "with probability keep_rate (0.1)"),
        Deviation("model", "the pre-trained encoder, pruned then fine-tuned",
                  "whatever model is loaded (the default is already fine-tuned), no re-fine-tuning"),
        Deviation("data", "training data", "the training split's sentences (sentences=train)"),
    ),
)
