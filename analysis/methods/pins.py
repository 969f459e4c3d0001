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

Training follows the official code (DRSY/PINS ``run_glue.py``, ``glue.sh``) by default; each
setting is an option whose other value is 0.2's behaviour (:data:`OFFICIAL_VALUES` are the
defaults, :data:`V02_VALUES` reproduce 0.2's runs): the self-regularized loss α·T²·KL + (1 − α)·CE
with the entropy α always on (:func:`mixed_loss`; ``self_reg_loss=added``: CE + T²·KL), the teacher
re-selected every 50 steps as the best student on held-out examples (``teacher=latest``: the
student at every sparsity increase, the paper's wording), deltaT = 10 (``delta_t``; 0.2: 1), the
biases of the six matrices in the pool (``bias_pool``), gradient clipping at 1.0 before the
importance update (``clip_grad``), linear warm-up and decay with η following the rate
(``lr_schedule``).

Remaining deviations (also in docs/FIDELITY.md): the teacher is selected on 256 held-out
*training* examples (the official code selects on the GLUE dev set, which it also reports) and the
final model is the last step's (the official one is the best dev checkpoint); η = ``eta`` × the
schedule factor (equal to the official current rate at the defaults); β2 = 2 (a running variance
for U) is not offered; the embeddings are frozen in training mode (saves the dense embedding
update); the budget is 150 steps of 16 from the fine-tuned default.

- Score-only mode (``compute``, live): on a private copy of the model (the shared one is never
  touched), |S| is accumulated over ``batches`` seeded random batches of the *training* split
  (:func:`prunelens.analysis.batches.training_data`: the default data's train split, else the session's
  data) without any update (eval mode, gradient of the batch-mean cross-entropy), then Ī·U is summed to heads
  (their Q/K/V rows and O columns), neurons (intermediate row + output column), attention and FFN
  blocks (all their matrices); by default divided by the largest |score| of the unit (raw Ī·U is
  ~1e-10; the ranking is unchanged). The window still open after the last batch is flushed into
  Ī and U (:meth:`PinsState.flush`): 0.2 kept the training lag here, so the last window never
  counted and with ``delta_t`` ≥ ``batches`` every score was exactly 0 (pruning fell back to index
  order, silently).
- Training mode (``prunelens train --method pins``, :func:`train_run`): iterative pruning of the
  pool (:func:`prunable_pool`: those six matrices per layer, and their biases), globally across
  them, with a cubic schedule (:func:`cubic_sparsity`) from 0 to the target over a fixed step
  budget; at every pruning step the lowest Ī·U entries are masked (kept at zero after every
  optimizer step). Runs with and without self-regularization, plus a magnitude baseline at the
  same sparsity trained the same way, each evaluated on the session's evaluation data. With
  ``signed``, large weights whose θ·g has a noisy sign rank lowest and are dropped first (0.1
  measured chance accuracy for that variant at 80 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunelens.analysis.batches import StreamedBatches, epoch_order, training_data
from prunelens.analysis.data import TextData, tokenize_batches
from prunelens.analysis.errors import ParamError
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.layout import MATRICES, UNITS, encoder_matrices, per_unit
from prunelens.analysis.methods.base import SEED, Deviation, Method, Param, Progress, Trainer, Work, no_progress, training_work
from prunelens.analysis.models import Inventory
from prunelens.analysis.objectives import gradient_losses, model_output
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
    """The scored/pruned weights of every layer, in its family's role order
    (:func:`prunelens.analysis.layout.layer_matrices`; BERT: :data:`~prunelens.analysis.layout.MATRICES`)."""
    return [[lin.weight for lin in matrices.values()] for matrices in encoder_matrices(model)]


def bias_names(model: nn.Module) -> list[list[str]]:
    """Per layer, the names (its role order) of the matrices that have a bias."""
    return [[name for name, lin in matrices.items() if lin.bias is not None]
            for matrices in encoder_matrices(model)]


def prunable_pool(model: nn.Module, biases: bool) -> list[list[nn.Parameter]]:
    """What training mode scores and prunes, per layer: the weights (the family's role order) and,
    with ``biases`` (the official pool: its name filter matches the biases too), then the biases
    of those matrices (:func:`bias_names` order)."""
    pool = prunable_weights(model)
    if not biases:
        return pool
    return [weights + [lin.bias for lin in matrices.values() if lin.bias is not None]
            for weights, matrices in zip(pool, encoder_matrices(model))]


def aggregate(weight_scores: list[list[torch.Tensor]], inv: Inventory, unit: str,
              biases: list[list[str]] | None = None) -> np.ndarray:
    """Sum per-weight scores (each layer's, in its role order ``inv.roles``, then the biases named by
    ``biases`` when the pool has them) to ``unit`` (:func:`prunelens.analysis.layout.per_unit`: a
    head its Q/K/V rows and O columns, a neuron its intermediate row and output column, a block
    all of its matrices)."""
    roles = getattr(inv, "roles", None) or MATRICES
    n = len(roles)
    weights = [dict(zip(roles, layer[:n])) for layer in weight_scores]
    bias = None if biases is None else [dict(zip(names, layer[n:])) for names, layer in zip(biases, weight_scores)]
    return per_unit(weights, inv, unit, bias)


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
        self._flushed_at: int | None = None  # the update count of the last flush

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

    @torch.no_grad()
    def flush(self) -> None:
        """Fold the open window's mean score into Ī and U (the EMA step the next window would
        make). Training never needs it (the official lag); score-only accumulation ends with it,
        else the last window never reaches the importance and with ``delta_t`` ≥ the number of
        batches every score stays exactly 0. A no-op before the first update and after a flush."""
        if self.updates == 0 or self._flushed_at == self.updates:
            return
        for i, layer in enumerate(self.ipt):
            for j, ipt in enumerate(layer):
                self.ibar[i][j], self.unc[i][j] = ema_update(self.ibar[i][j], self.unc[i][j], ipt,
                                                             self.beta1, self.beta2)
        self._flushed_at = self.updates

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


# β1 > 0: at β1 = 0, Ī is the newest window's score itself and U = EMA(| |S| − Ī |) stays exactly 0,
# so every importance Ī·U is 0 (the official PLATON code refuses β1 outside (0, 1))
BETA1 = Param("beta1", "float", 0.85, "EMA factor of the importance Ī (> 0: at 0 the uncertainty U, "
              "hence every score, is 0)", 0.01, 0.9999)
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
    if params.get("teacher") == "best_dev":  # the teacher's selection evaluations
        evals += math.ceil(int(params["steps"]) / int(params["teacher_every"])) * SELECTION_EXAMPLES
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
                  device: str = "cpu", eta: float | None = None,
                  objective: str = "labels") -> list[list[torch.Tensor]]:
    """Ī·U per weight after ``batches`` gradient evaluations on a private copy (no updates);
    ``eta`` overrides ``params["eta"]`` (PLATON: 0); the loss is ``objective``'s gradient loss
    (:func:`prunelens.analysis.objectives.gradient_losses`; the copy is the unpruned model)."""
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
            outputs = model_output(model, batch.to(device).model_inputs(), loaded.pooling)
            gradient_losses(objective, outputs, batch.labels).mean().backward()
            state.update()
            progress((i + 1) / len(batches), f"pins scores, batch {i + 1}/{len(batches)}")
    state.flush()  # the last window enters too (0.2 dropped it: all scores 0 when delta_t >= batches)
    return state.importance()


# the live scores' loss under each objective (the training mode needs the gold labels)
LOSS_DEVIATION = Deviation(
    "loss without labels", "cross-entropy against the gold labels",
    "live scores: the objective's gradient loss (agreement: cross-entropy against the unpruned "
    "model's top class, TextPruner's self-supervised mode; embedding: the in-batch contrastive loss "
    "against the unpruned sentence vectors); the training mode needs labels")


@dataclass
class Pins(Method):
    eta_param: bool = True  # False for PLATON (the same method object type): step score |θ·g|

    def compute_units(self, ctx, units, params):
        """One scoring run of the per-weight importance, summed to every unit asked for."""
        data, _ = training_data(ctx)  # label-using importance: the train split when known
        imp = score_weights(ctx.loaded, data, params, ctx.progress, ctx.device,
                            eta=None if self.eta_param else 0.0, objective=ctx.objective)
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


def mask_sparsity(masks: list[list[torch.Tensor]] | None, model: nn.Module, biases: bool = False) -> dict:
    """Realized sparsity of keep-masks over the pool (:func:`prunable_pool`: the matrices of
    every layer, and their biases with ``biases``; all kept when ``masks`` is None), per layer ×
    matrix (weights), the biases' share, and the fraction of exact zeros in the pool."""
    pool = prunable_pool(model, biases)
    roles = list(encoder_matrices(model)[0])  # the family's matrices (BERT: MATRICES)
    n = len(roles)
    removed = total = zeros = bias_removed = bias_total = 0
    per = []
    for i, layer in enumerate(pool):
        row = []
        for j, w in enumerate(layer):
            r = 0 if masks is None else int((~masks[i][j]).sum())
            removed, total, zeros = removed + r, total + w.numel(), zeros + int((w == 0).sum())
            if j < n:
                row.append(round(r / w.numel(), 6))
            else:
                bias_removed, bias_total = bias_removed + r, bias_total + w.numel()
        per.append(row)
    out = {"weight_sparsity": removed / max(1, total), "pruned_weights": removed,
           "total_weights": total, "zero_fraction": zeros / max(1, total), "layer_sparsity": per,
           "layer_sparsity_columns": roles}
    if biases:
        out["bias_sparsity"] = bias_removed / max(1, bias_total)
    return out


def selection_accuracy(model: nn.Module, batches, device: str = "cpu") -> float:
    """Accuracy of ``model`` on held-out batches (the dev-selected teacher's criterion)."""
    was_training = model.training
    model.eval()
    right = count = 0
    with torch.no_grad():
        for batch in batches:
            logits = model(**batch.to(device).model_inputs()).logits
            right += int((logits.argmax(-1).cpu() == batch.labels).sum())
            count += len(batch.labels)
    model.train(was_training)
    return right / max(1, count)


def mixed_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official self-regularized loss (DRSY/PINS ``run_glue.py``): per example
    α·T²·KL(teacher ‖ student) + (1 − α)·CE with α = :func:`entropy_alpha` of the student, batch
    mean. Returns (loss, the CE part, the KL part), each weighted and averaged. (The official
    code writes the teacher-to-student cross-entropy, which differs from the KL by the teacher's
    entropy: the same gradient.)"""
    alpha = entropy_alpha(logits)
    log_s = F.log_softmax(logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = temperature**2 * (log_t.exp() * (log_t - log_s)).sum(-1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    ce_part, kl_part = ((1.0 - alpha) * ce).mean(), (alpha * kl).mean()
    return ce_part + kl_part, ce_part, kl_part


def _optimizer(params: dict, model: nn.Module):
    """The run's optimizer: AdamW without weight decay (PINS's official run_glue.py), or Adamax
    (PLATON's official mt-dnn runs) whose decoupled weight decay (0.01, not on biases and
    LayerNorm) :func:`_decay` applies after each step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.get("optimizer", "adamw") == "adamax":
        return torch.optim.Adamax(trainable, lr=params["lr"], weight_decay=0.0, foreach=True)
    return torch.optim.AdamW(trainable, lr=params["lr"], weight_decay=0.0, foreach=True)


ADAMAX_WEIGHT_DECAY = 0.01  # PLATON's mt-dnn param groups: 0.01, none on biases and LayerNorm


@torch.no_grad()
def _decay(model: nn.Module, lr: float) -> None:
    """Decoupled weight decay θ ← θ − lr·0.01·θ on the matrices (not biases, LayerNorm)."""
    for name, p in model.named_parameters():
        if p.requires_grad and p.ndim > 1 and "LayerNorm" not in name:
            p.mul_(1.0 - lr * ADAMAX_WEIGHT_DECAY)


def _lr_factors(params: dict, steps: int) -> list[float]:
    """The learning-rate factor of every step 1..steps: constant 1 (0.2), or linear warm-up over
    the pruning warm-up's steps then linear decay to 0 (``transformers``'
    ``get_linear_schedule_with_warmup``, as both official codes schedule it)."""
    if params.get("lr_schedule", "constant") == "constant":
        return [1.0] * steps
    from transformers import get_linear_schedule_with_warmup

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = get_linear_schedule_with_warmup(probe, max(1, round(params["warmup"] * steps)), steps)
    factors = []
    for _ in range(steps):
        probe.step()
        schedule.step()  # as the official loop: the rate is stepped before the update uses it
        factors.append(float(probe.param_groups[0]["lr"]))
    return factors


def prune_train(loaded, batches, params: dict, criterion: str = "pins", self_reg: bool = True,
                progress: Progress = no_progress, device: str = "cpu", select_batches=None) -> dict:
    """One iterative prune + fine-tune run on a copy of ``loaded.model``; returns the trained
    model (``"model"``), its importance (``"importance"``) and a JSON-able summary.

    Per step, in the official order: the loss (CE; self-regularized: the official α-mix or 0.2's
    CE + T²·KL), backward, gradient clipping at ``clip_grad`` (0: none), the importance update
    (before the optimizer step; PLATON's official code, ``importance_after_step``, after it, on
    the stepped weights with the same gradients), the optimizer step at the scheduled rate (η of
    the score follows the same schedule), the masks. The self-regularization teacher: the model
    as loaded, replaced by the student whenever the student's accuracy on ``select_batches``
    (evaluated after steps 1, 1 + teacher_every, ...) beats the best so far (``teacher=best_dev``,
    the official code), or by the student at every sparsity increase (``teacher=latest``)."""
    torch.manual_seed(params["seed"])
    student = private_copy(loaded.model, device)
    embeddings = student.base_model.embeddings
    for p in student.parameters():
        p.requires_grad_(True)
    for p in embeddings.parameters():  # frozen: saves the dense word-embedding update
        p.requires_grad_(False)
    biases = bool(params.get("bias_pool", False))
    weights = prunable_pool(student, biases)
    teacher = private_copy(loaded.model, device).eval() if self_reg else None
    best_dev = teacher is not None and params.get("teacher", "latest") == "best_dev"
    if best_dev and select_batches is None:
        raise ValueError("teacher=best_dev needs held-out selection batches")
    best = selection_accuracy(teacher, select_batches, device) if best_dev else None
    mixed = params.get("self_reg_loss", "added") == "alpha_mix"
    after_step = bool(params.get("importance_after_step", False))
    clip = float(params.get("clip_grad", 0.0))
    state = PinsState(weights, params.get("eta", 0.0), params["beta1"], params["beta2"],
                      params["delta_t"], params.get("signed", False))
    optimizer = _optimizer(params, student)
    adamax = params.get("optimizer", "adamw") == "adamax"
    trainable = [p for p in student.parameters() if p.requires_grad]
    steps = len(batches)
    factors = _lr_factors(params, steps)
    warmup = round(params["warmup"] * steps)
    final = round(params["final"] * steps)
    end = steps - final
    target, every, temp = params["target_sparsity"], params["prune_every"], params.get("temperature", 2.0)
    teacher_every = int(params.get("teacher_every", 50))
    masks = None
    current = 0.0
    history: list[dict] = []
    selections: list[dict] = []
    sums = {"loss": 0.0, "task_loss": 0.0, "self_reg_loss": 0.0, "n": 0}
    student.train()
    with torch.enable_grad():
        for t, batch in enumerate(batches, start=1):
            lr = params["lr"] * factors[t - 1]
            for group in optimizer.param_groups:
                group["lr"] = lr
            state.eta = params.get("eta", 0.0) * factors[t - 1]  # η = the current rate (official)
            inputs = batch.to(device).model_inputs()
            logits = student(**inputs).logits
            labels = batch.labels.to(logits.device)
            task = F.cross_entropy(logits, labels)
            loss = task
            sr = torch.zeros(())
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(**inputs).logits
                if mixed:
                    loss, task, sr = mixed_loss(logits, teacher_logits, labels, temp)
                else:
                    sr = self_reg_loss(logits, teacher_logits, temp, params.get("adaptive_alpha", False))
                    loss = loss + sr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, clip)
            scored = criterion in ("pins", "platon")
            if scored and not after_step:
                state.update()
            optimizer.step()
            if adamax:
                _decay(student, lr)
            if scored and after_step:
                state.update()
            if masks is not None:
                _apply(weights, masks)
            sums["loss"] += float(loss.detach())
            sums["task_loss"] += float(task.detach())
            sums["self_reg_loss"] += float(sr.detach())
            sums["n"] += 1
            if t % every == 0 or t == end:
                wanted = cubic_sparsity(t, steps, target, warmup, final)
                if wanted > current:
                    if teacher is not None and not best_dev:  # 0.2 / the paper: the checkpoint at lower sparsity
                        teacher.load_state_dict(student.state_dict())
                    importance = (state.importance() if scored
                                  else [[w.detach().abs() for w in layer] for layer in weights])
                    masks = _global_mask(importance, wanted)
                    _apply(weights, masks)
                    current = wanted
            if best_dev and (t - 1) % teacher_every == 0:  # the official evaluation steps
                score = selection_accuracy(student, select_batches, device)
                replaced = score > best
                if replaced:
                    best = score
                    teacher.load_state_dict(student.state_dict())
                selections.append({"step": t, "accuracy": round(score, 6), "teacher_replaced": replaced})
            if t % every == 0 or t == steps:
                n = max(1, sums.pop("n"))
                history.append({"step": t, "sparsity": round(current, 6), "lr": lr,
                                **{k: round(v / n, 6) for k, v in sums.items()}})
                sums = {"loss": 0.0, "task_loss": 0.0, "self_reg_loss": 0.0, "n": 0}
            progress(t / steps, f"step {t}/{steps}, sparsity {current:.2f}, loss {float(loss.detach()):.3f}")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    importance = (state.importance() if criterion in ("pins", "platon")
                  else [[w.abs() for w in layer] for layer in weights])
    summary = {"criterion": criterion, "self_reg": self_reg, "steps": steps, "target_sparsity": target,
               **mask_sparsity(masks, student, biases), "history": history}
    if selections:
        summary["teacher_selection"] = selections
    return {"model": student, "importance": importance, "masks": masks, "summary": summary,
            "biases": bias_names(student) if biases else None}


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


SELECTION_EXAMPLES = 256  # training-split examples held out to select the teacher (teacher=best_dev)


def selection_split(data: TextData, seed: int) -> tuple[TextData, TextData]:
    """(training rows, held-out selection rows): a seeded :data:`SELECTION_EXAMPLES` (at most a
    quarter of the data) leave the training data. The official code selects the teacher on the
    GLUE dev set, which is also what it reports; prunelens keeps its evaluation sentences out of
    every training decision."""
    n = min(SELECTION_EXAMPLES, len(data) // 4)
    if n < 1:
        raise ParamError("teacher=best_dev needs at least 4 training examples (or teacher=latest)")
    order = np.random.default_rng(seed + 7919).permutation(len(data))
    return data.rows(np.sort(order[n:])), data.rows(np.sort(order[:n]), split=f"{data.split} (held out)")


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
    select_batches, selection = None, None
    if criterion == "pins" and params.get("teacher") == "best_dev":
        train_data, held_out = selection_split(train_data, params["seed"])
        select_batches, _ = tokenize_batches(loaded.tokenizer, held_out, 64, params["max_length"])
        selection = {**held_out.describe(), "role": "held out of training: selects the teacher"}
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

        out = prune_train(loaded, batches, params, criterion, sr, sub, session.device, select_batches)
        runs[name] = {**out["summary"], "evaluation": _eval(session, out["model"])}
        if i == 0:  # the method's own run
            scores = {u: normalized(aggregate(out["importance"], loaded.inventory, u, out["biases"])).tolist()
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
    if selection is not None:
        result["selection_data"] = selection
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
    Param("lr", "float", 1e-4, "peak learning rate (see lr_schedule)", 1e-7, 1.0, log=True),
)
# how the official codes train, each an option of both methods whose default is the official value
# and whose other value is 0.2's behaviour (:data:`V02_VALUES`)
OFFICIAL_TRAINING = (
    Param("lr_schedule", "choice", "linear", "learning rate (and η) schedule: linear = warm-up over "
          "the pruning warm-up's steps, then linear decay to 0 (both official codes); constant (0.2)",
          choices=("constant", "linear")),
    Param("clip_grad", "float", 1.0, "clip the gradient norm at this before the importance update "
          "and the step (official max_grad_norm: 1.0; 0 = off, as 0.2)", 0.0, 100.0, step=0.1),
    Param("bias_pool", "bool", True, "score and prune the six matrices' biases together with their "
          "weights (the official pool: on; off: weights only, as 0.2)"),
)
# the official codes' settings of the training options (DRSY/PINS run_glue.py + glue.sh;
# QingruZhang/PLATON GLUE scripts + mt_dnn): the defaults
OFFICIAL_VALUES = {
    "pins": {"lr_schedule": "linear", "clip_grad": 1.0, "bias_pool": True, "delta_t": 10,
             "self_reg_loss": "alpha_mix", "teacher": "best_dev"},
    "platon": {"lr_schedule": "linear", "clip_grad": 1.0, "bias_pool": True, "delta_t": 10,
               "optimizer": "adamax", "importance_after_step": True},
}
# every training option at its 0.2 value (pass them to reproduce 0.2's runs)
V02_VALUES = {
    "pins": {"lr_schedule": "constant", "clip_grad": 0.0, "bias_pool": False, "delta_t": 1,
             "self_reg_loss": "added", "teacher": "latest"},
    "platon": {"lr_schedule": "constant", "clip_grad": 0.0, "bias_pool": False, "delta_t": 1,
               "optimizer": "adamw", "importance_after_step": False},
}
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
            BETA1,
            Param("beta2", "float", 0.99, "EMA factor of the uncertainty U", 0.0, 0.9999),
            Param("prune_every", "int", 10, "steps between pruning steps (and, with teacher=latest, "
                  "teacher refreshes)", 1, 10000),
            *SCHEDULE_ENDS,
            Param("temperature", "float", 2.0, "softening temperature T of self-regularization",
                  0.1, 100.0, step=0.1),
            Param("delta_t", "int", 10, "window of steps whose mean |S| enters the EMA at once "
                  "(official deltaT: 10 in every official script; 0.2: 1)", 1, 64),
            Param("signed", "bool", False, "smooth the signed S instead of |S| (not the official method)"),
            Param("self_reg_loss", "choice", "alpha_mix", "self-regularized loss: alpha_mix = per example "
                  "α·T²·KL + (1 − α)·CE, α = 1 − H(p_student)/log C (the official code); added = "
                  "CE + T²·KL (0.2)", choices=("added", "alpha_mix")),
            Param("adaptive_alpha", "bool", False, "with self_reg_loss=added: weight the KL per example "
                  "by α (0.2's option)"),
            Param("teacher", "choice", "best_dev", "self-regularization teacher: best_dev = the best "
                  "student so far on held-out training examples, evaluated every teacher_every steps "
                  "(the official code); latest = the student at every sparsity increase (the paper's "
                  "wording, 0.2)", choices=("latest", "best_dev")),
            Param("teacher_every", "int", 50, "steps between the teacher's selection evaluations "
                  "(teacher=best_dev; official logging_steps 50)", 1, 10000),
            *OFFICIAL_TRAINING,
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
    training_split=True,  # scores from the training split alone (the store keys them by it)
    title="PINS principled importance",
    plain="Estimate for every weight how much the loss would change without it, smooth that over several batches, and add it up per unit.",
    summary="|S| = |−θ·g + η·g²| per weight, PLATON-smoothed (Ī·U ≥ 0), summed to heads, neurons and blocks; "
            "training mode prunes iteratively with self-regularization.",
    units=UNITS,
    params=(
        *SCORE_BATCHES,
        Param("eta", "float", 1e-4, "η in S = −θ·g + η·g² (a learning rate)", 0.0, 1.0, log=True),
        BETA1,
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
        Deviation("step score", "|S|, S = −θ·g + η·g², η = the current (scheduled) learning rate "
                  "(official Pruner.py)", "the same: η = eta × the schedule's factor (eta defaults to the "
                  "peak learning rate)"),
        Deviation("smoothing", "Ī = EMA(|S|), U = EMA(| |S| − Ī |), the window's mean |S| entering one "
                  "window late, deltaT = 10 in every script; β2 = 2 selects a running variance",
                  "the same update, lag and deltaT = 10 (delta_t; 0.2: 1); β2 = 2 not offered"),
        Deviation("pool", "every parameter whose name holds attention.self, attention.output.dense, "
                  "intermediate.dense or output.dense: the six matrices and their biases",
                  "the same (bias_pool; off: weights only, as 0.2); embeddings frozen in training (CPU)"),
        Deviation("teacher", "the best dev-accuracy student, evaluated every 50 steps on the GLUE dev "
                  "set (also the reported set); the paper's text: the latest checkpoint at lower sparsity",
                  "the best student on 256 held-out training-split examples every 50 steps (the "
                  "evaluation sentences never steer training); teacher=latest: the paper's wording (0.2)"),
        Deviation("final model", "the best dev checkpoint at the final sparsity (saved when the dev "
                  "score improves)", "the last step's model (no selection on the evaluation sentences)"),
        Deviation("live scores", "not in the paper (importance exists only during training)",
                  "Ī·U accumulated over a few training-split batches without any update (deltaT 1), the "
                  "open window flushed at the end (0.2 dropped it), summed to units (weights only)"),
        Deviation("budget", "BERT-base, GLUE, full fine-tuning epochs on a GPU",
                  "MiniLM-L6 on Rotten Tomatoes, 150 steps × 16 from the fine-tuned model (CPU)"),
        Deviation("signed variant", "—", "an explicit option (signed S before the EMA): not the method"),
        LOSS_DEVIATION,
    ),
)
