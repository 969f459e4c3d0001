"""Training batches: what label-using methods and training runs learn from, and how it is drawn.

One owner for three things several methods need:

- :func:`training_data`: the data a label-using importance or a training run uses — the train
  split its data names as kept apart from it (:attr:`TextData.train_source`: the default Rotten
  Tomatoes data's), otherwise the session's own data (with a note that the evaluation is then
  optimistic); :func:`training_fingerprint` is its identity in store keys;
- :class:`StreamedBatches`: batches of drawn examples, tokenized one batch at a time as the loop
  reaches them (at most ``batch_size`` texts per tokenizer call), each batch a cooperative-cancel
  point (:func:`prunelens.analysis.checkpoints.checkpoint`);
- :func:`epoch_order`: which examples, in which order, ``count`` draws over a data set;
- :func:`training_sample`: a seeded sample of the training split in length-bucketed batches (what
  the gradient and function-norm criteria measure on).
"""

from __future__ import annotations

import numpy as np

from prunelens.analysis.checkpoints import checkpoint
from prunelens.analysis.data import MAX_LENGTH, Batch, TextData, load_data, pad_batch
from prunelens.analysis.errors import tokenizer_guard
from prunelens.analysis.session import Session


def epoch_order(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` example indices of ``range(n)``: seeded permutations one after another (every
    example once per epoch), cut at ``count``; empty when there is no example."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]


def training_data(session: Session) -> tuple[TextData, str]:
    """What training runs train on: the train split the session's data names as kept apart from
    it (:attr:`TextData.train_source`; the default data's, which its dev split never sees);
    otherwise the session's own data, with a note that the evaluation is then optimistic."""
    if session.data.train_source is not None:
        data = session.loaded.fit_data(load_data(session.data.train_source, split="train"))
        return data, "train split of the default data"
    return session.data, ("no separate train split is known for this data: trained on the "
                          "evaluation data itself, so the evaluation is optimistic")


_TRAINING_FINGERPRINTS: dict[tuple[str, str], str] = {}  # (train source, model) -> fingerprint


def training_fingerprint(session: Session) -> str:
    """The fingerprint of :func:`training_data` (read once per train source and model): what
    the store keys a training-split-only score by. Without a known train split it is the
    session's own data's."""
    source = session.data.train_source
    if source is None:
        return session.data.fingerprint
    cached = (source, session.loaded.fingerprint)
    if cached not in _TRAINING_FINGERPRINTS:
        _TRAINING_FINGERPRINTS[cached] = training_data(session)[0].fingerprint
    return _TRAINING_FINGERPRINTS[cached]


class StreamedBatches:
    """Training batches tokenized when the loop reaches them, not up front.

    ``order``: the example indices of ``data`` in the order they are drawn, ``batch_size`` per
    batch. Iterating tokenizes one batch at a time (at most ``batch_size`` texts per tokenizer
    call) and passes a cooperative-cancel point (:func:`prunelens.analysis.checkpoints.checkpoint`) at
    every batch; each pass yields the same batches. ``bucket`` > 1 (with ``rng``): every
    ``bucket`` consecutive batches' worth of examples are sorted by length into batches whose
    order is then shuffled by ``rng`` (batches stay random but carry little padding) — the same
    batches as tokenizing the bucket in one call and sorting it. Batches are padded to their own
    longest row, like :func:`prunelens.analysis.data.tokenize_batches`."""

    def __init__(self, tokenizer, data: TextData, order, batch_size: int,
                 max_length: int = MAX_LENGTH, bucket: int = 1, rng: np.random.Generator | None = None):
        if bucket > 1 and rng is None:
            raise ValueError("bucketed batches need an rng for their order")
        self.tokenizer, self.data = tokenizer, data
        self.order = np.asarray(order, dtype=np.int64)
        self.batch_size, self.bucket = int(batch_size), int(bucket)
        model_max = getattr(tokenizer, "model_max_length", None)
        self.max_length = model_max if isinstance(model_max, int) and 0 < model_max < max_length else max_length
        self._rng_state = None if rng is None else rng.bit_generator.state

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index):
        if self.bucket != 1:
            raise TypeError("bucketed batches can only be iterated")
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("only contiguous slices of batches")
            rows = self.order[start * self.batch_size:stop * self.batch_size]
            return StreamedBatches(self.tokenizer, self.data, rows, self.batch_size, self.max_length)
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self._collate(self._encode(index * self.batch_size, self.batch_size),
                             np.arange(self.batch_size)[:len(self.order) - index * self.batch_size])

    def __iter__(self):
        rng = None
        if self._rng_state is not None:
            rng = np.random.default_rng()
            rng.bit_generator.state = self._rng_state  # every pass draws the same batch order
        span = self.batch_size * self.bucket
        for start in range(0, len(self.order), span):
            encoded = self._encode(start, span)
            positions = np.arange(len(encoded["length"]))
            if self.bucket > 1:
                positions = np.argsort(np.asarray(encoded["length"]), kind="stable")
            groups = [positions[i:i + self.batch_size] for i in range(0, len(positions), self.batch_size)]
            if rng is not None:
                groups = [groups[i] for i in rng.permutation(len(groups))]
            for rows in groups:
                checkpoint()  # a cancelled run stops here, before its next step
                yield self._collate(encoded, rows)

    def _encode(self, start: int, count: int) -> dict:
        """Token ids of ``order[start:start + count]``, tokenized ``batch_size`` texts at a time;
        ``start`` (the offset of these rows in ``order``) is kept for the batches' index."""
        rows = self.order[start:start + count]
        texts, pairs = self.data.texts, self.data.text_pairs
        out: dict = {"input_ids": [], "token_type_ids": [], "length": [], "start": start,
                     "labels": np.asarray(self.data.labels)[rows]}
        for i in range(0, len(rows), self.batch_size):
            part = rows[i:i + self.batch_size]
            with tokenizer_guard(self.tokenizer, getattr(self.tokenizer, "name_or_path", "")):
                enc = self.tokenizer([texts[j] for j in part],
                                     None if pairs is None else [pairs[j] for j in part],
                                     truncation=True, max_length=self.max_length,
                                     return_overflowing_tokens=False, return_length=True)
            out["input_ids"].extend(enc["input_ids"])
            out["length"].extend(enc["length"])
            if "token_type_ids" in enc:
                out["token_type_ids"].extend(enc["token_type_ids"])
            else:
                out["token_type_ids"] = None
        return out

    def _collate(self, encoded: dict, rows) -> Batch:
        rows = np.asarray(rows)
        return pad_batch(self.tokenizer, encoded["input_ids"], encoded["token_type_ids"], encoded["length"],
                         rows, encoded["labels"][rows], rows + encoded["start"])


def training_sample(session: Session, examples: int, batch_size: int, seed: int) -> StreamedBatches:
    """``examples`` seeded examples of :func:`training_data` (all of it when smaller), in
    length-bucketed batches of ``batch_size``: what a criterion that measures on data uses."""
    data, _ = training_data(session)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))[:examples]
    return StreamedBatches(session.loaded.tokenizer, data, order, batch_size, bucket=8, rng=rng)
