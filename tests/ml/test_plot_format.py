"""How plots write numbers and name things: 3 significant digits, the log-scale rule, the kept
epoch, the dataset's units and wording."""

from __future__ import annotations

import pytest

from ml.plot_format import KeptEpoch, kept_epoch, log_scale, sig3, wording, y_scale


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0015422826108604582, "0.00154"),  # the random search's learning rate of the issue
        (0.1, "0.1"),
        (0.03, "0.03"),
        (12.0, "12"),
        (3.14159, "3.14"),
        (999.6, "1,000"),  # rounds up into the thousands
        (154228.3, "154,000"),  # a price: thousands separators, never 1.54e+05
        (26677.9, "26,700"),
        (-1234.5, "-1,230"),
        (2.5e-05, "2.5e-05"),  # below 1e-4 and from 1e6 up, the exponent reads better
        (12345678.0, "1.23e+07"),
        (0.0, "0"),
        (11738, "11,738"),  # integers are counts: exact
        (8, "8"),
        (True, "true"),
        ("relu", "relu"),
        ([8, 16], "[8,16]"),
        ({"neurons": 20}, '{"neurons":20}'),
    ],
)
def test_numbers_are_written_with_three_significant_digits(value: object, text: str) -> None:
    assert sig3(value) == text


@pytest.mark.parametrize(
    ("values", "log"),
    [
        ([0.003, 0.01, 0.03, 0.1, 0.3], False),  # exactly two decades: linear still reads
        ([0.001, 0.01, 0.3], True),  # more than two decades
        ([26_000, 135_000], False),  # one spike of five times: linear
        ([11.7, 1_828.0], True),  # the σ-overfitted NLL
        ([-0.5, 1_000.0], False),  # a negative value: no log axis
        ([0.0, 1_000.0], False),
        ([None, 1.0, 1_000.0, float("nan")], True),  # missing and undefined values do not count
        ([5.0], False),
        ([], False),
    ],
)
def test_a_positive_series_spanning_more_than_two_decades_is_logarithmic(values: list, log: bool) -> None:
    assert log_scale(values) is log


def test_a_spike_above_values_that_are_not_all_positive_gets_a_symmetric_log_axis() -> None:
    # The tour's Gaussian loss (standardized NLL): about -1 for most epochs, one spike of 135,000.
    loss = [-1.2, -0.9, -1.1, 0.4, -1.0, 135_000.0, 2.0, -1.3]
    assert y_scale(loss) == ("symlog", 1.0)
    assert y_scale([-0.02, -0.03, 0.05, 40.0]) == ("symlog", 0.01)  # linear up to the median magnitude
    assert y_scale([-1.2, -0.9, 3.0, 50.0]) == ("linear", 0.0)  # within two decades
    assert y_scale([11.7, 1_828.0]) == ("log", 0.0)
    assert y_scale([0.5, 0.9]) == ("linear", 0.0)
    assert y_scale([0.0, 0.0]) == ("linear", 0.0)
    assert y_scale([]) == ("linear", 0.0)


def test_the_marked_epoch_is_the_served_one_else_the_best() -> None:
    served, best = {"epoch": 800, "val_rmse": 30_000.0}, {"epoch": 156, "val_rmse": 26_677.0}
    assert kept_epoch(served, best) == KeptEpoch(800, "kept: epoch 800")  # keep: last
    assert kept_epoch({"epoch": 156}, best) == KeptEpoch(156, "kept: epoch 156")
    # Before metrics.served exists (a running experiment, or rows from before it landed): the best.
    assert kept_epoch(None, best) == KeptEpoch(156, "best: epoch 156")
    assert kept_epoch({}, best) == KeptEpoch(156, "best: epoch 156")
    assert kept_epoch(None, None) is None


def test_units_and_wording_come_from_the_dataset() -> None:
    houses = wording({"name": "house_prices"}, "Sale_Price")
    assert (houses.unit, houses.rows) == ("USD", "sales")
    assert houses.axis("Sale_Price") == "Sale_Price (USD)"
    assert houses.axis("σ of Sale_Price") == "σ of Sale_Price (USD)"
    plane = wording({"name": "spirals"})
    assert (plane.unit, plane.rows) == (None, "samples")
    assert plane.axis("y") == "y"
    # An upload: its target column is the unit, its own name says what the rows are; never "sales".
    upload = wording({"id": "c47cbdebff5a59a4", "name": "diabetes"}, "progression")
    assert (upload.unit, upload.rows) == ("progression", "diabetes samples")
    assert upload.axis("progression") == "progression"
    assert upload.axis("σ of progression") == "σ of progression"
    assert upload.axis("val_rmse") == "val_rmse (progression)"
    assert wording({"id": "c47cbdebff5a59a4"}, "y").rows == "samples"
