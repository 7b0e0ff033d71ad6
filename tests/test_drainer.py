"""The offline drainer on its own: probing a missing upstream, pausing, and re-sending the queue.

Built as `agent._run_core` builds it (ledger, gate, QueuedDelivery, Drainer) over a real SQLite
store in tmp_path, against a stand-in target that answers the way the PostgREST client raises
(`UpstreamError(status, code, message, retry_after=..., kind=...)`) and records every request
with its time.

Timing runs on trio's autojump clock where only the drainer's own timers are pending. The
store's worker threads are safe there because the test never holds a deadline of its own
while the drainer works (it waits on the stand-in's requests, and a jump only ever goes to a
pending deadline); a hang is caught by pytest-timeout. Tests where the stand-in itself waits on
the store, or where the store's wall-clock delays matter, run in real time with `fail_after`.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
import trio

from tests.support.records import parsed_record, written
from trio_gfxsync.delivery import drainer as drainer_module
from trio_gfxsync.delivery.drainer import Drainer
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.delivery.uploader import QueuedDelivery
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.intake.scanner import FileTracker
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.pokergfx import SessionRecord
from trio_gfxsync.records import FileVersion
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.rows import AckedFile
from trio_gfxsync.state.store import Store

BASE = 10**17  # parsed_record(n) has session id BASE + n


@dataclass(frozen=True)
class Call:
    at: float  # trio clock
    wall: float  # time.time(), the store's clock
    kind: str  # upsert | probe | probe_write | sync_events
    sessions: tuple[int, ...]  # n of parsed_record(n), in body order
    error: UpstreamError | None


Trouble = Callable[[str, tuple[int, ...]], UpstreamError | None]


def no_trouble(kind: str, sessions: tuple[int, ...]) -> UpstreamError | None:
    return None


class StandIn:
    """A Target that answers what `trouble(kind, sessions)` says (None: stored) and records
    every request; `during(call)` runs while a request is in flight."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.stored: Counter[int] = Counter()
        self.trouble: Trouble = no_trouble
        self.during: Callable[[Call], Awaitable[None]] | None = None
        self._called = trio.Event()

    async def _request(self, kind: str, body: bytes = b"") -> None:
        sessions = tuple(row["session_id"] - BASE for row in orjson.loads(body)) if body else ()
        error = self.trouble(kind, sessions)
        call = Call(trio.current_time(), time.time(), kind, sessions, error)
        self.calls.append(call)
        self._called.set()
        self._called = trio.Event()
        if self.during is not None:
            await self.during(call)
        if error is not None:
            raise error
        if kind == "upsert":
            self.stored.update(sessions)

    async def upsert_sessions(self, body: bytes) -> dict[tuple[str, int], str | None]:
        await self._request("upsert", body)
        return written(body)

    async def insert_sync_events(self, body: bytes) -> None:
        await self._request("sync_events")

    async def probe(self) -> None:
        await self._request("probe")

    async def probe_write(self) -> None:
        await self._request("probe_write")

    async def aclose(self) -> None:
        return None

    async def wait_for(self, predicate: Callable[[Call], bool]) -> Call:
        """The first request (past or future) that satisfies `predicate`."""
        seen = 0
        while True:
            for call in self.calls[seen:]:
                if predicate(call):
                    return call
            seen = len(self.calls)
            await self._called.wait()

    async def wait_stored(self, sessions: set[int]) -> None:
        await self.wait_for(lambda _: sessions <= set(self.stored))

    def of_kind(self, *kinds: str) -> list[Call]:
        return [c for c in self.calls if c.kind in kinds]


def transport_failure() -> UpstreamError:
    return UpstreamError(None, None, "All connection attempts failed", kind="ConnectError")


@dataclass
class Harness:
    drainer: Drainer
    gate: UpstreamGate
    status: AgentStatus
    ledger: FileLedger


def build(
    store: Store,
    target: StandIn,
    *,
    batch_size: int = 10,
    poll_interval: float = 2.0,
    queue_process_interval: float = 60.0,
) -> Harness:
    """What `Agent._run_core` wires up for the drainer, with the default retry settings."""
    status = AgentStatus(poll_interval=poll_interval)
    ledger = FileLedger(store, report=status.update_queue)
    gate = UpstreamGate(status, request_deadline=60.0)
    rng = random.Random(7)
    delivery = QueuedDelivery(
        target=target,
        ledger=ledger,
        gate=gate,
        status=status,
        max_retries=5,
        rate_limit_max_retries=5,
        rate_limit_base_delay=1.0,
        rng=rng,
    )
    drainer = Drainer(
        target=target,
        ledger=ledger,
        gate=gate,
        status=status,
        delivery=delivery,
        batch_size=batch_size,
        max_batch_bytes=4 * 2**20,
        queue_process_interval=queue_process_interval,
        poll_interval=poll_interval,
        rng=rng,
    )
    return Harness(drainer, gate, status, ledger)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "pending.db")
    try:
        yield opened
    finally:
        await opened.close()


async def queue(store: Store, records: list[SessionRecord], *, front: bool = False) -> None:
    await store.enqueue(records, [r.version for r in records], error="offline", front=front)


def ids(records: list[SessionRecord]) -> set[int]:
    return {r.session_id - BASE for r in records}


def queue_rows(path: Path) -> dict[int, tuple[int, float]]:
    """pending_sync read by a connection of its own: n -> (attempts, next_attempt_at)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT session_id, attempts, next_attempt_at FROM pending_sync")
        return {sid - BASE: (attempts, when) for sid, attempts, when in rows}
    finally:
        conn.close()


def dead_letter_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0])
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# offline: probe every few seconds, jittered; drain the moment a probe answers
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_offline_it_probes_every_2_to_5_s_jittered_sends_nothing_then_drains_at_once(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    records = [parsed_record(n) for n in range(1, 41)]
    await queue(store, records)
    upstream = StandIn()
    upstream.trouble = lambda kind, sessions: transport_failure()
    h = build(store, upstream, batch_size=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.drainer.run)
        first = await upstream.wait_for(lambda c: True)
        window_end = first.at + 120.0
        await upstream.wait_for(lambda c: c.at >= window_end)
        window = [c for c in upstream.calls if c.at < window_end]
        assert {c.kind for c in window} == {"probe"}, "offline: probes only, no upsert"
        gaps = [b.at - a.at for a, b in pairwise(window)]
        assert all(2.0 <= gap <= 5.0 for gap in gaps), gaps
        assert max(gaps) - min(gaps) > 1.5, f"jittered, not a fixed beat: {gaps}"
        assert 24 <= len(window) <= 61
        assert h.status.upstream == Upstream.OFFLINE
        assert len(queue_rows(store.path)) == 40

        upstream.trouble = no_trouble  # upstream is back
        back_at = trio.current_time()
        answered = await upstream.wait_for(lambda c: c.kind == "probe" and c.error is None)
        assert answered.at - back_at <= 5.0
        await upstream.wait_stored(ids(records))
        upserts = upstream.of_kind("upsert")
        # the whole queue went out at the instant the probe answered: no wait for a pass
        assert [round(c.at - answered.at, 6) for c in upserts] == [0.0] * 4
        h.drainer.stop()
    assert upstream.stored == Counter(ids(records))
    assert queue_rows(store.path) == {}


# ---------------------------------------------------------------------------------------------
# paused: re-probed about every 30 s with the write that failed, never more often
# ---------------------------------------------------------------------------------------------


def pause(probe_error: UpstreamError, write_error: UpstreamError) -> Trouble:
    """What PostgREST answers a GET probe and a write (probe_write, upsert) in that state."""
    return lambda kind, sessions: probe_error if kind == "probe" else write_error


PAUSES = {
    "key rejected 401 PGRST301": (
        pause(*[UpstreamError(401, "PGRST301", "JWT expired")] * 2),
        Upstream.REJECTED,
    ),
    "gateway refuses the key 401": (
        pause(*[UpstreamError(401, None, "Invalid API key")] * 2),
        Upstream.REJECTED,
    ),
    "grant missing 42501": (
        pause(*[UpstreamError(403, "42501", "permission denied for table gfx_sessions")] * 2),
        Upstream.REJECTED,
    ),
    "column missing PGRST204": (
        pause(
            UpstreamError(400, "42703", "column gfx_sessions.player_count does not exist"),
            UpstreamError(
                400,
                "PGRST204",
                "Could not find the 'player_count' column of 'gfx_sessions' in the schema cache",
            ),
        ),
        Upstream.SCHEMA_MISMATCH,
    ),
    "table missing 42P01": (
        pause(*[UpstreamError(404, "42P01", 'relation "public.gfx_sessions" does not exist')] * 2),
        Upstream.SCHEMA_MISMATCH,
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(PAUSES))
async def test_paused_states_are_reprobed_with_probe_write_about_every_30_s(
    case: str, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    trouble, state = PAUSES[case]
    records = [parsed_record(n) for n in range(1, 6)]
    await queue(store, records)
    upstream = StandIn()
    upstream.trouble = trouble
    h = build(store, upstream)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.drainer.run)
        window = await first_calls(upstream, 300.0)
        assert h.status.upstream == state
        assert window[0].kind == "probe"
        # only the write that failed can tell it is fixed; nothing else is sent meanwhile
        assert {c.kind for c in window[1:]} == {"probe_write"}
        gaps = [b.at - a.at for a, b in pairwise(window)]
        assert all(25.0 <= gap <= 35.0 for gap in gaps), gaps
        assert 9 <= len(window) <= 13
        rows = queue_rows(store.path)
        assert sorted(rows) == sorted(ids(records)), "records stay queued"
        assert {attempts for attempts, _ in rows.values()} == {0}, "a pause is no refusal"
        assert dead_letter_count(store.path) == 0

        # the operator fixed the grant / ran the migration
        await drained_once_fixed(h, upstream, records, upsert=0)
    assert queue_rows(store.path) == {}


async def first_calls(upstream: StandIn, seconds: float) -> list[Call]:
    """The requests of the first `seconds` from the first one (waits until they are over)."""
    first = await upstream.wait_for(lambda c: True)
    await upstream.wait_for(lambda c: c.at >= first.at + seconds)
    return [c for c in upstream.calls if c.at < first.at + seconds]


async def drained_once_fixed(
    h: Harness, upstream: StandIn, records: list[SessionRecord], *, upsert: int
) -> None:
    """The trouble is gone: the next re-probe (within 35 s) goes through, and the queue goes
    out at that instant, starting with the `upsert`-th upsert of the test."""
    upstream.trouble = no_trouble
    fixed_at = trio.current_time()
    answered = await upstream.wait_for(lambda c: c.kind == "probe_write" and c.error is None)
    assert answered.at - fixed_at <= 35.0
    await upstream.wait_stored(ids(records))
    assert upstream.of_kind("upsert")[upsert].at == pytest.approx(answered.at, abs=1e-6)
    assert h.status.upstream == Upstream.CONNECTED
    h.drainer.stop()


# ---------------------------------------------------------------------------------------------
# the request rate stays bounded, whatever upstream answers
# ---------------------------------------------------------------------------------------------


RATE_CASES = {
    # (trouble, most requests of any kind in 60 s, most upserts in 60 s)
    "blackout": (lambda kind, sessions: transport_failure(), 31, 0),
    "key rejected": (lambda kind, sessions: UpstreamError(401, None, "Invalid API key"), 3, 0),
    # 503 without Retry-After to everything: retried rate_limit_max_retries times, then queued
    "503 storm": (lambda kind, sessions: UpstreamError(503, None, "Service Unavailable"), 38, 6),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(RATE_CASES))
async def test_the_request_rate_stays_bounded_while_upstream_is_missing(
    case: str, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    trouble, most, most_upserts = RATE_CASES[case]
    await queue(store, [parsed_record(n) for n in range(1, 201)])  # 20 batches waiting
    upstream = StandIn()
    upstream.trouble = trouble
    h = build(store, upstream, batch_size=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.drainer.run)
        first = await upstream.wait_for(lambda c: True)
        await upstream.wait_for(lambda c: c.at >= first.at + 60.0)
        h.drainer.stop()
    window = [c for c in upstream.calls if c.at < first.at + 60.0]
    assert len(window) <= most, Counter(c.kind for c in window)
    assert len([c for c in window if c.kind == "upsert"]) <= most_upserts
    assert len(window) >= 2, "it kept asking"
    assert upstream.stored == Counter()
    assert len(queue_rows(store.path)) == 200
    assert dead_letter_count(store.path) == 0


# ---------------------------------------------------------------------------------------------
# order, other processes, suspect batches (real time: the stand-in waits on the store)
# ---------------------------------------------------------------------------------------------


async def test_live_rows_drain_before_older_backfill_rows(store: Store) -> None:
    backfill = [parsed_record(n) for n in range(1, 31)]
    for record in backfill:  # one by one: each has its own queued_at, oldest first
        await queue(store, [record])
    live = [parsed_record(n) for n in (101, 102, 103)]
    await queue(store, live, front=True)  # the batcher deferred a live change
    late = parsed_record(200)
    upstream = StandIn()
    h = build(store, upstream, batch_size=5, poll_interval=0.2)

    async def during(call: Call) -> None:
        if call.kind == "upsert" and len(upstream.of_kind("upsert")) == 1:
            # another live change deferred to the queue while the first batch is in flight
            await h.ledger.enqueue([late], [late.version], error="uploader busy", front=True)

    upstream.during = during
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.drainer.run)
            await upstream.wait_stored(ids([*backfill, *live, late]))
            h.drainer.stop()
    batches = [c.sessions for c in upstream.of_kind("upsert")]
    assert set(batches[0][:3]) == {101, 102, 103}
    assert batches[0][3:] == (1, 2)
    assert batches[1][0] == 200, "a live row queued meanwhile goes next, before the backfill"
    backfill_order = [n for batch in batches for n in batch if n <= 30]
    assert backfill_order == list(range(1, 31)), "the backfill itself goes oldest first"
    assert upstream.stored == Counter(ids([*backfill, *live, late]))
    assert queue_rows(store.path) == {}


async def test_a_dlq_replay_by_another_process_is_noticed_and_sent(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = parsed_record(7)
    await store.dead_letter(
        refused, reason="refused", status=400, code="23514", message="check", attempts=6
    )
    broken = FileVersion("PC01", "1016/broken.json", 12, 10**18, "ab" * 32)
    await store.quarantine(broken, "not_json", "unexpected end of data")
    fine = FileVersion("PC01", "1016/fine.json", 1, 1, "cd" * 32, session_id=BASE + 8)
    await store.acknowledge([fine])
    # the scanner's view, as it is after those commits
    tracker = FileTracker(
        "PC01",
        acked={v.rel_path: AckedFile(v.size, v.mtime_ns, v.sha256).stat for v in (broken, fine)},
    )
    upstream = StandIn()
    h = build(store, upstream, poll_interval=0.2, queue_process_interval=60.0)
    h.ledger.trackers["PC01"] = tracker
    idle = trio.Event()
    next_due = store.next_due

    async def watched_next_due() -> float:
        idle.set()  # only `_idle` asks: the drainer has nothing to send and waits
        return await next_due()

    monkeypatch.setattr(store, "next_due", watched_next_due)

    async def monitor_refresh() -> None:
        while True:  # what the monitor does every refresh (MONITOR_INTERVAL)
            await store.check_elsewhere()
            await trio.sleep(0.2)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.drainer.run)
            await idle.wait()
            nursery.start_soon(monitor_refresh)
            assert upstream.stored == Counter()
            other = await Store.open(store.path, recover=False)  # `trio-gfxsync dlq replay`
            try:
                assert len(await other.replay(None)) == 2
            finally:
                await other.close()
            # nothing told this process: only the monitor's look for other connections'
            # commits (not the 60 s queue_process_interval) can find the row queued there
            with trio.fail_after(5):
                await upstream.wait_stored({7})
                while broken.rel_path in tracker.acked:
                    await trio.sleep(0.02)
            h.drainer.stop()
            nursery.cancel_scope.cancel()
    assert upstream.stored == Counter({7: 1})
    assert set(tracker.acked) == {"1016/fine.json"}, "the quarantined file is read again"
    assert queue_rows(store.path) == {}
    assert dead_letter_count(store.path) == 0


async def test_a_batch_failing_as_down_right_after_a_good_probe_is_postponed_and_split(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drainer_module, "OFFLINE_PROBE", (0.1, 0.2))  # keep the test short
    delay = 3.0  # shorter than the real 5 s; load can only make the others come later
    monkeypatch.setattr(drainer_module, "SUSPECT_DELAY", delay)
    suspects = [parsed_record(n) for n in range(1, 9)]
    others = [parsed_record(n) for n in range(9, 13)]
    await queue(store, suspects)
    await queue(store, others)  # queued later: behind the suspects
    upstream = StandIn()

    def trouble(kind: str, sessions: tuple[int, ...]) -> UpstreamError | None:
        # a statement that dies on big batches only (a statement timeout behind a proxy)
        if kind == "upsert" and len(sessions) > 4:
            return UpstreamError(
                None, None, "Server disconnected without a response", kind="RemoteProtocolError"
            )
        return None

    upstream.trouble = trouble
    seen_queue: list[dict[int, tuple[int, float]]] = []

    async def during(call: Call) -> None:
        if call.kind == "upsert":
            seen_queue.append(queue_rows(store.path))

    upstream.during = during
    h = build(store, upstream, batch_size=8, poll_interval=0.5)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.drainer.run)
            await upstream.wait_stored(ids(suspects + others))
            h.drainer.stop()
    upserts = upstream.of_kind("upsert")
    assert upserts[0].sessions == tuple(range(1, 9)) and upserts[0].error is not None
    # postponed, not refused: no attempt counted, and the others go first
    failed_at = upserts[0].wall
    for n in range(1, 9):
        attempts, next_attempt_at = seen_queue[1][n]
        assert attempts == 0
        assert next_attempt_at >= failed_at + delay - 0.1
    # while they wait (until the store's own due time: an invariant, whatever the load), only
    # the others are sent
    postponed_until = min(when for n, (_, when) in seen_queue[1].items() if n <= 8)
    for call in upserts[1:]:
        if call.wall < postponed_until:
            assert not set(call.sessions) & set(range(1, 9)), call.sessions
    assert upserts[1].error is None
    # and sent in smaller batches until they get through
    for call in upserts:
        if call.error is None and set(call.sessions) & set(range(1, 9)):
            assert len(call.sessions) <= 4, call.sessions
    assert upstream.stored == Counter(ids(suspects + others))
    assert queue_rows(store.path) == {}
    assert dead_letter_count(store.path) == 0


# ---------------------------------------------------------------------------------------------
# a 4xx about the request itself: paused until fixed, re-probed with the write that failed
# ---------------------------------------------------------------------------------------------


REQUEST_REJECTIONS = {
    "a proxy refuses POST 405": UpstreamError(405, None, "Method Not Allowed"),
    "no acceptable media type 406 PGRST107": UpstreamError(
        406, "PGRST107", "None of these media types are available"
    ),
    "a query parameter PostgREST cannot parse 400 PGRST100": UpstreamError(
        400, "PGRST100", '"failed to parse columns parameter (player_count,)"'
    ),
    "a body the gateway will not take 415": UpstreamError(415, None, "Unsupported Media Type"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(REQUEST_REJECTIONS))
async def test_a_rejected_request_pauses_uploads_until_the_write_goes_through(
    case: str, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    """Reads answer; every write gets a 4xx that says nothing about particular records. The
    records stay queued with no attempt counted (dead-lettering them would throw good data
    away), the state says so, and only the write that failed is tried again, about every 30 s."""
    rejection = REQUEST_REJECTIONS[case]
    records = [parsed_record(n) for n in range(1, 6)]
    await queue(store, records)
    upstream = StandIn()
    upstream.trouble = lambda kind, sessions: None if kind == "probe" else rejection
    h = build(store, upstream)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.drainer.run)
        window = await first_calls(upstream, 300.0)
        assert h.status.upstream == Upstream.REQUEST_REJECTED
        # the start's probe answers, the queue goes out once and is refused; then only the
        # write that failed, about every 30 s
        assert [c.kind for c in window[:2]] == ["probe", "upsert"]
        assert window[1].error is rejection
        assert {c.kind for c in window[2:]} == {"probe_write"}
        gaps = [b.at - a.at for a, b in pairwise(window[1:])]
        assert all(25.0 <= gap <= 35.0 for gap in gaps), gaps
        assert len(window) >= 9
        rows = queue_rows(store.path)
        assert sorted(rows) == sorted(ids(records)), "records stay queued"
        assert {attempts for attempts, _ in rows.values()} == {0}, (
            "a rejected request is no refusal"
        )
        assert dead_letter_count(store.path) == 0

        await drained_once_fixed(h, upstream, records, upsert=1)  # the proxy is fixed
    assert queue_rows(store.path) == {}


# ---------------------------------------------------------------------------------------------
# timeouts of a batch too big to store in time: halved until it goes, nothing counted
# ---------------------------------------------------------------------------------------------


TIMEOUTS = {
    "gateway 504": UpstreamError(504, None, "The upstream server is timing out"),
    "statement timeout 57014": UpstreamError(
        500, "57014", "canceling statement due to statement timeout"
    ),
    "read timeout": UpstreamError(None, None, "timed out", kind="ReadTimeout"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(TIMEOUTS))
async def test_a_batch_that_times_out_is_halved_until_it_is_stored(
    case: str, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = TIMEOUTS[case]
    records = [parsed_record(n) for n in range(1, 17)]
    await queue(store, records)
    upstream = StandIn()
    # the database stores 4 sessions within its statement timeout, not more
    upstream.trouble = lambda kind, sessions: timeout if len(sessions) > 4 else None
    h = build(store, upstream, batch_size=16)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.drainer.run)
        await upstream.wait_stored(ids(records))
        h.drainer.stop()
    upserts = upstream.of_kind("upsert")
    assert upserts[0].sessions == tuple(range(1, 17)) and upserts[0].error is timeout
    # every timeout is followed by a probe, which answers: the batch is the trouble, halved
    after = [upstream.calls[upstream.calls.index(c) + 1] for c in upserts if c.error is not None]
    assert {c.kind for c in after} == {"probe"}
    assert [len(c.sessions) for c in upserts[:3]] == [16, 8, 4]
    assert all(len(c.sessions) <= 4 for c in upserts if c.error is None)
    assert upstream.stored == Counter(ids(records)), "each stored once"
    assert h.status.upstream == Upstream.CONNECTED, "upstream was never down"
    assert queue_rows(store.path) == {}
    assert dead_letter_count(store.path) == 0
