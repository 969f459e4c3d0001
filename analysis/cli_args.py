"""Argument helpers the ``prunelens`` subcommands share: each turns one flag's text into a value
or refuses it with one ``error:`` line before anything loads (``--param``, ``--sparsities``,
``--json``/``--csv`` paths, ``--out``/``--store`` folders, ``--device``, a method with its unit and
parameters, ``--head-scopes``, ``--curve-step``, ``finetune``'s target folder), and the one writer
of ``--json`` output (stamped with its schema, NaN written as null).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
from pathlib import Path

from prunelens.analysis.errors import ParamError, PrunelensError, shown, usable_path


def parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParamError(f"--param takes name=value, got {shown(pair)}")
        name, value = pair.split("=", 1)
        if name.strip() in params:
            raise ParamError(f"--param {shown(name.strip())} is given twice ({shown(params[name.strip()])} and "
                             f"{shown(value.strip())}; give each parameter once)")
        params[name.strip()] = value.strip()
    return params


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ParamError(f"{what} must be comma-separated numbers, got {shown(text)}") from None
    if not values:
        raise ParamError(f"{what} is empty (give comma-separated numbers, e.g. 0,0.25,0.5)")
    return values


def finite_json(payload) -> tuple[object, int]:
    """``payload`` with every NaN or infinite float replaced by None (JSON has no NaN: a bare
    ``NaN`` breaks strict readers), and how many were replaced."""
    count = 0

    def clean(value):
        nonlocal count
        if isinstance(value, float) and not math.isfinite(value):
            count += 1
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(payload), count


def write_json(path: str | None, kind: str, payload: dict) -> None:
    """Write (or print, without ``path``) a ``kind`` output, stamped with its schema and the
    version (:mod:`prunelens.analysis.json_outputs` declares every kind); a value that is not a
    finite number is written as null, with a note."""
    from prunelens.analysis.json_outputs import stamp

    payload, replaced = finite_json(stamp(kind, payload))
    if replaced:
        note = (f"{replaced} value{'s' if replaced > 1 else ''} that {'are' if replaced > 1 else 'is'} not a "
                "finite number (e.g. a standard error of a single example) written as null")
        payload["notes"] = [*(payload.get("notes") or []), note]
        print(f"note: {note}", file=sys.stderr)
    text = json.dumps(payload, indent=2, allow_nan=False)
    if path:
        try:
            Path(path).expanduser().write_text(text + "\n")  # check_output expanded it too
        except OSError as exc:
            raise PrunelensError(f"cannot write {path}: {exc.strerror} (choose a writable path)") from None
        print(f"wrote {path}", file=sys.stderr)
    else:
        print(text)


def check_output(path: str | None) -> None:
    """Refuse an output path that cannot be written before any work is done: its folder is
    missing, ``~user`` names no user, or the name is too long for the file system."""
    if not path:
        return
    try:
        target = Path(path).expanduser()
    except RuntimeError:
        user = path[1:].split("/", 1)[0]
        raise PrunelensError(f"cannot write {shown(path)}: there is no user '{user}' "
                             "(give the full path)") from None
    try:
        os.stat(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise PrunelensError(f"cannot write {shown(path)}: {exc.strerror} (give a shorter path)") from None
    except ValueError as exc:  # a NUL byte
        raise PrunelensError(f"cannot write {shown(path)}: {exc} (give another path)") from None
    try:
        folder_exists = target.resolve().parent.is_dir()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise PrunelensError(f"cannot write {shown(path)}: {exc} (give another path)") from None
    if not folder_exists:
        raise PrunelensError(f"cannot write {path}: its folder does not exist (create it first)")


def folder_arg(path: str | None, flag: str) -> Path | None:
    """A folder argument (``--out``, ``--store``) checked before any work: expandable, not too
    long, not a file. None when not given."""
    if path is None:
        return None
    folder = usable_path(path, flag, ParamError)
    if folder.exists() and not folder.is_dir():
        raise ParamError(f"{flag} {shown(path)} is a file (give a folder)")
    return folder


def check_device(device: str | None) -> str:
    """``--device``: cpu, cuda or cuda:N (a GPU this machine's torch sees), or mps where present;
    refused before anything loads."""
    text = (device or "").strip()
    match = re.fullmatch(r"cpu|mps|cuda(?::(\d{1,4}))?", text)
    if not match:
        raise ParamError(f"--device must be cpu, cuda or cuda:N, got {shown(device or '')} "
                         "(use --device cpu, or cuda on a machine with an NVIDIA GPU)")
    import torch

    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParamError("--device mps: this machine's torch has no MPS device (use --device cpu)")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParamError(f"--device {text}: this machine's torch sees no CUDA GPU (use --device cpu)")
        count, index = torch.cuda.device_count(), int(match.group(1) or 0)
        if index >= count:
            devices = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
            raise ParamError(f"--device {text}: there {'is' if count == 1 else 'are'} {count} CUDA "
                             f"device{'' if count == 1 else 's'} (use --device {devices}, or cpu)")
    return text


def check_method_args(method_name: str, unit: str | None, raw_params: list[str] | None,
                       training: bool = False) -> None:
    """Method, unit and parameters checked before anything loads (one ``error:`` line)."""
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import default_unit

    method = get_method(method_name)
    params = parse_params(raw_params)
    if training:
        from prunelens.analysis.training import get_trainer

        get_trainer(method_name).validate(params)
        return
    default_unit(method_name, unit)
    method.validate(params)


def parse_head_scopes(text: str | None) -> tuple[str, ...] | None:
    """``--head-scopes global[,layer]`` (None: both)."""
    if text is None:
        return None
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in scopes if s not in ("global", "layer")]
    if bad or not scopes:
        raise ParamError(f"--head-scopes must list global and/or layer, got {text!r} (e.g. --head-scopes global)")
    return scopes


def parse_curve_points(step: float | None) -> tuple[float, ...] | None:
    """``--curve-step S``: head curves at 0, S, 2S, ... below 1 (None: the Prune slider's 5% grid)."""
    if step is None:
        return None
    if not 0.01 <= step <= 0.5:
        raise ParamError(f"--curve-step must be in [0.01, 0.5], got {step} (e.g. --curve-step 0.1)")
    return tuple(round(step * i, 4) for i in range(int(round(1 / step))) if step * i < 1 - 1e-9)


def objective_of(args) -> str | None:
    """``--objective`` as given (None: the model's and data's default)."""
    return getattr(args, "objective", None)


FINETUNE_OUT = "finetuned-default"  # `prunelens finetune` writes here (in the working folder) by default

def finetune_target(out: str | None, overwrite_shipped: bool) -> Path:
    """Where ``prunelens finetune`` writes: ``--out``, else :data:`FINETUNE_OUT`; the shipped
    checkpoint only with ``--overwrite-shipped`` (checked before anything loads)."""
    from prunelens.analysis.models import CHECKPOINT_DIR

    if overwrite_shipped and out:
        raise ParamError("give --out or --overwrite-shipped, not both")
    if overwrite_shipped:
        return CHECKPOINT_DIR
    target = folder_arg(out, "--out") or Path(FINETUNE_OUT)
    if target.resolve() == CHECKPOINT_DIR.resolve():
        raise ParamError(f"--out {out} is the shipped checkpoint (add --overwrite-shipped instead, "
                         "knowing it orphans every shipped result)")
    return target
