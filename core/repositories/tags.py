"""The tag test shared by experiments and sweeps: `tags` is one text `,a,b,` (core.tables.TagList),
so a row carries tag `x` exactly when `,x,` occurs in it. A plain substring position rather than
LIKE: LIKE ignores ASCII case on SQLite and not on PostgreSQL, and would need `%` and `_` escaped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, func, literal
from sqlalchemy.orm import Session

from core.tables import Experiment, Sweep


def has_tag(session: Session, column: Any, tag: str) -> ColumnElement[bool]:
    """`column` (a TagList) holds `tag`: case-sensitive and exact on SQLite and PostgreSQL alike."""
    needle = literal(f",{tag},", String)  # typed as text, never through TagList's conversion
    if session.get_bind().dialect.name == "postgresql":
        return func.strpos(column, needle) > 0
    return func.instr(column, needle) > 0


def annotate(session: Session, row: Experiment | Sweep, changes: dict[str, Any]) -> None:
    """Set the `tags` (a list, replaced whole) and `notes` (None clears them) that `changes` names."""
    if "tags" in changes:
        row.tags = list(changes["tags"])
    if "notes" in changes:
        row.notes = changes["notes"]
    session.flush()
