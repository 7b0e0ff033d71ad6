"""The executor of the error policy: every record ends exactly once in a stored request, the
offline queue or the dead letter, whatever the mix of answers upstream gives.

The upstream here is a small stand-in with PostgREST's behaviour for these answers (a refused
row fails the whole INSERT with 400 and its SQLSTATE; a body over the limit gets 413), plus a
script of answers the gateway or PostgREST may give to any request (down, slow down, rejected,
schema mismatch, split, 413, refusals, timeouts of every kind, any other 4xx); the store is the
real SQLite store. What must happen comes from an oracle that plays DESIGN 5 out on its own
(`expected_course`: every request in order, where each record ends, the state upstream is left
in), written apart from policy.py and the executor. The scripted tests
run on trio's autojump clock, so Retry-After and backoff cost no real time: the delivery is one
task whose store calls never overlap a pending deadline, so a jump can only end a gate's wait.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.pokergfx import SessionRecord, parse_session
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.rows import QueuedRecord
from trio_gfxsync.state.store import Store

D = TypeVar("D", LiveDelivery, QueuedDelivery)
Rec = TypeVar("Rec", SessionRecord, QueuedRecord)

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


# every answer upstream may give, as a script of per-request answers
# ---------------------------------------------------------------------------------------------

# What an answer means, written from DESIGN 5 and the README (never from policy.py):
STORED = "stored"
DOWN = "down"  # upstream is down: the batch and everything after it queue, nothing else is sent
ASK = "ask"  # one record alone may cause it (a timeout, a 500/502/504, 57014): probe, then
# halve the batch if upstream answers the probe (a single record waits apart), else as DOWN
SLOW = "slow"  # 429, 503, PGRST003: the same batch again after Retry-After, then as DOWN
PAUSE = "pause"  # the key, a grant, the schema, any other 4xx about the request: stop, queue
SPLIT = "split"  # the batcher's invariants broken: halves
TOO_LARGE = "too_large"  # 413: halves; a single record is dead-lettered payload_too_large
REFUSED = "refused"  # the table refuses a record of the request: halves; one counts an attempt


@dataclass(frozen=True)
class Answer:
    """One answer as the PostgREST client raises it, with what it means to the oracle."""

    status: int | None
    code: str | None
    message: str
    means: str
    retry_after: float | None = None
    kind: str | None = None  # "hang": no answer at all, the gate's own deadline ends the wait
    several_only: bool = False  # PostgREST gives it only to a request of several records
    state: Upstream | None = None  # a PAUSE: the state /health shows

    def error(self) -> UpstreamError:
        return UpstreamError(
            self.status, self.code, self.message, retry_after=self.retry_after, kind=self.kind
        )


ANSWERS = [
    # upstream down: no answer at all, or a 5xx that means down
    Answer(None, None, "All connection attempts failed", DOWN, kind="ConnectError"),
    Answer(None, None, "timed out", ASK, kind="ReadTimeout"),
    Answer(502, None, "An invalid response was received from the upstream server", ASK),
    Answer(540, None, "Project paused", DOWN),
    # a timeout or server error that one record alone may cause: a probe tells
    Answer(504, None, "The upstream server is timing out", ASK),
    Answer(500, "57014", "canceling statement due to statement timeout", ASK),
    Answer(500, "XX000", "internal error in a trigger", ASK),
    # rejected
    Answer(401, None, "Invalid API key", PAUSE, state=Upstream.REJECTED),
    Answer(401, "PGRST301", "JWT expired", PAUSE, state=Upstream.REJECTED),
    Answer(
        403, "42501", "permission denied for table gfx_sessions", PAUSE, state=Upstream.REJECTED
    ),
    # schema mismatch
    Answer(
        400,
        "PGRST204",
        "Could not find the 'player_count' column of 'gfx_sessions'",
        PAUSE,
        state=Upstream.SCHEMA_MISMATCH,
    ),
    Answer(
        404,
        "42P01",
        'relation "public.gfx_sessions" does not exist',
        PAUSE,
        state=Upstream.SCHEMA_MISMATCH,
    ),
    # the batcher's invariants broken, a body over the limit: split
    Answer(
        400,
        "21000",
        "ON CONFLICT DO UPDATE command cannot affect row a second time",
        SPLIT,
        several_only=True,  # needs two rows with one key
    ),
    Answer(413, None, "Payload Too Large", TOO_LARGE, several_only=True),
    # the table refuses a record of the request
    Answer(
        400, "23514", 'new row for relation "gfx_sessions" violates check constraint "x"', REFUSED
    ),
    # timeouts: the gateway's 504 without PGRST003, a statement timeout behind another status,
    # httpx's own, and a request that never answers (the gate's deadline ends it)
    Answer(504, None, "Gateway Timeout", ASK),
    Answer(400, "57014", "canceling statement due to statement timeout", ASK),
    Answer(None, None, "timed out", ASK, kind="WriteTimeout"),
    Answer(None, None, "timed out", ASK, kind="PoolTimeout"),
    Answer(None, None, "no answer", ASK, kind="hang"),
    # a 4xx about the request, not the records: paused until someone fixes it
    Answer(
        400,
        "PGRST100",
        '"failed to parse columns parameter"',
        PAUSE,
        state=Upstream.REQUEST_REJECTED,
    ),
    Answer(
        406,
        "PGRST107",
        "None of these media types are available",
        PAUSE,
        state=Upstream.REQUEST_REJECTED,
    ),
    Answer(405, None, "Method Not Allowed", PAUSE, state=Upstream.REQUEST_REJECTED),
    Answer(415, None, "Unsupported Media Type", PAUSE, state=Upstream.REQUEST_REJECTED),
]
HANG = ANSWERS[19]
UNEXPECTED_4XX = ANSWERS[20]
GATEWAY_TIMEOUT = ANSWERS[15]
STATEMENT_TIMEOUT = ANSWERS[5]

slow_down = st.builds(
    lambda status, retry_after: Answer(
        status, "PGRST003" if status == 504 else None, "slow down", SLOW, retry_after=retry_after
    ),
    st.sampled_from([429, 503, 504]),
    st.none() | st.integers(0, 120).map(float),
)
# None: no scripted answer, PostgREST answers on its own (413 over the limit, 23514, stored)
script_strategy = st.lists(st.none() | st.sampled_from(ANSWERS) | slow_down, max_size=24)

# PostgREST's own answers to a body over its limit and to a refused row
OWN_TOO_LARGE = Answer(413, None, "Payload Too Large", TOO_LARGE)
OWN_REFUSED = Answer(400, "23514", 'violates check constraint "demo"', REFUSED)


@dataclass(frozen=True)
class Request:
    at: float
    sessions: tuple[int, ...]
    answer: Answer | None  # None: stored (or a probe answered)
    kind: str = "upsert"  # or "probe"


class ScriptedPostgrest:
    """The next scripted answer if it applies to this request, else PostgREST's own."""

    def __init__(self, script: list[Answer | None], refused: set[int], max_body: int) -> None:
        self.script = list(script)
        self.refused = refused
        self.max_body = max_body
        self.requests: list[Request] = []
        self.stored: list[int] = []

    def _answer(self, body: bytes, sessions: tuple[int, ...]) -> Answer | None:
        scripted = self.script.pop(0) if self.script else None
        if scripted is not None and not (scripted.several_only and len(sessions) == 1):
            return scripted
        if len(body) > self.max_body:
            return OWN_TOO_LARGE
        if any(s in self.refused for s in sessions):
            return OWN_REFUSED
        return None

    async def _raise(self, answer: Answer | None) -> None:
        if answer is None:
            return
        if answer.kind == "hang":
            await trio.sleep_forever()  # the gate's request deadline cancels it
        raise answer.error()

    async def probe(self) -> None:
        """A read of no rows: the next scripted answer, if any, else fine."""
        scripted = self.script.pop(0) if self.script else None
        answer = scripted if scripted is not None and not scripted.several_only else None
        self.requests.append(Request(trio.current_time(), (), answer, kind="probe"))
        await self._raise(answer)

    async def upsert_sessions(self, body: bytes) -> dict[tuple[str, int], str | None]:
        sessions = tuple(row["session_id"] for row in orjson.loads(body))
        answer = self._answer(body, sessions)
        self.requests.append(Request(trio.current_time(), sessions, answer))
        await self._raise(answer)
        self.stored.extend(sessions)
        return written(body)


# ---------------------------------------------------------------------------------------------
# the oracle: what DESIGN 5 says must happen, played out apart from the executor and policy.py
# ---------------------------------------------------------------------------------------------


@dataclass
class Course:
    """The requests the delivery must make, in order, and where every record must end."""

    requests: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    queued: dict[int, tuple[int, int]] = field(default_factory=dict)  # (attempts, failures)
    dead: dict[int, str] = field(default_factory=dict)
    # (index of a slow-down answer that is asked again, the Retry-After it gave)
    retried: list[tuple[int, float]] = field(default_factory=list)
    state: Upstream | None = None  # when the delivery stopped on upstream's account


def halves(batch: tuple[Rec, ...]) -> list[tuple[Rec, ...]]:
    middle = len(batch) // 2
    return [batch[:middle], batch[middle:]]


def expected_course(
    records: Sequence[Rec],
    script: list[Answer | None],
    refused: set[int],
    max_body: int,
    *,
    max_retries: int,
    rate_limit_max_retries: int,
    attempts_before: dict[int, int],
) -> Course:
    """Depth first, as a queue of batches: a halved batch's first half goes next."""
    script = list(script)
    course = Course()

    def upstream_answer(batch: tuple[Rec, ...]) -> Answer | None:
        scripted = script.pop(0) if script else None
        if scripted is not None and not (scripted.several_only and len(batch) == 1):
            return scripted
        if len(Batch(batch).body) > max_body:
            return OWN_TOO_LARGE
        if any(r.session_id in refused for r in batch):
            return OWN_REFUSED
        return None

    def probe_answers() -> bool:
        scripted = script.pop(0) if script else None
        course.requests.append(("probe", ()))
        return scripted is None or scripted.several_only

    pending: deque[tuple[Rec, ...]] = deque([tuple(records)])
    slow = 0
    while pending:
        batch = pending.popleft()
        ids = tuple(r.session_id for r in batch)
        answer = upstream_answer(batch)
        course.requests.append(("upsert", ids))
        means = STORED if answer is None else answer.means
        if means == STORED:
            course.stored.extend(ids)
            continue
        assert answer is not None
        stop: Upstream | None = None
        if means == ASK:
            if not probe_answers():
                stop = Upstream.OFFLINE
            elif len(batch) > 1:
                pending.extendleft(reversed(halves(batch)))
            else:  # its trouble is its own: it waits apart, failing once, nothing counted
                course.queued[ids[0]] = (attempts_before[ids[0]], 1)
        elif means in (SPLIT, TOO_LARGE, REFUSED) and len(batch) > 1:
            pending.extendleft(reversed(halves(batch)))
        elif means == REFUSED:
            attempts = attempts_before[ids[0]] + 1
            if attempts > max_retries:
                course.dead[ids[0]] = "refused"
            else:
                course.queued[ids[0]] = (attempts, 0)
        elif means == TOO_LARGE:
            course.dead[ids[0]] = "payload_too_large"
        elif means == SLOW:
            slow += 1
            if slow <= rate_limit_max_retries:
                course.retried.append((len(course.requests) - 1, answer.retry_after or 0.0))
                pending.appendleft(batch)
            else:
                stop = Upstream.OFFLINE
        elif means == DOWN:
            stop = Upstream.OFFLINE
        else:
            assert means == PAUSE and answer.state is not None, answer
            stop = answer.state
        if stop is not None:  # this batch and every one after it wait in the queue
            for rest in (batch, *pending):
                for r in rest:
                    course.queued[r.session_id] = (attempts_before[r.session_id], 0)
            course.state = stop
            break
    return course


def check_course(
    upstream: ScriptedPostgrest,
    course: Course,
    queued: dict[int, tuple[int, int]],
    dead: dict[int, str],
    state: Upstream,
) -> None:
    made = [(r.kind, r.sessions) for r in upstream.requests]
    assert made == course.requests, f"requests {made}, the policy says {course.requests}"
    assert sorted(upstream.stored) == sorted(course.stored)
    assert queued == course.queued, "queued (attempts, failures)"
    assert dead == course.dead
    if course.state is not None:
        assert state == course.state
    for index, retry_after in course.retried:
        pause = upstream.requests[index + 1].at - upstream.requests[index].at
        assert pause >= retry_after - 1e-6, "Retry-After honoured"
        assert pause <= max(retry_after, SLOW_DOWN_CAP) + 1e-6


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


async def _queue_table(store: Store) -> dict[int, tuple[int, int]]:
    rows = await store._run(
        lambda: store._conn.execute(
            "SELECT session_id, attempts, failures FROM pending_sync"
        ).fetchall()
    )
    return {sid: (attempts, failures) for sid, attempts, failures in rows}


scripted = settings(
    max_examples=80,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RATE_STORM = [Answer(429, None, "slow down", SLOW, retry_after=30.0)] * 4
# PostgREST refuses the whole batch (23514), the split halves go, the first meets an outage:
# the second half must wait in the queue, not be sent to an upstream known to be down
SPLIT_THEN_DOWN = [None, ANSWERS[0]]
FIRST_REFUSED = [True] + [False] * 15
# a timeout on the whole batch, upstream answers the probe: halves, the first times out again
TIMEOUTS_HALVE = [GATEWAY_TIMEOUT, None, STATEMENT_TIMEOUT, None, HANG]
NONE_REFUSED = [False] * 16


@scripted
@given(
    sizes=st.lists(st.integers(10, 3000), min_size=1, max_size=16),
    refused_mask=st.lists(st.booleans(), min_size=16, max_size=16),
    script=script_strategy,
    max_retries=st.integers(0, 2),
    rate_limit_max_retries=st.integers(0, 3),
)
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, script=RATE_STORM, max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, script=[ANSWERS[9]], max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 4, refused_mask=FIRST_REFUSED, script=SPLIT_THEN_DOWN, max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, script=TIMEOUTS_HALVE, max_retries=2,
         rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, script=[None, UNEXPECTED_4XX],
         max_retries=2, rate_limit_max_retries=3)  # fmt: skip
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
            dead = {e.session_id: e.reason for e in await store.dead_letters()}
            acked = await store.file_states("PC01")
        finally:
            await store.close()
    every = sorted(r.session_id for r in records)
    assert sorted(upstream.stored + list(queued) + list(dead)) == every, "each exactly once"
    course = expected_course(
        records,
        script,
        refused,
        upstream.max_body,
        max_retries=max_retries,
        rate_limit_max_retries=rate_limit_max_retries,
        attempts_before=dict.fromkeys(every, 0),
    )
    check_course(upstream, course, queued, dead, delivery.status.upstream)
    assert {r.version.rel_path for r in records} <= set(acked), "every version acknowledged"


@scripted
@given(
    sizes=st.lists(st.integers(10, 3000), min_size=1, max_size=16),
    refused_mask=st.lists(st.booleans(), min_size=16, max_size=16),
    earlier_attempts=st.lists(st.integers(0, 3), min_size=16, max_size=16),
    script=script_strategy,
    max_retries=st.integers(0, 3),
    rate_limit_max_retries=st.integers(0, 3),
)
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, earlier_attempts=[2] * 16,
         script=[ANSWERS[4]], max_retries=2, rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 4, refused_mask=FIRST_REFUSED, earlier_attempts=[0] * 16,
         script=SPLIT_THEN_DOWN, max_retries=2, rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, earlier_attempts=[1] * 16,
         script=TIMEOUTS_HALVE, max_retries=2, rate_limit_max_retries=3)  # fmt: skip
@example(sizes=[10] * 6, refused_mask=NONE_REFUSED, earlier_attempts=[1] * 16,
         script=[UNEXPECTED_4XX], max_retries=2, rate_limit_max_retries=3)  # fmt: skip
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
    course = expected_course(
        from_queue,
        script,
        refused,
        upstream.max_body,
        max_retries=max_retries,
        rate_limit_max_retries=rate_limit_max_retries,
        attempts_before=before,
    )
    check_course(upstream, course, queued, dead, delivery.status.upstream)
    assert {r.version.rel_path for r in records} <= set(acked)
