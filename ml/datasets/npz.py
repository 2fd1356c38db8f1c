"""NPZ uploads: an archive (np.savez) with x (N, F), (N, H, W) or (N, C, H, W) and y (N,).

Nothing is inflated before it is known to be affordable: each member's .npy header (shape,
dtype) is read from the zip stream first, object dtypes are refused (never unpickled), and the
arrays' total size once decompressed is checked against the limit (DatasetTooLarge). x is then
read and checked a block of rows at a time, so checking an upload holds one block, not the
array (a 500 KB archive of zeros can declare 500 MB); a truncated or corrupt archive is named so.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, NoReturn

import numpy as np

from ml.datasets.base import NO_LIMITS, Dataset, DatasetError, DatasetInfo, DatasetTooLarge, Target, UploadLimits
from ml.datasets.labels import check_rows, labels_of, task_of

BLOCK_BYTES = 8 << 20  # x is read and checked this much at a time
MAX_MEMBERS = 64  # arrays in one archive (np.savez writes one per array; x and y are read)
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


@dataclass(frozen=True)
class _Member:
    key: str  # "x" or "y"
    path: str  # its name in the zip ("x.npy")
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a 36 TiB shape is just a number


def _broken(what: str, exc: BaseException | str) -> NoReturn:
    raise DatasetError(f"{what} is truncated or malformed ({exc}); write it with np.savez(f, x=x, y=y)")


def _open(data: bytes) -> zipfile.ZipFile:
    # Look at the magic bytes first: np.load would read a pickle's header and answer with advice
    # to unpickle it, which is never an option here.
    if data.startswith(b"\x93NUMPY"):
        raise DatasetError("the file is a single .npy array; expected an .npz archive with arrays 'x' and 'y'")
    if not data.startswith(b"PK"):
        raise DatasetError("the file is not a readable .npz archive: write one with np.savez(f, x=x, y=y)")
    _check_member_count(data)
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except _READ_ERRORS as exc:
        raise DatasetError(
            f"the file is not a readable .npz archive: it is truncated or malformed ({exc}); "
            "write one with np.savez(f, x=x, y=y)"
        ) from None


def _check_member_count(data: bytes) -> None:
    """Refuse an archive of many members from its end record, before zipfile reads its directory
    (a 64 MiB zip can list a million empty members: hundreds of MB of ZipInfo objects)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))  # the record, then a comment
    if end < 0 or len(data) < end + 22:
        return  # not a zip's end: zipfile says it is malformed
    (members,) = struct.unpack_from("<H", data, end + 10)
    if members > MAX_MEMBERS:  # 0xFFFF: a zip64 archive of more
        raise DatasetError(
            f"the archive holds {'65,535 or more' if members == 0xFFFF else f'{members:,}'} members; an .npz of "
            f"np.savez(f, x=x, y=y) holds two (at most {MAX_MEMBERS} are read)"
        )


def _read_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")


def _member(archive: zipfile.ZipFile, key: str) -> _Member:
    names = archive.namelist()
    path = f"{key}.npy" if f"{key}.npy" in names else key
    if path not in names:
        held = ", ".join(repr(n.removesuffix(".npy")) for n in names) or "nothing"
        raise DatasetError(f"the archive has no array {key!r} (it holds {held}); use np.savez(f, x=x, y=y)")
    try:
        with archive.open(path) as fp:
            shape, fortran, dtype = _read_header(fp)  # a few hundred bytes inflated, no more
    except _READ_ERRORS as exc:
        _broken(f"array {key!r}", exc)
    if dtype.hasobject:
        raise DatasetError(f"array {key!r} has dtype object (pickled Python objects): save numbers")
    if dtype.kind not in "biuf":
        raise DatasetError(f"array {key!r} has dtype {dtype}; expected integers or floats")
    return _Member(key, path, tuple(int(s) for s in shape), dtype, bool(fortran))


def _check_shapes(x: _Member, y: _Member, limits: UploadLimits) -> None:
    if x.nbytes + y.nbytes > (limits.max_inflated_bytes or math.inf):
        raise DatasetTooLarge(
            f"the arrays would take {x.nbytes + y.nbytes:,} bytes once decompressed (x {x.shape} {x.dtype}, "
            f"y {y.shape} {y.dtype}), above the limit of {limits.max_inflated_bytes:,}",
            "max_inflated_bytes",
        )
    if len(x.shape) not in (2, 3, 4):
        raise DatasetError(f"x has shape {x.shape}; expected (N, features), (N, H, W) or (N, C, H, W)")
    if len(y.shape) != 1:
        raise DatasetError(f"y has shape {y.shape}; expected (N,), one label or value per row of x")
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    check_rows(x.shape[0], "the archive")
    if 0 in x.shape[1:]:
        raise DatasetError(f"x has shape {x.shape}: no features")
    if limits.max_rows is not None and x.shape[0] > limits.max_rows:
        raise DatasetError(f"the archive has more than {limits.max_rows} rows, the limit for an upload")


def _read_exact(fp: IO[bytes], size: int, key: str) -> bytes:
    data = fp.read(size)
    if len(data) != size:
        _broken(f"array {key!r}", f"its data ends after {len(data):,} of {size:,} bytes")
    return data


def _read_x(archive: zipfile.ZipFile, x: _Member, keep: bool) -> np.ndarray | None:
    """x as float32 (kept) or only checked, a block of rows at a time; refuses non-finite values."""
    rows, row_shape = x.shape[0], x.shape[1:]
    row_bytes = math.prod(row_shape) * x.dtype.itemsize
    out = np.empty(x.shape, dtype=np.float32) if keep else None
    try:
        with archive.open(x.path) as fp:
            _read_header(fp)
            blocks: Iterable[tuple[int, np.ndarray]]
            if x.fortran:  # column-major: rows are not contiguous; read whole (within the limit)
                blocks = [(0, np.frombuffer(_read_exact(fp, x.nbytes, "x"), x.dtype).reshape(x.shape, order="F"))]
            else:
                step = max(1, BLOCK_BYTES // max(1, row_bytes))
                blocks = (
                    (start, np.frombuffer(_read_exact(fp, min(step, rows - start) * row_bytes, "x"), x.dtype))
                    for start in range(0, rows, step)
                )
            for start, raw in blocks:
                with np.errstate(over="ignore"):
                    block = raw.astype(np.float32).reshape(-1, *row_shape)  # beyond ±3.4e38: inf, refused
                bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                if bad.any():
                    row = start + int(np.flatnonzero(bad)[0]) + 1
                    raise DatasetError(f"x has a non-finite value in row {row} (NaN, ±inf or beyond float32 range)")
                if out is not None:
                    out[start : start + len(block)] = block
    except _READ_ERRORS as exc:
        _broken("array 'x'", exc)
    return out


def _read_y(archive: zipfile.ZipFile, y: _Member) -> np.ndarray:
    try:
        with archive.open(y.path) as fp:
            array = np.lib.format.read_array(fp, allow_pickle=False)
    except _READ_ERRORS as exc:
        _broken("array 'y'", exc)
    if array.shape != y.shape:
        _broken("array 'y'", f"shape {array.shape} read, {y.shape} declared")
    return array


def read_npz(data: bytes, *, name: str = "upload", limits: UploadLimits = NO_LIMITS, keep: bool = True) -> Dataset:
    """An .npz archive → a Dataset; `keep=False` checks every value but keeps no x (the API's
    description of an upload).

    y of an integer dtype (or float holding at most 20 distinct integers) is a classification
    with classes the sorted labels as text; other float y is a regression."""
    with _open(data) as archive:
        x, y = _member(archive, "x"), _member(archive, "y")
        _check_shapes(x, y, limits)
        labels, classes = labels_of(_read_y(archive, y), "y")  # y first: it is the small one
        xf = _read_x(archive, x, keep)
    shape = x.shape[1:] if len(x.shape) != 3 else (1, *x.shape[1:])  # (N, H, W) → (N, 1, H, W)
    if xf is None:
        xf = np.empty((0, *shape), dtype=np.float32)
    image = len(shape) == 3
    info = DatasetInfo(
        name=name,
        task=task_of(classes),
        input_shape=shape,
        features=tuple(f"c{i}" if image else f"x{i}" for i in range(shape[0])),
        targets=(Target("y", classes),),
        n_samples=x.shape[0],
        description=f"Uploaded NPZ: {x.shape[0]} {'images' if image else 'rows'} of shape {shape}.",
    )
    return Dataset(info=info, x=xf.reshape(-1, *shape), y={"y": labels})


def from_npz(data: bytes, *, name: str = "upload") -> Dataset:
    """`read_npz` with every array kept."""
    return read_npz(data, name=name)
