"""A run's time limit is recognized wherever its signal lands, even under the exception that code
cleaning up after it raised (seen: SQLAlchemy's pool checking a PostgreSQL connection)."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from worker.runner import over_time_limit


def _raised(make: type[BaseException] | None) -> Exception:
    try:
        try:
            raise SoftTimeLimitExceeded()
        except SoftTimeLimitExceeded as limit:
            if make is None:
                raise
            raise make("can't change 'autocommit' now: connection in transaction status ACTIVE") from limit
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever came out
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("on_top", [None, RuntimeError, ValueError])
def test_the_time_limit_is_found_under_a_cleanup_error(on_top: type[BaseException] | None) -> None:
    assert over_time_limit(_raised(on_top))


def test_other_errors_are_not_the_time_limit() -> None:
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = KeyError("x")
    assert not over_time_limit(wrapped)
    assert not over_time_limit(ValueError("alone"))
