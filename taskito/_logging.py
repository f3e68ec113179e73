"""How ``taskito worker`` writes its log: stdlib ``logging`` on stderr, as
text for people or as one JSON object per line for log collectors.

taskito logs under ``taskito.*`` loggers (``taskito.worker``, ``taskito.cli``);
records about one job carry ``job_id`` (and, where known, ``task`` and
``attempt``) as extra attributes, which the JSON format writes as fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Extra attributes a record may carry about its job, written as JSON fields.
JOB_FIELDS = ("job_id", "task", "attempt")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601 with
    milliseconds), ``level``, ``logger``, ``message``, the job fields the
    record carries, and ``exception`` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an extra field that is not JSON still gets logged.
        return json.dumps(entry, default=str)


def configure(level: str, log_format: str) -> None:
    """Sends every log record at ``level`` and above to stderr in
    ``log_format`` ("text" or "json"). Called before the app is imported, so
    that its import-time records are formatted too; an app that configures
    logging itself may still add handlers afterwards."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


# The engine's events, logged under taskito.events (a failed attempt names
# the job, task and attempt in the record's extras too), at these levels.
_events = logging.getLogger("taskito.events")

EVENT_LEVELS = {
    "retry": logging.WARNING,
    "cancelled": logging.WARNING,
    "dead": logging.ERROR,
    "succeeded": logging.DEBUG,
    "claimed": logging.DEBUG,
    "stale_outcome": logging.WARNING,
    "lease_expired": logging.WARNING,
    "timed_out": logging.WARNING,
    "unknown_task": logging.ERROR,
    "quarantined": logging.ERROR,
    "stopped": logging.CRITICAL,
    "storage_error": logging.ERROR,
    "runner_panicked": logging.ERROR,
}


def debug_events() -> bool:
    """Whether the engine should also report each success and claim."""
    return _events.isEnabledFor(logging.DEBUG)


def log_event(
    kind: str,
    job_id: str | None,
    task: str | None,
    attempt: int | None,
    message: str,
    error: tuple[str, str, str] | None = None,
) -> None:
    """Logs one event of a worker's engine (its ``on_event`` callback, which
    also hands a failed attempt's ``error``, type, message and traceback, to
    the Queue's hooks: see ``WorkerAPI._on_event``)."""
    level = EVENT_LEVELS.get(kind, logging.INFO)
    extra = {"event": kind, "job_id": job_id, "task": task, "attempt": attempt}
    if job_id is None:
        _events.log(level, "%s", message, extra=extra)
    else:
        _events.log(level, "job %s: %s", job_id, message, extra=extra)
