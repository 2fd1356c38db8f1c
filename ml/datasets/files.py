"""User datasets: a CSV with a named target column, or an NPZ with arrays x and y.

Both are validated completely before anything trains on them; every refusal is a DatasetError
whose message names the column, row or array at fault and what would be accepted. Row numbers
in messages count data rows from 1 (the header is line 1 of the file, data row 1 is line 2).
NPZ files are read with allow_pickle=False: an object array is refused, never unpickled.
"""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from ml.datasets.base import Dataset, DatasetError, DatasetInfo, Target, Task

if TYPE_CHECKING:
    import pandas as pd

MIN_ROWS = 10
MAX_CLASSES_FOR_INTEGERS = 20  # an integer-valued numeric target with more values is a regression
# Cells read as missing (pandas' default NA spellings, plus blanks).
_MISSING = frozenset(["", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a", "#na", "-1.#ind", "1.#ind"])


def _task_of(classes: tuple[str, ...] | None) -> Task:
    if classes is None:
        return "regression"
    return "binary" if len(classes) == 2 else "multiclass"


def _check_labels(y: np.ndarray, classes: tuple[str, ...], what: str) -> None:
    """Refuse a constant target and a class too small to appear in both train and validation."""
    if len(classes) < 2:
        raise DatasetError(f"{what} has a single value ({classes[0]!r}): there is nothing to predict")
    counts = np.bincount(y, minlength=len(classes))
    small = [f"{c!r} ({k} row)" for c, k in zip(classes, counts, strict=True) if k < 2]
    if small:
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""  # an id column would list them all
        raise DatasetError(f"{what}: every class needs at least 2 rows; too few for {', '.join(small[:5])}{more}")


def _labels_of(values: np.ndarray, what: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Numeric target (N,) → (y, classes): classes for integer labels, None for a regression.

    Integer dtypes are labels; float values are labels only if all are integers and there are
    at most MAX_CLASSES_FOR_INTEGERS of them (a price in whole dollars is still a regression)."""
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0]) + 1
        raise DatasetError(f"{what} has a non-finite value ({values[row - 1]}) in row {row}")
    distinct = np.unique(values)
    is_integer = values.dtype.kind in "biu" or bool(np.all(distinct == np.round(distinct)))
    if values.dtype.kind == "f" and (not is_integer or len(distinct) > MAX_CLASSES_FOR_INTEGERS):
        if len(distinct) < 2:
            raise DatasetError(f"{what} has a single value ({distinct[0]}): there is nothing to predict")
        return values.astype(np.float32), None
    classes = tuple(str(int(v)) for v in distinct)  # numeric order: "2" before "10"
    y = np.searchsorted(distinct, values).astype(np.int64)
    _check_labels(y, classes, what)
    return y, classes


def _check_rows(n: int, what: str) -> None:
    if n < MIN_ROWS:
        raise DatasetError(f"{what} has {n} rows; at least {MIN_ROWS} are needed")


def _read_table(data: bytes, max_rows: int | None) -> tuple[list[str], list[list[str]]]:
    """The header and the cells (as text, by column) of a CSV file."""
    import pandas as pd  # not at import time: ml.datasets is imported by the API to describe built-ins

    try:
        text = data.decode("utf-8-sig")  # utf-8-sig: drop the byte-order mark Excel writes
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the file is not UTF-8 text (byte {exc.start}): upload a UTF-8 CSV") from exc
    if not text.strip():
        raise DatasetError("the file is empty: expected a CSV with a header line")
    try:
        # Everything as text so that every cell is checked here, with its row and column.
        table = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            nrows=None if max_rows is None else max_rows + 2,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DatasetError(f"the file is not a readable CSV: {str(exc).strip()}") from exc
    header = [str(h).strip() for h in table.iloc[0].fillna("")]
    if max_rows is not None and len(table) - 1 > max_rows:
        raise DatasetError(f"the file has more than {max_rows} data rows, the limit for an upload")
    columns = [table.iloc[1:, i].tolist() for i in range(table.shape[1])]
    return header, columns


def _cells(cells: list, column: str) -> pd.Series:
    """One column's cells as stripped text; refuses a missing cell, naming its row."""
    import pandas as pd

    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING).to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + 1
        raise DatasetError(f"column {column!r} has a missing value in row {row} ({int(missing.sum())} in all)")
    return text


def _numbers(text: pd.Series) -> np.ndarray:
    """(N,) float64, NaN where a cell is not a number ("inf" is a number, refused later)."""
    import pandas as pd

    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)


def from_csv(data: bytes, target: str, *, name: str = "upload", max_rows: int | None = None) -> Dataset:
    """A CSV with a header → a tabular Dataset: every column but `target` is a numeric feature.

    The task is a regression if the target is numeric with a non-integer value or more than 20
    distinct values, else a classification (classes: the sorted distinct values, as text)."""
    header, columns = _read_table(data, max_rows)
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:
        raise DatasetError(f"column {unnamed[0]} has no name in the header line")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DatasetError(f"duplicate column names in the header: {', '.join(map(repr, duplicated))}")
    if target not in header:
        raise DatasetError(f"no target column {target!r}; the columns are {', '.join(map(repr, header))}")
    features = [h for h in header if h != target]
    if not features:
        raise DatasetError(f"the file has no feature column besides the target {target!r}")
    n = len(columns[0])
    _check_rows(n, "the file")
    by_name = dict(zip(header, columns, strict=True))

    x = np.empty((n, len(features)), dtype=np.float32)  # (N, F)
    for j, column in enumerate(features):
        text = _cells(by_name[column], column)
        values = _numbers(text)
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0]) + 1
            raise DatasetError(
                f"column {column!r} is not numeric: row {row} holds {text.iloc[row - 1]!r}; "
                "every column but the target must hold numbers"
            )
        with np.errstate(over="ignore"):
            x[:, j] = values  # float64 → float32: beyond ±3.4e38 becomes inf, caught below
        if not np.isfinite(x[:, j]).all():
            row = int(np.flatnonzero(~np.isfinite(x[:, j]))[0]) + 1
            raise DatasetError(
                f"column {column!r} has a non-finite value in row {row} ({text.iloc[row - 1]!r}); "
                "only finite numbers (within float32 range) are accepted"
            )
    what = f"target column {target!r}"
    text = _cells(by_name[target], target)
    values = _numbers(text)
    if np.isnan(values).any():
        # A text target ("yes"/"no", "setosa"...): its classes are its distinct values, sorted.
        names, y = np.unique(text.to_numpy(dtype=str), return_inverse=True)
        text_classes = tuple(str(c) for c in names)
        y = y.astype(np.int64)
        _check_labels(y, text_classes, what)
        classes: tuple[str, ...] | None = text_classes
    else:
        y, classes = _labels_of(values, what)
    info = DatasetInfo(
        name=name,
        task=_task_of(classes),
        input_shape=(len(features),),
        features=tuple(features),
        targets=(Target(target, classes),),
        n_samples=n,
        description=f"Uploaded CSV: {n} rows, {len(features)} numeric features, target {target!r}.",
    )
    return Dataset(info=info, x=x, y={target: y})


def from_npz(data: bytes, *, name: str = "upload") -> Dataset:
    """An .npz archive with x (N, F), (N, H, W) or (N, C, H, W) and y (N,) → a Dataset.

    y of an integer dtype (or float holding at most 20 distinct integers) is a classification
    with classes the sorted labels as text; other float y is a regression."""
    # Look at the magic bytes first: np.load would otherwise read a pickle's header and answer
    # with advice to unpickle it, which is never an option here.
    if data.startswith(b"\x93NUMPY"):
        raise DatasetError("the file is a single .npy array; expected an .npz archive with arrays 'x' and 'y'")
    if not data.startswith(b"PK"):
        raise DatasetError("the file is not a readable .npz archive: write one with np.savez(f, x=x, y=y)")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"the file is not a readable .npz archive (np.savez): {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a zip is always read as an archive; keeps types exact
        raise DatasetError("expected an .npz archive with arrays 'x' and 'y'")
    with archive:
        arrays: dict[str, np.ndarray] = {}
        for key in ("x", "y"):
            if key not in archive.files:
                held = ", ".join(map(repr, archive.files)) or "nothing"
                raise DatasetError(f"the archive has no array {key!r} (it holds {held}); use np.savez(f, x=x, y=y)")
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # an object array would need unpickling
                raise DatasetError(f"array {key!r} has dtype object (pickled Python objects): save numbers") from exc
    x, labels = arrays["x"], arrays["y"]
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise DatasetError(f"array {key!r} has dtype {array.dtype}; expected integers or floats")
    if x.ndim not in (2, 3, 4):
        raise DatasetError(f"x has shape {x.shape}; expected (N, features), (N, H, W) or (N, C, H, W)")
    if labels.ndim != 1:
        raise DatasetError(f"y has shape {labels.shape}; expected (N,), one label or value per row of x")
    if len(labels) != len(x):
        raise DatasetError(f"x has {len(x)} rows but y has {len(labels)}")
    _check_rows(len(x), "the archive")
    if 0 in x.shape[1:]:
        raise DatasetError(f"x has shape {x.shape}: no features")
    with np.errstate(over="ignore"):
        xf = x.astype(np.float32)  # beyond ±3.4e38 becomes inf, refused just below
    if not np.isfinite(xf).all():
        row = int(np.flatnonzero(~np.isfinite(xf.reshape(len(xf), -1)).all(axis=1))[0]) + 1
        raise DatasetError(f"x has a non-finite value in row {row} (NaN, ±inf or beyond float32 range)")
    if xf.ndim == 3:
        xf = xf[:, None]  # (N, H, W) → (N, 1, H, W): one gray channel
    y, classes = _labels_of(labels, "y")
    image = xf.ndim == 4
    info = DatasetInfo(
        name=name,
        task=_task_of(classes),
        input_shape=tuple(int(s) for s in xf.shape[1:]),
        features=tuple(f"c{i}" if image else f"x{i}" for i in range(xf.shape[1])),
        targets=(Target("y", classes),),
        n_samples=len(xf),
        description=f"Uploaded NPZ: {len(xf)} {'images' if image else 'rows'} of shape {tuple(xf.shape[1:])}.",
    )
    return Dataset(info=info, x=xf, y={"y": y})


def from_upload(fmt: str, data: bytes, info: dict, *, name: str = "upload") -> Dataset:
    """A stored upload rebuilt from its bytes: `fmt` "csv" or "npz", and `info` the description
    stored beside it (`DatasetInfo.to_dict()`, which names a CSV's target column)."""
    if fmt == "npz":
        return from_npz(data, name=name)
    if fmt != "csv":
        raise DatasetError(f"unknown upload format {fmt!r}; expected csv or npz")
    targets = list(info.get("targets") or ())
    if len(targets) != 1:
        raise DatasetError(f"the stored description of {name!r} names {len(targets)} targets; a CSV has one")
    return from_csv(data, targets[0], name=name)
