"""Copy shipped training-split scores under the keys they are read by since issue 30 (idempotent).

Scores of a method that reads only the training split (michel, ablation, pins, platon, smp with
``sentences=train``, smp-pruner: :meth:`Method.reads_training_split
<prunelens.analysis.methods.base.Method.reads_training_split>`) are keyed by the training split's
fingerprint when the loaded data names one (:meth:`prunelens.analysis.session.Session.keys`), so
another ``--limit`` finds them. Entries stored before carry the evaluation data's fingerprint;
sessions still read them after the new key, and this script copies each one of a store (the
shipped ``cached_results/`` by default) under its new key, the result unchanged, then rewrites
the store's manifest. An entry whose new key is already there is left alone.

    python scripts/rekey_training_scores.py [--store cached_results]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prunelens.analysis.cache import SHIPPED_DIR, Key, ResultStore, write_manifest  # noqa: E402
from prunelens.analysis.models import load_model  # noqa: E402
from prunelens.analysis.operations import open_session  # noqa: E402
from prunelens.analysis.session import Session  # noqa: E402

SHIPPED_MODELS = ("default", "default-embedding")


def new_key(session: Session, old: dict) -> Key | None:
    """The key a stored scores entry (its key description ``old``) is read under now, or None
    when it is the same key (the entry is not a training-split score of data with a train split)."""
    params = dict(old["params"])
    objective = params.pop("objective", "labels")
    key = replace(session, objective=objective).key(old["kind"], old["method"], old["unit"], params)
    return None if key.data == old["data"] else key


def rekey(root: Path, sessions: dict[str, Session]) -> tuple[int, int]:
    """Copy every training-split scores entry of ``root`` under its new key: (copied, present).
    ``sessions``: one on its evaluation data per model fingerprint of the entries."""
    store = ResultStore(user_dir=root / ".none", shipped_dir=root)
    copied = present = 0
    for entry in store.entries("scores"):
        old = entry["key"]
        session = sessions.get(old["model"])
        if session is None or old["data"] != session.data.fingerprint:
            continue
        key = new_key(session, old)
        if key is None:
            continue
        if store.get(key) is not None:
            present += 1
            continue
        store.put(key, entry["result"], root=root)
        copied += 1
    return copied, present


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args(argv)
    sessions = {}
    for name in SHIPPED_MODELS:
        session = open_session(loaded=load_model(name), store=ResultStore(args.store / ".none", None))
        sessions[session.loaded.fingerprint] = session
    copied, present = rekey(args.store, sessions)
    listed = write_manifest(args.store)
    print(f"{copied} entries copied under their training-split keys, {present} already there; "
          f"manifest lists {listed} entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
