"""``snip``: spectral-normalized identity prior (Lin et al., EMNLP Findings 2020, arXiv 2010.01791).

Not Lee et al.'s 2019 "SNIP: single-shot network pruning". A residual module computes
x + F(x); when F(x) is small the module is close to the identity and can be dropped. The
importance of a module is its *function norm* on data — ``examples`` seeded sentences of the
*training* split (:func:`prunelens.analysis.batches.training_sample`, like every other criterion;
0.2 measured on the evaluation sentences) — the mean over non-padding tokens of ||F(x)||₂, where F
is

- for a head: its context vector times its slice of the attention-output weight (its contribution
  to ``attention.output.dense``, bias excluded);
- for an attention block: the ``attention.output.dense`` output before the residual add;
- for an FFN block: the ``output.dense`` output before the residual add.

``relative`` divides each token's norm by ||x||₂ of the module's residual input (the layer input
for heads and attention, the attention sub-layer output for the FFN) before averaging.
``spectral_cap`` measures on a spectrally normalized copy (:mod:`prunelens.analysis.spectral`).

The training mode (``prunelens train --method snip``) is the paper's recipe in miniature:
fine-tune a copy with *active* spectral normalization (default: every matrix capped at 0.8 x its
starting σ_max, ``sn=cap``; ``sn=exact`` is W/σ) and the identity prior λ·Σ(function norms of every
head, attention block and FFN block); then prune the trained model by its own function norms
(measured on ``norm_examples`` training sentences; :data:`PRUNE_GRID`) and evaluate it on the
evaluation sentences against the untrained model pruned by its norms and against a λ = 0 control
trained with the same steps, batches and normalization (``control``). With ``sn=off`` the two are
the prior alone and neither, so SN + prior / SN only / prior only / neither are four arms at equal
budget. ``evaluation_at_start`` records what the normalization alone does to the loaded model.

Deviations (also in docs/FIDELITY.md): the paper fine-tunes for epochs on each GLUE task and prunes
with a threshold tuned per task; here a fixed budget of steps on the default's training split and
fixed sparsities; the spectral normalization is a cap relative to each matrix's own σ_max rather
than the paper's normalization to σ = 1, because exact W/σ cannot start from a fine-tuned model
(measured on the default, seed 0: exact SN starts at 51.5% accuracy, chance, and reaches 68.8%
after the 80 steps; the cap at 0.8 × σ_max starts at 79.2% and reaches 79.7%; docs/FIDELITY.md);
σ is tracked by one power-iteration step per training forward, as ``torch.nn.utils.spectral_norm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prunelens.analysis.batches import StreamedBatches, epoch_order, training_data, training_sample
from prunelens.analysis.data import MAX_LENGTH, TextData
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.layout import UNITS, encoder_layers, layer_matrices
from prunelens.analysis.methods.base import SEED, Deviation, Method, Param, Progress, Trainer, Work, no_progress, training_work
from prunelens.analysis.run_result import shaped
from prunelens.analysis.spectral import (
    LayerCapture,
    captured,
    spectral_norms,
    spectrally_normalized,
    top_singular,
)
from prunelens.analysis.session import Session

SNIP_UNITS = tuple(u for u in UNITS if u != "neuron")  # (the paper scores heads and blocks)


@dataclass
class FunctionNorms:
    """Mean per-token function norms of every head, attention block and FFN block."""

    head: np.ndarray  # (layers, heads)
    attention: np.ndarray  # (layers,)
    ffn: np.ndarray  # (layers,)
    tokens: int
    relative: bool

    def unit(self, unit: str) -> np.ndarray:
        return {"head": self.head, "attention": self.attention, "ffn": self.ffn}[unit]

    def as_dict(self) -> dict:
        return {"head": self.head.tolist(), "attention": self.attention.tolist(),
                "ffn": self.ffn.tolist(), "tokens": self.tokens, "relative": self.relative}


def head_contributions(context: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Each head's contribution to the attention-output dense layer, bias excluded.

    ``context``: (tokens, hidden) input of ``attention.output.dense``; ``weight``: its
    (hidden, hidden) weight. Returns (tokens, heads, hidden): context_h @ W[:, h-slice]ᵀ.
    """
    n, width = context.shape
    size = width // heads
    return torch.einsum("nhd,ohd->nho", context.reshape(n, heads, size),
                        weight.reshape(weight.shape[0], heads, size))


def head_norms(context: torch.Tensor, weight: torch.Tensor, heads: int, eps: float = 0.0) -> torch.Tensor:
    """(tokens, heads) norms ||context_h @ W[:, h-slice]ᵀ||₂, through each head's Gram matrix
    G_h = W_hᵀW_h (d × d): ||c W_hᵀ||² = c G_h cᵀ, a twelfth of the work of forming the
    contributions for MiniLM. Use float64 inputs to measure; ``eps`` > 0 keeps the square root's
    gradient finite (the training penalty)."""
    n, width = context.shape
    size = width // heads
    w3 = weight.reshape(weight.shape[0], heads, size)
    gram = torch.einsum("ohd,ohe->hde", w3, w3)
    c3 = context.reshape(n, heads, size)
    return torch.einsum("nhd,hde,nhe->nh", c3, gram, c3).clamp_min(eps).sqrt()


def _layer_norms(cap: LayerCapture, out_weight: torch.Tensor, heads: int, keep: torch.Tensor,
                 relative: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token norms (float64) of heads (tokens, heads), attention (tokens,), FFN (tokens,)."""
    ctx = cap.context[keep].double()
    head = head_norms(ctx, out_weight.detach().double(), heads)
    attention = cap.attention_out[keep].double().norm(dim=-1)
    ffn = cap.ffn_out[keep].double().norm(dim=-1)
    if relative:
        x_attn = cap.layer_input[keep].double().norm(dim=-1).clamp_min(1e-12)
        x_ffn = cap.ffn_input[keep].double().norm(dim=-1).clamp_min(1e-12)
        head, attention, ffn = head / x_attn[:, None], attention / x_attn, ffn / x_ffn
    return head, attention, ffn


def function_norms(model: nn.Module, batches, relative: bool = False,
                   progress: Progress = no_progress) -> FunctionNorms:
    """Mean over the non-padding tokens of ``batches`` of ||F(x)||₂ (or ||F(x)||/||x||) for every
    head, attention block and FFN block of ``model``. Hooks are removed on return."""
    layers = encoder_layers(model)
    heads = int(model.config.num_attention_heads)
    head_sum = torch.zeros(len(layers), heads, dtype=torch.float64)
    attn_sum = torch.zeros(len(layers), dtype=torch.float64)
    ffn_sum = torch.zeros(len(layers), dtype=torch.float64)
    tokens = 0
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with captured(model) as captures, torch.inference_mode():
            for b, batch in enumerate(batches):
                inputs = {k: v.to(device) for k, v in batch.model_inputs().items()}
                model(**inputs)
                keep = inputs["attention_mask"].bool()
                tokens += int(keep.sum())
                for i, (layer, cap) in enumerate(zip(layers, captures)):
                    out_weight = layer_matrices(layer)["attention_output"].weight
                    h, a, f = _layer_norms(cap, out_weight, heads, keep, relative)
                    head_sum[i] += h.sum(0).cpu()
                    attn_sum[i] += a.sum().cpu()
                    ffn_sum[i] += f.sum().cpu()
                    cap.clear()
                progress((b + 1) / len(batches), f"function norms, batch {b + 1}/{len(batches)}")
    finally:
        model.train(was_training)
    denom = max(tokens, 1)
    return FunctionNorms((head_sum / denom).numpy(), (attn_sum / denom).numpy(),
                         (ffn_sum / denom).numpy(), tokens, relative)


# ---------------------------------------------------------------------------------------------
# the score-only method


class Snip(Method):
    """Function-norm importance; one pass gives heads, attention and FFN blocks (``joint``)."""

    def norms(self, ctx, params: dict) -> FunctionNorms:
        batches = training_sample(ctx, params["examples"], params["batch_size"], params["seed"])
        cap = params["spectral_cap"]
        model = ctx.loaded.model
        if params["exact_spectral"]:
            ctx.progress(0.0, "exact spectral normalization (W/σ)")
            model = spectrally_normalized(model, None)
        elif cap > 0:
            ctx.progress(0.0, f"spectral normalization capped at c={cap:g}")
            model = spectrally_normalized(model, cap)
        return function_norms(model, batches, params["relative"], ctx.progress)

    def compute_units(self, ctx, units, params):
        norms = self.norms(ctx, params)
        return {unit: norms.unit(unit) for unit in units}


# ---------------------------------------------------------------------------------------------
# training mode: spectral-norm reparametrization + identity-prior penalty


class CappedSpectralNorm(nn.Module):
    """Parametrization W ↦ W / max(1, σ/c) (``c`` None: W / σ), σ estimated by power iteration
    with persistent vectors (one step per training forward, as ``torch.nn.utils.spectral_norm``),
    initialised from an accurate block power iteration so step 0 already uses the true σ_max."""

    def __init__(self, weight: torch.Tensor, c: float | None, seed: int = 0, power_iters: int = 1):
        super().__init__()
        self.c = c
        self.power_iters = power_iters
        _, u, v = top_singular(weight, seed=seed)
        self.register_buffer("_u", u.to(weight.dtype))
        self.register_buffer("_v", v.to(weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                u, v = self._u, self._v
                for _ in range(self.power_iters):
                    u = F.normalize(weight @ v, dim=0, eps=1e-12)
                    v = F.normalize(weight.T @ u, dim=0, eps=1e-12)
                self._u.copy_(u)
                self._v.copy_(v)
        sigma = torch.dot(self._u.clone(), weight @ self._v.clone())
        if self.c is None:
            return weight / sigma
        return weight / torch.clamp(sigma / self.c, min=1.0)


SN_MODES = ("cap", "exact", "initial", "off")
NORM_BATCH = 32  # sentences per forward pass of the training run's function norms (as the live scores')
# what the training run prunes, the trained model against the untrained one and the λ = 0 control
PRUNE_GRID = (("head", 0.3), ("head", 0.5), ("attention", 0.5), ("ffn", 0.5))


def _register_sn(model: nn.Module, mode: str, cap_ratio: float, seed: int) -> None:
    if mode == "off":
        return
    for layer in encoder_layers(model):
        for linear in layer_matrices(layer).values():
            if mode == "exact":
                c = None
            else:  # cap: c = cap_ratio x the starting σ_max (initial: 1 x, the model starts unchanged)
                ratio = cap_ratio if mode == "cap" else 1.0
                c = ratio * top_singular(linear.weight, seed=seed)[0]
            parametrize.register_parametrization(
                linear, "weight", CappedSpectralNorm(linear.weight, c, seed))


def _remove_sn(model: nn.Module) -> None:
    for layer in encoder_layers(model):
        for linear in layer_matrices(layer).values():
            if parametrize.is_parametrized(linear, "weight"):
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)


def identity_prior(captures: list[LayerCapture], out_weights: list[torch.Tensor], heads: int,
                   keep: torch.Tensor, relative: bool) -> torch.Tensor:
    """The identity prior: Σ over layers of the mean (over non-padding tokens) function norm of
    every head, the attention block and the FFN block: Σ_l [Σ_h ||F_lh(x)|| + ||A_l(x)|| +
    ||FFN_l(x)||] (``relative``: each divided by ||x|| of its residual input). A head's F is its
    contribution to the attention-output projection (:func:`head_contributions`)."""
    mask = keep.to(captures[0].attention_out.dtype)
    count = mask.sum().clamp_min(1.0)
    total = torch.zeros((), dtype=mask.dtype, device=mask.device)
    for cap, weight in zip(captures, out_weights):
        head = head_norms(cap.context[keep], weight, heads, eps=1e-12)  # (tokens, heads)
        attn = cap.attention_out.norm(dim=-1)
        ffn = cap.ffn_out.norm(dim=-1)
        if relative:
            x_attn = cap.layer_input.norm(dim=-1).clamp_min(1e-12)
            head = head / x_attn[keep][:, None]
            attn = attn / x_attn
            ffn = ffn / cap.ffn_input.norm(dim=-1).clamp_min(1e-12)
        total = total + head.sum() / count + ((attn + ffn) * mask).sum() / count
    return total


def _train_batches(tokenizer, data: TextData, steps: int, batch_size: int, seed: int):
    """``steps`` seeded random batches, streamed: tokenized as the loop reaches them."""
    rng = np.random.default_rng(seed)
    return StreamedBatches(tokenizer, data, epoch_order(len(data), steps * batch_size, rng), batch_size)


def score_cost(params: dict, inventory, unit) -> Work:
    """One forward pass over ``examples`` training sentences; a spectrally normalized copy costs a
    power iteration per matrix, not counted."""
    return Work(fixed=float(params["examples"]), what=f"examples = {params['examples']:,} forward passes",
                calls=math.ceil(params["examples"] / params["batch_size"]))


def train_workload(params: dict, n_eval: int) -> tuple[int, int]:
    """(trained examples, evaluated examples) of a run: its run-time model (``Trainer.estimate``)."""
    # function norms on the training sample (untrained, trained, control), the model as training
    # starts (with SN), one evaluation per trained model, the pruned grid of every model
    runs = 2 if params.get("control") else 1
    norms = (runs + 1) * int(params.get("norm_examples", n_eval))
    start = n_eval if params.get("sn") in ("cap", "exact") else 0
    return (runs * int(params["steps"]) * int(params["batch_size"]),
            norms + start + (runs + 4 * (runs + 1)) * n_eval)


def train_cost(params: dict) -> Work:
    work = training_work(params["steps"], params["batch_size"], MAX_LENGTH)
    runs = 2 if params["control"] else 1  # the λ = 0 control trains as long again
    norms = (runs + 1) * params["norm_examples"]  # function norms on the training sample
    norm_calls = (runs + 1) * math.ceil(params["norm_examples"] / NORM_BATCH)
    return Work(work.fixed * runs + norms, 1 + runs + len(PRUNE_GRID) * (runs + 1),
                work.batch_tokens, f"{runs} x ({work.what}) + {runs + 1} x norm_examples",
                calls=work.calls * runs + norm_calls)


def _sigma_rows(model: nn.Module) -> list[dict]:
    return spectral_norms(model).to_dict(orient="records")


def sn_start(loaded, params: dict) -> nn.Module:
    """A copy of the model as an SN training run starts: its matrices through the run's spectral
    normalization (``sn=exact``: W/σ; ``cap``: W/max(1, σ/c)), baked in."""
    model = private_copy(loaded.model)
    _register_sn(model, params["sn"], params["cap_ratio"], params["seed"])
    _remove_sn(model)
    model.eval()
    return model


def _train(loaded, data: TextData, params: dict, lam: float, progress, span: tuple[float, float]):
    """A copy of the model trained ``steps`` steps with SN and λ·(identity prior); its history."""
    steps, relative = params["steps"], params["relative"]
    batches = _train_batches(loaded.tokenizer, data, steps, params["batch_size"], params["seed"])
    model = private_copy(loaded.model)
    device = next(model.parameters()).device
    heads = int(model.config.num_attention_heads)
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params["seed"])
        for p in model.parameters():
            p.requires_grad_(True)
        _register_sn(model, params["sn"], params["cap_ratio"], params["seed"])
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=params["lr"], weight_decay=0.0)
        layers = encoder_layers(model)
        with captured(model, detach=False) as captures, torch.enable_grad():
            for step, batch in enumerate(batches):
                inputs = {k: v.to(device) for k, v in batch.model_inputs().items()}
                logits = model(**inputs).logits
                task = F.cross_entropy(logits, batch.labels.to(device))
                out_weights = [layer_matrices(layer)["attention_output"].weight for layer in layers]
                prior = identity_prior(captures, out_weights, heads, inputs["attention_mask"].bool(), relative)
                loss = task + lam * prior
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                for cap in captures:
                    cap.clear()
                history.append({"step": step + 1, "loss": float(loss.detach()),
                                "task_loss": float(task.detach()), "penalty": float(prior.detach())})
                progress(span[0] + (span[1] - span[0]) * (step + 1) / len(batches),
                         f"{'λ = 0 control, ' if lam == 0 else ''}step {step + 1}/{len(batches)}: "
                         f"loss {history[-1]['loss']:.4f}")
        _remove_sn(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, history


def pruned_comparison(evaluator, models: dict[str, tuple[nn.Module, FunctionNorms]]) -> list[dict]:
    """Each model pruned by its own function norms (lowest first, global) at :data:`PRUNE_GRID`,
    evaluated on the same examples: accuracy and loss per model."""
    from prunelens.analysis.eval_results import EvalResult, correctness
    from prunelens.analysis.gates import Masks
    from prunelens.analysis.pruning import select

    rows = []
    for unit, sparsity in PRUNE_GRID:
        row = {"unit": unit, "sparsity": sparsity}
        for name, (model, norms) in models.items():
            mask = select(norms.unit(unit), sparsity).astype(np.float32)
            out = evaluator.outputs(Masks.for_unit(unit, mask), model=model)
            result = EvalResult.from_outputs(out, evaluator.data.metric)
            # per-example correctness: paired comparisons across models
            row[name] = {"accuracy": result.accuracy, "loss": result.loss, "metric": result.metric,
                         "correct": correctness(out)}
        rows.append(row)
    return rows


def train_run(session: Session, params: dict, progress: Progress = no_progress) -> dict:
    """Fine-tune a copy with spectral normalization and the identity prior; then prune the trained
    model by its function norms and evaluate it against the untrained model pruned by its own and
    against the λ = 0 control (same steps, same batches, same SN) pruned by its own. Returns the
    :class:`~prunelens.analysis.run_result.RunResult` shape: the record below, under its 0.1 names, through
    :func:`~prunelens.analysis.run_result.shaped` (variants ``untrained``, ``trained``, ``control``)."""
    loaded = session.loaded
    data, note = training_data(session)
    relative, control = params["relative"], params["control"]
    # the norms that prune each model: on a training sample (the evaluation sentences only evaluate)
    norm_batches = training_sample(session, params["norm_examples"], NORM_BATCH, params["seed"])
    start = None
    if params["sn"] in ("cap", "exact"):  # what the normalization alone does to the loaded model
        progress(0.0, "the model as SN training starts")
        start = session.evaluator.evaluate(model=sn_start(loaded, params)).as_dict()
    progress(0.0, "function norms before training")
    before = function_norms(loaded.model, norm_batches, relative)
    end = 0.45 if control else 0.85
    model, history = _train(loaded, data, params, params["penalty"], progress, (0.05, end))
    progress(end, "function norms and evaluation after training")
    after = function_norms(model, norm_batches, relative)
    evaluation = session.evaluator.evaluate(model=model).as_dict()
    models = {"trained": (model, after), "untrained": (loaded.model, before)}
    out_control = None
    if control:
        baseline, control_history = _train(loaded, data, params, 0.0, progress, (0.45, 0.85))
        control_norms = function_norms(baseline, norm_batches, relative)
        models["control"] = (baseline, control_norms)
        out_control = {"scores": control_norms.as_dict(), "history": control_history,
                       "evaluation": session.evaluator.evaluate(model=baseline).as_dict()}
    progress(0.9, "pruning the trained, untrained and control models")
    pruned = pruned_comparison(session.evaluator, models)
    progress(1.0, "done")
    return shaped({
        "scores": after.as_dict(),
        "scores_without_training": before.as_dict(),
        "history": history,
        "evaluation": evaluation,
        "evaluation_without_training": session.evaluator.base.as_dict(),
        "pruned": pruned,
        "control": out_control,
        "sigma": {"before": _sigma_rows(loaded.model), "after": _sigma_rows(model)},
        "evaluation_at_start": start,  # the loaded model through the run's SN, before any step
        "train_data": {"name": data.name, "split": data.split, "n": len(data), "note": note},
    })


TRAINER = Trainer(
    params=(
        Param("steps", "int", 80, "optimizer steps (fixed budget)", 1, 10_000),
        Param("batch_size", "int", 16, "training examples per step", 1, 64),
        Param("lr", "float", 3e-5, "AdamW learning rate", 1e-8, 1.0, log=True),
        Param("penalty", "float", 0.01, "λ of the identity prior λ·Σ(head, attention and FFN "
              "function norms)", 0.0, 1000.0, log=True),
        Param("sn", "choice", "cap",
              "spectral normalization during training: cap = W/max(1, σ/c) with c = cap_ratio x "
              "the matrix's starting σ_max (active: every top singular value is pulled down); "
              "exact = W/σ (the paper's strict form; from a fine-tuned model it starts near "
              "chance); initial = capped at the starting σ_max (inactive); off = none",
              choices=SN_MODES),
        Param("cap_ratio", "float", 0.8, "c as a fraction of each matrix's starting σ_max (sn=cap)",
              0.01, 1.0, step=0.05),
        Param("relative", "bool", False, "penalize and score ||F(x)||/||x|| instead of ||F(x)||"),
        Param("control", "bool", True, "also train a λ = 0 control (same steps, batches and SN) "
              "and prune it the same way (twice the time)"),
        Param("norm_examples", "int", 1024, "training-split sentences the function norms that prune "
              "each model are measured on (seeded by seed)", 8, 8192),
        SEED,
    ),
    run=train_run,
    cost=train_cost,
    workload=train_workload,
    summary="fine-tune a copy with active spectral normalization and the identity prior on heads, "
            "attention and FFN blocks; prune the trained model by its function norms against the "
            "untrained model and a λ = 0 control",
)


METHOD = Snip(
    joint=True,
    training_split=True,  # scores from the training split alone (the store keys them by it)
    name="snip",
    title="SNIP (spectral-normalized identity prior, Lin et al. 2020)",
    plain="Measure how much each block changes what flows through it; a block that nearly passes its input on unchanged can go.",
    summary="Function norm of each head / attention block / FFN block: mean ||F(x)||₂ over "
            "tokens (relative: /||x||); small means close to the identity, prunable. "
            "Threshold or sparsity.",
    units=SNIP_UNITS,
    params=(
        Param("relative", "bool", False, "divide by ||x|| of the residual input (relative norm)"),
        Param("spectral_cap", "float", 0.0,
              "measure on a copy with W/max(1, σ_max/c); 0 = no normalization", 0.0, 1e6,
              log=True, step=0.5),
        Param("exact_spectral", "bool", False, "measure on a copy with exactly W/σ_max "
              "(overrides spectral_cap)"),
        Param("examples", "int", 1024, "training-split sentences the norms are averaged over "
              "(seeded; all of the split when it is smaller)", 8, 8192),
        Param("batch_size", "int", 32, "sentences per forward pass", 1, 128),
        SEED,
    ),
    cost=score_cost,
    default_scope="global",
    default_sparsity=0.3,
    paper="Lin, Liu, Yang & Lin, Findings of EMNLP 2020 (arXiv 2010.01791)",
    trainer=TRAINER,
    deviations=(
        Deviation("spectral normalization", "W/σ_max on every matrix during fine-tuning",
                  "training: W/max(1, σ/c), c = 0.8 x each matrix's starting σ_max (active, "
                  "labelled); sn=exact is W/σ, which from the fine-tuned default starts at chance "
                  "(51.5%) and reaches 68.8% in the budget against the cap's 79.7% (measured); "
                  "live scores: optional cap or exact copy"),
        Deviation("identity prior", "a penalty on module output norms during fine-tuning",
                  "λ·Σ (head + attention block + FFN block function norms), λ = 0.01"),
        Deviation("budget", "fine-tuning for epochs on each GLUE task",
                  "80 steps of 16 sentences on the default's training split"),
        Deviation("pruning", "a norm threshold tuned per task",
                  "fixed sparsities (30%/50% of heads, 50% of attention and FFN blocks), each model "
                  "pruned by its own norms; the threshold slider on the Prune page"),
        Deviation("control", "none reported", "a λ = 0 run with the same steps, batches and SN, and "
                  "the untrained model, pruned the same way (the claim's equal-budget test); with "
                  "sn=off the prior alone and plain fine-tuning: four arms that separate SN from the prior"),
    ),
)
