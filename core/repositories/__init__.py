"""Every SQL statement of labtrain, one module per aggregate. Functions take the caller's
session and never commit: the owner of the session (the API request, the worker's
`session_scope()`) does."""

from typing import Any, cast

from sqlalchemy import CursorResult, Result


def rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE (typed: a DML statement returns a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount
