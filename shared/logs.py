"""One logging setup for every service: one line per record, UTC timestamps, in one of two formats.

``LOG_FORMAT`` (unprefixed, the same for every service) chooses it:

- ``text`` (the default, for people): ``2026-05-01T12:00:00.123Z WARNING sink sink.app: message
  hop=sink partition=3``: the structured fields, if any, follow the message as ``key=value``;
- ``json`` (for Loki, Elasticsearch …): one JSON object per line with ``ts``, ``level``,
  ``logger``, ``message``, ``service``, then every structured field, then ``exception`` (the
  formatted traceback) when the record carries one.

Structured fields are passed with ``extra=`` (``log.warning("…", extra={"hop": "sink",
"partition": 3})``); their names across the services: ``hop`` (bridge, sink, live, etl), ``topic``,
``partition``, ``offset`` / ``offsets``, ``run_id``, ``stage``, ``count``. A field named like one
of the fixed keys is written as ``extra_<name>``. Values that are not JSON go in as ``str()``.
Fields that hold for the whole process (``hop``; an ETL job's ``run_id``) are given once to
:func:`setup_logging` (``fields=``) and added to every record that does not set them itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from shared.errors import ConfigError

LOG_FORMATS = ("text", "json")
FIXED_KEYS = ("ts", "level", "logger", "message", "service")
# Everything a LogRecord has of its own: what is not in here came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields passed to the log call with ``extra=``, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _utc_iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``ts level service logger: message key=value …`` (and the traceback on the lines after)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_iso(record.created)} {record.levelname} {self.service} {record.name}: {record.getMessage()}"
        fields = structured_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        for key, value in structured_fields(record).items():
            out[f"extra_{key}" if key in FIXED_KEYS else key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def log_format_from_env() -> str:
    fmt = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={os.environ['LOG_FORMAT']!r}: use one of {', '.join(LOG_FORMATS)}")
    return fmt


class ContextFields(logging.Filter):
    """Adds the process's fields to every record that does not carry them already."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if key not in vars(record):
                setattr(record, key, value)
        return True


# Libraries that can log the same failure thousands of times a second: aiokafka's metadata refresh
# retries a dead broker in a tight loop ("Unable connect to node …", "Unable to update metadata …":
# 254 000 lines in 40 s of a remote broker outage, found by the fault soak).
REPEAT_LIMITED_LOGGERS = ("aiokafka",)
REPEAT_WINDOW_S = 10.0


class RepeatLimit(logging.Filter):
    """Of the records of ``prefixes``' loggers with the same logger, level and message template,
    passes the first of each ``window_s`` and drops the rest; the next one passed says how many
    were dropped (field ``repeated``). Other loggers' records all pass."""

    def __init__(self, prefixes: tuple[str, ...] = REPEAT_LIMITED_LOGGERS, window_s: float = REPEAT_WINDOW_S, clock: Any = None) -> None:
        super().__init__()
        self.prefixes, self.window_s = prefixes, window_s
        self.clock = clock if clock is not None else time.monotonic
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}  # key → (window start, dropped in it)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        start, dropped = self._windows.get(key, (None, 0))
        if start is not None and now - start < self.window_s:
            self._windows[key] = (start, dropped + 1)
            return False
        if dropped:
            record.repeated = dropped
        if len(self._windows) > 10_000:  # templates are few; bounded anyway
            self._windows.clear()
        self._windows[key] = (now, 0)
        return True


def setup_logging(service: str, level: str = "INFO", log_format: str | None = None, fields: Mapping[str, Any] | None = None) -> None:
    """Every record of the process to stderr in ``log_format`` (default: ``LOG_FORMAT``, else
    text), with ``fields`` (e.g. ``{"hop": "sink"}``) on each."""
    fmt = log_format or log_format_from_env()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    if fields:
        handler.addFilter(ContextFields(fields))
    handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs each SASL authentication of each connection at INFO; its warnings and errors
    # (connection failures …) still pass, and all of it with LOG_LEVEL=DEBUG. Its "in the clear"
    # warning: see shared.kafka.
    logging.getLogger("aiokafka.conn").setLevel(logging.WARNING if root.level > logging.DEBUG else logging.NOTSET)
