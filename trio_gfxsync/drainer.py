"""Offline drainer: probes a missing upstream and re-sends the durable queue once it answers.

While upstream is offline it probes every few seconds (jittered, so a fleet of agents does not
beat in step); paused states (rejected key, schema mismatch) are re-probed every 30 s. As soon
as a probe or a live upload succeeds, it drains at once, one request at a time through the gate,
so recovery does not burst. `queue_process_interval` is only the slow periodic pass; the queue
also wakes it when something enters it. It also notices `dlq replay` run by another process.
"""

from __future__ import annotations

import random
import time

import trio

from .batching import Batch
from .gate import CONNECTED, OFFLINE, REJECTED, SCHEMA_MISMATCH, UpstreamGate
from .ledger import FileLedger
from .logs import get_logger
from .policy import Verdict
from .postgrest import PostgrestClient
from .status import AgentStatus
from .uploader import QueuedDelivery

log = get_logger("drainer")

OFFLINE_PROBE = (2.0, 5.0)  # seconds, uniform: "every few seconds, jittered"
PAUSED_PROBE = (25.0, 35.0)  # around DESIGN's 30 s


class Drainer:
    def __init__(
        self,
        *,
        client: PostgrestClient,
        ledger: FileLedger,
        gate: UpstreamGate,
        status: AgentStatus,
        delivery: QueuedDelivery,
        batch_size: int,
        max_batch_bytes: int,
        queue_process_interval: float,
        poll_interval: float,
        rng: random.Random,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.gate = gate
        self.status = status
        self.delivery = delivery
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.queue_process_interval = queue_process_interval
        self.poll_interval = poll_interval
        self.rng = rng
        self._stopping = False
        self._idle_scope: trio.CancelScope | None = None

    def stop(self) -> None:
        """End after the batch in flight (the queue is durable; nothing needs flushing)."""
        self._stopping = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self._refresh_counts()
        while not self._stopping:
            if not self.gate.sendable:
                await self._probe_when_due()
                continue
            if await self.ledger.store.changed_elsewhere():
                await self.ledger.reload_states()
            records = await self.ledger.store.due(self.batch_size, self.max_batch_bytes)
            if records:
                await self.delivery.deliver(Batch(tuple(records)))  # type: ignore[arg-type]
                await self._refresh_counts()
                continue
            await self._refresh_counts()
            await self._idle()

    async def _refresh_counts(self) -> None:
        self.status.queue_counts = await self.ledger.store.counts()

    async def _idle(self) -> None:
        """Sleep until something is queued, a queued record falls due, or the periodic pass."""
        next_due = await self.ledger.store.next_due()
        wait = min(
            self.queue_process_interval, self.poll_interval, max(0.0, next_due - time.time())
        )
        queued = self.ledger.queued
        with trio.CancelScope() as self._idle_scope, trio.move_on_after(wait):
            await queued.wait()
        self._idle_scope = None

    async def _probe_when_due(self) -> None:
        low, high = (
            PAUSED_PROBE if self.gate.state in (REJECTED, SCHEMA_MISMATCH) else OFFLINE_PROBE
        )
        changed = self.gate.changed
        with (
            trio.CancelScope() as self._idle_scope,
            trio.move_on_after(self.rng.uniform(low, high)),
        ):
            await changed.wait()  # a live upload may bring upstream back before our probe
        self._idle_scope = None
        if self._stopping or self.gate.sendable:
            return
        verdict, error = await self.gate.send(self.client.probe)
        if verdict is Verdict.STORED:
            log.info("upstream_probe_ok", pending=self.status.queue_counts.pending)
            self.gate.set_state(CONNECTED)
        elif verdict in (Verdict.REJECTED, Verdict.SCHEMA_MISMATCH):
            state = REJECTED if verdict is Verdict.REJECTED else SCHEMA_MISMATCH
            self.gate.set_state(state, error.summary if error else None)
        elif verdict is Verdict.SLOW_DOWN and error is not None:
            self.gate.hold(error.retry_after or OFFLINE_PROBE[0])
        else:
            self.gate.set_state(OFFLINE, error.summary if error else None)
