"""User-facing error types: each carries one line saying what is wrong and what to do.

The CLI prints them as ``error: <message>`` with exit code 2 (:data:`EXIT_BAD_INPUT`), or 3
(:data:`EXIT_PARTIAL`) for a :class:`PartialFailure`; the dashboard shows them as a message on
the page. Anything else that escapes is a bug and keeps its traceback.
:func:`path_error` and :func:`shown` word the errors about paths (overlong, unknown ``~user``,
unreadable) the same way for models, data and outputs.
"""

import errno
import os
from contextlib import contextmanager
from pathlib import Path


EXIT_DONE = 0  # the command did everything it was asked
EXIT_BAD_INPUT = 2  # a bad argument or input (nothing was computed)
EXIT_PARTIAL = 3  # some tasks failed; every other result was kept (sweep, analyze, precompute)


class PrunelensError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug."""


class ModelError(PrunelensError):
    """The model spec cannot be loaded or is not a supported architecture."""


class DataError(PrunelensError):
    """The data spec or file cannot be read or does not fit the model."""


class ParamError(PrunelensError):
    """A method, unit, sparsity or parameter value is not valid."""


class PartialFailure(PrunelensError):
    """Some tasks of a job failed (after their retry); everything else was stored: exit 3."""


class StoreError(PrunelensError):
    """The result store cannot be used at all (individual faulty entries are only warned about)."""


def terminal(text: object) -> str:
    """``text`` safe for one terminal line: control characters (ANSI escapes, newlines, carriage
    returns) written as escapes, so a file or label name cannot move the cursor or fake a line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message: control characters escaped, cut (with its length)
    when longer than ``limit``."""
    text = terminal(text)
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[:60]}…' ({len(text)} characters)"


def path_error(cls: type[PrunelensError], what: str, spec: str, exc: BaseException) -> PrunelensError:
    """The error for a ``what`` path ('model', 'data') that cannot even be looked at: ``~user``
    of an unknown user (``RuntimeError`` from ``Path.expanduser``) or an ``OSError`` from a stat
    (a name too long for the file system, a folder without permission, ...)."""
    if isinstance(exc, RuntimeError):
        user = str(spec)[1:].split("/", 1)[0]
        if user:
            return cls(f"{what} path {shown(spec)}: there is no user '{user}' (give the full path)")
        return cls(f"{what} path {shown(spec)}: the home folder is unknown (give the full path)")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if getattr(exc, "errno", None) == errno.ENAMETOOLONG:
        fix = "give a shorter path"
    elif isinstance(exc, PermissionError):
        fix = "check its permissions"
    else:
        fix = "check the path"
    return cls(f"{what} path {shown(spec)} cannot be used: {reason} ({fix})")


def expand_path(spec: str, what: str, cls: type[PrunelensError]) -> Path:
    """``spec`` as a path with ``~`` / ``~user`` expanded, or ``cls`` saying why it cannot be."""
    try:
        return Path(spec).expanduser()
    except RuntimeError as exc:
        raise path_error(cls, what, spec, exc) from None


def is_rust_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfacing through pyo3 (``pyo3_runtime.PanicException``,
    a ``BaseException``): a tokenizer file can make the Rust tokenizer panic."""
    return type(exc).__name__ == "PanicException"


def tokenizer_file(source) -> str:
    """The tokenizer file a message should name: ``tokenizer.json`` (or the vocabulary file) in
    the folder ``source`` (a path or a tokenizer with ``name_or_path``), else its name."""
    folder = Path(str(getattr(source, "name_or_path", source) or ""))
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model"):
        try:
            if (folder / name).is_file():
                return str(folder / name)
        except (OSError, ValueError):
            break
    return str(folder)


@contextmanager
def tokenizer_guard(source, model: str, doing: str = "tokenizing", exceptions: bool = True):
    """Turn a tokenizer's failure while ``doing`` (an exception when ``exceptions``, and always a
    Rust panic, which is no ``Exception``) into one :class:`ModelError` naming the tokenizer
    file. Our own errors and ``KeyboardInterrupt`` pass through."""
    try:
        yield
    except PrunelensError:
        raise
    except BaseException as exc:
        if not ((exceptions and isinstance(exc, Exception)) or is_rust_panic(exc)):
            raise
        kind = "panicked" if is_rust_panic(exc) else f"failed ({type(exc).__name__})"
        detail = shown(str(exc).splitlines()[0] if str(exc).strip() else "", 100)
        raise ModelError(f"the tokenizer of model {shown(model)} {kind} while {doing}: {detail} "
                         f"(file {shown(tokenizer_file(source), 120)}; fix or replace the model's "
                         "tokenizer files)") from None


def usable_path(spec: str, what: str, cls: type[PrunelensError]) -> Path:
    """``spec`` expanded (``~``) and looked at once: a path that can be used, existing or not, or
    ``cls`` saying why not (unknown ``~user``, a name too long, a NUL byte, a symlink loop, a
    blank path). For paths a command will write (``--out``, ``--store``) or read later."""
    if not str(spec).strip():
        raise cls(f"the {what} path is empty (give a path)")
    path = expand_path(spec, what, cls)
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise path_error(cls, what, spec, exc) from None
    return path
