"""The upstream gate and the batcher's shutdown spill, with trio's autojump clock where the
logic is pure timing, and a real SQLite store where it is not."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.support.records import parsed_record
from trio_gfxsync.delivery.batcher import Batcher, UploadSlots
from trio_gfxsync.delivery.batching import Batch, BatchBuffer
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.pokergfx import SessionRecord
from trio_gfxsync.policy import Verdict
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.store import Store


async def test_a_retry_after_from_any_sender_holds_every_sender(autojump_clock) -> None:
    gate = UpstreamGate(AgentStatus())
    sent_at: list[float] = []

    async def limited() -> None:
        raise UpstreamError(429, None, "slow down", retry_after=7.0)

    async def fine() -> None:
        sent_at.append(trio.current_time())

    start = trio.current_time()
    verdict, _ = await gate.send(limited)  # e.g. a sync_events insert
    assert verdict is Verdict.SLOW_DOWN
    await gate.send(fine)  # e.g. the uploader, which never saw that answer
    assert sent_at[0] - start >= 7.0


async def test_one_request_in_flight_and_a_total_deadline(autojump_clock) -> None:
    gate = UpstreamGate(AgentStatus(), request_deadline=30.0)
    in_flight = 0
    most = 0

    async def slow() -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await trio.sleep(1)
        in_flight -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(gate.send, slow)
    assert most == 1

    async def trickle() -> None:
        await trio.sleep_forever()  # an answer that never completes

    before = trio.current_time()
    verdict, error = await gate.send(trickle)
    assert verdict is Verdict.DOWN and error is not None and error.kind == "Timeout"
    assert trio.current_time() - before == pytest.approx(30.0)


def record(n: int) -> SessionRecord:
    return parsed_record(n, hands=n)


async def test_the_batcher_spills_what_it_holds_to_the_queue_when_cancelled(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        status = AgentStatus()
        ledger = FileLedger(store)
        batcher = Batcher(
            BatchBuffer(batch_size=2, max_batch_bytes=10**6, linger=0.01, flush_interval=0.05),
            UploadSlots(),
            status,
            ledger,
        )
        record_send, record_recv = trio.open_memory_channel[SessionRecord](10)
        batch_send, _batch_recv = trio.open_memory_channel[Batch](0)  # nobody uploads
        for n in range(1, 6):
            record_send.send_nowait(record(n))
        with trio.move_on_after(0.5):
            await batcher.run(record_recv, batch_send)  # a full batch waits; the rest waits
        queued = await store.due(100, 10**9)
        assert sorted(r.session_id - 10**17 for r in queued) == [1, 2, 3, 4, 5]
        assert len(await store.file_states("PC01")) == 5  # queued counts as acknowledged
    finally:
        await store.close()


async def test_refused_then_queued_never_leaves_a_record_only_in_memory(tmp_path: Path) -> None:
    """Cancelled while committing a refused record to the queue: it is spilled, not lost."""
    from trio_gfxsync.delivery.uploader import LiveDelivery

    store = await Store.open(tmp_path / "pending.db")
    try:
        status = AgentStatus()
        ledger = FileLedger(store, max_queue_size=1)  # full: enqueue waits for room

        class Refusing:
            async def upsert_sessions(self, body: bytes) -> None:
                raise UpstreamError(400, "23514", "check")

        await store.enqueue([record(9)], [record(9).version])  # fills the queue
        delivery = LiveDelivery(
            target=Refusing(),  # type: ignore[arg-type]
            ledger=ledger,
            gate=UpstreamGate(status),
            status=status,
            max_retries=3,
            rate_limit_max_retries=3,
            rate_limit_base_delay=0.01,
            rng=random.Random(0),
        )
        with trio.move_on_after(0.5):
            await delivery.deliver(Batch((record(1),)))
        # the spill found it still pending and committed it (the queue limit is soft there)
        with trio.fail_after(5):
            while len(await store.due(100, 10**9)) < 1:
                await trio.sleep(0.05)
        assert "1.json" in await store.file_states("PC01")
    finally:
        await store.close()


async def test_a_batch_the_busy_uploader_does_not_take_in_time_goes_to_the_queue(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        status = AgentStatus()
        slots = UploadSlots()
        batcher = Batcher(
            BatchBuffer(batch_size=10, max_batch_bytes=10**6, linger=0.05, flush_interval=0.3),
            slots,
            status,
            FileLedger(store),
        )
        record_send, record_recv = trio.open_memory_channel[SessionRecord](10)
        batch_send, batch_recv = trio.open_memory_channel[Batch](0)
        taken: list[Batch] = []

        async def stuck_uploader() -> None:
            slots.set_free(+1)
            taken.append(await batch_recv.receive())
            slots.set_free(-1)
            await trio.sleep_forever()  # an upload that never ends

        async def queued_ids() -> list[int]:
            return sorted(r.session_id - 10**17 for r in await store.due(100, 10**9))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stuck_uploader)
                nursery.start_soon(batcher.run, record_recv, batch_send)
                await record_send.send(record(1))
                while not taken:  # record 1 is with the uploader, which never comes back
                    await trio.sleep(0.01)
                for n in (2, 3):
                    await record_send.send(record(n))
                # only the flush_interval deadline can move 2 and 3 out of memory: the one
                # uploader is stuck, and nothing else takes from the batcher
                while await queued_ids() != [2, 3]:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        assert [[r.session_id - 10**17 for r in b.records] for b in taken] == [[1]]
        assert await queued_ids() == [2, 3]
        assert len(batcher.buffer) == 0
    finally:
        await store.close()
