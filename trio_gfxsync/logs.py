"""Structured logging: one JSON object per line on stdout (what `docker logs` shows).

Every event has a stable `event` name plus the ids that locate it (`pc_id`, `path`, `session_id`).
Third-party loggers (httpx, hypercorn) go through the same handler. Registered secrets are
scrubbed from every line as a last line of defence: code never logs a key on purpose.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from . import names

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let this string reach the output (keys, tokens)."""
    if value and len(value) >= 6:
        _secrets.add(value)
        # as it appears inside a JSON line: quotes and backslashes escaped
        _secrets.add(orjson.dumps(value).decode()[1:-1])


def scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _base_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    event_fields = getattr(record, "gfx_fields", None)
    if event_fields is None:
        fields["event"] = "library_log"
        fields["message"] = record.getMessage()
    else:
        fields["event"] = record.msg
        fields.update(event_fields)
    if record.exc_info and record.exc_info[0] is not None:
        fields["error_type"] = record.exc_info[0].__name__
        fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = names.dumps(_base_fields(record), default=str).decode()
        return scrub(line)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _base_fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {fields.pop('event')}"
        fields.pop("logger")
        trace = fields.pop("traceback", "")
        rest = " ".join(f"{k}={v}" for k, v in fields.items())
        return scrub(f"{head} {rest}".rstrip() + (f"\n{trace}" if trace else ""))


class RepeatSummary(logging.Filter):
    """The same warning or error every poll is logged once, then summarised.

    Within `window` seconds a repeat of (event, ids, error) is counted, not printed; the first
    repeat after the window is printed with `repeated` = how many were held back.
    """

    KEY_FIELDS = ("pc_id", "path", "session_id", "error", "reason", "status", "code")

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "gfx_fields", None)
        if record.levelno < logging.WARNING or fields is None:
            return True
        key = (record.name, record.msg, *(str(fields.get(k)) for k in self.KEY_FIELDS))
        now = self.clock()
        first, held = self._seen.get(key, (None, 0))
        if first is not None and now - first < self.window:
            self._seen[key] = (first, held + 1)
            return False
        if held:
            record.gfx_fields = {**fields, "repeated": held}
        if len(self._seen) > 10_000:  # bounded: forget the oldest half
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                del self._seen[old]
        self._seen[key] = (now, 0)
        return True


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RepeatSummary())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: too chatty for a service doing one request a second
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class EventLogger:
    """`log.info("file_changed", pc_id=..., path=...)`: event name first, fields as keywords."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, exc_info: Any, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, extra={"gfx_fields": fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, None, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, None, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, None, fields)

    def error(self, event: str, exc_info: Any = None, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


def get_logger(name: str) -> EventLogger:
    return EventLogger(f"trio_gfxsync.{name}")
