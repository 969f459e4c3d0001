"""The encoder families prunelens opens: one declarative :class:`Family` entry each, and the one
place every other module reaches a layer's weights through.

A family entry says where the layers are, which dense layers (*matrices*) a layer has under
which *role* — ``query``, ``key``, ``value`` (or one fused ``qkv``), ``attention_output``,
``intermediate`` (for a GLU: the fused input and gate halves) and ``output``, plus any extra
per-head projections — and which module to stand in for when a layer loses every head. The roles
are the same in every family, so what a unit owns and where its gate acts is said once:

- :data:`UNIT_SIZES` (and :data:`UNITS`, :data:`BLOCK_UNITS` derived from it): the one list of
  prunable units, in the one order every listing, method declaration and control uses, and what
  counts them in a layer (``Inventory.unit_shape`` answers from it);
- what a unit owns: a **head** its ``head_size`` rows of Q, K and V (in a fused QKV: its rows in
  each of the three blocks; DeBERTa: also its rows of the relative-position projections), weights
  and biases, and the same columns of the attention-output weight; a **neuron** its row of the
  intermediate weight (a GLU: its row in the input half and in the gate half) and bias entry and its
  column of the output weight; an **attention** / **FFN** block every weight and bias of its
  matrices (the LayerNorms stay). :meth:`Family.owns` gives the table, :class:`Part` one entry
  (:data:`OWNS` / :data:`MATRICES`: the BERT layout's, for the modules that name them).
- :data:`GATE_POINTS`: where a unit's gate multiplies — the input of the attention-output
  (heads) or output (neurons) matrix, or that matrix's output (blocks), before the residual add.
- :func:`per_unit`: the one reduction of per-weight scores to per-unit scores (methods, and the
  parameter counts of :class:`prunelens.analysis.models.Inventory`, which a test ties to it).

Shared layers (ALBERT): one layer's weights run at every depth. prunelens gives every depth its
own *view* (a module sharing the weights: :mod:`prunelens.analysis.shared_layers`), so a gate and a score belong to one
(layer, head); a head's weights are physically removed only when every layer sharing them removes
it (:func:`prunelens.analysis.pruning.physically_prune` keeps the rest as fixed gates).

docs/FAMILIES.md explains how an entry reads and how to add one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import ModelError
from prunelens.analysis.shared_layers import prepare  # noqa: F401 (re-exported: one view per depth)

# the prunable units, in the one order every listing uses: name -> the Inventory size that counts
# a layer's units (None: one per layer, a whole block). Scores of a unit are shaped (layers,) or
# (layers, that size): :meth:`prunelens.analysis.models.Inventory.unit_shape`
UNIT_SIZES: dict[str, str | None] = {"head": "heads", "attention": None, "ffn": None, "neuron": "ffn"}
UNITS = tuple(UNIT_SIZES)
BLOCK_UNITS = tuple(u for u, size in UNIT_SIZES.items() if size is None)  # one per layer: attention, ffn

ROWS, COLUMNS, ALL = "rows", "columns", "all"  # which part of a matrix a unit's index runs over
ATTENTION_OUTPUT, FFN_INPUT, FFN_OUTPUT = "attention_output", "intermediate", "output"
# (role, "input" | "output"): a head / neuron gate scales its slice of the matrix's input (a
# forward pre-hook), a block gate the matrix's output (before the residual add)
GATE_POINTS = {"head": (ATTENTION_OUTPUT, "input"), "neuron": (FFN_OUTPUT, "input"),
               "attention": (ATTENTION_OUTPUT, "output"), "ffn": (FFN_OUTPUT, "output")}


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}: one of {', '.join(UNITS)}")
    return unit


@dataclass(frozen=True)
class Part:
    """Which part of a matrix a head or neuron owns: its ``rows`` or ``columns``; ``groups``
    blocks of rows stacked in a fused matrix (Q, K, V in one ``Wqkv``: 3; a GLU's input and gate
    halves: 2), the unit owning its rows in each block."""

    side: str
    groups: int = 1


@dataclass(frozen=True)
class Family:
    """One encoder family, as data.

    ``layers``: attribute path from the base model to the layer list; ``matrices``: role → path
    inside a layer, in order (``optional`` roles may be absent, e.g. DeBERTa's ``pos_key`` when the
    checkpoint shares its attention key); ``fused``: row groups of a fused matrix; ``attention``:
    the module that computes the heads' context (replaced by :class:`NoHeads` when a layer loses
    every head), ``returns`` how many values it returns, ``residual_norm`` its LayerNorm when the
    residual add and norm happen inside it (ALBERT); ``shared_head_inputs``: arguments of the
    attention module with one slice per head that the layers share (MPNet's relative-position
    bias: shared, not owned — a pruned layer keeps its heads' slices); ``shared_layers``: one
    layer's weights run at every depth (ALBERT)."""

    name: str
    model_types: tuple[str, ...]
    layer_classes: tuple[str, ...]
    layers: str
    matrices: dict[str, str]
    attention: str
    norm: str = "post"  # LayerNorm after the residual add (BERT) or before the block ("pre")
    optional: tuple[str, ...] = ()
    fused: dict[str, int] = field(default_factory=dict)
    returns: int = 2
    residual_norm: str | None = None
    shared_head_inputs: dict[str, int] = field(default_factory=dict)  # name -> positional index
    shared_layers: bool = False
    head_size_key: str | None = None  # config key of the head size when not hidden // heads
    ffn_key: str = "intermediate_size"
    # the sliced-weight fast kernel (prunelens.analysis.fastpath) runs it: the family's post-LN block
    # is the kernel's, and prunelens.analysis.kernels.<name> says where its norms and ends are
    fast_path: bool = False
    sdpa: bool = True  # transformers runs its attention through SDPA (else: its own eager code)
    notes: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.matrices)

    @property
    def attention_roles(self) -> tuple[str, ...]:
        return tuple(r for r in self.matrices if r not in (FFN_INPUT, FFN_OUTPUT))

    @property
    def ffn_roles(self) -> tuple[str, ...]:
        return (FFN_INPUT, FFN_OUTPUT)

    def owns(self, unit: str) -> dict[str, Part]:
        """Role → :class:`Part` of every matrix ``unit`` owns part of (blocks own all of theirs)."""
        check_unit(unit)
        if unit == "attention":
            return {r: Part(ALL) for r in self.attention_roles}
        if unit == "ffn":
            return {r: Part(ALL) for r in self.ffn_roles}
        if unit == "head":
            return {r: Part(COLUMNS) if r == ATTENTION_OUTPUT else Part(ROWS, self.fused.get(r, 1))
                    for r in self.attention_roles}
        return {FFN_INPUT: Part(ROWS, self.fused.get(FFN_INPUT, 1)), FFN_OUTPUT: Part(COLUMNS)}

    def head_size(self, config) -> int:
        size = getattr(config, self.head_size_key, None) if self.head_size_key else None
        return int(size or int(config.hidden_size) // int(config.num_attention_heads))


_BERT_PATHS = {"query": "attention.self.query", "key": "attention.self.key",
               "value": "attention.self.value", ATTENTION_OUTPUT: "attention.output.dense",
               FFN_INPUT: "intermediate.dense", FFN_OUTPUT: "output.dense"}

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", ("bert", "roberta", "xlm-roberta", "electra", "camembert"),
           ("BertLayer", "RobertaLayer", "XLMRobertaLayer", "ElectraLayer", "CamembertLayer"),
           "encoder.layer", _BERT_PATHS, "attention.self", fast_path=True,
           notes="BERT and the encoders that share its layer: RoBERTa, XLM-R, ELECTRA, CamemBERT, MiniLM"),
    Family("distilbert", ("distilbert",), ("TransformerBlock",), "transformer.layer",
           {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
            ATTENTION_OUTPUT: "attention.out_lin", FFN_INPUT: "ffn.lin1", FFN_OUTPUT: "ffn.lin2"},
           "attention", ffn_key="hidden_dim", fast_path=True,
           notes="the output projection sits inside the attention module"),
    Family("albert", ("albert",), ("AlbertLayer",), "encoder.layer_views",
           {"query": "attention.query", "key": "attention.key", "value": "attention.value",
            ATTENTION_OUTPUT: "attention.dense", FFN_INPUT: "ffn", FFN_OUTPUT: "ffn_output"},
           "attention", residual_norm="LayerNorm", shared_layers=True, fast_path=True,
           notes="one layer's weights at every depth: a gate per (layer, head); a head's weights go "
                 "only when every layer sharing them removes it"),
    Family("deberta-v2", ("deberta-v2",), ("DebertaV2Layer",), "encoder.layer",
           {"query": "attention.self.query_proj", "key": "attention.self.key_proj",
            "value": "attention.self.value_proj", "pos_key": "attention.self.pos_key_proj",
            "pos_query": "attention.self.pos_query_proj", ATTENTION_OUTPUT: "attention.output.dense",
            FFN_INPUT: "intermediate.dense", FFN_OUTPUT: "output.dense"},
           "attention.self", optional=("pos_key", "pos_query"), head_size_key="attention_head_size", sdpa=False,
           notes="DeBERTa-v2 and -v3; a head owns its rows of the relative-position projections "
                 "(pos_key_proj / pos_query_proj, or Q / K when share_att_key)"),
    Family("mpnet", ("mpnet",), ("MPNetLayer",), "encoder.layer",
           {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
            ATTENTION_OUTPUT: "attention.attn.o", FFN_INPUT: "intermediate.dense", FFN_OUTPUT: "output.dense"},
           "attention.attn", returns=1, shared_head_inputs={"position_bias": 2}, sdpa=False, fast_path=True,
           notes="the relative attention bias (one column per head) is shared by all layers, not owned"),
    Family("modernbert", ("modernbert",), ("ModernBertEncoderLayer",), "layers",
           {"qkv": "attn.Wqkv", ATTENTION_OUTPUT: "attn.Wo", FFN_INPUT: "mlp.Wi", FFN_OUTPUT: "mlp.Wo"},
           "attn", norm="pre", fused={"qkv": 3, FFN_INPUT: 2},
           notes="fused Wqkv (Q, K, V blocks) and a GLU (Wi: input and gate halves); pre-LayerNorm"),
)}


def _plugin_families(builtin: dict[str, Family]) -> dict[str, Family]:
    """Families from installed packages' ``prunelens.families`` entry points
    (:mod:`prunelens.analysis.plugins`, docs/PLUGINS.md): a :class:`Family` whose name is its entry
    point's and whose model types and layer classes no other family claims."""
    from prunelens.analysis.plugins import FAMILIES_GROUP, load_group

    types = {t for f in builtin.values() for t in f.model_types}
    classes = {c for f in builtin.values() for c in f.layer_classes}

    def refuse(name: str, obj: object) -> str | None:
        if not isinstance(obj, Family):
            return f"names a {type(obj).__name__}, not a prunelens.analysis.layout.Family"
        if obj.name != name:
            return f"the entry point is called '{name}' but the family '{obj.name}'"
        claimed = sorted((set(obj.model_types) & types) | (set(obj.layer_classes) & classes))
        if claimed:
            return f"{', '.join(claimed)} already belong to another family"
        types.update(obj.model_types)
        classes.update(obj.layer_classes)
        return None

    return load_group(FAMILIES_GROUP, refuse, set(builtin))  # type: ignore[return-value]


FAMILIES.update(_plugin_families(FAMILIES))
SUPPORTED_TYPES = tuple(t for f in FAMILIES.values() for t in f.model_types)
BERT = FAMILIES["bert"]
# the BERT layout's tables, kept for the modules and views that name them
MATRICES = BERT.roles
ATTENTION_MATRICES = BERT.attention_roles
FFN_MATRICES = BERT.ffn_roles
OWNS: dict[str, dict[str, str]] = {u: {r: p.side for r, p in BERT.owns(u).items()} for u in UNITS}
_BY_CLASS = {cls: f for f in FAMILIES.values() for cls in f.layer_classes}
_BY_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}


def family_for_type(model_type: str | None) -> Family | None:
    """The family of a config's ``model_type`` (None when prunelens has no entry for it)."""
    return _BY_TYPE.get(model_type)


def attention_implementation(config) -> str:
    """What transformers should run a family's attention with: SDPA where it has it, else eager."""
    family = family_for_type(getattr(config, "model_type", None))
    return "sdpa" if family is None or family.sdpa else "eager"


def family_of(model_or_layer: nn.Module) -> Family:
    """The family of a model (by its config's ``model_type``) or of one of its layers (by class)."""
    config = getattr(model_or_layer, "config", None)
    family = _BY_CLASS.get(type(model_or_layer).__name__)
    if family is None and config is not None and not hasattr(model_or_layer, "attention"):
        family = _BY_TYPE.get(getattr(config, "model_type", None))
    if family is None and hasattr(getattr(getattr(model_or_layer, "attention", None), "self", None), "query"):
        family = BERT  # a BERT-layout layer of a class without an entry
    if family is None:
        raise ModelError(f"{type(model_or_layer).__name__} is not a layer or model of a supported "
                         f"family ({', '.join(FAMILIES)}; see docs/FAMILIES.md)")
    return family


def _follow(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def matrix(layer: nn.Module, name: str) -> nn.Linear:
    """One matrix of the layer, by role (only that one is looked up)."""
    return _follow(layer, family_of(layer).matrices[name])


def layer_matrices(layer: nn.Module) -> dict[str, nn.Linear]:
    """The dense layers of one encoder layer, by role, in the family's order (absent optional
    ones left out)."""
    family = family_of(layer)
    out = {}
    for role, path in family.matrices.items():
        try:
            out[role] = _follow(layer, path)
        except AttributeError:
            if role not in family.optional:
                raise
    return out


def set_matrix(layer: nn.Module, name: str, linear: nn.Module) -> None:
    """Put ``linear`` in place of the layer's matrix ``name`` (physical pruning)."""
    *parents, attr = family_of(layer).matrices[name].split(".")
    setattr(_follow(layer, ".".join(parents)) if parents else layer, attr, linear)


def submodule(layer: nn.Module, path: str) -> nn.Module:
    return _follow(layer, path)


def set_submodule(layer: nn.Module, path: str, module: nn.Module) -> None:
    *parents, attr = path.split(".")
    setattr(_follow(layer, ".".join(parents)) if parents else layer, attr, module)


def owned_index(part: Part, index: torch.Tensor, width: int) -> torch.Tensor:
    """The rows (or columns) of a matrix that units at ``index`` own: ``index`` itself, or in a
    fused matrix of ``part.groups`` blocks of ``width`` rows, ``index`` in every block."""
    if part.groups == 1:
        return index
    return torch.cat([index + g * width for g in range(part.groups)])


def keep_owned(layer: nn.Module, unit: str, index: torch.Tensor, keep_rows, keep_columns,
               width: int) -> None:
    """Replace every matrix ``unit`` (head or neuron) owns part of by its kept rows / columns
    (``index``: the kept rows of one block of ``width`` rows, or the kept columns)."""
    for name, part in family_of(layer).owns(unit).items():
        linear = layer_matrices(layer).get(name)
        if linear is None:
            continue
        if part.side == ROWS:
            set_matrix(layer, name, keep_rows(linear, owned_index(part, index, width)))
        else:
            set_matrix(layer, name, keep_columns(linear, index))


def gate_module(layer: nn.Module, unit: str) -> nn.Linear:
    """The dense layer at whose input (heads, neurons) or output (blocks) ``unit``'s gate acts."""
    return matrix(layer, GATE_POINTS[unit][0])


def _summed(score: torch.Tensor, part: Part, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-row (or per-column) sums of one matrix's scores, fused blocks added together."""
    total = score.detach().double().sum(1 if part.side == ROWS else 0)
    if part.side == ROWS and bias is not None:
        total = total + bias.detach().double()
    if part.groups > 1:
        total = total.reshape(part.groups, -1).sum(0)
    return total


def per_unit(weight_scores: Sequence[Mapping[str, torch.Tensor]], inventory, unit: str,
             bias_scores: Sequence[Mapping[str, torch.Tensor]] | None = None) -> np.ndarray:
    """Per-unit sums of per-weight scores, shaped ``inventory.unit_shape(unit)`` (float64).

    ``weight_scores[layer][role]``: a tensor shaped like that matrix's weight (out × in), for
    every matrix ``unit`` owns (:meth:`Family.owns` of the inventory's family; others are
    ignored). ``bias_scores``, optional, the same for the biases (a column-owning unit owns no
    bias entry). Sums run in the family's role order, in float64.
    """
    family = FAMILIES[getattr(inventory, "family", "bert")]
    owns = family.owns(check_unit(unit))
    rows = []
    for i, layer in enumerate(weight_scores):
        biases = bias_scores[i] if bias_scores is not None else {}
        if unit not in BLOCK_UNITS:
            total = None
            for name in family.roles:
                if name in owns and name in layer:
                    part = _summed(layer[name], owns[name], biases.get(name))
                    total = part if total is None else total + part
            if unit == "head":
                present = getattr(inventory, "present", None)
                kept = np.arange(inventory.heads) if present is None else np.asarray(present[i], dtype=np.int64)
                row = np.zeros(inventory.heads)  # a head the model no longer has: 0 (see models.absent_as_nan)
                row[kept] = total.reshape(len(kept), inventory.head_size).sum(1).cpu().numpy()
                rows.append(row)
                continue
            rows.append(total.cpu().numpy())
        else:
            total = 0.0
            for name in family.roles:
                if name in owns and name in layer:
                    total = total + layer[name].detach().double().sum()
                    if name in biases and biases[name] is not None:
                        total = total + biases[name].detach().double().sum()
            rows.append(float(total))
    return np.asarray(rows, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# the layers of a model


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder's layers, one per depth (a shared-layer family: its per-depth views)."""
    base = getattr(model, "base_model", model)
    try:
        family = family_of(model)
    except ModelError:
        family = BERT
    if family.shared_layers:
        prepare(model)
    try:
        return list(_follow(base, family.layers))
    except AttributeError:
        raise ModelError(f"model has no {family.name} layer list ({family.layers})") from None


def encoder_matrices(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """:func:`layer_matrices` of every encoder layer of ``model``."""
    return [layer_matrices(layer) for layer in encoder_layers(model)]


def unique_parameters(layers: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``layers``, each once (shared-layer views share them)."""
    seen, out = set(), []
    for layer in layers:
        for p in layer.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def sharing_groups(model: nn.Module) -> list[list[int]]:
    """Depths whose layers share their weights, grouped (every depth alone unless shared)."""
    layers = encoder_layers(model)
    groups: dict[int, list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(id(matrix(layer, FFN_OUTPUT).weight), []).append(i)
    return list(groups.values())


class NoHeads(nn.Module):
    """Stands in for the attention module of a layer whose heads were all pruned: the context is
    width 0, so the block adds the attention-output bias alone, as the gates compute.

    It keeps the replaced module's children (the zero-width Q/K/V, the output projection when it
    sits inside — DistilBERT, MPNet, ModernBERT, ALBERT — and ALBERT's LayerNorm) under their
    names, so the family's paths still reach them."""

    def __init__(self, replaced: nn.Module | None = None, output: str | None = None,
                 residual_norm: str | None = None, returns: int = 2):
        super().__init__()
        for name, child in (replaced.named_children() if replaced is not None else ()):
            setattr(self, name, child)
        self.output_name, self.norm_name, self.returns = output, residual_norm, returns

    def forward(self, hidden_states, *args, **kwargs):
        x = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.output_name:
            x = getattr(self, self.output_name)(x)
        if self.norm_name:
            x = getattr(self, self.norm_name)(hidden_states + x)
        if self.returns == 1 and not kwargs.get("output_attentions"):  # MPNet: (context,) unless asked
            return (x,)
        return x, None


def no_heads(layer: nn.Module) -> NoHeads:
    """The :class:`NoHeads` for ``layer`` (its attention module already sliced to zero heads)."""
    family = family_of(layer)
    module = submodule(layer, family.attention)
    out_path = family.matrices[ATTENTION_OUTPUT]
    inside = out_path.startswith(family.attention + ".")
    output = out_path[len(family.attention) + 1:] if inside else None
    return NoHeads(module, output, family.residual_norm, family.returns)


def present_heads(model: nn.Module) -> list[np.ndarray]:
    """Per layer, the heads (indices on the original layers × heads grid) the model still has:
    all but those its config lists in ``pruned_heads`` (the transformers convention, which
    prunelens' physical pruning and export folders keep too)."""
    config = model.config
    heads = int(config.num_attention_heads)
    pruned = {int(k): {int(h) for h in v} for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    return [np.array([h for h in range(heads) if h not in pruned.get(i, ())], dtype=np.int64)
            for i in range(len(encoder_layers(model)))]


def set_head_count(attention: nn.Module, heads: int, head_size: int) -> None:
    """Tell an attention module how many heads it has left (the attribute names differ by family;
    the families whose forward infers the count from the weights need none)."""
    for name in ("num_attention_heads", "n_heads", "num_heads"):
        if isinstance(getattr(attention, name, None), int):
            setattr(attention, name, heads)
    if isinstance(getattr(attention, "all_head_size", None), int):
        attention.all_head_size = heads * head_size


def slice_shared_head_inputs(layer: nn.Module, kept: np.ndarray) -> None:
    """A pruned layer of a family whose layers share a per-head input (MPNet's relative-position
    bias) takes only its kept heads' slices of it: a lasting pre-hook on the attention module,
    replacing any earlier one (``kept``: original head indices)."""
    family = family_of(layer)
    if not family.shared_head_inputs:
        return
    module = submodule(layer, family.attention)
    if isinstance(module, NoHeads):
        return
    for handle_id in list(getattr(module, "_prunelens_slices", ())):
        module._forward_pre_hooks.pop(handle_id, None)
    index = torch.as_tensor(np.asarray(kept, dtype=np.int64))
    positions = dict(family.shared_head_inputs)

    def take_kept(mod, args):
        args = list(args)
        for position in positions.values():
            if position < len(args) and args[position] is not None:
                args[position] = args[position].index_select(1, index.to(args[position].device))
        return tuple(args)

    handle = module.register_forward_pre_hook(take_kept)
    module._prunelens_slices = [handle.id]
