"""The executor of the error policy: every record ends exactly once in a stored request, the
offline queue or the dead letter, whatever the mix of answers upstream gives.

The upstream here is a small stand-in with PostgREST's behaviour for these answers (a refused
row fails the whole INSERT with 400 and its SQLSTATE; a body over the limit gets 413), plus a
script of answers the gateway or PostgREST may give to any request (down, slow down, rejected,
schema mismatch, split, 413, refusals); the store is the real SQLite store. The scripted tests
run on trio's autojump clock, so Retry-After and backoff cost no real time: the delivery is one
task whose store calls never overlap a pending deadline, so a jump can only end a gate's wait.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.records import written
from trio_gfxsync.delivery.batching import Batch
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.delivery.uploader import SLOW_DOWN_CAP, LiveDelivery, QueuedDelivery
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.policy import Verdict, maybe_the_records
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.store import Store

D = TypeVar("D", LiveDelivery, QueuedDelivery)

# every example opens a database: on tmpfs its fsyncs cost nothing, so a failing property
# shrinks in seconds instead of running into the test timeout
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


class PostgrestLike:
    def __init__(self, refused: set[int], max_body: int) -> None:
        self.refused = refused
        self.max_body = max_body
        self.stored: list[int] = []
        self.requests = 0

    async def upsert_sessions(self, body: bytes) -> dict[tuple[str, int], str | None]:
        self.requests += 1
        if len(body) > self.max_body:
            raise UpstreamError(413, None, "Payload Too Large")
        rows = orjson.loads(body)
        if any(row["session_id"] in self.refused for row in rows):
            raise UpstreamError(400, "23514", 'violates check constraint "demo"')
        self.stored.extend(row["session_id"] for row in rows)
        return written(body)


def make_record(n: int, padding: int):
    document = {"ID": 10**17 + n, "Hands": [{"Players": [{"Name": "x" * padding}]}]}
    return parse_session(
        orjson.dumps(document),
        pc_id="PC01",
        rel_path=f"{n}.json",
        mtime_ns=10**18 + n,
        max_file_bytes=10**8,
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(10, 3000), min_size=1, max_size=24),
    refused_mask=st.lists(st.booleans(), min_size=24, max_size=24),
    max_retries=st.integers(0, 2),
)
async def test_every_record_ends_exactly_once(
    sizes: list[int], refused_mask: list[bool], max_retries: int
) -> None:
    records = [make_record(n, size) for n, size in enumerate(sizes)]
    refused = {r.session_id for r, bad in zip(records, refused_mask, strict=False) if bad}
    upstream = PostgrestLike(refused, max_body=2500)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        store = await Store.open(Path(folder) / "pending.db")
        try:
            status = AgentStatus()
            delivery = LiveDelivery(
                target=upstream,
                ledger=FileLedger(store),
                gate=UpstreamGate(status),
                status=status,
                max_retries=max_retries,
                rate_limit_max_retries=3,
                rate_limit_base_delay=0.01,
                rng=random.Random(0),
            )
            await delivery.deliver(Batch(tuple(records)))
            queued = await _queued_ids(store)
            dead = {e.session_id: e.reason for e in await store.dead_letters()}
            acked = await store.file_states("PC01")
        finally:
            await store.close()
    outcomes = upstream.stored + queued + list(dead)
    assert sorted(outcomes) == sorted(r.session_id for r in records), "each exactly once"
    for record in records:
        sid = record.session_id
        if len(record.row) + 2 > upstream.max_body:
            assert dead.get(sid) == "payload_too_large"
        elif sid in refused:
            assert (dead.get(sid) == "refused") if max_retries == 0 else (sid in queued)
        else:
            assert sid in upstream.stored
        assert record.version.rel_path in acked, "every outcome acknowledges the file"


async def _queued_ids(store: Store) -> list[int]:
    """Refused records wait in the queue with a backoff: read them whatever their time."""
    rows = await store._run(
        lambda: store._conn.execute("SELECT session_id FROM pending_sync").fetchall()
    )
    return [sid for (sid,) in rows]


# ---------------------------------------------------------------------------------------------
# every answer upstream may give, as a script of per-request answers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer as the PostgREST client raises it."""

    status: int | None
    code: str | None
    message: str
    retry_after: float | None = None
    kind: str | None = None
    several_only: bool = False  # PostgREST gives it only to a request of several records

    def error(self) -> UpstreamError:
        return UpstreamError(
            self.status, self.code, self.message, retry_after=self.retry_after, kind=self.kind
        )


ANSWERS = [
    # upstream down: no answer at all, or a 5xx that means down
    Answer(None, None, "All connection attempts failed", kind="ConnectError"),
    Answer(None, None, "timed out", kind="ReadTimeout"),
    Answer(502, None, "An invalid response was received from the upstream server"),
    Answer(540, None, "Project paused"),
    # a timeout or server error that one record alone may cause: a probe tells
    Answer(504, None, "The upstream server is timing out"),
    Answer(500, "57014", "canceling statement due to statement timeout"),
    Answer(500, "XX000", "internal error in a trigger"),
    # rejected
    Answer(401, None, "Invalid API key"),
    Answer(401, "PGRST301", "JWT expired"),
    Answer(403, "42501", "permission denied for table gfx_sessions"),
    # schema mismatch
    Answer(400, "PGRST204", "Could not find the 'player_count' column of 'gfx_sessions'"),
    Answer(404, "42P01", 'relation "public.gfx_sessions" does not exist'),
    # the batcher's invariants broken, a body over the limit: split
    Answer(
        400,
        "21000",
        "ON CONFLICT DO UPDATE command cannot affect row a second time",
        several_only=True,  # needs two rows with one key
    ),
    Answer(413, None, "Payload Too Large", several_only=True),
    # the table refuses a record of the request
    Answer(400, "23514", 'new row for relation "gfx_sessions" violates check constraint "x"'),
]

slow_down = st.builds(
    lambda status, retry_after: Answer(
        status, "PGRST003" if status == 504 else None, "slow down", retry_after=retry_after
    ),
    st.sampled_from([429, 503, 504]),
    st.none() | st.integers(0, 120).map(float),
)
# None: no scripted answer, PostgREST answers on its own (413 over the limit, 23514, stored)
script_strategy = st.lists(st.none() | st.sampled_from(ANSWERS) | slow_down, max_size=24)

STOPPING = {Verdict.DOWN, Verdict.REJECTED, Verdict.SCHEMA_MISMATCH, Verdict.UNEXPECTED}


@dataclass(frozen=True)
class Request:
    at: float
    sessions: tuple[int, ...]
    error: UpstreamError | None
    kind: str = "upsert"  # or "probe"


def isolating(error: UpstreamError) -> bool:
    """An answer one record alone may cause: the delivery asks upstream before it judges."""
    return error.verdict in (Verdict.DOWN, Verdict.TIMED_OUT) and maybe_the_records(
        error.status, error.code, error.kind
    )


class ScriptedPostgrest:
    """The next scripted answer if it applies to this request, else PostgREST's own."""

    def __init__(self, script: list[Answer | None], refused: set[int], max_body: int) -> None:
        self.script = list(script)
        self.refused = refused
        self.max_body = max_body
        self.requests: list[Request] = []
        self.stored: list[int] = []
        self.refusals: Counter[int] = Counter()  # refused alone: counts as an attempt
        self.too_large: set[int] = set()  # 413 alone: payload_too_large

    def _answer(self, body: bytes, sessions: tuple[int, ...]) -> UpstreamError | None:
        scripted = self.script.pop(0) if self.script else None
        if scripted is not None and not (scripted.several_only and len(sessions) == 1):
            return scripted.error()
        if len(body) > self.max_body:
            return UpstreamError(413, None, "Payload Too Large")
        if any(s in self.refused for s in sessions):
            return UpstreamError(400, "23514", 'violates check constraint "demo"')
        return None

    async def probe(self) -> None:
        """A read of no rows: the next scripted answer, if any, else fine."""
        scripted = self.script.pop(0) if self.script else None
        error = scripted.error() if scripted is not None and not scripted.several_only else None
        self.requests.append(Request(trio.current_time(), (), error, kind="probe"))
        if error is not None:
            raise error

    async def upsert_sessions(self, body: bytes) -> dict[tuple[str, int], str | None]:
        sessions = tuple(row["session_id"] for row in orjson.loads(body))
        error = self._answer(body, sessions)
        self.requests.append(Request(trio.current_time(), sessions, error))
        if error is None:
            self.stored.extend(sessions)
            return written(body)
        if len(sessions) == 1 and error.verdict is Verdict.REFUSED:
            self.refusals[sessions[0]] += 1
        if len(sessions) == 1 and error.verdict is Verdict.TOO_LARGE:
            self.too_large.add(sessions[0])
        raise error

    def check_pacing(self, rate_limit_max_retries: int) -> None:
        """No request after one that stops the delivery; a Retry-After is honoured; an answer
        one record may cause is followed by a probe, and a failed probe stops it."""
        slow = 0
        for i, request in enumerate(self.requests):
            verdict = request.error.verdict if request.error else Verdict.STORED
            if request.kind == "probe":
                if request.error is not None:
                    assert i == len(self.requests) - 1, f"request after a failed probe: {self}"
                continue
            if request.error is not None and isolating(request.error):
                assert self.requests[i + 1].kind == "probe", f"no probe after {request}"
                continue
            if verdict is Verdict.SLOW_DOWN:
                slow += 1
                assert request.error is not None
                if slow <= rate_limit_max_retries:
                    pause = self.requests[i + 1].at - request.at  # it is asked again
                    assert pause >= (request.error.retry_after or 0.0) - 1e-6
                    assert pause <= max(request.error.retry_after or 0.0, SLOW_DOWN_CAP) + 1e-6
            if verdict in STOPPING or (
                verdict is Verdict.SLOW_DOWN and slow > rate_limit_max_retries
            ):
                assert i == len(self.requests) - 1, f"request after a {verdict}: {self.requests}"


def delivery_of(
    kind: type[D],
    target: ScriptedPostgrest,
    store: Store,
    max_retries: int,
    rate_limit_max_retries: int,
) -> D:
    """Built as `Agent._run_core` builds it (its own status and gate), base delay 1 s."""
    status = AgentStatus()
    return kind(
        target=target,
        ledger=FileLedger(store),
        gate=UpstreamGate(status),
        status=status,
        max_retries=max_retries,
        rate_limit_max_retries=rate_limit_max_retries,
        rate_limit_base_delay=1.0,
        rng=random.Random(0),
    )


async def _failing_alone(store: Store) -> dict[int, int]:
    rows = await store._run(
        lambda: store._conn.execute(
            "SELECT session_id, failures FROM pending_sync WHERE failures > 0"
        ).fetchall()
    )
    return dict(rows)


def alone_failures(requests: list[Request]) -> set[int]:
    """Sessions whose single-record request failed in a way one record may cause, and whose
    next request, a probe, found upstream answering: their trouble is their own."""
    return {
        request.sessions[0]
        for request, after in itertools.pairwise(requests)
        if len(request.sessions) == 1
        and request.error is not None
        and isolating(request.error)
        and after.kind == "probe"
        and after.error is None
    }


async def _queue_table(store: Store) -> dict[int, int]:
    rows = await store._run(
        lambda: store._conn.execute("SELECT session_id, attempts FROM pending_sync").fetchall()
    )
    return dict(rows)


scripted = settings(
    max_examples=80,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RATE_STORM = [Answer(429, None, "slow down", retry_after=30.0)] * 4
# PostgREST refuses the whole batch (23514), the split halves go, the first meets an outage:
# the second half must wait in the queue, not be sent to an upstream known to be down
SPLIT_THEN_DOWN = [None, ANSWERS[0]]
FIRST_REFUSED = [True] + [False] * 15


@scripted
@given(
    sizes=st.lists(st.integers(10, 3000), min_size=1, max_size=16),
    refused_mask=st.lists(st.booleans(), min_size=16, max_size=16),
    script=script_strategy,
    max_retries=st.integers(0, 2),
    rate_limit_max_retries=st.integers(0, 3),
)
@example(sizes=[10] * 6, refused_mask=[False] * 16, script=RATE_STORM, max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=[False] * 16, script=[ANSWERS[9]], max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 4, refused_mask=FIRST_REFUSED, script=SPLIT_THEN_DOWN, max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
async def test_every_live_record_ends_exactly_once_whatever_upstream_answers(
    autojump_clock: trio.testing.MockClock,
    sizes: list[int],
    refused_mask: list[bool],
    script: list[Answer | None],
    max_retries: int,
    rate_limit_max_retries: int,
) -> None:
    records = [make_record(n, size) for n, size in enumerate(sizes)]
    refused = {r.session_id for r, bad in zip(records, refused_mask, strict=False) if bad}
    upstream = ScriptedPostgrest(script, refused, max_body=2500)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        store = await Store.open(Path(folder) / "pending.db")
        try:
            delivery = delivery_of(
                LiveDelivery, upstream, store, max_retries, rate_limit_max_retries
            )
            await delivery.deliver(Batch(tuple(records)))
            queued = await _queue_table(store)
            failing = await _failing_alone(store)
            dead = {e.session_id: e.reason for e in await store.dead_letters()}
            acked = await store.file_states("PC01")
        finally:
            await store.close()
    # a record that failed alone waits apart, counted once, upstream left connected
    assert failing == dict.fromkeys(alone_failures(upstream.requests), 1)
    every = sorted(r.session_id for r in records)
    assert sorted(upstream.stored + list(queued) + list(dead)) == every, "each exactly once"
    for sid, reason in dead.items():
        assert reason in ("refused", "payload_too_large")
        if reason == "refused":
            assert upstream.refusals[sid] == 1 and max_retries == 0
        else:
            assert sid in upstream.too_large
    for sid in upstream.too_large:
        assert dead[sid] == "payload_too_large"
    for sid in upstream.refusals:
        assert dead.get(sid) == "refused" if max_retries == 0 else queued.get(sid) == 1
    for sid, attempts in queued.items():
        # down, slow down, paused: queued with no attempt counted
        assert attempts == upstream.refusals[sid], (sid, attempts)
    assert {r.version.rel_path for r in records} <= set(acked), "every version acknowledged"
    upstream.check_pacing(rate_limit_max_retries)


@scripted
@given(
    sizes=st.lists(st.integers(10, 3000), min_size=1, max_size=16),
    refused_mask=st.lists(st.booleans(), min_size=16, max_size=16),
    earlier_attempts=st.lists(st.integers(0, 3), min_size=16, max_size=16),
    script=script_strategy,
    max_retries=st.integers(0, 3),
    rate_limit_max_retries=st.integers(0, 3),
)
@example(sizes=[10] * 6, refused_mask=[False] * 16, earlier_attempts=[2] * 16,
         script=[ANSWERS[4]], max_retries=2, rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 4, refused_mask=FIRST_REFUSED, earlier_attempts=[0] * 16,
         script=SPLIT_THEN_DOWN, max_retries=2, rate_limit_max_retries=3)  # fmt: skip
async def test_every_queued_record_ends_exactly_once_whatever_upstream_answers(
    autojump_clock: trio.testing.MockClock,
    sizes: list[int],
    refused_mask: list[bool],
    earlier_attempts: list[int],
    script: list[Answer | None],
    max_retries: int,
    rate_limit_max_retries: int,
) -> None:
    records = [make_record(n, size) for n, size in enumerate(sizes)]
    refused = {r.session_id for r, bad in zip(records, refused_mask, strict=False) if bad}
    before = {r.session_id: a for r, a in zip(records, earlier_attempts, strict=False)}
    upstream = ScriptedPostgrest(script, refused, max_body=2500)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        store = await Store.open(Path(folder) / "pending.db")
        try:
            await store.enqueue(
                records,
                [r.version for r in records],
                attempts={r.key: before[r.session_id] for r in records},
            )
            from_queue = await store.due(100, 10**9)
            assert sorted(r.session_id for r in from_queue) == sorted(before)
            delivery = delivery_of(
                QueuedDelivery, upstream, store, max_retries, rate_limit_max_retries
            )
            await delivery.deliver(Batch(tuple(from_queue)))
            queued = await _queue_table(store)
            dead = {e.session_id: e.reason for e in await store.dead_letters()}
            acked = await store.file_states("PC01")
        finally:
            await store.close()
    every = sorted(before)
    assert sorted(upstream.stored + list(queued) + list(dead)) == every, "each exactly once"
    for sid, reason in dead.items():
        if reason == "refused":
            assert upstream.refusals[sid] == 1 and before[sid] + 1 > max_retries
        else:
            assert reason == "payload_too_large" and sid in upstream.too_large
    for sid in upstream.refusals:
        if before[sid] + 1 > max_retries:
            assert dead.get(sid) == "refused"
    for sid, attempts in queued.items():
        # a record that stays queued (down, slow down, paused, not reached) keeps its count;
        # only the table's refusal adds one
        assert attempts == before[sid] + upstream.refusals[sid], (sid, attempts)
    assert {r.version.rel_path for r in records} <= set(acked)
    upstream.check_pacing(rate_limit_max_retries)
