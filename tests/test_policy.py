"""The error policy (DESIGN 5): real PostgREST 12.0.2 answers classified, backoff, Retry-After."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gfxsync.policy import (
    Action,
    Verdict,
    backoff_delay,
    capped_retry_after,
    classify,
    decide,
    retry_after_seconds,
    slow_down_delay,
)

HYPOTHESIS = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (201, None, Verdict.STORED),
        (200, None, Verdict.STORED),
        (204, "", Verdict.STORED),
        # batching bugs: the same conflict key twice / rows with different keys
        (400, "21000", Verdict.SPLIT),
        (400, "PGRST102", Verdict.SPLIT),
        # a column or the table missing, stale schema cache, conflict key without unique index
        (400, "PGRST204", Verdict.SCHEMA_MISMATCH),
        (404, "PGRST205", Verdict.SCHEMA_MISMATCH),
        (404, "42P01", Verdict.SCHEMA_MISMATCH),
        (400, "42703", Verdict.SCHEMA_MISMATCH),
        (400, "42P10", Verdict.SCHEMA_MISMATCH),
        (400, "428C9", Verdict.SCHEMA_MISMATCH),
        # key or privileges
        (401, "PGRST301", Verdict.REJECTED),
        (401, "PGRST302", Verdict.REJECTED),
        (401, "42501", Verdict.REJECTED),
        (403, "42501", Verdict.REJECTED),
        (401, None, Verdict.REJECTED),  # the gateway's "Invalid API key" has no code
        (403, None, Verdict.REJECTED),
        # the table refuses particular records
        (400, "23502", Verdict.REFUSED),
        (409, "23505", Verdict.REFUSED),
        (409, "23503", Verdict.REFUSED),
        (400, "22P02", Verdict.REFUSED),
        (400, "22P05", Verdict.REFUSED),
        (400, "22008", Verdict.REFUSED),
        # body too large
        (413, None, Verdict.TOO_LARGE),
        (413, "PGRST413", Verdict.TOO_LARGE),
        # slow down
        (429, None, Verdict.SLOW_DOWN),
        (503, None, Verdict.SLOW_DOWN),
        (504, None, Verdict.TIMED_OUT),  # the batch took too long: halved
        (503, "PGRST003", Verdict.SLOW_DOWN),
        (504, "PGRST003", Verdict.SLOW_DOWN),
        # upstream down
        (500, None, Verdict.DOWN),
        (502, None, Verdict.DOWN),
        (540, None, Verdict.DOWN),
        (544, None, Verdict.DOWN),
        (None, None, Verdict.DOWN),
    ],
)
def test_classify(status: int | None, code: str | None, verdict: Verdict) -> None:
    assert classify(status, code) is verdict


def test_classify_never_stores_a_non_2xx() -> None:
    for status in [*range(100, 200), *range(300, 600)]:
        for code in (None, "", "21000", "23505", "PGRST204", "42501", "PGRST003"):
            assert classify(status, code) is not Verdict.STORED, (status, code)


class CeilingRng:
    """Stands in for random.Random: `uniform(a, b)` returns `b`, exposing the backoff ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def expected_ceiling(attempt: int, base: float, cap: float) -> float:
    try:
        return min(cap, math.ldexp(base, attempt))
    except OverflowError:
        return cap


attempts = st.one_of(st.integers(0, 80), st.integers(0, 10**18))
bases = st.floats(1e-3, 60, allow_nan=False)
caps = st.floats(1e-3, 3600, allow_nan=False)


@HYPOTHESIS
@given(attempt=attempts, base=bases, cap=caps, seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_the_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0 <= delay <= expected_ceiling(attempt, base, cap)
    assert delay <= cap


@HYPOTHESIS
@given(attempt=st.integers(0, 60), base=bases, cap=caps)
def test_backoff_ceiling_is_min_of_cap_and_exponential(
    attempt: int, base: float, cap: float
) -> None:
    ceiling = backoff_delay(attempt, base=base, cap=cap, rng=CeilingRng())  # type: ignore[arg-type]
    assert ceiling == pytest.approx(expected_ceiling(attempt, base, cap), rel=1e-12)


@HYPOTHESIS
@given(
    attempts_=st.lists(st.integers(0, 10**6), min_size=2, max_size=10),
    base=bases,
    cap=caps,
)
def test_backoff_ceiling_never_decreases(attempts_: list[int], base: float, cap: float) -> None:
    ordered = sorted(attempts_)
    ceilings = [
        backoff_delay(a, base=base, cap=cap, rng=CeilingRng())  # type: ignore[arg-type]
        for a in ordered
    ]
    assert ceilings == sorted(ceilings)
    assert ceilings[-1] <= cap


def test_backoff_negative_attempt_is_treated_as_zero() -> None:
    assert backoff_delay(-3, base=2.0, cap=60.0, rng=CeilingRng()) == 2.0  # type: ignore[arg-type]


def test_backoff_is_jittered() -> None:
    rng = random.Random(1)
    delays = {backoff_delay(5, base=1.0, cap=30.0, rng=rng) for _ in range(50)}
    assert len(delays) > 40 and max(delays) <= 30.0


@HYPOTHESIS
@given(
    attempt=attempts,
    retry_after=st.one_of(st.none(), st.floats(0, 10**6, allow_nan=False)),
    base=bases,
    cap=caps,
    seed=st.integers(0, 2**32),
)
def test_slow_down_never_earlier_than_asked(
    attempt: int, retry_after: float | None, base: float, cap: float, seed: int
) -> None:
    delay = slow_down_delay(attempt, retry_after, base=base, cap=cap, rng=random.Random(seed))
    if retry_after is None:
        assert 0 <= delay <= cap
    else:
        assert retry_after <= delay <= max(retry_after, cap)


# --------------------------------------------------------------------------- Retry-After

NOW = datetime(2026, 1, 13, 10, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
def test_retry_after_delta_seconds(header: str, seconds: float) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_retry_after_http_date() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert header.endswith("GMT")
    assert retry_after_seconds(header, NOW) == 90.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    header = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(header, NOW) == 0.0


@pytest.mark.parametrize(
    "header", [None, "", "soon", "-5", "1.5", "5 seconds", "Tomorrow", "0x10", "∞"]
)
def test_retry_after_garbage_is_none(header: str | None) -> None:
    assert retry_after_seconds(header, NOW) is None


@pytest.mark.parametrize(
    "header", ["²", "①", "1 Jan 100000000000000000000 00:00:00 GMT"], ids=["sup", "circ", "year"]
)
def test_retry_after_strange_garbage_is_none(header: str) -> None:
    assert retry_after_seconds(header, NOW) is None


@HYPOTHESIS
@given(
    now=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    delta=st.integers(-(10**6), 10**7),
)
def test_retry_after_property_delta_and_date(now: datetime, delta: int) -> None:
    if delta >= 0:
        assert retry_after_seconds(str(delta), now) == float(delta)
    when = now + timedelta(seconds=delta)
    header = format_datetime(when, usegmt=True)  # whole seconds on the wire
    expected = max(0.0, (when.replace(microsecond=0) - now).total_seconds())
    result = retry_after_seconds(header, now)
    assert result is not None and result >= 0
    assert result == pytest.approx(expected, abs=1e-6)


# digits that are not decimal digits are test_retry_after_strange_garbage_is_none's subject
_not_decimal_digits = st.characters(
    exclude_categories=("Cs",),
    exclude_characters="".join(
        chr(c) for c in range(0x110000) if chr(c).isdigit() and not chr(c).isdecimal()
    ),
)


# date-like token soup; numbers stay below 2**31 (a huge year is in
# test_retry_after_strange_garbage_is_none)
_date_tokens = st.lists(
    st.one_of(
        st.sampled_from(["Mon,", "Tue", "Jan", "feb", "Dec", "GMT", "UT", "-0000", "+0200", ":"]),
        st.integers(0, 99_999).map(str),
        st.from_regex(r"[0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2})?", fullmatch=True),
        st.text("abcxyzT:,.-+ ", max_size=4),
    ),
    max_size=8,
).map(" ".join)


@HYPOTHESIS
@given(header=st.one_of(st.text(_not_decimal_digits), _date_tokens))
def test_retry_after_never_raises_and_is_never_negative(header: str) -> None:
    result = retry_after_seconds(header, NOW)
    assert result is None or (isinstance(result, float) and result >= 0)


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (405, "25006", Verdict.DOWN),  # read-only transaction: Supabase's disk-full mode
        (500, "57014", Verdict.TIMED_OUT),  # statement timeout: halved like a 504
        (408, None, Verdict.DOWN),
        (400, "P0001", Verdict.REFUSED),  # a trigger's RAISE EXCEPTION about this row
        (406, "PGRST106", Verdict.UNEXPECTED),  # about the request, not the records
        (400, "PGRST100", Verdict.UNEXPECTED),
        (431, None, Verdict.UNEXPECTED),
    ],
)
def test_only_record_errors_count_as_refusals(
    status: int, code: str | None, verdict: Verdict
) -> None:
    assert classify(status, code) is verdict


@given(
    batch_len=st.integers(min_value=1, max_value=10_000),
    slow_tries=st.integers(min_value=0, max_value=20),
    limit=st.integers(min_value=0, max_value=20),
)
def test_a_timed_out_batch_is_halved_and_a_single_record_backs_off(
    batch_len: int, slow_tries: int, limit: int
) -> None:
    action = decide(Verdict.TIMED_OUT, batch_len, slow_tries, limit)
    if batch_len > 1:
        assert action is Action.SPLIT  # never the same size again: it would time out for ever
    else:
        # one record is never dead-lettered for a timeout: it is not the record's fault
        assert action is (Action.RETRY if slow_tries < limit else Action.QUEUE)
    # a 503 says "slow down", not "too big": the batch keeps its size
    assert decide(Verdict.SLOW_DOWN, batch_len, slow_tries, limit) is not Action.SPLIT


@given(
    asked=st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False),
    cap=st.floats(min_value=0.001, max_value=3600, allow_nan=False),
)
def test_retry_after_is_honoured_up_to_the_cap(asked: float | None, cap: float) -> None:
    honoured = capped_retry_after(asked, cap)
    if asked is None:
        assert honoured is None
    else:
        assert honoured == min(asked, cap)
        assert honoured is not None and honoured <= cap
