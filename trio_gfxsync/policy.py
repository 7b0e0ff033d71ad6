"""The error policy of DESIGN 5 as pure functions: classify an answer, compute a backoff.

Classification looks at the HTTP status and PostgREST's body `code` together: a 400 can mean
"a column is missing" (pause everything) or "this one record is refused" (isolate it).
"""

from __future__ import annotations

import enum
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Verdict(enum.Enum):
    STORED = "stored"  # 2xx: acknowledge
    SPLIT = "split"  # 21000 / PGRST102: a batching bug; split and retry the halves
    SCHEMA_MISMATCH = "schema_mismatch"  # pause, re-probe, never dead-letter
    REJECTED = "rejected"  # key or privileges: pause, re-probe, never dead-letter
    REFUSED = "refused"  # the table refuses particular records: isolate them
    TOO_LARGE = "too_large"  # 413: split; a single record -> dead letter
    SLOW_DOWN = "slow_down"  # 429 / 503: back off, honour Retry-After
    # 504 / 57014: the batch took too long; halve it (as 413), back off with a single record
    TIMED_OUT = "timed_out"
    DOWN = "down"  # other 5xx, timeouts, connection errors: queue and probe
    UNEXPECTED = "unexpected"  # a 4xx about the request, not the records: pause like REJECTED


SCHEMA_CODES = frozenset({"PGRST204", "PGRST205", "42703", "42P01", "42P10", "428C9", "PGRST200"})
REJECTED_CODES = frozenset({"PGRST301", "PGRST302", "PGRST300", "42501"})
SPLIT_CODES = frozenset({"21000", "PGRST102"})
# 25006: read-only transaction (Supabase turns a project with a full disk read-only): it
# passes with time, like an outage.
DOWN_CODES = frozenset({"25006"})
# 57014: statement timeout. With a 504 from the gateway, the answer to a batch too slow to
# store in time: a batch retried at the same size would time out for ever.
TIMEOUT_CODES = frozenset({"57014"})


def classify(status: int | None, code: str | None) -> Verdict:
    """`status` None means no HTTP answer at all (connect error, reset, timeout)."""
    code = code or ""
    if status is None:
        return Verdict.DOWN
    if 200 <= status < 300:
        return Verdict.STORED
    if status in (401, 403) or code in REJECTED_CODES:
        return Verdict.REJECTED
    if code in SCHEMA_CODES:
        return Verdict.SCHEMA_MISMATCH
    if status == 413:
        return Verdict.TOO_LARGE
    if code == "PGRST003":  # no pool connection in time: the server is busy, not the batch
        return Verdict.SLOW_DOWN
    if status == 504 or code in TIMEOUT_CODES:
        return Verdict.TIMED_OUT
    if status in (429, 503):
        return Verdict.SLOW_DOWN
    if status in (400, 409) and code in SPLIT_CODES:
        return Verdict.SPLIT
    if status in (400, 409, 422) and (code[:2] in ("22", "23") or code == "P0001"):
        return Verdict.REFUSED  # data exceptions, constraint violations, a trigger's RAISE
    if code in DOWN_CODES or status == 408:
        return Verdict.DOWN
    if status == 404:
        # PostgREST answers a missing table with 404 42P01; a bare 404 is a wrong rest_path
        return Verdict.SCHEMA_MISMATCH
    if status >= 500:
        return Verdict.DOWN
    # Any other 4xx says nothing about particular records: dead-lettering them would throw
    # good data away. Pause, queue and tell the operator instead.
    return Verdict.UNEXPECTED


# Answers that a single record can cause as well as an outage: a statement timeout on one huge
# session, a 500 from a trigger on one row, a gateway's 504 or a read timeout while the database
# works on it. Only another answer can tell which: a probe (or any other request) that succeeds
# after it means upstream is fine and the records are the trouble. 429, 503 and PGRST003 say
# "slow down" to everyone and never mean this.
ALONE_STATUSES = frozenset({500, 502, 504})
TIMEOUT_KINDS = frozenset({"Timeout", "ReadTimeout", "WriteTimeout", "PoolTimeout"})


def maybe_the_records(status: int | None, code: str | None, kind: str | None) -> bool:
    """Could these records alone have caused this answer (rather than upstream being down)?"""
    if code == "PGRST003" or code in DOWN_CODES:
        return False
    if status is None:
        return kind in TIMEOUT_KINDS
    return status in ALONE_STATUSES or code in TIMEOUT_CODES


def failure_reason(status: int | None, code: str | None) -> str:
    """The dead-letter reason of a record that kept failing alone."""
    return "server_error" if status in (500, 502) and code not in TIMEOUT_CODES else "timed_out"


class Action(enum.Enum):
    """What the executor does with a batch after an answer."""

    ACKNOWLEDGE = "acknowledge"
    SPLIT = "split"  # halves, each tried again
    REFUSE_ONE = "refuse_one"  # one record refused: count an attempt, retry later or dead-letter
    DEAD_LETTER = "dead_letter"  # one record too large: dead letter `payload_too_large`
    RETRY = "retry"  # hold every sender (Retry-After or backoff), then send the same again
    QUEUE = "queue"  # upstream down or slowing for too long: offline queue, probe
    PAUSE = "pause"  # schema mismatch or rejected key: queue, unhealthy, re-probe
    # the records may be the trouble (maybe_the_records): ask upstream with a probe; if it
    # answers, split the batch, and a single record fails alone (its own backoff, never the
    # gate's); if not, upstream is down: QUEUE
    ISOLATE = "isolate"


def decide(
    verdict: Verdict,
    batch_len: int,
    slow_tries: int,
    rate_limit_max_retries: int,
    *,
    maybe_records: bool = False,
) -> Action:
    """DESIGN 5 as one function. `slow_tries`: slow-down answers already seen for this batch;
    `maybe_records`: the answer is one the records alone can cause (maybe_the_records)."""
    if verdict is Verdict.STORED:
        return Action.ACKNOWLEDGE
    if maybe_records and verdict in (Verdict.TIMED_OUT, Verdict.DOWN):
        return Action.ISOLATE
    if verdict in (Verdict.SPLIT, Verdict.REFUSED):
        return Action.SPLIT if batch_len > 1 else Action.REFUSE_ONE
    if verdict is Verdict.TOO_LARGE:
        return Action.SPLIT if batch_len > 1 else Action.DEAD_LETTER
    if verdict is Verdict.TIMED_OUT and batch_len > 1:
        return Action.SPLIT
    if verdict in (Verdict.SLOW_DOWN, Verdict.TIMED_OUT):
        return Action.RETRY if slow_tries < rate_limit_max_retries else Action.QUEUE
    if verdict is Verdict.DOWN:
        return Action.QUEUE
    return Action.PAUSE


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    if attempt < 0:
        attempt = 0
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return rng.uniform(0, ceiling)


def capped_retry_after(retry_after: float | None, cap: float) -> float | None:
    """A Retry-After of a day must not stop every request for a day: honoured up to `cap`."""
    return None if retry_after is None else min(retry_after, cap)


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent/invalid."""
    if header is None:
        return None
    value = header.strip()
    if value.isascii() and value.isdecimal():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def slow_down_delay(
    attempt: int, retry_after: float | None, *, base: float, cap: float, rng: random.Random
) -> float:
    """Never earlier than the server asked; otherwise full-jitter backoff."""
    jittered = backoff_delay(attempt, base=base, cap=cap, rng=rng)
    if retry_after is None:
        return jittered
    return max(retry_after, jittered)
