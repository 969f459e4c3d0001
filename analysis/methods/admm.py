"""``admm``: ADMM semi-structured N:M pattern pruning (Wang, arXiv 2407.08334).

Owns three things:

* **Live scores** (``compute``): the one-shot magnitude N:M projection of the six linear weights
  of every encoder layer (Q, K, V, attention output, intermediate, output), no ADMM, instant. A
  unit's score is the share of its squared weight norm that survives the projection,
  ``||Π(W)_u||² / ||W_u||²`` (a head: its Q/K/V rows and O columns; a neuron: its intermediate
  row and output column; a block: all of its matrices). Equivalently ``1 − ||W − Π(W)||²/||W||²``,
  which is the definition ``admm-quant`` reuses for its grid.
* **Pattern views**: :func:`pattern_of` (a small slice of one matrix's mask) and
  :func:`pattern_rows` (accuracy of a *copy* of the model projected to several N:M; through the
  store as :func:`prunelens.analysis.operations.accuracy_by_pattern`).
* **Training mode** (``prunelens train --method admm``): ADMM on a copy of the model.
  W-step: optimizer steps on ``L(W) + ρ/2·Σ||W − Z + U||²`` (by default in proximal-gradient
  form: Adam on L, then the penalty's exact proximal step; ``penalty=gradient`` sums the
  gradients instead); Z-step ``Z = Π_S(W + U)``;
  ``U ← U + W − Z``; ρ grows by ``rho_growth`` each iteration (U is rescaled by ρ_old/ρ_new, the
  scaled-dual convention). Then ``W ← Π_S(W)`` and a short masked fine-tune with SR-STE
  (forward with projected weights, gradients to the dense weights plus ``λ·(W − Π_S(W))``, which
  for N:M is ``λ·(1 − mask)⊙W``); the final weights are projected once more, so they satisfy the
  pattern exactly. The shared model is never touched. The fine-tune's optimizer is Adam at ``lr``
  by default (under Adam the λ term is a nominal share of each step: docs/FIDELITY.md measures
  λ = 0 against the default); ``srste_optimizer=sgd`` is the official SR-STE recipe
  (aojunzz/NM-sparsity: SGD, momentum 0.9, weight decay 5e-5, cosine decay after a warm-up, at
  ``sgd_lr``), where λ·(1 − mask)⊙W enters the momentum like the weight decay does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prunelens.analysis.batches import StreamedBatches, epoch_order, training_data
from prunelens.analysis.data import TextData
from prunelens.analysis.errors import ParamError
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.layout import UNITS, encoder_matrices, layer_matrices, per_unit
from prunelens.analysis.methods.base import SEED, Deviation, Method, Param, Progress, Trainer, Work, no_progress, training_work
from prunelens.analysis.models import LoadedModel
from prunelens.analysis.patterns import (
    check_bits,
    check_nm,
    distinct_per_row,
    exactly_n_fraction,
    kbit_scale,
    nm_mask,
    project_kbit,
    project_nm,
)
from prunelens.analysis.run_result import shaped
from prunelens.analysis.session import Session

DEFAULT_PATTERNS = ((1, 4), (2, 4), (3, 4), (2, 8), (4, 8))
SHARE_UNITS = tuple(u for u in UNITS if u != "neuron")  # the run's stored shares: heads and blocks
# a run's variants in the order run_admm evaluates them (and a reader compares them); runs stored
# without their recorded order come back with sorted keys
VARIANT_ORDER = ("dense", "oneshot", "oneshot_finetuned", "admm_projected", "admm")


# ---------------------------------------------------------------------------------------------
# projections and the weights they apply to


@dataclass(frozen=True)
class Projection:
    """Π_S for one constraint set; ``label`` names it in reports."""

    label: str
    baseline: str  # what the one-shot projection is called in reports

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Raise ParamError if the constraint does not fit the model's matrices."""

    def stats(self, weights: list[torch.Tensor]) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class NMProjection(Projection):
    n: int = 2
    m: int = 4

    def __call__(self, weight):
        return project_nm(weight, self.n, self.m)

    def check(self, model):
        for i, name, linear in constrained_linears(model):
            if i:
                break
            check_nm(self.n, self.m, linear.in_features, f"the {name} matrix")

    def stats(self, weights):
        blocks = sum(w.numel() // self.m for w in weights)
        exact = sum(exactly_n_fraction(w, self.n, self.m) * (w.numel() // self.m) for w in weights)
        zeros = sum(int((w == 0).sum()) for w in weights)
        return {"pattern": self.label, "exactly_n_fraction": exact / blocks,
                "sparsity": zeros / sum(w.numel() for w in weights)}


@dataclass(frozen=True)
class KBitProjection(Projection):
    bits: int = 4

    def __call__(self, weight):
        return project_kbit(weight, self.bits)

    def stats(self, weights):
        on_grid = total = 0
        most = 0
        for w in weights:
            scale = kbit_scale(w, self.bits)
            steps = w.detach() / scale
            on_grid += int((steps - steps.round()).abs().le(1e-4).sum())
            total += w.numel()
            most = max(most, int(distinct_per_row(w).max()))
        return {"pattern": self.label, "on_grid_fraction": on_grid / total,
                "max_distinct_per_row": most, "grid_size": 2**self.bits - 1}


def nm_projection(n: int, m: int) -> NMProjection:
    check_nm(n, m)
    return NMProjection(label=f"{n}:{m}", baseline=f"one-shot magnitude {n}:{m}", n=n, m=m)


def kbit_projection(bits: int) -> KBitProjection:
    check_bits(bits)
    return KBitProjection(label=f"{bits}-bit", baseline=f"plain {bits}-bit rounding", bits=bits)


def constrained_linears(model: nn.Module) -> list[tuple[int, str, nn.Linear]]:
    return [(i, name, lin) for i, matrices in enumerate(encoder_matrices(model))
            for name, lin in matrices.items()]


@torch.no_grad()
def apply_projection(model: nn.Module, project: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace every constrained weight of ``model`` (a copy!) by its projection, in place."""
    for _, _, linear in constrained_linears(model):
        linear.weight.copy_(project(linear.weight))


# ---------------------------------------------------------------------------------------------
# live scores


def unit_shares(model: nn.Module, inventory, unit: str,
                project: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Per unit, ``1 − ||W − Π(W)||² / ||W||²`` over the weights the unit owns (for N:M this is
    the share of squared norm that survives). Shaped ``inventory.unit_shape(unit)``."""
    full, lost = [], []
    for matrices in encoder_matrices(model):
        weights = {name: module.weight.detach() for name, module in matrices.items()}
        full.append({name: w.double() ** 2 for name, w in weights.items()})
        lost.append({name: (w - project(w)).double() ** 2 for name, w in weights.items()})
    e_full, e_lost = per_unit(full, inventory, unit), per_unit(lost, inventory, unit)
    return 1.0 - e_lost / np.where(e_full > 0, e_full, 1.0)


class Admm(Method):
    def projection(self, params: dict) -> Projection:
        return nm_projection(params["n"], params["m"])

    def compute(self, ctx, unit, params):
        projection = self.projection(params)
        projection.check(ctx.loaded.model)
        ctx.progress(0.0, f"{projection.label} projection")
        scores = unit_shares(ctx.loaded.model, ctx.loaded.inventory, unit, projection)
        ctx.progress(1.0, f"{projection.label} projection")
        return scores


# ---------------------------------------------------------------------------------------------
# pattern views (no store I/O here: operations.accuracy_by_pattern reads through the store)


@dataclass
class PatternSlice:
    """A window of one matrix: its weights and the N:M keep-mask (1 = kept)."""

    layer: int
    matrix: str
    n: int
    m: int
    row_start: int
    col_start: int
    weights: np.ndarray
    mask: np.ndarray

    def as_dict(self) -> dict:
        return {"layer": self.layer, "matrix": self.matrix, "n": self.n, "m": self.m,
                "row_start": self.row_start, "col_start": self.col_start,
                "weights": self.weights.tolist(), "mask": self.mask.tolist()}


def _window(spec: int | tuple[int, int], size: int, what: str) -> tuple[int, int]:
    start, stop = (0, spec) if isinstance(spec, int) else (int(spec[0]), int(spec[1]))
    if not 0 <= start < stop:
        raise ParamError(f"{what} window must be a positive count or (start, stop), got {spec!r}")
    return start, min(stop, size)


def pattern_of(loaded: LoadedModel, layer: int, matrix: str, n: int = 2, m: int = 4,
               rows: int | tuple[int, int] = 16, cols: int | tuple[int, int] = 32) -> PatternSlice:
    """The N:M mask of a window of one constrained matrix (``rows``/``cols``: a count from the
    top-left corner, or ``(start, stop)``). The column window is widened to whole blocks."""
    layers = loaded.layers()
    roles = list(layer_matrices(layers[0]))
    if matrix not in roles:
        raise ParamError(f"unknown matrix '{matrix}' (choose one of: {', '.join(roles)})")
    if not 0 <= layer < len(layers):
        raise ParamError(f"layer {layer} does not exist (the model has layers 0..{len(layers) - 1})")
    weight = layer_matrices(layers[layer])[matrix].weight.detach()
    check_nm(n, m, weight.shape[1], f"the {matrix} matrix")
    r0, r1 = _window(rows, weight.shape[0], "row")
    c0, c1 = _window(cols, weight.shape[1], "column")
    c0, c1 = c0 - c0 % m, min(weight.shape[1], c1 + (-c1) % m)
    window = weight[r0:r1, c0:c1]
    mask = nm_mask(window, n, m)  # blocks are aligned, so this equals the full matrix's mask
    return PatternSlice(layer, matrix, n, m, r0, c0, window.float().numpy(),
                        mask.to(torch.int8).numpy())


def pattern_rows(session: Session, patterns=DEFAULT_PATTERNS, progress: Progress = no_progress) -> list[dict]:
    """Accuracy/loss/margin of a copy of the model with every constrained weight projected to
    each N:M in ``patterns``, beside the dense model (first row, ``n = m``)."""
    patterns = [(int(n), int(m)) for n, m in patterns]
    for n, m in patterns:
        nm_projection(n, m).check(session.loaded.model)
    evaluator = session.evaluator
    base = evaluator.base
    rows = [{"pattern": "dense", "n": 1, "m": 1, "sparsity": 0.0, **_metrics(base.as_dict())}]
    work = private_copy(session.loaded.model)
    originals = [lin.weight.detach().clone() for _, _, lin in constrained_linears(work)]
    for i, (n, m) in enumerate(patterns):
        progress(i / len(patterns), f"evaluating {n}:{m}")
        with torch.no_grad():
            for (_, _, lin), w in zip(constrained_linears(work), originals):
                lin.weight.copy_(project_nm(w, n, m))
        comparison = evaluator.compare(model=work)
        rows.append({"pattern": f"{n}:{m}", "n": n, "m": m, "sparsity": 1 - n / m,
                     **_metrics(comparison.pruned.as_dict()),
                     "delta": {k: comparison.delta[k] for k in ("accuracy", "loss", "margin")}})
    progress(1.0, "done")
    del work
    return rows


def _metrics(d: dict) -> dict:
    keys = ("accuracy", "loss", "margin", "accuracy_se", "loss_se", "margin_se", "metric_name",
            "metric", "n")
    return {k: d[k] for k in keys if k in d}


# ---------------------------------------------------------------------------------------------
# the ADMM solver (generic over the weights, the loss and the projection)


@dataclass
class AdmmState:
    """Scaled-form ADMM for ``min L(W) s.t. W ∈ S`` over a list of weight tensors."""

    weights: list[torch.Tensor]
    project: Callable[[torch.Tensor], torch.Tensor]
    rho: float
    z: list[torch.Tensor] = field(default_factory=list)
    u: list[torch.Tensor] = field(default_factory=list)
    prox: bool = False

    @classmethod
    def start(cls, weights, project, rho: float, prox: bool = False) -> AdmmState:
        with torch.no_grad():
            z = [project(w.detach()).clone() for w in weights]
            u = [torch.zeros_like(w) for w in weights]
        return cls(list(weights), project, float(rho), z, u, prox)

    def penalty(self) -> torch.Tensor:
        return self.rho / 2 * sum(((w - z + u) ** 2).sum() for w, z, u in zip(self.weights, self.z, self.u))

    def residual(self) -> float:
        """Primal residual ||W − Z|| over all weights."""
        with torch.no_grad():
            return math.sqrt(sum(float(((w - z) ** 2).sum()) for w, z in zip(self.weights, self.z)))

    def w_step(self, loss_fn: Callable[[], torch.Tensor], optimizer, steps: int) -> dict:
        """``steps`` optimizer steps on L(W) + ρ/2·||W − Z + U||²; mean task loss and penalty.

        ``prox=False``: the optimizer sees the gradient of the sum. ``prox=True`` (proximal
        gradient): the optimizer steps on L alone, then the penalty's exact proximal step
        ``W ← (W + ρ(Z − U)) / (1 + ρ)`` follows, so the pull towards Z − U does not depend on
        Adam's per-coordinate scaling (with lr 1e-4, Adam moves a weight by ~1e-4 per step
        whatever the penalty, too little to empty the pruned weights in a short budget)."""
        task_total = penalty_total = 0.0
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            task = loss_fn()
            penalty = self.penalty()
            (task if self.prox else task + penalty).backward()
            optimizer.step()
            if self.prox:
                with torch.no_grad():
                    for w, z, u in zip(self.weights, self.z, self.u):
                        w.add_(z - u, alpha=self.rho).div_(1 + self.rho)
            task_total += float(task.detach())
            penalty_total += float(penalty.detach())
        return {"loss": task_total / max(1, steps), "penalty": penalty_total / max(1, steps)}

    @torch.no_grad()
    def zu_step(self) -> float:
        """Z = Π(W + U); U ← U + W − Z. Returns the dual residual ρ·||Z − Z_old||."""
        change = 0.0
        for i, (w, u) in enumerate(zip(self.weights, self.u)):
            z_new = self.project(w.detach() + u)
            change += float(((z_new - self.z[i]) ** 2).sum())
            u.add_(w.detach() - z_new)
            self.z[i] = z_new
        return self.rho * math.sqrt(change)

    @torch.no_grad()
    def grow(self, factor: float) -> None:
        """ρ ← factor·ρ, rescaling the scaled dual U so the unscaled dual ρU is unchanged."""
        for u in self.u:
            u.div_(factor)
        self.rho *= factor

    def iterate(self, loss_fn, optimizer, steps: int, growth: float = 1.0) -> dict:
        record = {"rho": self.rho, **self.w_step(loss_fn, optimizer, steps)}
        record["dual_residual"] = self.zu_step()
        record["residual"] = self.residual()
        self.grow(growth)
        return record


# ---------------------------------------------------------------------------------------------
# SR-STE fine-tuning


class _ProjectSTE(torch.autograd.Function):
    """Forward: Π(W). Backward: the gradient passes straight to W, plus λ·(W − Π(W))."""

    @staticmethod
    def forward(ctx, weight, projected, decay):
        ctx.save_for_backward(weight - projected)
        ctx.decay = decay
        return projected.clone()

    @staticmethod
    def backward(ctx, grad):
        (pruned,) = ctx.saved_tensors
        return grad + ctx.decay * pruned, None, None


class ProjectedWeight(nn.Module):
    """A parametrization: the module computes with Π(W) while W itself stays dense (SR-STE)."""

    def __init__(self, project: Callable[[torch.Tensor], torch.Tensor], decay: float):
        super().__init__()
        self.project = project
        self.decay = decay

    def forward(self, weight):
        with torch.no_grad():
            projected = self.project(weight)
        return _ProjectSTE.apply(weight, projected, self.decay)


# ---------------------------------------------------------------------------------------------
# the training run


TRAIN_MAX_LENGTH = 64  # tokens per training example


def _train_batches(session: Session, data: TextData, count: int, batch_size: int, seed: int):
    """``count`` seeded random batches, streamed: tokenized as the loop reaches them."""
    rng = np.random.default_rng(seed)
    return StreamedBatches(session.loaded.tokenizer, data, epoch_order(len(data), count * batch_size, rng), batch_size,
                           max_length=TRAIN_MAX_LENGTH)


def score_cost(params: dict, inventory, unit) -> Work:
    """Live scores project the weights once: no data, no forward pass."""
    return Work()


def train_workload(params: dict, n_eval: int) -> tuple[int, int]:
    """(trained examples, evaluated examples) of a run: its run-time model (``Trainer.estimate``)."""
    # ADMM's W-steps + fine-tune, and the equal-budget baseline trains as many steps again
    runs = 1 + bool(params.get("finetune_baseline"))
    steps = runs * (int(params["iterations"]) * int(params["steps"]) + int(params["finetune_steps"]))
    return steps * int(params["batch_size"]), (3 + runs) * n_eval


def train_cost(params: dict) -> Work:
    """ADMM W-steps and the SR-STE fine-tune, and (``finetune_baseline``) the same number of
    SR-STE steps again for the one-shot projection; evaluations are passes over the data."""
    steps = (params["iterations"] * params["steps"] + params["finetune_steps"]) * (1 + bool(params["finetune_baseline"]))
    return training_work(steps, params["batch_size"], TRAIN_MAX_LENGTH,
                         what="(iterations x steps + finetune_steps) x batch_size")


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    """Everything but the embeddings (the big vocabulary matrix would only cost memory)."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(".embeddings." not in f".{name}")
        if p.requires_grad:
            params.append(p)
    return params


def _evaluate(evaluator, model) -> dict:
    comparison = evaluator.compare(model=model)
    return {**_metrics(comparison.pruned.as_dict()),
            "delta": {k: comparison.delta[k] for k in ("accuracy", "loss", "margin")},
            "correct": comparison.correct}  # per example, for paired comparisons across seeds


TRAIN_PARAMS = (
    Param("iterations", "int", 6, "ADMM iterations (W-step, Z-step, U-step)", 1, 100),
    Param("steps", "int", 10, "optimizer steps per W-step", 1, 500),
    Param("finetune_steps", "int", 40, "masked SR-STE fine-tune steps after the projection", 0, 5000),
    Param("batch_size", "int", 16, "training batch size", 1, 64),
    Param("lr", "float", 1e-4, "Adam learning rate (W-step and fine-tune)", 1e-7, 1e-1, log=True),
    Param("penalty", "choice", "prox", "how the W-step treats ρ/2·||W − Z + U||²: its exact "
          "proximal step after each optimizer step on L (prox), or its gradient added to L's",
          choices=("prox", "gradient")),
    Param("rho0", "float", 0.02, "initial ADMM penalty ρ", 1e-7, 1e3, log=True),
    Param("rho_growth", "float", 1.5, "ρ is multiplied by this after every iteration", 1.0, 10.0),
    Param("decay", "float", 2e-4, "SR-STE decay λ on the pruned weights", 0.0, 1.0, log=True),
    Param("finetune_baseline", "bool", True, "also train the one-shot projection with SR-STE for "
          "the same total number of steps (ADMM's W-steps + its fine-tune), on the same batches: the "
          "equal-budget baseline that separates ADMM's gain from training's"),
    SEED,
)


def _loss_fn(model: nn.Module, batches, device: str) -> Callable[[], torch.Tensor]:
    stream = iter(batches)

    def loss_fn() -> torch.Tensor:
        batch = next(stream).to(device)
        logits = model(**batch.model_inputs()).logits
        return F.cross_entropy(logits, batch.labels.to(logits.device))

    return loss_fn


# the official SR-STE recipe (aojunzz/NM-sparsity, classification/train_imagenet.py and
# configs/config_resnet50_2by4.yaml): torch SGD, momentum 0.9, weight decay 5e-5 on every
# parameter, cosine decay of the rate after a linear warm-up of 5 of 120 epochs
SGD_MOMENTUM, SGD_WEIGHT_DECAY, SGD_WARMUP = 0.9, 5e-5, 5 / 120


def srste_optimizer(params: list[nn.Parameter], steps: int, lr: float, optimizer: str = "adam",
                    sgd_lr: float = 1e-2):
    """The SR-STE fine-tune's optimizer and its per-step rate schedule (None: constant):
    ``adam`` (prunelens's default: Adam at ``lr``), or ``sgd`` (the official recipe, at
    ``sgd_lr``: :data:`SGD_MOMENTUM`, :data:`SGD_WEIGHT_DECAY`, cosine after a warm-up)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr), None
    from transformers import get_cosine_schedule_with_warmup

    sgd = torch.optim.SGD(params, lr=sgd_lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    return sgd, get_cosine_schedule_with_warmup(sgd, round(SGD_WARMUP * steps), max(1, steps))


def sr_ste_finetune(model: nn.Module, projection: Projection, loss_fn, steps: int, lr: float,
                    decay: float, progress: Progress = no_progress, optimizer: str = "adam",
                    sgd_lr: float = 1e-2) -> list[dict]:
    """Masked fine-tune of ``model`` (a copy) with SR-STE (:func:`srste_optimizer`); ends with the
    weights projected."""
    linears = [lin for _, _, lin in constrained_linears(model)]
    history = []
    with torch.enable_grad():
        for lin in linears:
            parametrize.register_parametrization(lin, "weight", ProjectedWeight(projection, decay))
        opt, schedule = srste_optimizer(_trainable(model), steps, lr, optimizer, sgd_lr)
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            history.append({"step": step + 1, "loss": float(loss.detach())})
            if (step + 1) % 5 == 0 or step + 1 == steps:
                progress((step + 1) / steps, f"SR-STE fine-tune step {step + 1}/{steps}")
        for lin in linears:
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)
    apply_projection(model, projection)  # idempotent; makes the constraint exact
    for p in model.parameters():
        p.requires_grad_(False)
    return history


def run_admm(session: Session, params: dict, progress: Progress, projection: Projection) -> dict:
    """ADMM + hard projection + SR-STE fine-tune on a copy; evaluates dense, one-shot, ADMM
    (and, with ``finetune_baseline``, the one-shot projection trained with SR-STE for the same
    total number of steps on the same batches: the equal-budget comparison). Returns the
    :class:`~prunelens.analysis.run_result.RunResult` shape: the record below, under its 0.1 names
    (``evaluation`` by variant, ``labels``, ``history`` and ``finetune_history``, the rest),
    through :func:`~prunelens.analysis.run_result.shaped`."""
    loaded, evaluator = session.loaded, session.evaluator
    projection.check(loaded.model)
    torch.manual_seed(params["seed"])
    data, _ = training_data(session)
    admm_steps = params["iterations"] * params["steps"]
    total_steps = admm_steps + params["finetune_steps"]
    batches = _train_batches(session, data, total_steps, params["batch_size"], params["seed"])
    sub = lambda a, b: lambda f, msg: progress(a + (b - a) * f, msg)
    # admm-quant has no optimizer choice: Adam
    srste = {"optimizer": params.get("srste_optimizer", "adam"), "sgd_lr": params.get("sgd_lr", 1e-2)}

    progress(0.0, "evaluating the dense model and the one-shot projection")
    evaluation = {"dense": {**_metrics(evaluator.base.as_dict()),
                            "delta": {"accuracy": 0.0, "loss": 0.0, "margin": 0.0}}}
    work = private_copy(loaded.model)
    apply_projection(work, projection)
    evaluation["oneshot"] = _evaluate(evaluator, work)
    if params["finetune_baseline"]:
        sr_ste_finetune(work, projection, _loss_fn(work, batches, session.device),
                        total_steps, params["lr"], params["decay"], sub(0.0, 0.2), **srste)
        evaluation["oneshot_finetuned"] = _evaluate(evaluator, work)
    del work

    model = private_copy(loaded.model)
    model.eval()  # no dropout: runs are deterministic
    loss_fn = _loss_fn(model, batches, session.device)
    history = []
    with torch.enable_grad():
        trainable = _trainable(model)
        weights = [lin.weight for _, _, lin in constrained_linears(model)]
        state = AdmmState.start(weights, projection, params["rho0"], prox=params["penalty"] == "prox")
        optimizer = torch.optim.Adam(trainable, lr=params["lr"])
        initial = state.residual()
        for it in range(params["iterations"]):
            record = state.iterate(loss_fn, optimizer, params["steps"], params["rho_growth"])
            history.append({"iteration": it + 1, **record})
            progress(0.2 + 0.5 * (it + 1) / params["iterations"],
                     f"ADMM iteration {it + 1}/{params['iterations']}: loss {record['loss']:.3f}, "
                     f"||W-Z|| {record['residual']:.3g}")
        del state, optimizer
    shares = {unit: unit_shares(model, loaded.inventory, unit, projection).tolist()
              for unit in SHARE_UNITS}
    apply_projection(model, projection)
    evaluation["admm_projected"] = _evaluate(evaluator, model)
    finetune = sr_ste_finetune(model, projection, loss_fn, params["finetune_steps"], params["lr"],
                               params["decay"], sub(0.7, 0.95), **srste)
    evaluation["admm"] = _evaluate(evaluator, model)
    final = [lin.weight.detach() for _, _, lin in constrained_linears(model)]
    progress(1.0, "done")
    labels = {"dense": "dense model", "oneshot": projection.baseline,
              "admm_projected": f"ADMM {projection.label}, projected, before fine-tune",
              "admm": f"ADMM {projection.label} after SR-STE fine-tune"}
    if params["finetune_baseline"]:
        labels["oneshot_finetuned"] = f"{projection.baseline} + {total_steps} SR-STE steps (equal budget)"
    return shaped({
        "projection": projection.label,
        "labels": labels,
        "evaluation": evaluation,
        "initial_residual": initial,
        "history": history,
        "finetune_history": finetune,
        "scores": shares["head"],
        "shares": shares,
        "shares_oneshot": {unit: unit_shares(loaded.model, loaded.inventory, unit, projection).tolist()
                           for unit in SHARE_UNITS},
        "constraint": projection.stats(final),
        "train": {"data": data.name, "split": data.split, "examples": total_steps * params["batch_size"],
                  "steps": total_steps},
    })


def _run_nm(session: Session, params, progress=no_progress) -> dict:
    return run_admm(session, params, progress, nm_projection(params["n"], params["m"]))


NM_PARAMS = (
    Param("n", "int", 2, "N: weights kept in every block of M", 1, 64),
    Param("m", "int", 4, "M: block length along the input dimension (must divide it)", 1, 64),
)
# the SR-STE fine-tune's optimizer (admm only; admm-quant fine-tunes with Adam)
SRSTE_PARAMS = (
    Param("srste_optimizer", "choice", "adam", "SR-STE fine-tune optimizer: adam (Adam at lr), or sgd "
          "= the official SR-STE recipe: SGD, momentum 0.9, weight decay 5e-5, cosine decay after a "
          "warm-up, at sgd_lr", choices=("adam", "sgd")),
    Param("sgd_lr", "float", 1e-2, "peak learning rate of the SR-STE fine-tune with srste_optimizer=sgd",
          1e-6, 1.0, log=True),
)

METHOD = Admm(
    name="admm",
    title="ADMM N:M pattern pruning",
    plain="Keep only N of every M neighbouring weights (a pattern hardware can speed up); a unit scores high when most of its weight survives that cut.",
    summary="Share of each unit's weight norm that survives a one-shot magnitude N:M projection "
            "(keep N of every M consecutive input weights); training mode runs ADMM + SR-STE.",
    units=UNITS,
    params=NM_PARAMS,
    cost=score_cost,
    paper="Wang, ADMM based semi-structured pattern pruning for transformers (arXiv 2407.08334)",
    trainer=Trainer(params=NM_PARAMS + TRAIN_PARAMS + SRSTE_PARAMS, run=_run_nm, cost=train_cost, workload=train_workload,
                    summary="ADMM (W-, Z-, U-steps, growing ρ) on a copy, hard N:M projection, "
                            "SR-STE fine-tune; compares dense, one-shot magnitude and ADMM."),
    diagnostic=True,  # a share of surviving weight norm, not an importance criterion
    deviations=(
        Deviation("budget", "ADMM for epochs on each task (the paper's GLUE runs), then a masked "
                  "fine-tune", "6 ADMM iterations x 10 steps and 40 SR-STE steps of 16 sentences "
                  "(a CPU-sized budget), on the default's training split"),
        Deviation("W-step", "optimizer steps on L(W) + ρ/2·||W − Z + U||²",
                  "Adam on L, then the penalty's exact proximal step (default); penalty=gradient "
                  "sums the gradients as the formula reads"),
        Deviation("baseline", "one-shot magnitude N:M (untrained) in the paper's comparison",
                  "one-shot N:M plus the same number of SR-STE steps (equal budget), with the "
                  "untrained projection shown beside it"),
        Deviation("SR-STE fine-tune", "SGD, momentum 0.9, weight decay 5e-5, cosine schedule after a "
                  "warm-up, λ_W = 2e-4 on the pruned weights (aojunzz/NM-sparsity, ImageNet ResNets)",
                  "Adam at lr by default (λ_W = 2e-4 is then a nominal share of each step; λ_W = 0 "
                  "measured against it in docs/FIDELITY.md); srste_optimizer=sgd: the official recipe "
                  "at sgd_lr over the fine-tune's steps"),
        Deviation("live scores", "none (ADMM prunes weights, it does not rank units)",
                  "each unit's surviving weight-norm share under the one-shot projection: a "
                  "diagnostic, kept out of every criterion ranking"),
    ),
)
