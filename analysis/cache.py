"""The result store: computed scores, curves and training runs, content-addressed.

- A key is the SHA-256 of the model fingerprint, the data fingerprint (content hashes, not
  names), the kind of result, the method, the unit, the canonical JSON of the parameters and the
  results-format version. File names are that hex digest only: no user string reaches a path.
- Reads look in the user store (``$PRUNELENS_CACHE``, default ``~/.cache/prunelens``) and then in
  the shipped ``cached_results/``; writes go to the user store only.
- Writes are atomic (temp file in the same folder + ``os.replace``), so concurrent writers of
  one key each leave a complete entry. An unreadable, truncated or foreign-version entry is
  reported with a warning, ignored and recomputed; a read-only or full store only warns.
- An entry is used only when it is authentic and well-formed: user entries carry an HMAC
  under this user's secret (``~/.config/prunelens/store-key``, made on first write, kept
  outside every store folder), shipped entries are
  listed with their SHA-256 in ``cached_results/manifest.json``; the result must pass
  :mod:`prunelens.analysis.store_schema` for its kind. A planted, edited or malformed entry is warned
  about and recomputed; anything but a regular file (a FIFO, a device) or a file over
  ``MAX_ENTRY_BYTES`` is skipped unread; nesting too deep for the JSON parser is "corrupt".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prunelens.analysis.store_schema import result_problem

FORMAT_VERSION = 1
# the shipped store beside analysis/: the repository's top-level cached_results/ in a source checkout,
# prunelens/cached_results/ inside an installed wheel (pyproject.toml maps it there)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "cached_results"


MAX_ENTRY_BYTES = 64 << 20  # the largest training run is well under 1 MiB
MAX_LISTED_BYTES = 8 << 20  # entries a listing (``entries``) reads: bigger ones are skipped unread
LISTING_PEEK_BYTES = 4096  # what a listing reads of an entry before deciding to parse it
ORPHAN_TMP_AGE_S = 3600  # a temp file older than this was left by a killed writer: removed
SECRET_NAME = "store-key"  # this user's HMAC secret for store entries (see secret_path)
MANIFEST_NAME = "manifest.json"  # a shipped store's list of entries and the SHA-256 of each
OLD_MANIFEST_NAME = "MANIFEST.json"  # its name before 0.3: still read when a store has no manifest.json


class StoreWarning(UserWarning):
    """A store entry was unusable or could not be written; the result was recomputed or kept."""


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=4)


def _read_regular_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it is not a regular file or is too big. Opened
    without blocking, so a FIFO planted under an entry's name cannot hang the reader."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read(MAX_ENTRY_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def _peek_kind(path: Path) -> str | None:
    """The ``kind`` an entry file declares, from its first bytes alone (entries are canonical
    JSON: ``digest``, ``format``, then ``key`` with its ``kind``), or None when the file is not a
    regular file of at most :data:`MAX_LISTED_BYTES` or does not start like an entry. Listings
    read whole only the entries of the kind they list."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LISTED_BYTES:
            return None
        head = os.read(fd, LISTING_PEEK_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    start = _ENTRY_HEAD.match(head)
    match = _KIND_IN_KEY.search(head, start.end()) if start else None
    return match.group(1) if match else None


_ENTRY_HEAD = re.compile(r'\{"digest":"[0-9a-f]{64}","format":\d+,"key":\{')
_KIND_IN_KEY = re.compile(r'"kind":"([^"\\]*)"')


def secret_path() -> Path:
    """Where this user's store secret lives: outside every store folder, so a store folder that
    was copied, downloaded or planted cannot bring a secret that vouches for its own entries."""
    if os.environ.get("PRUNELENS_SECRET_FILE"):
        return Path(os.environ["PRUNELENS_SECRET_FILE"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "prunelens" / SECRET_NAME


def store_secret(create: bool) -> bytes | None:
    """This user's HMAC secret for the entries they write (made on first write, mode 0600)."""
    path = secret_path()
    try:
        return _secret_cached(str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, ValueError):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".key.", dir=path.parent)  # mkstemp files are 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic and never overwrites: two first writers agree on one key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())


@functools.lru_cache(maxsize=4)
def _secret_cached(path: str, mtime_ns: int) -> bytes | None:
    """The secret file's bytes, read once per version of the file (every store read checks it)."""
    return bytes.fromhex(Path(path).read_text().strip()) or None


def _mac(secret: bytes | None, entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.new(secret or b"", canonical(body).encode(), hashlib.sha256).hexdigest()


def load_manifest(root: Path) -> dict[str, str]:
    """digest -> SHA-256 of the entry file, from a shipped store's manifest ({} without one)."""
    for name in (MANIFEST_NAME, OLD_MANIFEST_NAME):
        path = root / name
        try:
            return _manifest_cached(str(path), path.stat().st_mtime_ns)
        except OSError:
            continue
    return {}


@functools.lru_cache(maxsize=4)
def _manifest_cached(path: str, mtime_ns: int) -> dict[str, str]:
    try:
        listed = json.loads(Path(path).read_text(encoding="utf-8")).get("entries", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}


def write_manifest(root: Path) -> int:
    """List every entry file under ``root`` with its SHA-256, making ``root`` a shippable store
    (``prunelens precompute --out``); returns the number of entries."""
    entries = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*/*.json"))}
    (root / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT_VERSION, "entries": entries},
                                                 indent=0, sort_keys=True) + "\n")
    return len(entries)


def default_user_dir() -> Path:
    return Path(os.environ.get("PRUNELENS_CACHE") or Path.home() / ".cache" / "prunelens")


@dataclass(frozen=True)
class Key:
    model: str
    data: str
    kind: str
    method: str = ""
    unit: str = ""
    params: str = "{}"  # canonical JSON

    @classmethod
    def make(cls, model: str, data: str, kind: str, method: str = "", unit: str = "",
             params: dict | None = None) -> Key:
        return cls(model, data, kind, method, unit, canonical(params or {}))

    @property
    def digest(self) -> str:
        text = canonical({"v": FORMAT_VERSION, "model": self.model, "data": self.data,
                          "kind": self.kind, "method": self.method, "unit": self.unit,
                          "params": self.params})
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> dict:
        return {"model": self.model, "data": self.data, "kind": self.kind, "method": self.method,
                "unit": self.unit, "params": json.loads(self.params)}


def mask_params(mask: np.ndarray) -> dict:
    """A keep-mask as store-key parameters: its 0/1 bits row-major, and its shape."""
    bits = "".join("1" if v else "0" for v in np.asarray(mask).ravel())
    return {"mask": bits, "shape": list(np.shape(mask))}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value):
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"cannot store {type(value).__name__}")


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # (a symlink loop)
        return False


class ResultStore:
    def __init__(self, user_dir: Path | str | None = None, shipped_dir: Path | str | None = SHIPPED_DIR):
        self.user_dir = Path(user_dir) if user_dir is not None else default_user_dir()
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None
        # the user store may be the shipped folder under another spelling (PRUNELENS_CACHE=cached_results,
        # precompute --out cached_results): its manifest then vouches for it there too
        self._user_is_shipped = self.shipped_dir is not None and _same_folder(self.user_dir, self.shipped_dir)

    def _path(self, root: Path, key: Key) -> Path:
        digest = key.digest
        return root / digest[:2] / f"{digest}.json"

    def _read(self, path: Path, key: Key | None, root: Path) -> dict | None:
        """The entry at ``path`` if it is a valid, authentic entry for ``key`` (for any key when
        None: the file's own name must then be its digest), else None with a warning."""
        digest = key.digest if key is not None else path.stem
        try:
            raw = _read_regular_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn(f"store entry {path.name} unreadable ({exc.strerror}); recomputing")
            return None
        if raw is None:
            _warn(f"store entry {path.name} is not a regular file of at most {MAX_ENTRY_BYTES >> 20} MiB; "
                  "skipping it")
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError, RecursionError):
            _warn(f"store entry {path.name} is corrupt or truncated; ignoring and recomputing")
            return None
        if entry.get("format") != FORMAT_VERSION:
            _warn(f"store entry {path.name} has format {entry.get('format')!r}, expected "
                  f"{FORMAT_VERSION}; recomputing")
            return None
        if entry.get("digest") != digest or "result" not in entry:
            _warn(f"store entry {path.name} does not match its key; recomputing")
            return None
        if not self._authentic(root, entry, raw):
            _warn(f"store entry {path.name} was not written by this store (no valid signature or "
                  "manifest line); ignoring and recomputing")
            return None
        kind = key.kind if key is not None else (entry.get("key") or {}).get("kind", "")
        problem = result_problem(kind, entry["result"])
        if problem:
            _warn(f"store entry {path.name} is malformed ({problem}); recomputing")
            return None
        return entry

    def _authentic(self, root: Path, entry: dict, raw: bytes) -> bool:
        """User entries carry an HMAC under this user's secret; shipped ones are listed,
        with the SHA-256 of their bytes, in the shipped folder's manifest."""
        shipped = root == self.shipped_dir or (root == self.user_dir and self._user_is_shipped)
        if shipped and load_manifest(root).get(entry["digest"]) == hashlib.sha256(raw).hexdigest():
            return True  # (also when the shipped folder is the one being written: precompute --out)
        secret = store_secret(create=False)
        return secret is not None and hmac.compare_digest(str(entry.get("mac", "")), _mac(secret, entry))

    def get(self, key: Key) -> Any | None:
        """The stored result for ``key`` (user store first, then shipped), or None."""
        for root in (self.user_dir, self.shipped_dir):
            if root is None:
                continue
            entry = self._read(self._path(root, key), key, root)
            if entry is not None:
                return entry["result"]
        return None

    def where(self, key: Key) -> str | None:
        for label, root in (("user", self.user_dir), ("shipped", self.shipped_dir)):
            if root is not None and self._read(self._path(root, key), key, root) is not None:
                return label
        return None

    def put(self, key: Key, result: Any, root: Path | None = None) -> bool:
        """Write atomically; on an unwritable store warn and return False (the result is kept
        by the caller, nothing is lost)."""
        root = root or self.user_dir
        path = self._path(root, key)
        entry = {"format": FORMAT_VERSION, "digest": key.digest, "key": key.describe(), "result": result}
        try:
            canonical(result)
        except TypeError as exc:
            raise TypeError(f"result for {key.kind}/{key.method} is not JSON-serializable: {exc}") from None
        tmp_name = None
        replaced = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.parent.is_symlink() or path.is_symlink():
                raise OSError(f"{path.parent.name}/{path.name if path.is_symlink() else ''} is a symbolic "
                              "link (the store never writes through one; remove it)")
            _sweep_orphans(path.parent)
            text = canonical({**entry, "mac": _mac(store_secret(create=True), entry)})
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:12]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
            replaced = True
            return True
        except OSError as exc:
            warnings.warn(f"could not write to the result store at {root} ({exc.strerror or exc}); "
                          "the result is kept in memory only", StoreWarning, stacklevel=2)
            return False
        finally:  # also on Ctrl-C mid-write: no orphaned temp file is left behind
            if tmp_name and not replaced:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass

    def get_or_compute(self, key: Key, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(result, cached?) — computes and stores on a miss."""
        hit = self.get(key)
        if hit is not None:
            return hit, True
        result = compute()
        self.put(key, result)
        return result, False

    def entries(self, kind: str | None = None) -> list[dict]:
        """Every valid entry's key description and result (user entries shadow shipped ones)."""
        seen: dict[str, dict] = {}
        for root in (self.user_dir, self.shipped_dir):
            if root is None or not root.exists():
                continue
            for path in sorted(root.glob("*/*.json")):
                if path.stem in seen:
                    continue
                listed = _peek_kind(path)  # bounded: only the first bytes of other kinds' entries
                if listed is None or (kind is not None and listed != kind):
                    continue
                with warnings.catch_warnings():  # get() warns about these when they are asked for
                    warnings.simplefilter("ignore", StoreWarning)
                    entry = self._read(path, None, root)
                if entry is not None and (kind is None or entry.get("key", {}).get("kind") == kind):
                    seen[path.stem] = entry
        return list(seen.values())


def _sweep_orphans(shard: Path, now: float | None = None) -> int:
    """Remove the temp files (``.<digest>.*.tmp``) in ``shard`` older than
    :data:`ORPHAN_TMP_AGE_S`: a writer killed between writing and renaming leaves one; a live
    writer's is seconds old. Returns how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    try:
        with os.scandir(shard) as entries:
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if now - info.st_mtime > ORPHAN_TMP_AGE_S:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:  # another writer removed it, or it is not ours to remove
                    continue
    except OSError:
        return removed
    return removed


class RecordingStore(ResultStore):
    """Reads like a :class:`ResultStore`; writes are kept in :attr:`writes`, not written.

    Sweep workers (``prunelens sweep``) compute with one of these and hand ``writes`` back to the
    driver, which alone writes them into the real store: workers on other machines need no
    shared folder, and every entry still goes through :meth:`ResultStore.put`'s atomic write.
    """

    def __init__(self, user_dir: Path | str | None = None, shipped_dir: Path | str | None = SHIPPED_DIR):
        super().__init__(user_dir, shipped_dir)
        self.writes: list[tuple[Key, Any]] = []
        self._recorded: dict[str, Any] = {}

    def get(self, key: Key) -> Any | None:
        if key.digest in self._recorded:
            return self._recorded[key.digest]
        return super().get(key)

    def put(self, key: Key, result: Any, root: Path | None = None) -> bool:
        canonical(result)  # the same refusal of non-JSON results as a real write
        self.writes.append((key, result))
        self._recorded[key.digest] = result
        return True
