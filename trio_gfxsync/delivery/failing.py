"""The lane of records that failed alone: one record's trouble stays that record's.

A record whose own request keeps timing out or answering 500 (a statement timeout on a very
large first upload, a trigger failing on that one row) while upstream answers everything else
is moved out of the way (`Delivery.failed_alone`): it waits with a backoff of its own, behind
the rest of the queue and behind live data, and is retried here, one request at a time on the
gate's lane of its own, so a request that takes a statement timeout every time never holds the
slot the live data needs. It honours `not_before` and waits while upstream is down or paused,
like every sender, but never changes the upstream state on its own account. After
`max_retries` failures *and* half an hour it is dead-lettered (`timed_out`, `server_error`) with
upstream's status, code and message; `dlq show` says what to do.
"""

from __future__ import annotations

import time

import trio

from ..logs import get_logger
from ..state.ledger import FileLedger
from .batching import Batch
from .gate import UpstreamGate
from .uploader import QueuedDelivery

log = get_logger("failing")

IDLE_RECHECK = 60.0  # seconds: an idle lane looks at the queue at least this often


class FailingLane:
    def __init__(self, ledger: FileLedger, gate: UpstreamGate, delivery: QueuedDelivery) -> None:
        assert delivery.alone, "records that failed alone go on their own lane"
        self.ledger = ledger
        self.gate = gate
        self.delivery = delivery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        store = self.ledger.store
        while True:
            if not self.gate.sendable:
                await self.gate.changed.wait()
                continue
            record = await store.failing_due()
            if record is None:
                queued = self.ledger.queued
                wait = min(IDLE_RECHECK, max(0.0, await store.next_due(failing=True) - time.time()))
                with trio.move_on_after(wait):
                    await queued.wait()
                continue
            await self.delivery.deliver(Batch((record,)))
