"""The examples whose prediction flips under a keep-mask: what the pruned model gets wrong.

:func:`flipped` compares the unpruned model's predicted label with the masked model's on every
example of the session's data and lists the ones that differ, with their text. The masked
predictions are kept in the result store (keyed by the mask itself, like ``mask-eval``), so a
mask whose metrics come from the store costs one forward pass once, not on every look.
Predictions are the same under exact fp32 and checked bf16 (see :mod:`prunelens.analysis.precision`), so
one stored answer serves both.
"""

from __future__ import annotations

import re

import numpy as np

from prunelens.analysis.cache import mask_params
from prunelens.analysis.gates import Masks
from prunelens.analysis.session import Session

FLIPPED_CAP = 200  # rows listed in JSON / on the page; ``count`` is always the full number
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def label_names(loaded) -> dict[int, str] | None:
    """The model's label names (``config.id2label``), or None when they are only ``LABEL_i``."""
    id2label = getattr(loaded.model.config, "id2label", None) or {}
    names = {int(k): str(v) for k, v in id2label.items()}
    if not names or all(_GENERIC_LABEL.match(v) for v in names.values()):
        return None
    return names


def _name(names: dict[int, str] | None, label: int):
    return names.get(label, label) if names else label


def predictions(session: Session, unit: str, mask, use_store: bool = True) -> np.ndarray:
    """Predicted label of every example with ``unit`` gated by the keep-``mask`` (all ones:
    the unpruned model)."""
    mask = np.asarray(mask)
    if np.all(mask):
        return session.evaluator.base_outputs.logits.argmax(-1)

    def predict() -> dict:
        pred = session.evaluator.outputs(Masks.for_unit(unit, mask)).logits.argmax(-1)
        return {"predictions": [int(p) for p in pred]}

    result, _ = session.read_through("mask-predictions", "", unit, mask_params(mask), predict, use_store,
                                     fits=lambda hit: len(hit.get("predictions", ())) == len(session.data))
    return np.asarray(result["predictions"], dtype=np.int64)


def flipped(session: Session, unit: str, mask, cap: int | None = FLIPPED_CAP, use_store: bool = True) -> dict:
    """``{"count": N, "rows": [...], "cap": cap}``: every example whose predicted label differs
    between the unpruned and the masked model, in data order (the first ``cap`` listed).

    A row is ``{"index", "text", ["text_pair",] "label", "before", "after"}``; labels are the
    model's label names where it has them, ints otherwise.
    """
    before = session.evaluator.base_outputs.logits.argmax(-1)
    after = predictions(session, unit, mask, use_store)
    idx = np.flatnonzero(before != after)
    names = label_names(session.loaded)
    data = session.data
    rows = []
    for i in idx[:cap] if cap is not None else idx:
        i = int(i)
        row = {"index": i, "text": data.texts[i]}
        if data.text_pairs is not None:
            row["text_pair"] = data.text_pairs[i]
        row.update(label=_name(names, int(data.labels[i])) if data.labelled else None,  # no gold label
                   before=_name(names, int(before[i])),
                   after=_name(names, int(after[i])))
        rows.append(row)
    return {"count": int(len(idx)), "rows": rows, "cap": cap}
