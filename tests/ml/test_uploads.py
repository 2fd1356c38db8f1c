"""ml.datasets uploads: a CSV or an NPZ becomes a dataset, every bad file is refused with a
message that says what is wrong (and quotes a short excerpt), and reading one costs bounded time
and memory: limits checked before the body is parsed, linear parsing, NPZ sizes from headers."""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from typing import Any

import numpy as np
import pytest

from ml.datasets import (
    DatasetError,
    DatasetTooLarge,
    Target,
    UploadLimits,
    from_csv,
    from_npz,
    read_csv,
    read_npz,
)

# --- CSV uploads ------------------------------------------------------------------------------------


def _csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def test_csv_regression() -> None:
    rows = [f"{i},{i * 2.5},{i * 1000 + 0.5}" for i in range(30)]
    data = from_csv(_csv("a,b,price", rows), "price", name="mine")
    assert data.info.task == "regression"
    assert data.info.name == "mine"
    assert data.info.features == ("a", "b")
    assert data.info.input_shape == (2,)
    assert data.info.targets == (Target("price", None),)
    assert data.x.dtype == np.float32
    assert data.x.shape == (30, 2)
    assert data.y["price"].dtype == np.float32
    assert data.y["price"][3] == pytest.approx(3000.5)


def test_csv_many_integer_values_is_a_regression() -> None:
    data = from_csv(_csv("a,y", [f"{i},{i * 7}" for i in range(25)]), "y")
    assert data.info.task == "regression"


def test_csv_integer_classes_sort_numerically() -> None:
    rows = [f"{i},{[2, 10, 3][i % 3]}" for i in range(12)]
    data = from_csv(_csv("a,y", rows), "y")
    assert data.info.task == "multiclass"
    assert data.info.targets[0].classes == ("2", "3", "10")
    assert data.y["y"].dtype == np.int64
    assert data.y["y"][:3].tolist() == [0, 2, 1]  # 2, 10, 3


def test_csv_text_target_is_binary() -> None:
    rows = [f"{i},{i % 4}.5,{'yes' if i % 2 else 'no'}" for i in range(12)]
    data = from_csv(_csv(" a , b ,ok", rows), "ok")  # header names are stripped
    assert data.info.task == "binary"
    assert data.info.features == ("a", "b")
    assert data.info.targets[0].classes == ("no", "yes")
    assert data.y["ok"][:2].tolist() == [0, 1]


def test_csv_with_bom_and_crlf() -> None:
    text = "\ufeffa,y\r\n" + "".join(f"{i},{i % 2}\r\n" for i in range(10))
    assert from_csv(text.encode(), "y").info.features == ("a",)


GOOD_ROWS = [f"{i},{i % 3},{i % 2}" for i in range(12)]


@pytest.mark.parametrize(
    ("data", "target", "message"),
    [
        (_csv("a,b,y", GOOD_ROWS), "label", "no target column 'label'; the columns are 'a', 'b', 'y'"),
        (_csv("a,b,y", [*GOOD_ROWS[:5], "5,red,1", *GOOD_ROWS[6:]]), "y", "column 'b' is not numeric: row 6"),
        (_csv("a,b,y", [*GOOD_ROWS[:3], "3,,1", *GOOD_ROWS[4:]]), "y", "column 'b' has a missing value in row 4"),
        (_csv("a,b,y", [*GOOD_ROWS[:3], "3,NA,1", *GOOD_ROWS[4:]]), "y", "column 'b' has a missing value in row 4"),
        (_csv("a,b,y", [*GOOD_ROWS[:7], "7,1,", *GOOD_ROWS[8:]]), "y", "column 'y' has a missing value in row 8"),
        (_csv("a,b,y", [*GOOD_ROWS[:2], "inf,1,1", *GOOD_ROWS[3:]]), "y", "column 'a' has a non-finite value in row 3"),
        (_csv("a,b,y", [*GOOD_ROWS[:2], "1e39,1,1", *GOOD_ROWS[3:]]), "y", "column 'a' has a non-finite value"),
        (_csv("a,b,y", [f"{i},{i},4" for i in range(12)]), "y", "single value"),
        (_csv("a,b,y", [f"{i},{i},{i}.5" for i in range(1)] * 12), "y", "single value"),
        (_csv("a,b,y", GOOD_ROWS[:9]), "y", "9 rows; at least 10"),
        (_csv("a,b,y", [*GOOD_ROWS, "99,1,7"]), "y", "at least 2 rows; too few for '7'"),
        (_csv("y", [str(i % 2) for i in range(12)]), "y", "no feature column"),
        (_csv("a,a,y", GOOD_ROWS), "y", "duplicate column names in the header: 'a'"),
        (_csv("a,,y", GOOD_ROWS), "y", "column 2 has no name"),
        (b"", "y", "empty"),
        (b"  \n\n", "y", "empty"),
        (b"a,y\n\xff\xfe1,2\n", "y", "not UTF-8"),
        (_csv("a,b,y", [*GOOD_ROWS, "1,2,3,4"]), "y", "not a readable CSV"),
    ],
)
def test_csv_refusals(data: bytes, target: str, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        from_csv(data, target)


def test_csv_row_limit() -> None:
    data = _csv("a,y", [f"{i},{i % 2}" for i in range(50)])
    assert len(from_csv(data, "y", max_rows=50)) == 50
    with pytest.raises(DatasetError, match="more than 49 data rows"):
        from_csv(data, "y", max_rows=49)


# --- NPZ uploads ------------------------------------------------------------------------------------


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_npz_gray_images_get_a_channel() -> None:
    rng = np.random.default_rng(0)
    data = from_npz(_npz(x=rng.random((20, 8, 8)), y=np.arange(20) % 4), name="imgs")
    assert data.x.shape == (20, 1, 8, 8)
    assert data.x.dtype == np.float32
    assert data.info.input_shape == (1, 8, 8)
    assert data.info.is_image
    assert data.info.features == ("c0",)
    assert data.info.task == "multiclass"
    assert data.info.targets == (Target("y", ("0", "1", "2", "3")),)
    assert data.y["y"].dtype == np.int64


def test_npz_color_images_and_labels() -> None:
    labels = np.array([3, 7] * 10, dtype=np.uint8)
    data = from_npz(_npz(x=np.zeros((20, 3, 4, 5), dtype=np.uint8), y=labels))
    assert data.info.input_shape == (3, 4, 5)
    assert data.info.features == ("c0", "c1", "c2")
    assert data.info.task == "binary"
    assert data.info.targets[0].classes == ("3", "7")
    assert data.y["y"][:2].tolist() == [0, 1]


def test_npz_tabular_regression() -> None:
    rng = np.random.default_rng(0)
    data = from_npz(_npz(x=rng.random((15, 3)), y=rng.random(15) * 100))
    assert data.info.task == "regression"
    assert data.info.features == ("x0", "x1", "x2")
    assert data.info.input_shape == (3,)
    assert data.y["y"].dtype == np.float32


X12 = np.zeros((12, 2))
Y12 = np.arange(12) % 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_npz(x=X12), "no array 'y' (it holds 'x')"),
        (_npz(inputs=X12, y=Y12), "no array 'x' (it holds 'inputs', 'y')"),
        (_npz(x=X12, y=np.array([{"a": 1}] * 12, dtype=object)), "array 'y' has dtype object"),
        (_npz(x=X12, y=np.array(["a", "b"] * 6)), "array 'y' has dtype <U1"),
        (_npz(x=X12, y=Y12[:11]), "x has 12 rows but y has 11"),
        (_npz(x=np.zeros(12), y=Y12), "x has shape (12,)"),
        (_npz(x=np.zeros((12, 1, 2, 2, 2)), y=Y12), "x has shape (12, 1, 2, 2, 2)"),
        (_npz(x=X12, y=Y12[:, None]), "y has shape (12, 1)"),
        (_npz(x=np.where(np.eye(12, 2) > 0, np.nan, 0.0), y=Y12), "x has a non-finite value in row 1"),
        (_npz(x=X12, y=np.where(np.arange(12) == 4, np.inf, 0.5)), "y has a non-finite value (inf) in row 5"),
        (_npz(x=X12[:9], y=Y12[:9]), "9 rows; at least 10"),
        (_npz(x=np.zeros((12, 0)), y=Y12), "no features"),
        (_npz(x=X12, y=np.zeros(12, dtype=np.int64)), "single value"),
        (_npz(x=X12, y=np.array([0] * 6 + [1] * 5 + [2])), "too few for '2' (1 row)"),
        (_npz(x=X12, y=np.arange(12)), "'3' (1 row), '4' (1 row) and 7 more"),  # an id column: listed short
        (pickle.dumps({"x": X12, "y": Y12}), "not a readable .npz"),
        (b"not a zip at all", "not a readable .npz"),
        (b"PK\x03\x04 a broken zip", "not a readable .npz"),
        (b"", "not a readable .npz"),
    ],
)
def test_npz_refusals(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        from_npz(data)


def test_npz_single_array_is_refused() -> None:
    buffer = io.BytesIO()
    np.save(buffer, X12)
    with pytest.raises(DatasetError, match="single .npy array"):
        from_npz(buffer.getvalue())


# --- bounded cost: limits checked before the body is parsed, linear parsing, short excerpts -----


def _wide(columns: int, rows: int) -> bytes:
    header = ",".join(f"f{i}" for i in range(columns - 1)) + ",y"
    body = [",".join(["0.5"] * (columns - 1)) + f",{r % 2}" for r in range(rows)]
    return _csv(header, body)


def test_csv_columns_and_cells_are_refused_from_the_header_and_a_line_count() -> None:
    wide = _wide(40_000, 12)
    with pytest.raises(DatasetTooLarge, match="the header names 40,000 columns, above the limit of 10,000") as caught:
        read_csv(wide, "y", limits=UploadLimits(max_columns=10_000))
    assert caught.value.limit == "max_columns"
    # A body that would not even parse is refused for its size first: the body is never read.
    broken = wide + b"not,a,row\n" * 5
    with pytest.raises(DatasetTooLarge, match="above the limit of 100,000") as caught:
        read_csv(broken, "y", limits=UploadLimits(max_cells=100_000))
    assert caught.value.limit == "max_cells"
    legal = read_csv(_wide(10_000, 12), "y", limits=UploadLimits(max_columns=10_000, max_cells=200_000))
    assert legal.info.input_shape == (9_999,)
    assert legal.x.shape == (12, 9_999)


def test_csv_without_keep_checks_every_cell_and_keeps_no_features() -> None:
    rows = [f"{i},{i % 3},{i % 2}" for i in range(30)]
    described = read_csv(_csv("a,b,y", rows), "y", keep=False)
    assert described.info == from_csv(_csv("a,b,y", rows), "y").info
    assert described.x.shape == (0, 2)
    with pytest.raises(DatasetError, match="column 'b' is not numeric: row 30"):
        read_csv(_csv("a,b,y", [*rows[:29], "1,x,1"]), "y", keep=False)


def test_csv_duplicates_among_many_columns_are_found_in_linear_time() -> None:
    header = ",".join(f"c{i}" for i in range(20_000)) + ",c5,y"
    data = _csv(header, [",".join(["1"] * 20_001) + f",{r % 2}" for r in range(12)])
    with pytest.raises(DatasetError, match="duplicate column names in the header: 'c5'"):
        read_csv(data, "y")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_csv("a,b\x00c,y", GOOD_ROWS), "control character (U+0000)"),
        (_csv("a,b\x1bc,y", GOOD_ROWS), "control character (U+001B)"),
        (_csv("a," + "b" * 300 + ",y", GOOD_ROWS), "longer than 200 characters"),
        (_csv("a,b,y", [f"{i},{i},{'no' if i % 2 else 'ye' + chr(0)}" for i in range(12)]), "control character"),
    ],
)
def test_csv_names_stored_as_json_are_printable_and_short(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_csv(data, "y")


def test_csv_errors_echo_a_short_excerpt_of_a_huge_cell() -> None:
    huge = "z" * 100_000
    data = _csv("a,b,y", [*GOOD_ROWS[:3], f"1,{huge},1", *GOOD_ROWS[4:]])
    with pytest.raises(DatasetError, match="row 4 holds") as caught:
        read_csv(data, "y")
    assert len(str(caught.value)) < 500
    assert "100,000 characters" in str(caught.value)
    beyond = _csv("a,b,y", [*GOOD_ROWS[:3], f"1,{'9' * 200_000},1", *GOOD_ROWS[4:]])
    with pytest.raises(DatasetError, match="not a readable CSV") as caught:
        read_csv(beyond, "y")  # above the csv reader's field limit: refused, not read whole
    assert len(str(caught.value)) < 500


def test_csv_ragged_rows_name_the_row() -> None:
    with pytest.raises(DatasetError, match="row 3 has 2 cells but the header names 3 columns"):
        read_csv(_csv("a,b,y", [*GOOD_ROWS[:2], "1,2", *GOOD_ROWS[3:]]), "y")


def _npy_member(header: dict[str, Any], payload: bytes) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + payload


def _zip(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return out.getvalue()


def test_npz_declared_sizes_are_refused_before_anything_is_inflated() -> None:
    # A header that declares 36 TiB of float32 (and holds 16 bytes): refused from the header.
    x = _npy_member({"descr": "<f4", "fortran_order": False, "shape": (10_000_000, 1_000_000)}, b"\0" * 16)
    y = _npy_member({"descr": "<i8", "fortran_order": False, "shape": (10_000_000,)}, b"\0" * 16)
    with pytest.raises(DatasetTooLarge, match="40,000,080,000,000 bytes once decompressed") as caught:
        read_npz(_zip(x=x, y=y), limits=UploadLimits(max_inflated_bytes=1 << 30))
    assert caught.value.limit == "max_inflated_bytes"
    # Without a limit the same file is truncated, and said to be.
    with pytest.raises(DatasetError, match="is truncated or malformed"):
        read_npz(_zip(x=x, y=y))


def test_npz_a_zeros_bomb_is_checked_a_block_at_a_time() -> None:
    x = np.zeros((3000, 2000), dtype=np.float32)  # 24 MB that compress to ~25 KB
    x[2999, 5] = np.nan
    out = io.BytesIO()
    np.savez_compressed(out, x=x, y=np.arange(3000) % 2)
    with pytest.raises(DatasetError, match="x has a non-finite value in row 3000"):
        read_npz(out.getvalue(), keep=False)
    x[2999, 5] = 0.0
    out = io.BytesIO()
    np.savez_compressed(out, x=x, y=np.arange(3000) % 2)
    described = read_npz(out.getvalue(), keep=False)
    assert described.info.input_shape == (2000,)
    assert described.x.shape == (0, 2000)
    kept = read_npz(out.getvalue())
    assert kept.x.shape == (3000, 2000)
    assert kept.x.dtype == np.float32


def test_npz_truncated_archives_and_members_are_named_so() -> None:
    whole = _npz(x=np.random.default_rng(0).random((50, 4)), y=np.arange(50) % 2)
    with pytest.raises(DatasetError, match="truncated or malformed"):
        read_npz(whole[: len(whole) // 2])
    header_only = _npy_member({"descr": "<f8", "fortran_order": False, "shape": (50, 4)}, b"\0" * 64)
    y = _npy_member({"descr": "<i8", "fortran_order": False, "shape": (50,)}, (np.arange(50) % 2).tobytes())
    with pytest.raises(DatasetError, match="array 'x' is truncated or malformed"):
        read_npz(_zip(x=header_only, y=y))
    with pytest.raises(DatasetError, match="array 'x' is truncated or malformed"):
        read_npz(_zip(x=b"\x93NUMPY garbage", y=y))


def test_npz_fortran_order_arrays_are_read_in_their_order() -> None:
    x = np.asfortranarray(np.arange(60, dtype=np.float64).reshape(12, 5))
    data = read_npz(_npz(x=x, y=np.arange(12) % 2))
    assert np.array_equal(data.x, x.astype(np.float32))


def test_npz_of_many_members_is_refused_before_its_directory_is_read() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(100):
            archive.writestr(f"m{i}.npy", b"")
    with pytest.raises(DatasetError, match="the archive holds 100 members"):
        read_npz(out.getvalue())


def test_csv_a_text_value_after_a_block_of_numbers_makes_a_text_target() -> None:
    rows = [f"{i % 7},{i % 5},{i % 2}" for i in range(530_000)]  # more than one block of 1M cells (524,288 rows)
    data = read_csv(_csv("a,b,y", [*rows, "1,2,other", "2,1,other"]), "y", keep=False)
    assert data.info.targets[0].classes == ("0", "1", "other")
    assert data.y["y"][-4:].tolist() == [0, 1, 2, 2]


def test_csv_a_text_target_of_too_many_distinct_values_is_refused_while_read() -> None:
    rows = [f"{i},id{i}" for i in range(70_000)]
    with pytest.raises(DatasetError, match="more than 65,536 distinct text values"):
        read_csv(_csv("a,y", rows), "y")
