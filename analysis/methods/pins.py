"""``pins``: pruning with principled importance and self-regularization (Ren & Zhu, ACL Findings
2023, arXiv 2305.12394).

The importance of a weight θ with gradient g is the gain of keeping it over dropping it,
S = −θ·g + η·g² (:func:`pins_score`). As in the official code (DRSY/PINS ``Pruner.py``,
``update_ipt_with_local_window``) the step score is |S|, averaged over a window of ``delta_t``
steps, and smoothed *after* the absolute value (:class:`PinsState`, :func:`ema_update`):
Ī ← β1·Ī + (1−β1)·|S|, U ← β2·U + (1−β2)·| |S| − Ī | (with the updated Ī); importance Ī·U ≥ 0.
The official order is kept: at the start of each window the EMA takes the *previous* window's
mean |S|, so the newest window enters Ī one window later. ``signed`` (an explicit option, the
0.1 behaviour) smooths the signed S instead, whose Ī has a coin-flip sign near a converged model.
Scored weights: Q, K, V, attention-output, intermediate and output dense of every layer.
PLATON (:mod:`prunelens.analysis.methods.platon`) is this with η = 0 (step score |θ·g|).

Deviations from the official code (also in docs/FIDELITY.md): η is a parameter (the official
code uses the current learning rate; the defaults are equal); β2 = 2 (a running variance for U)
is not offered; the embeddings are frozen in training mode (saves the dense embedding update);
self-regularization's teacher is refreshed at every sparsity increase, as in the paper.

- Score-only mode (``compute``, live): on a private copy of the model (the shared one is never
  touched), |S| is accumulated over ``batches`` seeded random batches of the *training* split
  (:func:`prunelens.analysis.batches.training_data`: the default data's train split, else the session's
  data) without any update (eval mode, gradient of the batch-mean cross-entropy), then Ī·U is summed to heads
  (their Q/K/V rows and O columns), neurons (intermediate row + output column), attention and FFN
  blocks (all their matrices); by default divided by the largest |score| of the unit (raw Ī·U is
  ~1e-10; the ranking is unchanged).
- Training mode (``prunelens train --method pins``, :func:`train_run`): iterative weight-level
  pruning of those six matrices per layer, globally across them, with a cubic schedule
  (:func:`cubic_sparsity`) from 0 to the target over a fixed step budget; at every pruning step the
  lowest Ī·U weights are masked (kept at zero after every optimizer step). Self-regularization adds
  T²·KL(softened teacher ‖ softened student) (the official direction), optionally weighted per
  example by the entropy-adaptive α = 1 − H(p_student)/log C (``adaptive_alpha``), the teacher being
  a frozen copy of the model as it was just before the latest sparsity increase. Runs with and
  without it, plus a magnitude baseline at the same weight sparsity, each evaluated on the
  session's evaluation data. With ``signed``, large weights whose θ·g has a noisy sign rank lowest
  and are dropped first (0.1 measured chance accuracy for that variant at 80 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunelens.analysis.batches import StreamedBatches, epoch_order, training_data
from prunelens.analysis.data import TextData
from prunelens.analysis.errors import ParamError
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.layout import MATRICES, UNITS, encoder_matrices, per_unit
from prunelens.analysis.methods.base import SEED, Deviation, Method, Param, Progress, Trainer, Work, no_progress, training_work
from prunelens.analysis.models import Inventory
from prunelens.analysis.run_result import shaped
from prunelens.analysis.session import Session



# ---------------------------------------------------------------------------------------------
# pure pieces


def pins_score(theta: torch.Tensor, grad: torch.Tensor, eta: float) -> torch.Tensor:
    """S = −θ·g + η·g², elementwise."""
    return -theta * grad + eta * grad * grad


def ema_update(ibar: torch.Tensor, unc: torch.Tensor, score: torch.Tensor, beta1: float = 0.85,
               beta2: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """PLATON smoothing: Ī' = β1·Ī + (1−β1)·S, U' = β2·U + (1−β2)·|S − Ī'| (new tensors)."""
    new_ibar = beta1 * ibar + (1.0 - beta1) * score
    new_unc = beta2 * unc + (1.0 - beta2) * (score - new_ibar).abs()
    return new_ibar, new_unc


def cubic_sparsity(step: int, total: int, target: float, warmup: int = 0, final: int = 0) -> float:
    """Cubic schedule: 0 up to ``warmup``, then target·(1 − (1 − frac)³), ``target`` from
    ``total − final`` on (frac = (step − warmup) / (total − final − warmup))."""
    end = total - final
    if end <= warmup:
        raise ValueError("the schedule needs total - final > warmup")
    if step <= warmup:
        return 0.0
    if step >= end:
        return float(target)
    frac = (step - warmup) / (end - warmup)
    return float(target * (1.0 - (1.0 - frac) ** 3))


def self_reg_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 2.0, adaptive: bool = False) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch mean (the official direction).

    ``adaptive``: each example's term weighted by α = 1 − H(p)/log C, p the student's unsoftened
    prediction (detached): confident students lean on the teacher more."""
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    if adaptive:
        kl = entropy_alpha(student_logits) * kl
    return temperature**2 * kl.mean()


def entropy_alpha(logits: torch.Tensor) -> torch.Tensor:
    """α = 1 − H(softmax(logits))/log C per example, in [0, 1], detached."""
    log_p = F.log_softmax(logits.detach(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return 1.0 - entropy / math.log(logits.shape[-1])


def prunable_weights(model: nn.Module) -> list[list[nn.Parameter]]:
    """The six scored/pruned weights of every layer, in :data:`prunelens.analysis.layout.MATRICES` order."""
    return [[lin.weight for lin in matrices.values()] for matrices in encoder_matrices(model)]


def aggregate(weight_scores: list[list[torch.Tensor]], inv: Inventory, unit: str) -> np.ndarray:
    """Sum per-weight scores (each layer's six, in ``MATRICES`` order) to ``unit``
    (:func:`prunelens.analysis.layout.per_unit`: a head its Q/K/V rows and O columns, a neuron its
    intermediate row and output column, a block all of its matrices)."""
    return per_unit([dict(zip(MATRICES, layer)) for layer in weight_scores], inv, unit)


def normalized(scores: np.ndarray) -> np.ndarray:
    """``scores`` divided by their largest absolute value (unchanged when all are 0)."""
    peak = float(np.abs(scores).max()) if scores.size else 0.0
    return scores / peak if peak > 0 else scores


def step_score(theta: torch.Tensor, grad: torch.Tensor, eta: float, signed: bool = False) -> torch.Tensor:
    """What one step contributes: |S| (official), or S itself with ``signed``."""
    s = pins_score(theta, grad, eta)
    return s if signed else s.abs()


class PinsState:
    """Ī and U for a list-of-lists of weights, updated as the official ``Pruner`` does
    (``update_ipt_with_local_window``); ``update`` reads the weights' ``.grad``.

    Step t (counted from 0) with ``local = t % delta_t``: when ``local == 0`` the EMA takes the
    window's mean step score ``ipt`` (Ī ← β1·Ī + (1−β1)·ipt, U ← β2·U + (1−β2)·|ipt − Ī|) and
    ``ipt`` restarts at this step's score; otherwise ``ipt`` ← (ipt·local + score)/(local + 1)."""

    def __init__(self, weights: list[list[nn.Parameter]], eta: float, beta1: float, beta2: float,
                 delta_t: int = 1, signed: bool = False):
        self.weights = weights
        self.eta, self.beta1, self.beta2 = eta, beta1, beta2
        self.delta_t, self.signed = int(delta_t), bool(signed)
        zeros = [[torch.zeros_like(w, dtype=torch.float32) for w in layer] for layer in weights]
        self.ipt = zeros
        self.ibar = [[t.clone() for t in layer] for layer in zeros]
        self.unc = [[t.clone() for t in layer] for layer in zeros]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        local = self.updates % self.delta_t
        for i, layer in enumerate(self.weights):
            for j, w in enumerate(layer):
                grad = w.grad if w.grad is not None else torch.zeros_like(w)
                score = step_score(w.detach().float(), grad.float(), self.eta, self.signed)
                if local == 0:
                    self.ibar[i][j], self.unc[i][j] = ema_update(self.ibar[i][j], self.unc[i][j],
                                                                 self.ipt[i][j], self.beta1, self.beta2)
                    self.ipt[i][j] = score
                else:
                    self.ipt[i][j] = (self.ipt[i][j] * local + score) / (local + 1)
        self.updates += 1

    def importance(self) -> list[list[torch.Tensor]]:
        """Ī·U per weight (≥ 0 unless ``signed``)."""
        return [[b * u for b, u in zip(bl, ul)] for bl, ul in zip(self.ibar, self.unc)]


def shuffled_batches(tokenizer, data: TextData, batch_size: int, count: int, seed: int,
                     max_length: int = 128, bucket: int = 8):
    """``count`` batches of seeded random examples (a new permutation each pass over the data).

    Every ``bucket`` consecutive batches' worth of examples are sorted by length into batches whose
    order is then shuffled: batches stay random but carry little padding. Streamed
    (:class:`~prunelens.analysis.batches.StreamedBatches`): tokenized as the loop reaches them."""
    if len(data) == 0:
        raise ParamError("pins needs data with at least one example")
    rng = np.random.default_rng(seed)
    need = batch_size * count
    return StreamedBatches(tokenizer, data, epoch_order(len(data), need, rng), batch_size, max_length, bucket=bucket, rng=rng)


SCORE_MAX_LENGTH = 128  # tokens per example in score-only mode (shuffled_batches' default)
# what score-only mode accumulates over (pins and platon; :func:`score_cost` reads them)
SCORE_BATCHES = (
    Param("batches", "int", 8, "batches the scores are accumulated over (no updates)", 1, 128),
    Param("batch_size", "int", 16, "examples per batch", 1, 64),
)


def score_cost(params: dict, inventory, unit) -> Work:
    """Score-only mode: ``batches`` forward + backward passes of ``batch_size`` examples."""
    return training_work(params["batches"], params["batch_size"], SCORE_MAX_LENGTH,
                         what="batches x batch_size")


def train_workload(params: dict, n_eval: int) -> tuple[int, int]:
    """(trained examples, evaluated examples) of a run: its run-time model (``Trainer.estimate``)."""
    examples = int(params["steps"]) * int(params["batch_size"])
    runs = 1 + bool(params.get("compare_self_reg")) + (params.get("baseline") == "gradual")
    teacher = 0.33  # the self-regularized run also runs the teacher forward
    evals = (1 + runs + (params.get("baseline") == "oneshot")) * n_eval
    return int(examples * (runs + teacher)), evals


def train_cost(params: dict) -> Work:
    """Training mode: every planned run makes ``steps`` steps (the self-regularized one also runs
    its teacher forward); evaluations are passes over the data, not counted here."""
    runs = 1 + bool(params.get("compare_self_reg")) + (params["baseline"] == "gradual")
    return training_work(params["steps"], params["batch_size"], params["max_length"],
                         passes=3 * runs + 1, what=f"{runs} run(s) x steps x batch_size")


# ---------------------------------------------------------------------------------------------
# score-only mode

def score_weights(loaded, data: TextData, params: dict, progress: Progress = no_progress,
                  device: str = "cpu", eta: float | None = None) -> list[list[torch.Tensor]]:
    """Ī·U per weight after ``batches`` gradient evaluations on a private copy (no updates);
    ``eta`` overrides ``params["eta"]`` (PLATON: 0)."""
    model = private_copy(loaded.model, device)
    model.eval()
    weights = prunable_weights(model)
    for layer in weights:
        for w in layer:
            w.requires_grad_(True)
    state = PinsState(weights, params["eta"] if eta is None else eta, params["beta1"], params["beta2"],
                      params["delta_t"], params.get("signed", False))
    batches = shuffled_batches(loaded.tokenizer, data, params["batch_size"], params["batches"],
                               params["seed"])
    with torch.enable_grad():
        for i, batch in enumerate(batches):
            model.zero_grad(set_to_none=True)
            logits = model(**batch.to(device).model_inputs()).logits
            F.cross_entropy(logits, batch.labels.to(logits.device)).backward()
            state.update()
            progress((i + 1) / len(batches), f"pins scores, batch {i + 1}/{len(batches)}")
    return state.importance()


@dataclass
class Pins(Method):
    eta_param: bool = True  # False for PLATON (the same method object type): step score |θ·g|

    def compute_units(self, ctx, units, params):
        """One scoring run of the per-weight importance, summed to every unit asked for."""
        data, _ = training_data(ctx)  # label-using importance: the train split when known
        imp = score_weights(ctx.loaded, data, params, ctx.progress, ctx.device,
                            eta=None if self.eta_param else 0.0)
        out = {}
        for unit in units:
            scores = aggregate(imp, ctx.loaded.inventory, unit)
            # Ī·U is ~1e-10 in raw units; the ranking is what matters
            out[unit] = normalized(scores) if params["normalize"] else scores
        return out


# ---------------------------------------------------------------------------------------------
# training mode


def _global_mask(importance: list[list[torch.Tensor]], sparsity: float) -> list[list[torch.Tensor]]:
    """Keep-masks removing exactly round(sparsity · N) weights with the lowest importance, over all
    matrices together (ties: the earlier weight goes first)."""
    flat = torch.cat([t.reshape(-1).float() for layer in importance for t in layer])
    k = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        kth = torch.kthvalue(flat, k).values  # linear time, unlike a full sort of ~10M scores
        below = flat < kth
        tied = torch.nonzero(flat == kth).squeeze(1)
        keep[below] = False
        keep[tied[: k - int(below.sum())]] = False
    masks, start = [], 0
    for layer in importance:
        row = []
        for t in layer:
            row.append(keep[start:start + t.numel()].reshape(t.shape))
            start += t.numel()
        masks.append(row)
    return masks


@torch.no_grad()
def _apply(weights: list[list[nn.Parameter]], masks: list[list[torch.Tensor]]) -> None:
    for wl, ml in zip(weights, masks):
        for w, m in zip(wl, ml):
            w.mul_(m.to(w.dtype))


def mask_sparsity(masks: list[list[torch.Tensor]] | None, model: nn.Module) -> dict:
    """Realized sparsity of keep-masks over the six matrices of every layer (all kept when
    ``masks`` is None), per layer × matrix, and the fraction of exact zeros in the weights."""
    weights = prunable_weights(model)
    removed = total = zeros = 0
    per = []
    for i, layer in enumerate(weights):
        row = []
        for j, w in enumerate(layer):
            r = 0 if masks is None else int((~masks[i][j]).sum())
            removed, total, zeros = removed + r, total + w.numel(), zeros + int((w == 0).sum())
            row.append(round(r / w.numel(), 6))
        per.append(row)
    return {"weight_sparsity": removed / max(1, total), "pruned_weights": removed,
            "total_weights": total, "zero_fraction": zeros / max(1, total), "layer_sparsity": per,
            "layer_sparsity_columns": list(MATRICES)}


def prune_train(loaded, batches, params: dict, criterion: str = "pins", self_reg: bool = True,
                progress: Progress = no_progress, device: str = "cpu") -> dict:
    """One iterative prune + fine-tune run on a copy of ``loaded.model``; returns the trained
    model (``"model"``), its importance (``"importance"``) and a JSON-able summary."""
    torch.manual_seed(params["seed"])
    student = private_copy(loaded.model, device)
    embeddings = student.base_model.embeddings
    for p in student.parameters():
        p.requires_grad_(True)
    for p in embeddings.parameters():  # frozen: saves the dense word-embedding update
        p.requires_grad_(False)
    weights = prunable_weights(student)
    teacher = private_copy(loaded.model, device).eval() if self_reg else None
    state = PinsState(weights, params.get("eta", 0.0), params["beta1"], params["beta2"],
                      params["delta_t"], params.get("signed", False))
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                                  lr=params["lr"], weight_decay=0.0, foreach=True)
    steps = len(batches)
    warmup = round(params["warmup"] * steps)
    final = round(params["final"] * steps)
    end = steps - final
    target, every, temp = params["target_sparsity"], params["prune_every"], params.get("temperature", 2.0)
    masks = None
    current = 0.0
    history: list[dict] = []
    sums = {"loss": 0.0, "task_loss": 0.0, "self_reg_loss": 0.0, "n": 0}
    student.train()
    with torch.enable_grad():
        for t, batch in enumerate(batches, start=1):
            inputs = batch.to(device).model_inputs()
            logits = student(**inputs).logits
            task = F.cross_entropy(logits, batch.labels.to(logits.device))
            loss = task
            sr = torch.zeros(())
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(**inputs).logits
                sr = self_reg_loss(logits, teacher_logits, temp, params.get("adaptive_alpha", False))
                loss = loss + sr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if criterion in ("pins", "platon"):
                state.update()
            optimizer.step()
            if masks is not None:
                _apply(weights, masks)
            sums["loss"] += float(loss.detach())
            sums["task_loss"] += float(task.detach())
            sums["self_reg_loss"] += float(sr.detach())
            sums["n"] += 1
            if t % every == 0 or t == end:
                wanted = cubic_sparsity(t, steps, target, warmup, final)
                if wanted > current:
                    if teacher is not None:  # the checkpoint at lower sparsity becomes the teacher
                        teacher.load_state_dict(student.state_dict())
                    importance = (state.importance() if criterion in ("pins", "platon")
                                  else [[w.detach().abs() for w in layer] for layer in weights])
                    masks = _global_mask(importance, wanted)
                    _apply(weights, masks)
                    current = wanted
            if t % every == 0 or t == steps:
                n = max(1, sums.pop("n"))
                history.append({"step": t, "sparsity": round(current, 6),
                                **{k: round(v / n, 6) for k, v in sums.items()}})
                sums = {"loss": 0.0, "task_loss": 0.0, "self_reg_loss": 0.0, "n": 0}
            progress(t / steps, f"step {t}/{steps}, sparsity {current:.2f}, loss {float(loss.detach()):.3f}")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    importance = (state.importance() if criterion in ("pins", "platon")
                  else [[w.abs() for w in layer] for layer in weights])
    return {"model": student, "importance": importance, "masks": masks, "summary": {
        "criterion": criterion, "self_reg": self_reg, "steps": steps, "target_sparsity": target,
        **mask_sparsity(masks, student), "history": history}}


def oneshot_magnitude(loaded, sparsity: float) -> tuple[nn.Module, list[list[torch.Tensor]]]:
    """A copy with the lowest-|θ| weights of the six matrices removed globally (no training),
    and its keep-masks."""
    model = private_copy(loaded.model)
    weights = prunable_weights(model)
    masks = _global_mask([[w.abs() for w in layer] for layer in weights], sparsity)
    _apply(weights, masks)
    return model, masks


def _eval(session: Session, model) -> dict:
    """Metrics of a trained model with its per-example correctness (paired comparisons)."""
    return session.evaluator.record(model=model)


def _check_train_params(params: dict) -> None:
    if params["warmup"] + params["final"] >= 1.0:
        raise ParamError("warmup + final must be < 1 (pruning needs steps in between)")
    steps = params["steps"]
    if steps - round(params["final"] * steps) <= round(params["warmup"] * steps):
        raise ParamError(f"steps={steps} leaves no pruning steps between warmup and final")


def train_run(session: Session, params: dict, progress: Progress = no_progress, criterion: str = "pins") -> dict:
    """The training mode: PINS with and without self-regularization (``criterion="platon"``: one
    PLATON run, no self-regularization), and a magnitude baseline. Returns the
    :class:`~prunelens.analysis.run_result.RunResult` shape: the record below, under its 0.1 names
    (``base``, ``runs``, ``baseline``), through :func:`~prunelens.analysis.run_result.shaped` (variants
    ``dense``, each run's name and ``baseline``; each run's summary in ``extras["runs"]``)."""
    _check_train_params(params)
    loaded = session.loaded
    train_data, note = training_data(session)
    notes = [] if train_data is not session.data else [note]
    batches = shuffled_batches(loaded.tokenizer, train_data, params["batch_size"], params["steps"],
                               params["seed"], params["max_length"])
    plan = [("pins_self_reg", "pins", True)] if criterion == "pins" else [(criterion, criterion, False)]
    if params.get("compare_self_reg"):
        plan.append(("pins_no_self_reg", "pins", False))
    if params["baseline"] == "gradual":
        plan.append(("magnitude_gradual", "magnitude", False))
    parts = len(plan) + 1
    runs, scores = {}, {}
    for i, (name, criterion, sr) in enumerate(plan):
        def sub(fraction, message, i=i, name=name):
            progress((i + fraction * 0.95) / parts, f"{name}: {message}")

        out = prune_train(loaded, batches, params, criterion, sr, sub, session.device)
        runs[name] = {**out["summary"], "evaluation": _eval(session, out["model"])}
        if i == 0:  # the method's own run
            scores = {u: normalized(aggregate(out["importance"], loaded.inventory, u)).tolist()
                      for u in UNITS}
        del out
    baseline = None
    if params["baseline"] == "oneshot":
        progress((parts - 1) / parts, "one-shot magnitude baseline")
        model, masks = oneshot_magnitude(loaded, params["target_sparsity"])
        baseline = {"criterion": "magnitude", "training": "none (one-shot, no fine-tuning)",
                    **mask_sparsity(masks, model), "evaluation": _eval(session, model)}
    elif params["baseline"] == "gradual":
        baseline = {**runs.pop("magnitude_gradual"),
                    "training": "same cubic schedule and fine-tuning budget, no self-regularization"}
    result = {"base": _eval(session, None), "runs": runs, "baseline": baseline, "scores": scores,
              "train_data": {**train_data.describe(), "examples_seen": params["steps"] * params["batch_size"]},
              "notes": notes}
    if "pins_no_self_reg" in runs:
        a, b = runs["pins_self_reg"]["evaluation"], runs["pins_no_self_reg"]["evaluation"]
        result["self_reg_gain"] = {k: a[k] - b[k] for k in ("accuracy", "loss", "margin")}
    progress(1.0, "done")
    return shaped(result)


# the iterative pruning schedule both pins and platon train with (one declaration for both)
SCHEDULE = (
    Param("target_sparsity", "float", 0.8, "final fraction of weights removed in the six "
          "matrices of every layer", 0.0, 0.99),
    Param("steps", "int", 150, "training steps (the whole budget)", 2, 10_000),
    Param("batch_size", "int", 16, "training batch size", 1, 64),
    Param("lr", "float", 1e-4, "AdamW learning rate (constant)", 1e-7, 1.0, log=True),
)
SCHEDULE_ENDS = (
    Param("warmup", "float", 0.1, "fraction of steps before pruning starts", 0.0, 0.95),
    Param("final", "float", 0.3, "fraction of steps fine-tuned at the target sparsity", 0.0, 0.95),
)


def _trainer():
    return Trainer(
        params=(
            *SCHEDULE,
            Param("eta", "float", 1e-4, "η in S = −θ·g + η·g² (the step size; usually = lr)",
                  0.0, 1.0, log=True),
            Param("beta1", "float", 0.85, "EMA factor of the importance Ī", 0.0, 0.9999),
            Param("beta2", "float", 0.99, "EMA factor of the uncertainty U", 0.0, 0.9999),
            Param("prune_every", "int", 10, "steps between pruning steps (and teacher refreshes)", 1, 10000),
            *SCHEDULE_ENDS,
            Param("temperature", "float", 2.0, "softening temperature T of self-regularization",
                  0.1, 100.0, step=0.1),
            Param("delta_t", "int", 1, "window of steps whose mean |S| enters the EMA at once (official deltaT)", 1, 64),
            Param("signed", "bool", False, "smooth the signed S instead of |S| (not the official method)"),
            Param("adaptive_alpha", "bool", False, "weight self-regularization per example by "
                  "α = 1 − H(p_student)/log C (official option)"),
            Param("compare_self_reg", "bool", True, "also run without self-regularization"),
            Param("baseline", "choice", "gradual", "magnitude baseline at the same weight sparsity: "
                  "gradual (same schedule and budget: the equal-budget control), oneshot (no "
                  "training), or none",
                  choices=("oneshot", "gradual", "none")),
            Param("max_length", "int", 128, "tokens per training example", 8, 512),
            SEED,
        ),
        run=train_run,
        cost=train_cost,
        workload=train_workload,
        summary="Iterative weight pruning of Q/K/V/O/FFN matrices by smoothed PINS importance with "
                "a cubic schedule, with and without self-regularization, against magnitude pruning.",
    )


METHOD = Pins(
    needs_classes=True,
    joint=True,
    name="pins",
    title="PINS principled importance",
    plain="Estimate for every weight how much the loss would change without it, smooth that over several batches, and add it up per unit.",
    summary="|S| = |−θ·g + η·g²| per weight, PLATON-smoothed (Ī·U ≥ 0), summed to heads, neurons and blocks; "
            "training mode prunes iteratively with self-regularization.",
    units=UNITS,
    params=(
        *SCORE_BATCHES,
        Param("eta", "float", 1e-4, "η in S = −θ·g + η·g² (a learning rate)", 0.0, 1.0, log=True),
        Param("beta1", "float", 0.85, "EMA factor of the importance Ī", 0.0, 0.9999),
        Param("beta2", "float", 0.99, "EMA factor of the uncertainty U", 0.0, 0.9999),
        Param("delta_t", "int", 1, "window of batches whose mean |S| enters the EMA at once (official deltaT)", 1, 64),
        Param("signed", "bool", False, "smooth the signed S instead of |S| (not the official method)"),
        Param("normalize", "bool", True, "divide by the largest |score| (ranking unchanged)"),
        SEED,
    ),
    cost=score_cost,
    default_scope="global",
    default_sparsity=0.5,
    paper="Ren & Zhu, ACL Findings 2023 (arXiv 2305.12394)",
    trainer=_trainer(),
    deviations=(
        Deviation("step score", "|S|, S = −θ·g + η·g², η = the current learning rate (official Pruner.py)",
                  "|S| with η a parameter (default 1e-4 = the training learning rate)"),
        Deviation("smoothing", "Ī = EMA(|S|), U = EMA(| |S| − Ī |), the window's mean |S| entering one "
                  "window late; β2 = 2 selects a running variance", "the same update and lag; β2 = 2 not offered"),
        Deviation("live scores", "not in the paper (importance exists only during training)",
                  "Ī·U accumulated over a few training-split batches without any update, summed to units"),
        Deviation("self-regularization", "T²·KL(teacher ‖ student), optional entropy-adaptive α; the teacher "
                  "is the latest checkpoint at lower sparsity", "the same (α off by default)"),
        Deviation("budget", "BERT-base, GLUE, full fine-tuning epochs on a GPU",
                  "MiniLM-L6 on Rotten Tomatoes, 150 steps × 16, embeddings frozen (CPU)"),
        Deviation("signed variant", "—", "an explicit option (signed S before the EMA): not the method"),
    ),
)
