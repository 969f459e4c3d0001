"""What "better" and "worse" mean for an analysis: the objective, and the pooling of headless encoders.

Owns the three objectives an analysis runs under (``--objective``), their per-example metrics,
their losses, which one a model and data set get by default, and the sentence vector of a
headless encoder:

- **labels**: accuracy, cross-entropy and margin against the gold labels (a classifier on
  labelled data; the default there).
- **agreement** (no labels needed): the pruned classifier against the unpruned one on the same
  inputs. ``agreement`` = the share of examples whose top class is the unpruned model's (1.0
  unpruned, by construction); loss = KL(unpruned ‖ pruned); margin on the unpruned model's class.
  The default for a classifier on data without labels.
- **embedding**: the sentence vector as the model folder's sentence-transformers config defines
  it (``modules.json``, ``1_Pooling/config.json``: mean / CLS / max / mean-sqrt-len pooling, and
  ``Normalize``; mean pooling without such files). ``cosine`` = the mean cosine between pruned
  and unpruned vectors (1.0 unpruned); loss = mean(1 − cosine); margin = how much closer a
  sentence's pruned vector is to its own unpruned vector than to any other sentence's; also
  ``neighbour_agreement`` (the share of sentences whose nearest neighbour in the data set is
  unchanged), STS Spearman when the data has ``text,text_pair,score`` and recall@1/@10 when it
  has ``query,positive``. The default (and the only objective) for a headless encoder.

Every per-example vector fills the same three slots an evaluation reports (``accuracy``,
``loss``, ``margin``: the objective's score, loss and margin; ``metric_name`` names the score),
so stored results, curves and pages read one shape whatever the objective.

Gradient methods (Michel et al., PINS, PLATON, ...) take the gradient at the unpruned model,
where KL(unpruned ‖ pruned) and 1 − cosine sit at their minimum and have no gradient. They use
each objective's *gradient loss*: cross-entropy against the unpruned model's top class
(agreement: TextPruner's self-supervised mode, the model's own predictions as the target) and
the in-batch contrastive loss of each pruned vector against the unpruned ones (embedding:
sentence-transformers' MultipleNegativesRankingLoss, scale 20): both are zero-gradient-free
at the unpruned model and fall as the pruned outputs return to the unpruned ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prunelens.analysis.errors import DataError, ParamError

# torch is imported inside the functions that need it: the CLI reads OBJECTIVES before anything loads
if TYPE_CHECKING:
    import torch

OBJECTIVES = ("labels", "agreement", "embedding")
METRIC_NAMES = {"labels": "accuracy", "agreement": "agreement", "embedding": "cosine"}
LOSS_NAMES = {"labels": "cross-entropy", "agreement": "KL(unpruned ‖ pruned)", "embedding": "1 − cosine"}
MARGIN_NAMES = {"labels": "margin", "agreement": "margin on the unpruned class",
                "embedding": "self-retrieval margin"}
# one sentence each for the pages: what the score means and when it is a good proxy
EXPLAINED = {
    "labels": "Accuracy against the gold labels: the fraction of examples the pruned model classifies correctly.",
    "agreement": "Agreement is the fraction of examples where the pruned model picks the same class as the "
                 "unpruned one (1.0 before pruning); it needs no labels and tracks accuracy well while the "
                 "unpruned model is accurate, but it also counts keeping the unpruned model's mistakes as a success.",
    "embedding": "Cosine is the mean cosine similarity between each sentence's pruned and unpruned vector "
                 "(1.0 before pruning); it needs no labels and is a good proxy while it stays high (above "
                 "about 0.95 neighbours and rankings barely move), less so for a task that reads only a few "
                 "directions of the vector.",
}
# what the three reported slots are called under each objective (pages, figures, the CLI)
SLOT_LABELS = {
    "labels": {"accuracy": "accuracy", "loss": "loss", "margin": "margin"},
    "agreement": {"accuracy": "agreement", "loss": "KL loss", "margin": "margin"},
    "embedding": {"accuracy": "cosine", "loss": "1 − cosine", "margin": "self-retrieval margin"},
}
EMBEDDING_SCALE = 20.0  # the contrastive gradient loss's similarity scale (MultipleNegativesRankingLoss)
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}
NEIGHBOUR_CHUNK = 1024  # rows of the similarity matrix computed at once (n x 1024 floats)


def metric_name(objective: str) -> str:
    """The name of the objective's score (``accuracy``, ``agreement`` or ``cosine``)."""
    return METRIC_NAMES[check_name(objective)]


def check_name(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ParamError(f"unknown objective '{objective}' (choose one of: {', '.join(OBJECTIVES)})")
    return objective


# ---------------------------------------------------------------------------------------------
# which objective


def default_objective(headless: bool, labelled: bool) -> str:
    """``embedding`` for a headless encoder, ``labels`` for a classifier on labelled data,
    ``agreement`` for a classifier on data without labels."""
    if headless:
        return "embedding"
    return "labels" if labelled else "agreement"


def default_note(objective: str, headless: bool, labelled: bool) -> str | None:
    """What the notes and the pages say when the objective was chosen for the user."""
    if objective == "agreement" and not labelled:
        return ("the data has no labels: the objective is agreement with the unpruned model "
                "(--objective agreement)")
    if objective == "embedding" and headless:
        return "the model has no classification head: the objective is the sentence embedding (--objective embedding)"
    return None


def check_data_objective(objective: str | None, labelled: bool, data_name: str = "the data") -> None:
    """Refuse ``labels`` on data without labels (before any model loads)."""
    if objective == "labels" and not labelled:
        raise DataError(f"--objective labels needs a 'label' column and {data_name} has none "
                        "(use --objective agreement, or add labels)")


def check_model_objective(objective: str, headless: bool, model_name: str = "the model") -> None:
    """A headless encoder has no classes: only ``embedding``; a classifier: ``labels`` or ``agreement``."""
    if headless and objective != "embedding":
        raise ParamError(f"model '{model_name}' has no classification head, so --objective {objective} "
                         "has no classes to compare (use --objective embedding)")
    if not headless and objective == "embedding":
        raise ParamError(f"model '{model_name}' is a classifier: --objective embedding is for headless "
                         "sentence encoders (use --objective agreement or labels)")


def resolve(objective: str | None, headless: bool, labelled: bool, model_name: str = "the model",
            data_name: str = "the data") -> str:
    """The objective to run: the one asked for (checked against the model and data) or the default."""
    if objective is None:
        return default_objective(headless, labelled)
    check_name(objective)
    check_data_objective(objective, labelled, data_name)
    check_model_objective(objective, headless, model_name)
    return objective


# ---------------------------------------------------------------------------------------------
# pooling of headless encoders


@dataclass(frozen=True)
class Pooling:
    """How a headless encoder's token states become one sentence vector."""

    mode: str = "mean"
    normalize: bool = False
    source: str = "no sentence-transformers config: mean pooling"

    def describe(self) -> dict:
        return {"mode": self.mode, "normalize": self.normalize, "source": self.source}


def read_pooling(folder: Path | str | None) -> Pooling:
    """The pooling a sentence-transformers folder declares (``modules.json``: its Pooling
    module's ``config.json``, and whether a ``Normalize`` module follows), or mean pooling."""
    if folder is None:
        return Pooling()
    folder = Path(folder)
    modules_file = folder / "modules.json"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.is_file() else None
    except (OSError, ValueError):
        raise DataError(f"cannot read {modules_file} (fix modules.json or remove it)") from None
    if not isinstance(modules, list):
        return Pooling()
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooling_dirs = [str(m.get("path", "")) for m in modules
                    if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")]
    if not pooling_dirs:
        return Pooling("mean", normalize, "modules.json has no Pooling module: mean pooling")
    config_file = folder / pooling_dirs[0] / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Pooling("mean", normalize, f"{pooling_dirs[0]}/config.json unreadable: mean pooling")
    chosen = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    mode = "mean"
    if chosen:
        mode = chosen[0]
    elif config.get("pooling_mode") in POOLING_MODES:
        mode = config["pooling_mode"]
    if len(chosen) > 1:
        raise DataError(f"{config_file} combines pooling modes {', '.join(chosen)}; prunelens pools with "
                        "one (keep one pooling_mode_* true)")
    return Pooling(mode, normalize, f"{pooling_dirs[0]}/config.json" + (" + Normalize" if normalize else ""))


def write_pooling(folder: Path | str, pooling: Pooling, dimension: int) -> None:
    """Write ``pooling`` of ``dimension``-wide token states as a sentence-transformers folder
    declares it (``modules.json``, ``1_Pooling/config.json``, a ``Normalize`` module): what
    :func:`read_pooling` and sentence-transformers read back."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": int(dimension),
              **{key: mode == pooling.mode for key, mode in _POOLING_KEYS.items()}}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def pool(hidden: torch.Tensor, keep: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(batch, tokens, hidden) states and a (batch, tokens) mask of real tokens -> (batch, hidden)."""
    import torch.nn.functional as F

    mask = keep.to(hidden.dtype).unsqueeze(-1)
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    else:
        summed = (hidden * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        out = summed / (count if pooling.mode == "mean" else count.sqrt())
    return F.normalize(out, p=2, dim=-1) if pooling.normalize else out


def model_output(model, inputs: dict, pooling: Pooling | None) -> torch.Tensor:
    """The classifier's logits, or a headless encoder's pooled sentence vector."""
    out = model(**inputs)
    if pooling is None:
        return out.logits
    return pool(out.last_hidden_state, inputs["attention_mask"].bool(), pooling)


# ---------------------------------------------------------------------------------------------
# per-example metrics (numpy, float64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(softmax(reference) ‖ softmax(logits)) per example."""
    import torch

    ref = torch.as_tensor(reference_logits, dtype=torch.float64).log_softmax(-1)
    out = torch.as_tensor(logits, dtype=torch.float64).log_softmax(-1)
    return (ref.exp() * (ref - out)).sum(-1).numpy()


def class_margin(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """logit of ``classes`` minus the largest other logit, per example."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(classes))
    true = logits[rows, classes]
    other = logits.copy()
    other[rows, classes] = -np.inf
    return true - other.max(-1)


def _nearest_others(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row i of ``a`` (unit rows): the index and similarity of the most similar row j != i
    of ``b`` (unit rows), computed in chunks."""
    n = len(a)
    index = np.zeros(n, dtype=np.int64)
    best = np.full(n, -np.inf)
    for start in range(0, n, NEIGHBOUR_CHUNK):
        sims = a[start:start + NEIGHBOUR_CHUNK] @ b.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        index[start:start + len(sims)] = sims.argmax(-1)
        best[start:start + len(sims)] = sims.max(-1)
    return index, best


def nearest_neighbours(vectors: np.ndarray) -> np.ndarray:
    """The index of each row's most similar other row (cosine)."""
    unit = unit_rows(vectors)
    return _nearest_others(unit, unit)[0]


def example_vectors(objective: str, outputs: np.ndarray, reference: np.ndarray | None,
                    labels: np.ndarray) -> dict[str, np.ndarray]:
    """The per-example ``accuracy`` (the objective's score), ``loss``, ``margin`` and ``correct``
    (0/1: right class, unpruned class, unchanged nearest neighbour) of ``outputs`` against
    ``reference`` (the unpruned outputs of the same examples) or ``labels``."""
    import torch
    import torch.nn.functional as F

    if objective == "labels":
        logits = np.asarray(outputs, dtype=np.float64)
        correct = (logits.argmax(-1) == labels).astype(np.float64)
        loss = F.cross_entropy(torch.as_tensor(logits), torch.tensor(np.asarray(labels)), reduction="none").numpy()
        return {"accuracy": correct, "loss": loss, "margin": class_margin(logits, labels), "correct": correct}
    if reference is None:
        raise ValueError(f"the {objective} objective needs the unpruned outputs")
    if objective == "agreement":
        target = np.asarray(reference).argmax(-1)
        agree = (np.asarray(outputs).argmax(-1) == target).astype(np.float64)
        return {"accuracy": agree, "loss": kl_divergence(reference, outputs),
                "margin": class_margin(outputs, target), "correct": agree}
    if objective == "embedding":
        pruned, unpruned = unit_rows(outputs), unit_rows(reference)
        cosine = (pruned * unpruned).sum(-1)
        if len(pruned) > 1:
            _, closest_other = _nearest_others(pruned, unpruned)
            same = (_nearest_others(pruned, pruned)[0] == _nearest_others(unpruned, unpruned)[0])
        else:
            closest_other, same = np.full(len(pruned), -1.0), np.ones(len(pruned), dtype=bool)
        return {"accuracy": cosine, "loss": 1.0 - cosine, "margin": cosine - closest_other,
                "correct": same.astype(np.float64)}
    raise ValueError(f"unknown objective {objective}")


@dataclass(frozen=True)
class PairLayout:
    """How an embedding evaluation's sentences pair up: ``n`` first sentences (texts or queries)
    followed by their ``n`` partners (text pairs or positives); ``scores`` for STS."""

    kind: str  # "sts" | "retrieval"
    n: int
    scores: np.ndarray | None = None


def embedding_extras(outputs: np.ndarray, correct: np.ndarray, layout: PairLayout | None) -> dict[str, float]:
    """The set-level embedding metrics: ``neighbour_agreement``, and ``sts_spearman`` or
    ``recall_at_1`` / ``recall_at_10`` when the data pairs its sentences."""
    extras = {"neighbour_agreement": float(np.mean(correct)) if len(correct) else float("nan")}
    if layout is None or layout.n < 2 or len(outputs) != 2 * layout.n:
        return extras
    vectors = unit_rows(outputs)
    first, second = vectors[: layout.n], vectors[layout.n:]
    if layout.kind == "sts" and layout.scores is not None:
        from scipy.stats import spearmanr

        extras["sts_spearman"] = float(spearmanr((first * second).sum(-1), layout.scores).statistic)
    elif layout.kind == "retrieval":
        ranks = np.zeros(layout.n, dtype=np.int64)
        for start in range(0, layout.n, NEIGHBOUR_CHUNK):
            sims = first[start:start + NEIGHBOUR_CHUNK] @ second.T
            rows = np.arange(len(sims))
            own = sims[rows, start + rows]
            ranks[start:start + len(sims)] = (sims > own[:, None]).sum(-1)
        extras["recall_at_1"] = float(np.mean(ranks < 1))
        extras["recall_at_10"] = float(np.mean(ranks < 10))
    return extras


# ---------------------------------------------------------------------------------------------
# the losses gradient methods differentiate (torch)


def gradient_losses(objective: str, outputs: torch.Tensor, labels: torch.Tensor | None,
                    reference: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example losses whose gradient a method takes (see the module docstring): cross-entropy
    against the gold labels (labels) or the unpruned top class (agreement), the in-batch
    contrastive loss against the unpruned vectors (embedding). ``reference`` (the unpruned
    outputs) defaults to ``outputs`` detached: at the unpruned model, where gradients are taken,
    the two are the same."""
    import torch
    import torch.nn.functional as F

    reference = outputs.detach() if reference is None else reference.to(outputs.device)
    if objective == "labels":
        return F.cross_entropy(outputs, labels.to(outputs.device), reduction="none")
    if objective == "agreement":
        return F.cross_entropy(outputs, reference.argmax(-1), reduction="none")
    if objective == "embedding":
        sims = EMBEDDING_SCALE * F.normalize(outputs, dim=-1) @ F.normalize(reference, dim=-1).T
        return F.cross_entropy(sims, torch.arange(len(outputs), device=outputs.device), reduction="none")
    raise ValueError(f"unknown objective {objective}")


def mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan
