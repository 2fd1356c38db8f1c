"""Logging for the API and the workers: plain text for people, or one JSON object per line
(LABTRAIN_LOG_FORMAT=json) for a log collector. Every record logged while an experiment trains
carries its id (`experiment_id`; `experiment_ids` for a group), from a context variable that
the worker's task sets, so a collector can select one experiment's lines without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
# uvicorn's own loggers keep their handlers (propagate=False); in JSON mode their formatter is ours.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_experiments: ContextVar[tuple[str, ...]] = ContextVar("labtrain_experiments", default=())

# The attributes every LogRecord has; anything else on a record came from `extra=` and is logged too.
# uvicorn's `color_message` repeats the message with terminal colors.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


@contextmanager
def experiment_context(experiment_ids: str | Sequence[str]) -> Iterator[None]:
    """Within this block (this thread or task), every log record names these experiments."""
    ids = (experiment_ids,) if isinstance(experiment_ids, str) else tuple(experiment_ids)
    token = _experiments.set(ids)
    try:
        yield
    finally:
        _experiments.reset(token)


class ExperimentFilter(logging.Filter):
    """Adds `experiment_id` (one experiment) or `experiment_ids` (a group) to records logged in an
    `experiment_context`; a record that already has one (`extra=`) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _experiments.get()
        if len(ids) == 1 and not hasattr(record, "experiment_id"):
            record.experiment_id = ids[0]
        elif len(ids) > 1 and not hasattr(record, "experiment_ids"):
            record.experiment_ids = list(ids)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, process, message, the
    experiment, any `extra=` fields, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's access line: (client, method, path with query, HTTP version, status)
            out.update(zip(("client", "method", "path", "http_version", "status"), record.args, strict=True))
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def make_formatter(fmt: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


class _LabtrainHandler(logging.StreamHandler):  # type: ignore[type-arg, unused-ignore]
    """The root handler this module installs (recognized, so configuring twice replaces it)."""


def configure_logging(level: str, fmt: Literal["text", "json"], *, uvicorn: bool = False) -> None:
    """Send every record at `level` and above to stderr in `fmt`. With `uvicorn`, uvicorn's own
    handlers (access log, server messages) also write JSON in JSON mode; in text mode they keep
    uvicorn's format."""
    handler = _LabtrainHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(ExperimentFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LabtrainHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings become records (logger py.warnings), not raw stderr text
    root.setLevel(level.upper())
    logging.getLogger("labtrain").setLevel(level.upper())
    if uvicorn and fmt == "json":
        for name in UVICORN_LOGGERS:
            for h in logging.getLogger(name).handlers:
                h.setFormatter(JsonFormatter())
                h.addFilter(ExperimentFilter())
