"""A run's time limit is recognized wherever its signal lands, even under the exception that code
cleaning up after it raised (seen: SQLAlchemy's pool checking a PostgreSQL connection)."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from worker.steps import over_time_limit


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


def test_a_connection_error_raised_while_handling_the_time_limit_is_not_retried() -> None:
    """SQLAlchemy cleaning up after the signal gets psycopg's "another command is already in
    progress": a connection error by its class, but retrying it would only delay the limit."""
    from sqlalchemy.exc import OperationalError

    from core.db import DatabaseUnavailable, interrupted

    after_limit = OperationalError("ROLLBACK", {}, RuntimeError("another command is already in progress"))
    after_limit.__context__ = SoftTimeLimitExceeded()
    assert interrupted(after_limit)

    # Writing a run's failure after an outage: the outage is the context, not an interruption.
    after_outage = OperationalError("UPDATE", {}, RuntimeError("connection refused"))
    after_outage.__context__ = DatabaseUnavailable("the database was unreachable")
    assert not interrupted(after_outage)
