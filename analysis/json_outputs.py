"""The contract of every ``prunelens ... --json`` output: one declaration per kind.

Each output is a JSON object that starts with ``"schema": "prunelens.<kind>/<n>"`` and
``"version"`` (the prunelens version that wrote it), followed by the kind's fields. ``<n>`` rises
when a field is removed or renamed or changes meaning; a new optional field keeps it.

This module is the one place the kinds are declared: :func:`stamp` is what the CLI's JSON writer
calls, :func:`problems` checks an output against its declaration (the tests run it on real
outputs), and :func:`markdown` writes docs/JSON.md (a test keeps the file equal to it:
``python -m prunelens.analysis.json_outputs > docs/JSON.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict,
         "array": list, "null": type(None)}


@dataclass(frozen=True)
class Field:
    """One member of an output. ``type`` is a JSON type or several joined by ``|``; an object's
    ``fields`` declare its members, an array's ``fields`` the members of each item (when the
    items are objects)."""

    name: str
    type: str
    doc: str
    required: bool = True
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True)
class Kind:
    """One kind of output. ``open``: fields beyond the declared ones may appear (a benchmark's
    figures, a training run's own result); otherwise an undeclared top-level field is an error."""

    name: str
    version: int
    command: str
    doc: str
    fields: tuple[Field, ...]
    open: bool = False

    @property
    def schema(self) -> str:
        return f"prunelens.{self.name}/{self.version}"


def _opt(field: Field) -> Field:
    return Field(field.name, field.type, field.doc, False, field.fields)


# ---------------------------------------------------------------------------------------------
# pieces several kinds share

MODEL = Field("model", "object", "the model the result is for", fields=(
    Field("name", "string", "the --model given (default, a folder, a hub id)"),
    Field("fingerprint", "string", "content hash of the weights"),
    Field("layers", "integer", "encoder layers"),
    Field("heads", "integer|array", "attention heads per layer (a list when layers differ)"),
))
DATA = Field("data", "object", "the evaluation data", fields=(
    Field("name", "string", "the --data given"),
    Field("split", "string", "which split was evaluated"),
    Field("n", "integer", "examples evaluated"),
    Field("fingerprint", "string", "content hash of the examples"),
))
OBJECTIVE = Field("objective", "string", "labels, agreement or embedding: what the metrics measure",
                  required=False)
PARAMS = Field("params", "object", "the method's parameters, every declared one with its value")
_METRICS = (
    Field("accuracy", "number", "share of examples predicted right (the objective's score, named by "
          "metric_name: agreement = share keeping the unpruned top class; cosine = mean cosine to the "
          "unpruned sentence vector)"),
    Field("loss", "number", "mean loss (agreement: KL(unpruned ‖ pruned); embedding: 1 − cosine)"),
    Field("margin", "number", "mean margin of the right class over the best other (agreement: of the "
          "unpruned class; embedding: own unpruned vector over the closest other sentence's)"),
    Field("neighbour_agreement", "number", "embedding: share of sentences whose nearest neighbour is "
          "unchanged", required=False),
    Field("sts_spearman", "number", "embedding on text,text_pair,score data: Spearman of cosines and "
          "scores", required=False),
    Field("recall_at_1", "number", "embedding on query,positive data: share of queries whose positive "
          "ranks first", required=False),
    Field("recall_at_10", "number", "embedding on query,positive data: ... in the top 10", required=False),
    Field("accuracy_se", "number", "standard error of accuracy", required=False),
    Field("loss_se", "number", "standard error of loss", required=False),
    Field("margin_se", "number", "standard error of margin", required=False),
    Field("n", "integer", "examples evaluated", required=False),
)


def _metrics(name: str, doc: str) -> Field:
    return Field(name, "object", doc, fields=_METRICS)


COMPRESSION = Field("compression", "object", "encoder parameters the removed units own", fields=(
    Field("removed", "integer", "parameters removed"),
    Field("total", "integer", "encoder parameters"),
    Field("fraction", "number", "removed / total"),
))
MASK = Field("mask", "array", "1 kept, 0 removed, shaped like the scores (null: a head the "
             "checkpoint does not have)")
TASKS = Field("tasks", "array", "one row per store entry of the plan", fields=(
    Field("kind", "string", "scores, mask-eval, block-eval or train-run"),
    Field("method", "string", "the method"),
    Field("unit", "string", "the unit (empty for a training run)"),
    Field("label", "string", "what the entry is, in words"),
    Field("status", "string", "stored (found), done (computed now), failed, blocked or todo"),
    Field("digest", "string", "the store key"),
    Field("seconds", "number|null", "time spent on it"),
    Field("error", "string|null", "why it failed", required=False),
))
COUNTS = Field("counts", "object", "tasks by status: stored, done, failed (and blocked for a sweep)")
NOTES = Field("notes", "array", "one sentence each about what was read or left out")


# ---------------------------------------------------------------------------------------------
# the kinds

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("methods", 1, "prunelens methods", "every registered method (built in and plug-in)", (
        Field("methods", "array", "one object per method", fields=(
            Field("name", "string", "what --method takes"),
            Field("title", "string", "its name in words"),
            Field("summary", "string", "what it scores"),
            Field("units", "array", "the units it scores: head, attention, ffn, neuron"),
            Field("params", "array", "declared parameters: name, type, default, help, and "
                  "choices or range"),
            Field("trains", "boolean", "it has a training mode (prunelens train --method NAME)"),
            Field("training_params", "array", "the training mode's declared parameters"),
            Field("expensive", "boolean", "computing it costs many evaluations"),
            Field("default_scope", "string", "global or layer: how prune ranks by default"),
            Field("paper", "string", "the paper it follows", required=False),
            Field("deviations", "array", "where prunelens differs from the paper or its code",
                  required=False),
            Field("diagnostic", "boolean", "its scores are a diagnostic, not a ranking",
                  required=False),
        )),
    )),
    Kind("score", 1, "prunelens score", "importance scores of one method for one unit", (
        Field("method", "string", "the method"),
        Field("unit", "string", "head, attention, ffn or neuron"),
        PARAMS, MODEL, DATA, OBJECTIVE,
        Field("scores", "array", "layers x heads (head), one list per layer (neuron), one value "
              "per layer (attention, ffn); higher = more important; null: an absent head"),
        Field("seconds", "number", "time to compute (or read) them"),
        Field("cached", "boolean", "read from the store (user or shipped) rather than computed"),
    )),
    Kind("prune", 1, "prunelens prune", "a method's units removed and the model evaluated", (
        Field("method", "string", "the method"),
        Field("unit", "string", "the unit pruned"),
        Field("scope", "string", "global or layer ranking"),
        PARAMS, MODEL, DATA, OBJECTIVE,
        _metrics("base", "the unpruned model"),
        _metrics("pruned", "the masked model"),
        Field("delta", "object", "pruned - base for each metric, with paired standard errors"),
        Field("precision", "string", "fp32 or checked bf16: how the pruned model was evaluated"),
        MASK,
        Field("sparsity", "number", "fraction of units removed"),
        Field("requested_sparsity", "number|null", "the --sparsity given"),
        Field("threshold", "number|null", "the --threshold given"),
        COMPRESSION,
        Field("evaluated", "string", "masked: units gated off, weights untouched"),
        Field("from_store", "boolean", "the evaluation was read from the store"),
        Field("masked_seconds", "number", "time of the masked evaluation"),
        Field("flipped", "array", "examples whose prediction changed (the first ones)",
              required=False),
        Field("flipped_count", "integer", "how many predictions changed", required=False),
        Field("physical", "object", "--physical: the weights sliced, evaluated and timed against "
              "the masked model", required=False),
        NOTES,
        Field("seconds", "number", "wall time of the command's work"),
    )),
    Kind("export", 1, "prunelens export", "the physically pruned model written to a folder", (
        Field("method", "string", "the method"),
        Field("unit", "string", "head or ffn"),
        Field("scope", "string", "global or layer ranking"),
        PARAMS,
        Field("sparsity", "number", "fraction of units removed"),
        Field("requested_sparsity", "number|null", "the --sparsity given"),
        Field("threshold", "number|null", "a threshold, when one chose the units"),
        MASK,
        Field("out", "string", "the folder written"),
        MODEL, DATA, OBJECTIVE,
        _metrics("base", "the unpruned model"),
        _metrics("pruned", "the reloaded pruned model"),
        COMPRESSION,
        Field("encoder_params", "object", "encoder parameters unpruned and pruned"),
        Field("files", "array", "the files written, relative to out"),
        Field("max_abs_logit_difference", "object", "the reloaded (and ONNX) model vs the masked"),
        Field("onnx", "object", "the ONNX file's timing in onnxruntime (absent with --no-onnx)",
              required=False),
        Field("seconds", "number", "wall time"),
    )),
    Kind("curve", 1, "prunelens curve", "metrics against sparsity for several methods", (
        Field("rows", "array", "one row per method and sparsity (the CSV's rows)", fields=(
            Field("method", "string", "the method"),
            Field("sparsity", "number", "fraction of units removed"),
            Field("accuracy", "number", "accuracy of the pruned model"),
            Field("loss", "number", "loss of the pruned model"),
            Field("margin", "number", "margin of the pruned model"),
            Field("compression", "number", "fraction of encoder parameters removed",
                  required=False),
        )),
    )),
    Kind("train", 1, "prunelens train", "one training run (a method's training mode): the run's "
         "variants, their metrics and histories (the RunResult shape of docs/ARCHITECTURE.md; "
         "older stored runs keep the shape they were written in)", (
        Field("method", "string", "the training mode"),
        Field("params", "object", "the training parameters"),
        MODEL, DATA, OBJECTIVE,
        Field("seconds", "number", "time the run took when it was computed"),
        Field("cached", "boolean", "read from the store rather than run now"),
    ), open=True),
    Kind("analyze", 1, "prunelens analyze", "a store-filling job: its estimate and every task", (
        Field("estimate", "object", "the time estimate made before it started"),
        Field("wall_seconds", "number", "wall time"),
        COUNTS, NOTES, TASKS,
    )),
    Kind("precompute", 1, "prunelens precompute", "analyze with every training mode into a store "
         "folder (what ships in cached_results/)", (
        Field("estimate", "object", "the time estimate made before it started"),
        Field("wall_seconds", "number", "wall time"),
        COUNTS, NOTES, TASKS,
        Field("manifest_entries", "integer", "entries listed in the folder's manifest.json "
              "(with --out)", required=False),
    )),
    Kind("sweep", 1, "prunelens sweep", "a grid of analyses and training runs (docs/SWEEPS.md)", (
        Field("spec", "string", "the spec file"),
        Field("executor", "string", "local or ray"),
        Field("workers", "integer|null", "parallel workers"),
        Field("wall_seconds", "number", "wall time"),
        Field("interrupted", "boolean", "the sweep was stopped before the end"),
        COUNTS, NOTES, TASKS,
    )),
    Kind("bench", 1, "prunelens bench", "performance figures; every figure is named in "
         "docs/PERFORMANCE.md (seconds end in _s, ratios in _vs_ or ratio)", (
        MODEL, DATA,
        Field("threads", "integer", "torch threads"),
        Field("quick", "boolean", "--quick: fewer repetitions"),
        Field("forward_s", "number", "one forward pass over the data"),
        Field("eval_p50_s", "number", "median masked evaluation (a slider move)"),
        Field("ratio", "number", "naive loop / eval_p50_s"),
    ), open=True),
    Kind("finetune", 1, "prunelens finetune", "the rebuilt default checkpoint's manifest", (
        Field("sha256", "string", "SHA-256 of finetuned.safetensors"),
        Field("base", "string", "the base weights"),
        Field("base_sha256", "string", "SHA-256 of the base weights"),
        Field("tensors", "integer", "tensors stored (those fine-tuning changed)"),
        Field("dev_accuracy", "number", "accuracy on the 872 dev sentences"),
        Field("train_examples", "integer", "training sentences"),
        Field("seconds", "number", "wall time"),
        Field("recipe", "object", "the recipe (epochs, batch size, learning rate, seed, ...)"),
    )),
)}


def stamp(kind: str, payload: dict) -> dict:
    """``payload`` as the output of ``kind``: its schema and the prunelens version first."""
    from prunelens import __version__

    if not isinstance(payload, dict):
        raise TypeError(f"a {kind} output must be an object, got {type(payload).__name__}")
    head = {"schema": KINDS[kind].schema, "version": __version__}
    return {**head, **{k: v for k, v in payload.items() if k not in head}}


def _type_ok(value, types: str) -> bool:
    if value is None and "number" in types.split("|"):
        return True  # a number that is not finite is written as null (the writer notes it)
    for name in types.split("|"):
        expected = TYPES[name]
        if name in ("integer", "number") and isinstance(value, bool):
            continue
        if isinstance(value, expected):
            return True
    return False


def _check(where: str, obj: dict, fields: tuple[Field, ...], closed: bool) -> list[str]:
    found = []
    declared = {f.name for f in fields}
    for field in fields:
        if field.name not in obj:
            if field.required:
                found.append(f"{where}: missing '{field.name}'")
            continue
        value = obj[field.name]
        if not _type_ok(value, field.type):
            found.append(f"{where}.{field.name}: {type(value).__name__} is not {field.type}")
        elif field.fields and isinstance(value, dict):
            found += _check(f"{where}.{field.name}", value, field.fields, False)
        elif field.fields and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    found.append(f"{where}.{field.name}[{i}]: not an object")
                else:
                    found += _check(f"{where}.{field.name}[{i}]", item, field.fields, False)
    if closed:
        found += [f"{where}: undeclared field '{name}'" for name in obj if name not in declared]
    return found


def problems(payload) -> list[str]:
    """What is wrong with an output, checked against its declaration ([] when nothing)."""
    if not isinstance(payload, dict):
        return [f"an output is an object, got {type(payload).__name__}"]
    schema = payload.get("schema", "")
    kind = KINDS.get(schema.removeprefix("prunelens.").split("/")[0]) if isinstance(schema, str) else None
    if kind is None or schema != kind.schema:
        return [f"unknown schema {schema!r}"]
    head = (Field("schema", "string", ""), Field("version", "string", ""))
    if not any(f.name == "notes" for f in kind.fields):
        head += (_opt(NOTES),)  # any output may say what it replaced or left out
    return _check(kind.name, payload, head + kind.fields, not kind.open)


def _rows(fields: tuple[Field, ...], prefix: str = "") -> list[str]:
    rows = []
    for f in fields:
        rows.append(f"| `{prefix}{f.name}` | {f.type.replace('|', ' or ')} | "
                    f"{'' if f.required else '(optional) '}{f.doc} |")
        if f.fields:
            rows += _rows(f.fields, f"{prefix}{f.name}{'[].' if f.type == 'array' else '.'}")
    return rows


def markdown() -> str:
    """docs/JSON.md: every kind's schema name and fields."""
    lines = [
        "# The JSON outputs of `prunelens`",
        "",
        "<!-- generated by `python -m prunelens.analysis.json_outputs > docs/JSON.md` from",
        "     analysis/json_outputs.py; tests/promises/test_json_outputs.py keeps them equal -->",
        "",
        "Every `--json FILE` output (and what `precompute`, `bench` and `finetune` print",
        "without `--json`) is one JSON object. Its first two fields are",
        "`\"schema\": \"prunelens.<kind>/<n>\"` and `\"version\"`, the",
        "prunelens version that wrote it. `<n>` rises when a field is removed or renamed or changes",
        "meaning; a new optional field keeps it. Members of nested objects that are not listed may",
        "appear; a kind marked *open* may also have top-level fields beyond those listed. A number",
        "that is not finite (the standard error of a single example) is written as `null`, and a",
        "`notes` list (any kind may carry one) says so.",
        "",
        "| kind | schema | command |",
        "|---|---|---|",
        *[f"| [{k.name}](#{k.name}) | `{k.schema}` | `{k.command}` |" for k in KINDS.values()],
    ]
    for kind in KINDS.values():
        lines += ["", f"## {kind.name}", "",
                  f"`{kind.schema}` from `{kind.command} --json FILE`: {kind.doc}"
                  + (" (*open*)." if kind.open else "."), "",
                  "| field | type | meaning |", "|---|---|---|",
                  "| `schema` | string | `" + kind.schema + "` |",
                  "| `version` | string | the prunelens version that wrote it |",
                  *_rows(kind.fields)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
