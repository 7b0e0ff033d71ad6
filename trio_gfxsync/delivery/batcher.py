"""The batcher stage: SessionRecords in, Batches out to the uploader.

Intake and dispatch run side by side: records keep accumulating in the `BatchBuffer` (pure
decisions, `batching.py`) while a batch waits for a free uploader, and a full buffer holds the
intake (backpressure). `flush_interval` bounds how long a record waits in memory: a batch the
busy uploader has not taken by then goes to the durable queue instead. On shutdown, whatever is
read but not sent is spilled to the queue within a deadline (DESIGN 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ..logs import get_logger
from ..memory_budget import ByteBudget
from ..observe.status import AgentStatus
from ..pokergfx import SessionRecord
from ..state.ledger import FileLedger
from .batching import Batch, BatchBuffer

log = get_logger("batcher")

SPILL_TIMEOUT = 1.5  # at shutdown: how long to commit unsent batches to the queue


class Wakeup:
    """A level-triggered "something changed" for one waiter: `event` is replaced once set."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def set(self) -> None:
        self.event.set()
        self.event = trio.Event()


class UploadSlots:
    """How many upload workers wait for a batch; the batcher lingers only while one is free.

    `wakeup` is the batcher's: it fires when a worker becomes free and when a record arrives.
    """

    def __init__(self) -> None:
        self.free = 0
        self.wakeup = Wakeup()

    def set_free(self, delta: int) -> None:
        self.free += delta
        self.wakeup.set()


@dataclass
class Batcher:
    buffer: BatchBuffer
    slots: UploadSlots
    status: AgentStatus
    ledger: FileLedger
    # the readers' memory budget: a record's bytes go back once it leaves the buffer
    budget: ByteBudget | None = None
    # `scan` ends when the files are acknowledged: deferring to the queue would end it early
    defer_to_queue: bool = True

    async def run(
        self,
        records: trio.MemoryReceiveChannel[SessionRecord],
        batches: trio.MemorySendChannel[Batch[SessionRecord]],
    ) -> None:
        """Intake and dispatch run side by side: records keep accumulating while a batch waits
        for a free uploader, and a full buffer holds the intake (backpressure)."""
        wakeup = self.slots.wakeup  # set by intake (record in) and by uploaders (slot free)
        room = Wakeup()
        closed = False
        in_hand: Batch[SessionRecord] | None = None  # taken from the buffer, not yet handed over

        async def intake() -> None:
            nonlocal closed
            async for record in records:
                # it goes into the buffer before we wait: a full buffer only grows by one
                # record, and whatever interrupts us finds it there to spill
                self._released(self.buffer.add(record, trio.current_time()))
                self.status.batch_pending = len(self.buffer)
                wakeup.set()
                while self.buffer.full:
                    await room.event.wait()
            closed = True
            wakeup.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(intake)
                while not (closed and len(self.buffer) == 0):
                    now = trio.current_time()
                    free = self.slots.free > 0
                    if self.buffer.due(now, uploader_free=free, closed=closed):
                        arrival = self.buffer.oldest_arrival
                        oldest = now if arrival is None else arrival
                        in_hand = self.buffer.take()
                        self._released(*in_hand.records)
                        self.status.batch_pending = len(self.buffer)
                        room.set()
                        sent = False
                        # flush_interval bounds the wait in memory: a batch the busy uploader
                        # has not taken by then goes to the durable queue (acknowledged there,
                        # sent next by the drainer). At shutdown it simply waits its turn.
                        if free or closed or not self.defer_to_queue:
                            await batches.send(in_hand)
                            sent = True
                        else:
                            with trio.move_on_at(oldest + self.buffer.flush_interval):
                                await batches.send(in_hand)
                                sent = True
                        if not sent:
                            # a live change must not wait behind deferred backfill: first out
                            front = any(r.live for r in in_hand.records)
                            await self.ledger.enqueue(
                                in_hand.records,
                                in_hand.versions,
                                error="uploader busy",
                                front=front,
                            )
                            log.info("batch_deferred_to_queue", records=len(in_hand))
                            self.status.activity.add(
                                "queued", f"{len(in_hand)} sessions queued (uploader busy)"
                            )
                        in_hand = None
                        continue
                    changed = wakeup.event
                    with trio.move_on_at(self.buffer.next_deadline(uploader_free=free)):
                        await changed.wait()
        except BaseException:
            # trio delivers a cancellation out of a nursery as a group: catch it whole
            if not self.status.force_exit:
                await self._spill(in_hand, records)
            raise
        finally:
            records.close()
            batches.close()

    def _released(self, *records: SessionRecord | None) -> None:
        if self.budget is not None:
            self.budget.release(sum(len(r.row) for r in records if r is not None))

    async def _spill(
        self,
        in_hand: Batch[SessionRecord] | None,
        records: trio.MemoryReceiveChannel[SessionRecord],
    ) -> None:
        """Shutdown deadline: commit what is read but not sent to the queue (DESIGN 6): the
        batch in hand, the buffer, and records still waiting in the channel."""
        with trio.CancelScope(shield=True), trio.move_on_after(SPILL_TIMEOUT):
            while True:
                try:
                    self.buffer.add(records.receive_nowait(), trio.current_time())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            if in_hand is not None:
                await self.ledger.enqueue(
                    in_hand.records, in_hand.versions, error="shutdown", spill=True
                )
            while len(self.buffer):
                batch = self.buffer.take()
                await self.ledger.enqueue(
                    batch.records, batch.versions, error="shutdown", spill=True
                )
