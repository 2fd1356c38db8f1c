"""pandas on demand: the client imports without it, and a method that returns a DataFrame says
how to get it. Also the conversions between the service's JSON and table rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "this method returns a pandas DataFrame: install pandas (pip install 'labtrain-client[pandas]')"
        ) from None
    return pd


def is_dataframe(value: Any) -> bool:
    """A pandas DataFrame, recognized without importing pandas."""
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict") and hasattr(value, "columns")


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, index: Any = None) -> pd.DataFrame:
    pd = pandas()
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    return pd.DataFrame(list(rows), columns=list(columns), index=index)


def encode_rows(rows: Any, drop: Iterable[str] = ()) -> tuple[list[Any], list[str], Any]:
    """Prediction inputs as JSON rows: (rows, the column names sent, the index to give the answer).

    A DataFrame whose columns are all names becomes objects keyed by name (minus `drop`: a
    target column the model does not take); one with integer columns (made from an array)
    becomes lists in column order. A list of dicts is sent as it is; a 2-D array (NumPy or
    nested lists) as lists. Image rows (3-D or 4-D arrays) pass through as nested lists."""
    if is_dataframe(rows):
        columns = [c for c in rows.columns if c not in set(drop)]
        if all(isinstance(c, str) for c in columns):
            records = rows[columns].to_dict(orient="records")
            return [{k: _plain(v) for k, v in r.items()} for r in records], columns, rows.index
        return [[_plain(v) for v in r] for r in rows[columns].to_numpy().tolist()], [], rows.index
    if hasattr(rows, "tolist") and not isinstance(rows, list):  # a NumPy array
        rows = rows.tolist()
    if not isinstance(rows, list):
        rows = list(rows)
    if rows and all(isinstance(r, Mapping) for r in rows):
        dropped = set(drop)
        sent = [{k: _plain(v) for k, v in r.items() if k not in dropped} for r in rows]
        return sent, list(dict.fromkeys(k for r in sent for k in r)), None
    return [_plain(r) for r in rows], [], None


def _plain(value: Any) -> Any:
    """JSON types from NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def flatten_prediction(prediction: Mapping[str, Any], full: bool = True, prefix: str = "") -> dict[str, Any]:
    """One flat row per prediction: `label`, `value`, `mu`/`sigma`, `digit.label` (two targets);
    the probabilities as `p_<i>` columns (`full`) or only the label's own as `p(label)`."""
    flat: dict[str, Any] = {}
    for key, value in prediction.items():
        if isinstance(value, Mapping):
            flat |= flatten_prediction(value, full, f"{prefix}{key}.")
        elif key == "probabilities" and isinstance(value, list):
            if full:
                flat |= {f"{prefix}p_{i}": p for i, p in enumerate(value)}
            else:
                label = prediction.get("label")
                chosen = value[label] if isinstance(label, int) and 0 <= label < len(value) else max(value)
                flat[f"{prefix}p(label)"] = chosen
        else:
            flat[f"{prefix}{key}"] = value
    return flat
