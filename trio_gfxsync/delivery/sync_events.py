"""`sync_events` rows for Supabase (created, modified, error, with counts): best-effort.

Changes are counted per (PC, kind) and errors kept one per row; every FLUSH_INTERVAL the
reporter sends what it has, but only when no session data is waiting (the batcher is empty and
the gate's one request slot is free): these rows never hold back a session. A failed send is
kept for the next try, up to MAX_ROWS; beyond that the oldest are dropped and counted. They are
a log for dashboards built on Supabase, not data the agent promises to deliver.
"""

from __future__ import annotations

import trio

from .. import names
from ..logs import get_logger
from ..observe.status import AgentStatus
from ..observe.sync_event_buffer import SyncEventBuffer
from ..policy import Verdict
from ..targets.base import Target
from .gate import UpstreamGate

log = get_logger("sync_events")

FLUSH_INTERVAL = 5.0
SEND_DEADLINE = 5.0  # it holds the gate's one slot: keep it short


class SyncEventReporter:
    def __init__(
        self,
        target: Target,
        gate: UpstreamGate,
        status: AgentStatus,
        buffer: SyncEventBuffer,
    ) -> None:
        self.target = target
        self.gate = gate
        self.status = status
        self.buffer = buffer
        self._failing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            await self.flush()

    def _quiet(self) -> bool:
        return self.gate.sendable and self.status.batch_pending == 0 and not self.gate.busy

    async def flush(self) -> None:
        if not self._quiet():
            return
        rows = self.buffer.take_rows()
        if not rows:
            return
        body = names.dumps(rows)
        verdict, error = await self.gate.send(
            lambda: self.target.insert_sync_events(body), deadline=SEND_DEADLINE
        )
        if verdict is Verdict.STORED:
            if self._failing:
                log.info("sync_events_recovered")
            self._failing = False
            return
        self.buffer.give_back(rows)
        if not self._failing and error is not None:
            # the session data path has its own handling: this is only a warning
            log.warning("sync_events_failed", error=error.summary, kept=len(self.buffer.retry))
        self._failing = True
