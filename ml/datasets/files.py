"""User datasets: a CSV with a named target column (here), or an NPZ with arrays x and y
(`ml.datasets.npz`), and `from_upload`, which rebuilds a stored upload from its bytes.

Both are validated completely before anything trains on them; every refusal is a DatasetError
whose message names the column, row or array at fault and what would be accepted, and echoes
at most a short excerpt of a cell. Row numbers in messages count data rows from 1 (the header
is line 1 of the file, data row 1 is line 2).

Reading costs time linear in the file and bounded memory: the column count is checked on the
header line and rows × columns on a line count before the body is parsed (DatasetTooLarge),
then the body is parsed by the C csv reader and converted to numbers a block of rows at a time.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import NoReturn

import numpy as np

from ml.datasets.base import (
    NO_LIMITS,
    Dataset,
    DatasetError,
    DatasetInfo,
    DatasetTooLarge,
    Target,
    UploadLimits,
    excerpt,
)
from ml.datasets.labels import check_labels, check_name, check_rows, labels_of, task_of

# Cells read as missing (pandas' default NA spellings, plus blanks).
_MISSING = frozenset(["", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a", "#na", "-1.#ind", "1.#ind"])
BLOCK_CELLS = 1 << 20  # feature cells converted at once: bounds the Python objects alive
SHOWN_COLUMNS = 20  # column names listed in a message
MAX_TEXT_CLASSES = 65_536  # distinct values of a text target (as many as the widest layer's units)


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")  # utf-8-sig: drop the byte-order mark Excel writes
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the file is not UTF-8 text (byte {exc.start}): upload a UTF-8 CSV") from exc
    if not text.strip():
        raise DatasetError("the file is empty: expected a CSV with a header line")
    return text


def _lines(text: str) -> Iterator[str]:
    """The lines of `text` with their endings, one at a time (io.StringIO would copy the text at
    four bytes a character); csv joins the lines of a quoted multi-line cell itself."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _records(text: str) -> Iterator[list[str]]:
    """The CSV's records, blank lines skipped; a malformed one is a DatasetError naming its line."""
    reader = csv.reader(_lines(text))
    try:
        for record in reader:
            if record and (len(record) > 1 or record[0].strip()):
                yield record
    except csv.Error as exc:  # e.g. a cell above csv's field size limit (131,072 characters)
        raise DatasetError(f"the file is not a readable CSV: {exc} (line {reader.line_num})") from None


def _columns(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_COLUMNS:,} more" if len(names) > SHOWN_COLUMNS else ""
    return ", ".join(repr(excerpt(h, 40)) for h in names[:SHOWN_COLUMNS]) + more


def _header(record: list[str], text: str, target: str, limits: UploadLimits) -> tuple[list[str], int]:
    """The column names (checked) and the target's index; the size limits checked first."""
    columns = len(record)
    if limits.max_columns is not None and columns > limits.max_columns:
        raise DatasetTooLarge(
            f"the header names {columns:,} columns, above the limit of {limits.max_columns:,}", "max_columns"
        )
    if limits.max_cells is not None:
        lines = text.count("\n") + (not text.endswith("\n"))
        rows = lines - 1  # an upper bound of the data rows (blank lines and quoted line breaks count)
        if rows * columns > limits.max_cells:
            raise DatasetTooLarge(
                f"the file has up to {rows:,} rows × {columns:,} columns = {rows * columns:,} cells, "
                f"above the limit of {limits.max_cells:,}",
                "max_cells",
            )
    header = [h.strip() for h in record]
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:
        raise DatasetError(f"column {unnamed[0]} has no name in the header line")
    for h in header:
        check_name(h, "the column name")
    duplicated = sorted(h for h, k in Counter(header).items() if k > 1)  # linear, not header.count(h)
    if duplicated:
        raise DatasetError(f"duplicate column names in the header: {_columns(duplicated)}")
    if target not in header:
        raise DatasetError(f"no target column {excerpt(target, 40)!r}; the columns are {_columns(header)}")
    if columns < 2:
        raise DatasetError(f"the file has no feature column besides the target {target!r}")
    return header, header.index(target)


def _finite32(value: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(value)))


class _TextTarget(Exception):
    """The target column holds text: read again, collecting it as class codes."""


@dataclass
class _Body:
    """The body as it is read, a block of rows at a time: the features (kept as float32, or only
    checked) and the target (float64 values, or codes of its text values in first-seen order)."""

    features: list[str]
    target: str
    keep: bool
    text_target: bool
    rows: int = 0
    blocks: list[np.ndarray] = field(default_factory=list)  # (rows, F) float32
    targets: list[np.ndarray] = field(default_factory=list)  # (rows,) float64 values or int64 codes
    codes: dict[str, int] = field(default_factory=dict)  # a text target's value → its code

    def add(self, block: list[list[str]], targets: list[str], first_row: int) -> None:
        """Convert a block of rows (target cells removed) to float32, or refuse its first bad cell."""
        cells = np.array(list(chain.from_iterable(block)), dtype=object)
        try:
            values = cells.astype(np.float64)  # float() per cell, in C: " 1.5", "1e3", "inf", "nan"
        except ValueError:
            self._refuse(block, first_row)
        with np.errstate(over="ignore"):
            x = values.astype(np.float32).reshape(len(block), len(self.features))  # beyond ±3.4e38: inf
        if not np.isfinite(x).all():
            self._refuse(block, first_row)
        if self.keep:
            self.blocks.append(x)
        self._add_targets(targets, first_row)

    def _add_targets(self, cells: list[str], first_row: int) -> None:
        missing = next((i for i, c in enumerate(cells) if c.lower() in _MISSING), None)
        if missing is not None:
            raise DatasetError(f"column {excerpt(self.target, 40)!r} has a missing value in row {first_row + missing}")
        if not self.text_target:
            try:
                self.targets.append(np.array(cells, dtype=object).astype(np.float64))
            except ValueError:
                raise _TextTarget from None
            return
        codes = self.codes
        self.targets.append(np.fromiter((codes.setdefault(c, len(codes)) for c in cells), np.int64, len(cells)))
        if len(codes) > MAX_TEXT_CLASSES:  # bounds the memory of an id-like column, refused anyway
            raise DatasetError(
                f"target column {excerpt(self.target, 40)!r} has more than {MAX_TEXT_CLASSES:,} distinct text "
                "values; a text target names classes, and every class needs at least 2 rows"
            )

    def _refuse(self, block: list[list[str]], first_row: int) -> NoReturn:
        """The first bad cell of the block, in row then column order, named with its row."""
        for i, record in enumerate(block):
            for column, cell in zip(self.features, record, strict=True):
                text = cell.strip()
                row = first_row + i
                if text.lower() in _MISSING:
                    raise DatasetError(f"column {excerpt(column, 40)!r} has a missing value in row {row}")
                try:
                    value = float(text)
                except ValueError:
                    raise DatasetError(
                        f"column {excerpt(column, 40)!r} is not numeric: row {row} holds {excerpt(text)!r}; "
                        "every column but the target must hold numbers"
                    ) from None
                if not _finite32(value):
                    raise DatasetError(
                        f"column {excerpt(column, 40)!r} has a non-finite value in row {row} ({excerpt(text)!r}); "
                        "only finite numbers (within float32 range) are accepted"
                    )
        raise DatasetError("a cell could not be read as a number")  # not reached: the block had a bad cell

    def labels(self) -> tuple[np.ndarray, tuple[str, ...] | None]:
        """(y, classes) of the whole target column; checked (labels.py)."""
        what = f"target column {excerpt(self.target, 40)!r}"
        joined = np.concatenate(self.targets)
        if not self.text_target:
            return labels_of(joined, what)
        names = list(self.codes)  # first-seen order
        for name in names:
            check_name(name, f"{what}: the class")
        order = sorted(range(len(names)), key=names.__getitem__)  # classes: the distinct values, sorted
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        classes = tuple(names[i] for i in order)
        y = rank[joined]
        check_labels(y, classes, what)
        return y, classes


def _read(text: str, target: str, limits: UploadLimits, keep: bool, text_target: bool) -> _Body:
    records = _records(text)
    first = next(records, None)
    if first is None:
        raise DatasetError("the file is empty: expected a CSV with a header line")
    header, t = _header(first, text, target, limits)
    body = _Body([h for h in header if h != target], target, keep, text_target)
    block: list[list[str]] = []
    targets: list[str] = []
    block_rows = max(1, BLOCK_CELLS // len(body.features))
    for record in records:
        body.rows += 1
        if len(record) != len(header):
            raise DatasetError(
                f"the file is not a readable CSV: row {body.rows} has {len(record):,} cells but the header "
                f"names {len(header):,} columns"
            )
        if limits.max_rows is not None and body.rows > limits.max_rows:
            raise DatasetError(f"the file has more than {limits.max_rows} data rows, the limit for an upload")
        targets.append(record.pop(t).strip())
        block.append(record)
        if len(block) == block_rows:
            body.add(block, targets, body.rows - len(block) + 1)
            block, targets = [], []
    if block:
        body.add(block, targets, body.rows - len(block) + 1)
    check_rows(body.rows, "the file")
    return body


def read_csv(
    data: bytes, target: str, *, name: str = "upload", limits: UploadLimits = NO_LIMITS, keep: bool = True
) -> Dataset:
    """A CSV with a header → a tabular Dataset: every column but `target` is a numeric feature.

    The task is a regression if the target is numeric with a non-integer value or more than 20
    distinct values, else a classification (classes: the sorted distinct values, as text).
    `keep=False` checks every cell but keeps no features (x is empty): the API's description."""
    text = _text(data)
    try:
        body = _read(text, target, limits, keep, text_target=False)
    except _TextTarget:  # a text cell in the target: read again (at most twice, still linear)
        body = _read(text, target, limits, keep, text_target=True)
    y, classes = body.labels()
    features = body.features
    n = body.rows
    if keep:
        x = np.concatenate(body.blocks) if len(body.blocks) != 1 else body.blocks[0]  # (N, F)
    else:
        x = np.empty((0, len(features)), dtype=np.float32)
    info = DatasetInfo(
        name=name,
        task=task_of(classes),
        input_shape=(len(features),),
        features=tuple(features),
        targets=(Target(target, classes),),
        n_samples=n,
        description=f"Uploaded CSV: {n} rows, {len(features)} numeric features, target {target!r}.",
    )
    return Dataset(info=info, x=x, y={target: y})


def from_csv(data: bytes, target: str, *, name: str = "upload", max_rows: int | None = None) -> Dataset:
    """`read_csv` with every array kept, at most `max_rows` data rows."""
    return read_csv(data, target, name=name, limits=UploadLimits(max_rows=max_rows))


def from_upload(fmt: str, data: bytes, info: dict, *, name: str = "upload") -> Dataset:
    """A stored upload rebuilt from its bytes: `fmt` "csv" or "npz", and `info` the description
    stored beside it (`DatasetInfo.to_dict()`, which names a CSV's target column)."""
    from ml.datasets.npz import from_npz

    if fmt == "npz":
        return from_npz(data, name=name)
    if fmt != "csv":
        raise DatasetError(f"unknown upload format {fmt!r}; expected csv or npz")
    targets = list(info.get("targets") or ())
    if len(targets) != 1:
        raise DatasetError(f"the stored description of {name!r} names {len(targets)} targets; a CSV has one")
    return from_csv(data, targets[0], name=name)
