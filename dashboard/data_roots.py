"""Which server-side paths the dashboard may open, and what it may say about them.

A data file ("File path" in the sidebar, or ``?data=`` in a link) and a model folder ("Local
folder", ``?model=``) are read on the server, so whoever can reach the page chooses a path on
the server's disk. Such paths must lie inside the folders the user allowed:
``prunelens dashboard --data-root DIR`` (repeatable), which the command passes to the server as
``PRUNELENS_DATA_ROOTS`` (folders joined with ``os.pathsep``); without it, the folder the
dashboard was started in. A path is resolved first (``~``, ``..``, symlinks), so a link inside a
root that points outside is refused too. A refusal does not say whether the path exists.
The loaders then get the path as typed, so names and messages read as the user wrote them.

A file inside a root that is not a valid data set is reported without its content: the
analysis layer's messages for the command line name the columns it found (a .txt file's first
line, a JSON file's keys) or a parser's excerpt; here those parts are dropped.
Hub ids (not paths) and the built-in data sets are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

from prunelens.analysis.data import TextData
from prunelens.analysis.data import load_data as _load_data
from prunelens.analysis.errors import DataError, ModelError, PrunelensError, shown

ENV = "PRUNELENS_DATA_ROOTS"
BUILT_IN_DATA = ("default", "rt", "rotten_tomatoes")


def roots() -> list[Path]:
    """The allowed folders, resolved: ``$PRUNELENS_DATA_ROOTS``, else the working folder."""
    raw = os.environ.get(ENV, "")
    folders = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    return folders or [Path.cwd().resolve()]


def confine(spec: str, what: str, error: type[PrunelensError] = DataError) -> str:
    """``spec`` resolved, if it lies inside a data root; else ``error`` (the same words whether
    or not the path exists)."""
    try:
        path = Path(spec).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        path = None
    if path is None or not any(path.is_relative_to(root) for root in roots()):
        raise error(f"{what} refused: the dashboard reads only inside the folder it was started in "
                    f"or those given with `prunelens dashboard --data-root DIR` (move the {'folder' if 'folder' in what else 'file'} there, "
                    "or restart the dashboard with --data-root)")
    return str(path)


def is_model_path(spec: str) -> bool:
    """Whether ``prunelens.analysis.models.load_model`` takes ``spec`` for a folder (not a hub id)."""
    if spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1:
        return True
    try:
        return Path(spec).expanduser().exists()
    except (OSError, ValueError):  # a NUL byte, a name too long: not a folder it could read
        return True


def model_spec(spec: str) -> str:
    """What to hand ``load_model``: a folder confined to the data roots; a hub id as it is."""
    if spec in ("default", "default-embedding") or not is_model_path(spec):
        return spec
    folder = Path(confine(spec, "model folder", ModelError))
    _files_inside(folder)
    return spec


MAX_FOLDER_ENTRIES = 10_000  # entries of a model folder looked at


def _files_inside(folder: Path) -> None:
    """Every entry of a confined model folder resolves inside a data root too: a symlinked
    ``model.safetensors`` or ``config.json`` pointing elsewhere would be read from outside."""
    inside = roots()
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_FOLDER_ENTRIES:
                    break
                if not entry.is_symlink():
                    continue
                try:
                    target = Path(entry.path).resolve()
                except (OSError, RuntimeError):
                    target = None
                if target is None or not any(target.is_relative_to(root) for root in inside):
                    raise ModelError(f"model folder refused: {shown(entry.name, 60)} in it is a link to a file "
                                     "outside the folders the dashboard reads (copy the file into the folder, or "
                                     "restart the dashboard with --data-root)")
    except (OSError, ValueError):  # not a folder, missing, unreadable, a name too long, ...
        return  # the loader says what is wrong with the folder itself


def load_data(spec: str, limit: int | None = None) -> TextData:
    """``prunelens.analysis.data.load_data`` (dev split) for the dashboard: files confined to the data
    roots, and no file content in an error message."""
    if spec in BUILT_IN_DATA or spec.startswith("glue:"):
        return _load_data(spec, split="dev", limit=limit)
    confine(spec, "data file")
    try:
        return _load_data(spec, split="dev", limit=limit)
    except DataError as exc:
        raise DataError(_without_content(str(exc), Path(spec).name)) from None


def _without_content(message: str, name: str) -> str:
    hint = " (its content is not shown here; the first line must name the columns text and label)"
    if " (found:" in message:  # the columns found: a text file's first line, a JSON file's keys
        return message.split(" (found:", 1)[0] + hint
    if message.startswith(f"could not parse {name}:"):  # a parser's words may quote the file
        return f"could not parse {name} as CSV, TSV or JSONL" + hint
    return message
