"""Offline drainer: probes a missing upstream and re-sends the durable queue once it answers.

While upstream is offline it probes every few seconds (jittered, so a fleet of agents does not
beat in step); paused states (rejected key, schema mismatch) are re-probed every 30 s. As soon
as a probe or a live upload succeeds, it drains at once, one request at a time through the gate,
so recovery does not burst. `queue_process_interval` is only the slow periodic pass; the queue
also wakes it when something enters it. It also notices `dlq replay` run by another process.
"""

from __future__ import annotations

import math
import random
import time

import trio

from ..logs import get_logger
from ..observe.status import AgentStatus
from ..observe.upstream import PAUSED, Upstream
from ..policy import TIMEOUT_KINDS, Verdict
from ..state.ledger import FileLedger
from ..state.rows import QueuedRecord
from ..targets.base import Target
from .batching import Batch
from .gate import PAUSE_STATE, UpstreamGate
from .uploader import QueuedDelivery

log = get_logger("drainer")

OFFLINE_PROBE = (2.0, 5.0)  # seconds, uniform: "every few seconds, jittered"
PAUSED_PROBE = (25.0, 35.0)  # around DESIGN's 30 s
# a batch failing as "down" this soon after a successful probe is suspected, not the upstream
SUSPECT_WINDOW = 10.0
SUSPECT_DELAY = 5.0


class Drainer:
    def __init__(
        self,
        *,
        target: Target,
        ledger: FileLedger,
        gate: UpstreamGate,
        status: AgentStatus,
        delivery: QueuedDelivery,
        batch_size: int,
        max_batch_bytes: int,
        queue_process_interval: float,
        poll_interval: float,
        rng: random.Random,
        upstream_probe_interval: float = 30.0,
    ) -> None:
        self.target = target
        self.ledger = ledger
        self.gate = gate
        self.status = status
        self.delivery = delivery
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.queue_process_interval = queue_process_interval
        self.poll_interval = poll_interval
        self.upstream_probe_interval = upstream_probe_interval
        self.rng = rng
        self._stopping = False
        self._scope = trio.CancelScope()
        self._last_probe_ok = -math.inf
        self._drain_size = batch_size
        self._external_seen = 0
        self._counted_at = -1
        self._due_read_at = -1
        self._next_due = 0.0

    def stop(self) -> None:
        """End now: the queue is durable, so a request cut short is simply sent again later."""
        self._stopping = True
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._scope:
            await self._refresh_counts()
            if self.gate.state == Upstream.UNKNOWN:
                # one probe at start: a rejected key must show even when nothing is to be sent
                await self._probe()
            while not self._stopping:
                if not self.gate.sendable:
                    await self._probe_when_due()
                    continue
                # the monitor looks for other processes' commits (`dlq replay`) every refresh
                external = self.ledger.store.external_changes
                if external != self._external_seen:
                    self._external_seen = external
                    await self.ledger.reload_states()
                records = await self.ledger.store.due(self._drain_size, self.max_batch_bytes)
                if records:
                    sent_at = trio.current_time()
                    await self.delivery.deliver(Batch(tuple(records)))
                    await self._after_delivery(records, sent_at)
                    await self._refresh_counts()
                    continue
                await self._refresh_counts()
                if trio.current_time() >= self._probe_due():
                    # nothing to send for a while: an outage must still show in /health
                    # within the interval, before the first hand of the show fails
                    await self._probe()
                    continue
                await self._idle()

    async def _after_delivery(self, records: list[QueuedRecord], sent_at: float) -> None:
        """Upstream answered a probe just before this batch went out, yet the batch failed as if
        upstream were down (or timed out): it may be the batch itself (a statement timeout on a
        big one, say). Let the other rows go first for a moment, and send smaller batches until
        they get through again."""
        down = self.gate.state == Upstream.OFFLINE and self.delivery.last_verdict is Verdict.DOWN
        probe_just_before = self._last_probe_ok >= sent_at - SUSPECT_WINDOW
        timed_out = self.delivery.last_error_kind in TIMEOUT_KINDS
        if down and (probe_just_before or timed_out):
            self._drain_size = max(1, self._drain_size // 2)
            await self.ledger.store.postpone(records, SUSPECT_DELAY)
            log.warning(
                "queue_batch_postponed",
                records=len(records),
                delay=SUSPECT_DELAY,
                next_batch_size=self._drain_size,
            )
        elif self.gate.state == Upstream.CONNECTED:
            self._drain_size = min(self.batch_size, self._drain_size * 2)  # grow back gently

    async def _refresh_counts(self) -> None:
        store = self.ledger.store
        if store.generation != self._counted_at:  # nothing changed: the last figures hold
            self._counted_at = store.generation
            self.status.queue_counts = await store.counts()

    async def _idle(self) -> None:
        """Sleep until something is queued, a queued record falls due, another process changed
        the queue (`dlq replay`, seen by the monitor), or the periodic pass. An idle agent asks
        SQLite nothing: the next due time is read again only when the store changed."""
        store = self.ledger.store
        if store.generation != self._due_read_at:
            self._due_read_at = store.generation
            self._next_due = await store.next_due()
        wait = min(
            self.queue_process_interval,
            max(0.0, self._next_due - time.time()),
            max(0.0, self._probe_due() - trio.current_time()),
        )
        queued, elsewhere = self.ledger.queued, store.changed_elsewhere
        with trio.move_on_after(wait):
            async with trio.open_nursery() as nursery:

                async def until(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until, queued)
                nursery.start_soon(until, elsewhere)

    def _probe_due(self) -> float:
        """When an idle agent next asks upstream: an interval after the last good answer."""
        return max(self._last_probe_ok, self.gate.last_answer_ok) + self.upstream_probe_interval

    async def _probe_when_due(self) -> None:
        low, high = PAUSED_PROBE if self.gate.state in PAUSED else OFFLINE_PROBE
        changed = self.gate.changed
        with trio.move_on_after(self.rng.uniform(low, high)):
            await changed.wait()  # a live upload may bring upstream back before our probe
        if not self.gate.sendable:
            await self._probe()

    async def _probe(self) -> None:
        # offline: a cheap read tells whether upstream is back. Paused (a grant, the conflict
        # key, a read-only database...): only the write that failed can tell it is fixed.
        probe = self.target.probe_write if self.gate.state in PAUSED else self.target.probe
        verdict, error = await self.gate.send(probe)
        reason = error.summary if error else None
        if verdict is Verdict.STORED:
            self._last_probe_ok = trio.current_time()
            if self.gate.state not in (Upstream.UNKNOWN, Upstream.CONNECTED):
                log.info("upstream_probe_ok", pending=self.status.queue_counts.pending)
            self.gate.set_state(Upstream.CONNECTED)
        elif verdict in PAUSE_STATE:
            self.gate.set_state(PAUSE_STATE[verdict], reason)
        elif verdict in (Verdict.SLOW_DOWN, Verdict.TIMED_OUT):
            if error is None or error.retry_after is None:
                self.gate.hold(OFFLINE_PROBE[0])  # the gate already holds for a Retry-After
            if self.gate.state == Upstream.UNKNOWN:
                self.gate.set_state(Upstream.RATE_LIMITED, reason)
        else:
            self.gate.set_state(Upstream.OFFLINE, reason)
