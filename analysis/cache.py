"""The result store: computed scores, curves and training runs, content-addressed.

- A key is the SHA-256 of the model fingerprint, the data fingerprint (content hashes, not
  names), the kind of result, the method, the unit, the canonical JSON of the parameters and the
  results-format version. File names are that hex digest only: no user string reaches a path.
- Reads look in the user store (``$PRUNELENS_CACHE``, default ``~/.cache/prunelens``) and then in
  the shipped ``cached_results/``; writes go to the user store only.
- Writes are atomic (temp file in the same folder + ``os.replace``), so concurrent writers of
  one key each leave a complete entry. An unreadable, truncated or foreign-version entry is
  reported with a warning, ignored and recomputed; a read-only or full store only warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "cached_results"


class StoreWarning(UserWarning):
    """A store entry was unusable or could not be written; the result was recomputed or kept."""


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


class ResultStore:
    def __init__(self, user_dir: Path | str | None = None, shipped_dir: Path | str | None = SHIPPED_DIR):
        self.user_dir = Path(user_dir) if user_dir is not None else default_user_dir()
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None

    def _path(self, root: Path, key: Key) -> Path:
        digest = key.digest
        return root / digest[:2] / f"{digest}.json"

    def _read(self, path: Path, key: Key) -> dict | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(f"store entry {path.name} unreadable ({exc.strerror}); recomputing", StoreWarning, stacklevel=2)
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            warnings.warn(f"store entry {path.name} is corrupt or truncated; ignoring and recomputing",
                          StoreWarning, stacklevel=2)
            return None
        if entry.get("format") != FORMAT_VERSION:
            warnings.warn(f"store entry {path.name} has format {entry.get('format')!r}, expected "
                          f"{FORMAT_VERSION}; recomputing", StoreWarning, stacklevel=2)
            return None
        if entry.get("digest") != key.digest or "result" not in entry:
            warnings.warn(f"store entry {path.name} does not match its key; recomputing", StoreWarning, stacklevel=2)
            return None
        return entry

    def get(self, key: Key) -> Any | None:
        """The stored result for ``key`` (user store first, then shipped), or None."""
        for root in (self.user_dir, self.shipped_dir):
            if root is None:
                continue
            entry = self._read(self._path(root, key), key)
            if entry is not None:
                return entry["result"]
        return None

    def where(self, key: Key) -> str | None:
        for label, root in (("user", self.user_dir), ("shipped", self.shipped_dir)):
            if root is not None and self._read(self._path(root, key), key) is not None:
                return label
        return None

    def put(self, key: Key, result: Any, root: Path | None = None) -> bool:
        """Write atomically; on an unwritable store warn and return False (the result is kept
        by the caller, nothing is lost)."""
        root = root or self.user_dir
        path = self._path(root, key)
        entry = {"format": FORMAT_VERSION, "digest": key.digest, "key": key.describe(), "result": result}
        try:
            text = canonical(entry)
        except TypeError as exc:
            raise TypeError(f"result for {key.kind}/{key.method} is not JSON-serializable: {exc}") from None
        tmp_name = None
        replaced = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
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
                try:
                    entry = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                if (not isinstance(entry, dict) or entry.get("format") != FORMAT_VERSION
                        or entry.get("digest") != path.stem or "result" not in entry):
                    continue  # the same validity rule as get(): a misfiled entry is not listed
                if kind is None or entry.get("key", {}).get("kind") == kind:
                    seen[path.stem] = entry
        return list(seen.values())


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
