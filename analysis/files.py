"""Reading files we did not make: only regular files, never blocking, never more than a cap.

Every file prunelens opens from a user's folder (config.json, a pruned model's manifest, weights,
tokenizer files, data files, sweep specs) goes through here (result-store entries get the same
treatment in :mod:`prunelens.analysis.cache`, which skips a bad entry instead of refusing it):

- :func:`regular_size` stats the path first (following symlinks, as ``open`` would) and refuses
  anything that is not a regular file (a FIFO, a socket, a device, a folder) or is over its cap,
  before anything is opened: a FIFO named ``config.json`` cannot block a read.
- :func:`read_regular` opens with ``O_NONBLOCK`` as well (a file swapped for a FIFO between the
  stat and the open still cannot block) and reads at most ``cap + 1`` bytes.
- :func:`parse_json` turns nesting too deep for the parser (``RecursionError``) into a clean
  error, like any other malformed JSON.

Errors are the caller's user-error class (``ModelError``, ``DataError``, ``ParamError``), one
line naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from prunelens.analysis.errors import PrunelensError, shown

MiB = 1 << 20


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n:,} bytes"


def regular_size(path: Path | str, cap: int, what: str, cls: type[PrunelensError]) -> int:
    """The size of ``path`` when it is a regular file of at most ``cap`` bytes; else ``cls``.
    ``FileNotFoundError`` passes through (callers word a missing file their own way)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise cls(f"cannot read {what}: {exc.strerror} (check its permissions)") from None
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a symlink loop
        reason = getattr(exc, "strerror", None) or str(exc)
        raise cls(f"cannot read {what}: {reason} (check the path)") from None
    if stat.S_ISDIR(info.st_mode):
        raise cls(f"cannot read {what}: it is a folder, not a file (give a file)")
    if not stat.S_ISREG(info.st_mode):
        raise cls(f"cannot read {what}: it is not a regular file (a pipe, socket or device is "
                  "never read; give a plain file)")
    if info.st_size > cap:
        raise cls(f"{what} is {_mib(info.st_size)}, over the {_mib(cap)} cap (give a smaller file)")
    return info.st_size


def open_regular(path: Path | str, cap: int, what: str, cls: type[PrunelensError]):
    """``path`` opened for binary reading after :func:`regular_size` (non-blocking open; the
    descriptor is checked again, so a swap to a FIFO after the stat is refused too)."""
    regular_size(path, cap, what, cls)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError as exc:
        raise cls(f"cannot read {what}: {exc.strerror} (check its permissions)") from None
    except OSError as exc:
        raise cls(f"cannot read {what}: {exc.strerror or exc} (check the path)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            raise cls(f"cannot read {what}: it is not a regular file of at most {_mib(cap)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return handle


def read_regular(path: Path | str, cap: int, what: str, cls: type[PrunelensError]) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes (a file that grew meanwhile is
    refused, not read past the cap)."""
    with open_regular(path, cap, what, cls) as f:
        raw = f.read(cap + 1)
    if len(raw) > cap:
        raise cls(f"{what} is over the {_mib(cap)} cap (give a smaller file)")
    return raw


def parse_json(raw: bytes | str, what: str, cls: type[PrunelensError], fix: str) -> object:
    """``raw`` parsed as JSON; malformed text, bad UTF-8 and nesting too deep for the parser are
    one ``cls`` error naming ``what`` and ``fix``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise cls(f"{what} is not UTF-8 text ({fix})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise cls(f"{what} is nested too deeply to be read ({fix})") from None
    except ValueError as exc:
        raise cls(f"{what} is not valid JSON ({shown(str(exc), 120)[1:-1]}) ({fix})") from None


def read_json(path: Path | str, cap: int, what: str, cls: type[PrunelensError], fix: str) -> object:
    """A regular JSON file of at most ``cap`` bytes, parsed (see :func:`parse_json`)."""
    return parse_json(read_regular(path, cap, what, cls), what, cls, fix)
