"""Datasets: the built-ins (described without loading), user uploads (CSV, NPZ) and splits.

Importing this package stays cheap (no torch, pandas or scikit-learn at import time): the API
imports it to describe datasets, and only the loaders it calls pull in the heavy libraries.
"""

from ml.datasets.base import Dataset, DatasetError, DatasetInfo, DatasetTooLarge, Target, UploadLimits
from ml.datasets.catalog import BUILTINS, describe_builtin, load_builtin
from ml.datasets.files import from_csv, read_csv
from ml.datasets.npz import from_npz, read_npz
from ml.datasets.split import split_indices, split_sizes

__all__ = [
    "BUILTINS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetTooLarge",
    "Target",
    "UploadLimits",
    "describe_builtin",
    "from_csv",
    "from_npz",
    "load_builtin",
    "read_csv",
    "read_npz",
    "split_indices",
    "split_sizes",
]
