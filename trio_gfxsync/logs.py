"""Structured logging: one JSON object per line on stdout (what `docker logs` shows).

Every event has a stable `event` name plus the ids that locate it (`pc_id`, `path`, `session_id`).
Third-party loggers (httpx, hypercorn) go through the same handler. Registered secrets are
scrubbed from every line as a last line of defence: code never logs a key on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from . import names

# A secret is redacted whole, and no part of it may show either (a proxy that echoes a header
# and cuts it, our own cut of a long answer): no RUN consecutive characters of its secret part,
# and no TAIL or more of its leading characters where a token ends (see `scrub`).
RUN = 8
TAIL = 4
REDACTED = "[REDACTED]"
SB_SECRET_PREFIX = "sb_secret_"
_secrets: set[str] = set()
_parts: dict[str, _Part] = {}


class _Part:
    """One form of a secret part: its RUN-character windows and the characters it is made of
    (only a stretch of those characters can hold a window or a leading piece)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.windows = frozenset(text[i : i + RUN] for i in range(len(text) - RUN + 1))
        alphabet = "".join(sorted(set(text)))
        self.stretches = re.compile(f"[{re.escape(alphabet)}]{{{min(RUN, TAIL)},}}")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where `text` shows a piece of this part: a window anywhere in a stretch of its
        characters, or TAIL or more of its leading characters at a stretch's end (a cut)."""
        found: list[tuple[int, int]] = []
        windows, part = self.windows, self.text
        for stretch in self.stretches.finditer(text):
            start, end = stretch.span()
            for i in range(start, end - RUN + 1):
                if text[i : i + RUN] in windows:
                    found.append((i, i + RUN))
            for size in range(min(len(part), end - start), TAIL - 1, -1):
                if text.startswith(part[:size], end - size):
                    found.append((end - size, end))
                    break
        return found


def secret_parts(value: str) -> list[str]:
    """What of a secret is secret: the text after `sb_secret_`; a JWT's payload and signature
    (every JWT's header is the same few bytes); the path and query of a URL (a webhook's
    token lives there, its host is public); anything else whole."""
    if value.startswith(SB_SECRET_PREFIX) and len(value) > len(SB_SECRET_PREFIX):
        return [value[len(SB_SECRET_PREFIX) :]]
    pieces = value.split(".")
    if len(pieces) == 3 and value.startswith("eyJ") and all(pieces):
        return pieces[1:]
    url = urlsplit(value) if "://" in value else None
    if url is not None and url.scheme and url.netloc:
        rest = value[value.index(url.netloc) + len(url.netloc) :]
        return [rest] if len(rest) > 1 else [value]
    return [value]


def _forms(text: str) -> set[str]:
    """The ways a text travels: as is, inside a JSON string (orjson's and the ASCII-only
    escapes, `/` as `\\/`), and percent-encoded in a URL."""
    forms = {
        text,
        orjson.dumps(text).decode()[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text)[1:-1].replace("/", "\\/"),
        quote(text, safe=""),
    }
    return {form for form in forms if form}


def register_secret(value: str) -> None:
    """Never let this string, or a piece of it, reach the output (keys, tokens, webhook URLs)."""
    if not value or len(value) < 6:
        return  # a 3-letter "secret" would redact every word holding it
    _secrets.update(_forms(value))
    for part in secret_parts(value):
        if len(part) >= TAIL:
            for form in _forms(part):
                _parts.setdefault(form, _Part(form))


def scrub(text: str) -> str:
    """THE redaction: every registered secret whole, and any piece of one (a RUN-character run
    of its secret part anywhere; TAIL or more of its leading characters where a token or the
    text ends). Run it before any cut: a cut can leave a piece that no longer looks like one."""
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not _parts:
        return text
    return REDACTED.join(_redact_pieces(piece) for piece in text.split(REDACTED))


def _redact_pieces(text: str) -> str:
    spans = sorted(span for part in _parts.values() for span in part.spans(text))
    if not spans:
        return text
    kept: list[str] = []
    at = 0
    start, end = spans[0]
    for s, e in [*spans[1:], (len(text) + 1, len(text) + 1)]:
        if s <= end:
            end = max(end, e)
            continue
        # what precedes a redaction now ends where a token ends: look at it again (a key's
        # leading characters right before the rest of it must not be left behind)
        kept.append(_redact_pieces(text[at:start]))
        at, start, end = end, s, e
    kept.append(text[at:])
    return REDACTED.join(kept)


def clip(text: str, limit: int) -> str:
    """Redact, then cut to `limit` characters: the one order that leaves no run of a secret.
    The cut may end the text in a key's first few characters (they were harmless where a
    token went on): those are redacted too, and the marker cut if need be."""
    cut = scrub(text)[:limit]
    return scrub(cut)[:limit]


def dumps_redacted(value: Any, **options: Any) -> str:
    """`value` as one JSON text, redacted, and still JSON. Each string is redacted on its own
    (its end is a text's end: a key's first characters there go too), then the whole text
    (what became text on the way, through `default`); should that cut through a JSON escape
    (a token holding a quote), every value is made a redacted string instead."""
    text = names.dumps(_redacted_strings(value, False), **options).decode()
    clean = scrub(text)
    if clean == text:
        return text
    try:
        orjson.loads(clean)
    except orjson.JSONDecodeError:
        return names.dumps(_redacted_strings(value, True)).decode()
    return clean


def _redacted_strings(value: Any, everything: bool) -> Any:
    """A copy with each str redacted; other values kept, or with `everything` made a str."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {
            _redacted_strings(k, True): _redacted_strings(v, everything) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted_strings(v, everything) for v in value]
    if not everything or value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


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
        return dumps_redacted(_base_fields(record), default=str)


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
