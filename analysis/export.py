"""Export of a physically pruned model: prunelens-loadable weights and an ONNX file.

``prunelens export --method M --sparsity S --out DIR`` prunes by a method's scores, cuts the
removed heads/neurons out of the weights (:func:`prunelens.analysis.pruning.physically_prune`) and writes
into ``DIR``:

- ``config.json`` (the unpruned model's config), ``model.safetensors`` (the sliced weights),
  the tokenizer files, and ``prunelens_pruned.json``: the per-layer structure (heads and FFN
  neurons kept) that a ``BertConfig`` cannot express. :func:`prunelens.analysis.models.load_model` sees that
  manifest and calls :func:`prunelens.analysis.pruned_folder.load_pruned`, which rebuilds the sliced layers before loading
  the weights, so ``prunelens --model DIR`` gives the masked model's logits;
- ``model.onnx`` (dynamic batch and sequence length), checked with onnxruntime against the torch
  physically pruned model, and timed against the unpruned model exported the same way;
- ``export.json``: what was pruned, the logit differences and the measured speed.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import ParamError, PrunelensError, usable_path
from prunelens.analysis.gates import Masks
from prunelens.analysis.hooks import model_lock
from prunelens.analysis.methods.base import Progress, no_progress
from prunelens.analysis.pruned_folder import MANIFEST, save_pruned

ONNX_FILE = "model.onnx"
REPORT = "export.json"
ONNX_TIMING_REPEATS = 3


# ---------------------------------------------------------------------------------------------
# checks made before anything loads


def check_out_dir(out: str | Path) -> Path:
    """The export folder: new (its parent must exist), empty, or an earlier export (replaced)."""
    path = usable_path(str(out), "--out", ParamError)  # ~nouser, a name too long: one line
    if path.exists():
        if not path.is_dir():
            raise ParamError(f"--out {out} is a file (give a folder to write the export into)")
        if any(path.iterdir()) and not (path / MANIFEST).exists():
            raise ParamError(f"--out {out} is not empty and holds no earlier export "
                             "(give a new or empty folder)")
    elif not path.resolve().parent.is_dir():
        raise ParamError(f"--out {out}: its parent folder does not exist (create it first)")
    return path


def check_onnx_available() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise PrunelensError(f"ONNX export needs {exc.name} (pip install -e '.[export]', or pass "
                             "--no-onnx)") from None


# ---------------------------------------------------------------------------------------------
# the pruned structure: save and rebuild


# ---------------------------------------------------------------------------------------------
# ONNX


class _LogitsOnly(nn.Module):
    """The classifier's logits, or a headless encoder's pooled sentence vector (``pooling``)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], pooling=None):
        super().__init__()
        self.model, self.names, self.pooling = model, names, pooling

    def forward(self, *inputs):
        from prunelens.analysis.objectives import model_output

        return model_output(self.model, dict(zip(self.names, inputs)), self.pooling)


def export_onnx(model: nn.Module, batch, path: Path, pooling=None) -> None:
    """``model`` as ONNX with dynamic batch and sequence axes (the inputs of ``batch``); a
    headless encoder (``pooling``) outputs its pooled sentence vector, ``sentence_embedding``."""
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    inputs = batch.model_inputs()
    names = tuple(inputs)
    dims = {n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_LogitsOnly(model, names, pooling), tuple(inputs[n] for n in names), str(path),
                          input_names=list(names),
                          output_names=["logits" if pooling is None else "sentence_embedding"],
                          dynamic_shapes=(tuple(dims[n] for n in names),), dynamo=True,
                          verbose=False, optimize=True, external_data=False)


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session, batches, n: int, classes: int) -> tuple[np.ndarray, float]:
    """Logits in data order and the best of ``ONNX_TIMING_REPEATS`` timed passes (seconds)."""
    logits, times = ort_compare([session], batches, n, classes)
    return logits[0], times[0]


def ort_compare(sessions: list, batches, n: int, classes: int) -> tuple[list[np.ndarray], list[float]]:
    """Each session's logits in data order and its best of ``ONNX_TIMING_REPEATS`` timed passes;
    the passes alternate between the sessions, so a busy moment of the machine hits both."""
    feeds = [{k: v.numpy() for k, v in b.model_inputs().items()} for b in batches]
    logits = [np.zeros((n, classes), dtype=np.float32) for _ in sessions]
    best = [float("inf")] * len(sessions)
    for i, session in enumerate(sessions):
        for b, f in zip(batches, feeds):  # warm-up pass, which also gives the logits
            logits[i][b.index.numpy()] = session.run(None, f)[0]
    for _ in range(ONNX_TIMING_REPEATS):
        for i, session in enumerate(sessions):
            t0 = time.perf_counter()
            for f in feeds:
                session.run(None, f)
            best[i] = min(best[i], time.perf_counter() - t0)
    return logits, best


# ---------------------------------------------------------------------------------------------
# the export


def onnx_available() -> bool:
    try:
        check_onnx_available()
    except PrunelensError:
        return False
    return True


def export(session, method_name: str, sparsity: float | None, out: str | Path, unit: str | None = None,
           scope: str | None = None, params: dict | None = None, onnx: bool = True,
           progress: Progress = no_progress, threshold: float | None = None,
           keep_one_per_layer: bool = False) -> dict:
    """Prune by a method (the mask :func:`prunelens.analysis.operations.prune` selects), write the physically
    pruned model (and ONNX) into ``out``; returns the report also written to ``out/export.json``."""
    from prunelens.analysis.models import load_model
    from prunelens.analysis.operations import prune
    from prunelens.analysis.layout import UNITS
    from prunelens.analysis.pruning import check_sparsity, physically_prune

    if sparsity is not None:
        check_sparsity(sparsity)
    out = check_out_dir(out)
    if onnx:
        check_onnx_available()
    start = time.perf_counter()
    pruned = prune(session, method_name, sparsity, unit, scope, params, flips=False, progress=progress,
                   threshold=threshold, keep_one_per_layer=keep_one_per_layer)
    unit = pruned["unit"]
    if unit not in UNITS:
        raise ParamError(f"unit '{unit}' cannot be cut out of the weights "
                         f"(export one of {', '.join(UNITS)})")
    mask = np.asarray(pruned["mask"])
    masks = Masks.for_unit(unit, mask)
    progress(0.5, "cutting the weights")
    small = physically_prune(session.loaded.model, masks)
    info = {"method": pruned["method"], "unit": unit, "scope": pruned["scope"],
            "params": pruned["params"], "sparsity": pruned["sparsity"],
            "requested_sparsity": sparsity, "threshold": threshold, "mask": pruned["mask"],
            "source_model": session.loaded.describe()}
    for old in (out / ONNX_FILE, out / REPORT):
        old.unlink(missing_ok=True)
    save_pruned(small, session.loaded.tokenizer, out, info)
    pooling = session.loaded.pooling
    if pooling is not None:  # a sentence encoder: its folder says how it pools, as it did
        from prunelens.analysis.objectives import write_pooling

        write_pooling(out, pooling, int(session.loaded.model.config.hidden_size))
    evaluator = session.evaluator
    # exact fp32 on both sides (the masked fast path may run checked bf16: prunelens.analysis.precision)
    masked = evaluator.reference_outputs(masks).logits
    phys = evaluator.reference_outputs(model=small).logits
    progress(0.6, "loading the export again")
    reloaded = load_model(str(out))
    again = evaluator.reference_outputs(model=reloaded.model).logits
    report = {
        **{k: info[k] for k in ("method", "unit", "scope", "params", "sparsity", "requested_sparsity",
                                  "threshold", "mask")},
        "out": str(out),
        "model": session.loaded.describe(),
        "data": session.data.describe(),
        "base": pruned["base"], "pruned": pruned["pruned"],
        "compression": pruned["compression"],
        "encoder_params": {"unpruned": session.loaded.inventory.encoder_params,
                           "pruned": reloaded.inventory.encoder_params},
        "objective": session.objective,
        "files": sorted(p.name for p in out.iterdir()),
        "max_abs_logit_difference": {"physical_vs_masked": float(np.abs(phys - masked).max()),
                                     "reloaded_vs_masked": float(np.abs(again - masked).max())},
    }
    if onnx:
        progress(0.7, "exporting ONNX")
        batches = evaluator.batches
        n, classes = evaluator.n, masked.shape[1]
        export_onnx(small, batches[0], out / ONNX_FILE, pooling)
        with tempfile.TemporaryDirectory(prefix="prunelens-onnx-") as tmp:
            progress(0.8, "exporting the unpruned model to ONNX (for the timing)")
            with model_lock(session.loaded.model):  # no other session's gate hooks traced
                export_onnx(session.loaded.model, batches[0], Path(tmp) / ONNX_FILE, pooling)
            progress(0.9, "timing onnxruntime, pruned vs unpruned")
            (onnx_pruned, onnx_full), (t_pruned, t_full) = ort_compare(
                [ort_session(out / ONNX_FILE), ort_session(Path(tmp) / ONNX_FILE)], batches, n, classes)
        base = evaluator.base_outputs.logits
        report["max_abs_logit_difference"].update(
            onnx_vs_torch_pruned=float(np.abs(onnx_pruned - phys).max()),
            onnx_unpruned_vs_torch_unpruned=float(np.abs(onnx_full - base).max()))
        report["onnx"] = {"file": ONNX_FILE, "bytes": (out / ONNX_FILE).stat().st_size,
                          "examples": n, "threads": max(1, torch.get_num_threads()),
                          "repeats": ONNX_TIMING_REPEATS,
                          "seconds_pruned": round(t_pruned, 6), "seconds_unpruned": round(t_full, 6),
                          "speedup": round(t_full / t_pruned, 3) if t_pruned > 0 else None}
        report["files"] = sorted(p.name for p in out.iterdir()) + [REPORT]
    else:
        report["files"].append(REPORT)
    report["seconds"] = round(time.perf_counter() - start, 3)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    progress(1.0, "done")
    return report


def zip_folder(folder: str | Path) -> bytes:
    """The export folder as zip bytes (for a download button)."""
    import io
    import zipfile

    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent))
    return buf.getvalue()
