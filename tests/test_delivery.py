"""The executor of the error policy: every record ends exactly once in a stored request, the
offline queue or the dead letter, whatever the mix of refusals and oversized records.

The upstream here is a small stand-in with PostgREST's behaviour for these answers (a refused
row fails the whole INSERT with 400 and its SQLSTATE; a body over the limit gets 413); the store
is the real SQLite store.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_gfxsync.delivery.batching import Batch
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.delivery.uploader import LiveDelivery
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.store import Store


class PostgrestLike:
    def __init__(self, refused: set[int], max_body: int) -> None:
        self.refused = refused
        self.max_body = max_body
        self.stored: list[int] = []
        self.requests = 0

    async def upsert_sessions(self, body: bytes) -> None:
        self.requests += 1
        if len(body) > self.max_body:
            raise UpstreamError(413, None, "Payload Too Large")
        rows = orjson.loads(body)
        if any(row["session_id"] in self.refused for row in rows):
            raise UpstreamError(400, "23514", 'violates check constraint "demo"')
        self.stored.extend(row["session_id"] for row in rows)


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
    with tempfile.TemporaryDirectory() as folder:
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
