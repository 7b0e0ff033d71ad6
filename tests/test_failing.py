"""A record that fails alone: its own lane, its own backoff, dead-lettered only after
MAX_RETRIES failures *and* half an hour (delivery/failing.py, uploader.failed_alone)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import trio

from tests.support.records import export_record, written
from trio_gfxsync.delivery.batching import Batch
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.delivery.uploader import QueuedDelivery
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.rows import RecordFailure
from trio_gfxsync.state.store import Store


class TimesOutOnOne:
    """Upstream that answers everything but an upsert of one session, which always times out."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.probes = 0

    async def upsert_sessions(self, body: bytes) -> dict[tuple[str, int], str | None]:
        if str(self.session_id).encode() in body:
            raise UpstreamError(500, "57014", "canceling statement due to statement timeout")
        return written(body)

    async def probe(self) -> None:
        self.probes += 1


async def fail_once_more(store: Store, failures: int, minutes_ago: float) -> str | None:
    """Make the queued record one that failed `failures` times, first `minutes_ago`; send it on
    its lane once; return its dead-letter reason, if it went there."""
    await store._run(
        lambda: store._conn.execute(
            "UPDATE pending_sync SET failures = ?, first_failed_at = ?, next_attempt_at = 0",
            (failures, time.time() - minutes_ago * 60),
        )
    )
    record = await store.failing_due()
    assert record is not None
    status = AgentStatus()
    upstream = TimesOutOnOne(record.session_id)
    delivery = QueuedDelivery(
        target=upstream,  # type: ignore[arg-type]
        ledger=FileLedger(store),
        gate=UpstreamGate(status),
        status=status,
        max_retries=5,
        rate_limit_max_retries=3,
        rate_limit_base_delay=0.01,
        rng=random.Random(0),
        alone=True,
    )
    await delivery.deliver(Batch((record,)))
    assert upstream.probes == 1, "upstream was asked before the record was blamed"
    assert status.upstream != Upstream.OFFLINE, "a record's trouble never turns upstream down"
    dead = await store.dead_letters()
    return dead[0].reason if dead else None


async def test_dead_lettered_only_after_max_retries_and_half_an_hour(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        record = export_record("PC01", "1016/a.json", 3)
        await store.enqueue(
            [record], [record.version], failure=RecordFailure("timed_out", 500, "57014", "x")
        )
        assert await fail_once_more(store, 1, minutes_ago=40) is None  # old, but 2 < 5 failures
        assert await fail_once_more(store, 4, minutes_ago=10) is None  # 5 failures, 10 minutes
        listed = await store.failing()
        assert listed[0].failures == 5 and listed[0].reason == "timed_out"
        assert await fail_once_more(store, 4, minutes_ago=31) == "timed_out"
        entry = (await store.dead_letters())[0]
        assert (entry.status, entry.code) == (500, "57014")
        assert (await store.counts()).pending == 0
    finally:
        await store.close()


async def test_the_lane_of_records_failing_alone_never_waits_for_the_main_slot() -> None:
    gate = UpstreamGate(AgentStatus())
    main_started = trio.Event()
    alone_done = trio.Event()

    async def hanging() -> None:
        main_started.set()
        await alone_done.wait()  # the main slot is held until the other lane got through

    async def quick() -> None:
        alone_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.send, hanging)
        await main_started.wait()
        with trio.fail_after(5):
            await gate.send(quick, alone=True)
