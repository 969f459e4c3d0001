"""Bounds on what a model folder may describe, checked before anything is allocated.

One validator for both files that size a model: ``config.json`` (:func:`check_config_bounds`:
every size a whole number within :data:`CONFIG_BOUNDS`, heads dividing the hidden size, at most
:data:`MAX_PARAMETERS` parameters, ``layer_norm_eps`` a positive finite number) and the manifest
of a ``prunelens export`` folder (:func:`check_manifest_bounds`: one row per configured layer,
heads and FFN neurons whole numbers within the config's own sizes). Callers (the model loader,
the pruned-folder reader, encoder families) call these on the parsed JSON before any tensor or
module exists. Also the size caps of the files a model folder is read from.
"""

from __future__ import annotations

from prunelens.analysis.layout import family_for_type
from prunelens.analysis.errors import ModelError, shown

# Bounds on config.json, checked before any model is allocated: generous around BERT-large
# (24 layers, hidden 1024, 16 heads, FFN 4096, vocab 30,522, 512 positions, 335 M parameters)
# and XLM-R-large (vocab 250,002, 514 positions, 560 M), far below what would exhaust memory.
MAX_LAYERS = 96
MAX_HIDDEN = 8192
MAX_HEADS = 128
MAX_FFN = 32768
MAX_VOCAB = 1_000_000
MAX_POSITIONS = 16_384
MAX_TOKEN_TYPES = 64
MAX_LABELS = 100_000  # also the bound on a data file's label ids (prunelens.analysis.data)
MAX_PARAMETERS = 1_500_000_000  # about 6 GB in fp32
NO_TOKEN_TYPES = ("deberta-v2",)  # families whose embeddings run without token types (0 allowed)
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, MAX_LAYERS),
    "hidden_size": (1, MAX_HIDDEN),
    "embedding_size": (1, MAX_HIDDEN),  # ELECTRA
    "num_attention_heads": (1, MAX_HEADS),
    "intermediate_size": (1, MAX_FFN),
    "vocab_size": (1, MAX_VOCAB),
    "max_position_embeddings": (1, MAX_POSITIONS),
    "type_vocab_size": (1, MAX_TOKEN_TYPES),
    "num_labels": (1, MAX_LABELS),
}
# bounds on float fields: outside them the forward gives NaN (a negative epsilon under a square root)
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "layer_norm_eps": (0.0, 1.0),
}

# size caps of the files a model folder is read from (each also must be a regular file)
MAX_CONFIG_BYTES = 16 << 20  # config.json (100,000 labels' id2label and label2id: ~5 MiB)
MAX_MANIFEST_BYTES = 16 << 20  # prunelens_pruned.json (96 layers: a few KiB)
MAX_TOKENIZER_BYTES = 256 << 20  # tokenizer.json of a 1 M vocabulary (XLM-R's: 17 MB)
MAX_WEIGHTS_BYTES = MAX_PARAMETERS * 4 + (256 << 20)  # the parameter cap in fp32, plus headers
MAX_SAFETENSORS_HEADER = 100_000_000


def _num_labels(config) -> int | None:
    if isinstance(config, dict):
        id2label = config.get("id2label")
        return len(id2label) if isinstance(id2label, dict) and id2label else config.get("num_labels")
    return getattr(config, "num_labels", None)


def check_config_bounds(config, name: str) -> None:
    """Refuse a config (a ``PretrainedConfig`` or config.json as a dict) whose sizes are not whole
    numbers within :data:`CONFIG_BOUNDS`, whose heads do not divide the hidden size, or whose
    parameters would exceed :data:`MAX_PARAMETERS` — before anything is allocated."""
    def get(key):
        if key == "num_labels":
            return _num_labels(config)
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    where = f"model {shown(name)}: config.json"
    values = {}
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        value = get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{where} has {key} = {value!r}, not a whole number (fix config.json)")
        if key == "type_vocab_size" and value == 0 and get("model_type") in NO_TOKEN_TYPES:
            values[key] = value
            continue
        if not lo <= value <= hi:
            raise ModelError(f"{where}'s {key} = {value} is outside {lo}..{hi} (fix config.json; "
                             "prunelens checks these bounds before allocating a model)")
        values[key] = value
    for key, (lo, hi) in FLOAT_BOUNDS.items():
        value = get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
            raise ModelError(f"{where}'s {key} = {value!r} is not a number in ({lo:g}, {hi:g}] (fix "
                             "config.json: outside it the forward gives NaN or infinite logits)")
    hidden, heads = values.get("hidden_size"), values.get("num_attention_heads")
    if hidden and heads and hidden % heads:
        raise ModelError(f"{where}'s hidden_size {hidden} is not a multiple of num_attention_heads "
                         f"{heads} (fix config.json)")
    wanted = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
              "max_position_embeddings")
    if all(k in values for k in wanted):
        count = estimated_parameters(values)
        if count > MAX_PARAMETERS:
            raise ModelError(f"{where} describes {count:,} parameters, over the cap of "
                             f"{MAX_PARAMETERS:,} (fix config.json, or use a smaller model)")


def estimated_parameters(sizes: dict) -> int:
    """Parameters of a BERT-layout encoder with these config sizes (embeddings, layers, pooler)."""
    layers, hidden = sizes["num_hidden_layers"], sizes["hidden_size"]
    ffn, emb = sizes["intermediate_size"], sizes.get("embedding_size") or hidden
    rows = sizes["vocab_size"] + sizes["max_position_embeddings"] + sizes.get("type_vocab_size", 2)
    embeddings = rows * emb + 2 * emb + (emb * hidden + hidden if emb != hidden else 0)
    layer = 4 * hidden * hidden + 4 * hidden + 2 * hidden * ffn + ffn + hidden + 4 * hidden
    return embeddings + layers * layer + hidden * hidden + hidden


def check_manifest_bounds(manifest: object, config, where: str) -> list[tuple[int, int]]:
    """The (heads, neurons) of every layer of a ``prunelens export`` manifest, checked against
    the (already bounded) config: one row per layer, each count a whole number from 0 to the
    config's own size, the head size and hidden size those of the config. Refused with one line
    naming ``where`` otherwise, before any layer is rebuilt."""
    def get(key):
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    fix = "export the model again"
    if not isinstance(manifest, dict):
        raise ModelError(f"{where} holds a {type(manifest).__name__}, not an object ({fix})")
    family = family_for_type(get("model_type"))
    ffn_key = family.ffn_key if family is not None else "intermediate_size"  # DistilBERT: hidden_dim
    layers, heads, ffn = (get(k) for k in ("num_hidden_layers", "num_attention_heads", ffn_key))
    hidden = get("hidden_size")
    rows = manifest.get("layers")
    if not isinstance(rows, list) or len(rows) != layers:
        count = len(rows) if isinstance(rows, list) else "no list of"
        raise ModelError(f"{where} has {count} layers but the config has {layers} ({fix})")
    size = family.head_size(config) if family is not None and heads and not isinstance(config, dict) else (
        hidden // heads if heads else None)
    for name, expected in (("hidden", hidden), ("head_size", size)):
        value = manifest.get(name, expected)
        if isinstance(value, bool) or not isinstance(value, int) or value != expected:
            raise ModelError(f"{where} has {name} = {shown(repr(value), 40)[1:-1]} but the config "
                             f"gives {expected} ({fix})")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ModelError(f"{where}: layer {i} is not an object with heads and neurons ({fix})")
        counts = []
        for key, top in (("heads", heads), ("neurons", ffn)):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ModelError(f"{where}: layer {i} has {key} = {shown(repr(value), 40)[1:-1]}, "
                                 f"not a whole number in 0..{top} ({fix})")
            counts.append(value)
        out.append((counts[0], counts[1]))
    return out
