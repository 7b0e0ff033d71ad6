"""Upload stage: send batches to PostgREST and act on the answer (the executor of policy.py).

Every sender passes the one `UpstreamGate`: a Retry-After, an outage or a paused upstream holds
them all, so no request leaves earlier than the server allowed.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

import trio

from .batching import Batch, split
from .ledger import FileLedger
from .logs import get_logger
from .policy import Verdict, backoff_delay, classify, slow_down_delay
from .postgrest import PostgrestClient, UpstreamError
from .status import AgentStatus

log = get_logger("uploader")

PAUSE_PROBE_INTERVAL = 30.0  # schema mismatch or rejected key: re-probe this often
DOWN_BACKOFF_CAP = 10.0  # upstream down: retry at most this far apart (jittered)
SLOW_DOWN_CAP = 60.0


class UpstreamGate:
    """Shared "not before" time and upstream state for every sender."""

    def __init__(self, status: AgentStatus) -> None:
        self.status = status
        self.not_before = -math.inf

    def hold(self, seconds: float) -> None:
        self.not_before = max(self.not_before, trio.current_time() + seconds)

    async def wait(self) -> None:
        while trio.current_time() < self.not_before:  # noqa: ASYNC110 (not_before can move on)
            await trio.sleep_until(self.not_before)

    def set_state(self, state: str, reason: str | None) -> None:
        if state != self.status.upstream or reason != self.status.upstream_reason:
            level = log.info if state == "connected" else log.warning
            level("upstream_state", state=state, reason=reason)
        self.status.upstream = state
        self.status.upstream_reason = reason


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
class Uploader:
    client: PostgrestClient
    ledger: FileLedger
    gate: UpstreamGate
    status: AgentStatus
    max_retries: int
    rate_limit_base_delay: float
    rng: random.Random

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[Batch],
        slots: UploadSlots,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with batches:
            task_status.started()
            while True:
                slots.set_free(+1)
                try:
                    batch = await batches.receive()
                except trio.EndOfChannel:
                    return
                finally:
                    slots.set_free(-1)
                await self.deliver(batch)

    async def deliver(self, batch: Batch) -> None:
        """Send until every record is stored or given up on; transport failures retry forever
        (the files stay unacknowledged, so a restart would send them again)."""
        pending: deque[Batch] = deque([batch])
        failures = 0
        refusals: dict[tuple[str, int], int] = {}
        while pending:
            current = pending.popleft()
            await self.gate.wait()
            try:
                await self.client.upsert_sessions(current.body)
            except UpstreamError as exc:
                error = exc
                verdict = classify(exc.status, exc.code)
            else:
                error = None
                verdict = Verdict.STORED
            if verdict is Verdict.STORED:
                failures = 0
                await self._stored(current)
                continue
            assert error is not None
            self.status.consecutive_upload_failures += 1
            failures += 1
            if verdict in (Verdict.SPLIT, Verdict.TOO_LARGE, Verdict.REFUSED) and len(current) > 1:
                if verdict is Verdict.SPLIT:
                    log.error("batch_invariant_broken", code=error.code, error=error.summary)
                pending.extendleft(reversed(split(current)))
            elif verdict in (Verdict.SPLIT, Verdict.TOO_LARGE, Verdict.REFUSED):
                record = current.records[0]
                tries = refusals[record.key] = refusals.get(record.key, 0) + 1
                if verdict is Verdict.TOO_LARGE or tries > self.max_retries:
                    log.error(
                        "record_refused",
                        pc_id=record.version.pc_id,
                        path=record.version.rel_path,
                        session_id=str(record.session_id),
                        code=error.code,
                        status=error.status,
                        error=error.summary,
                        attempts=tries,
                    )
                    continue
                await trio.sleep(
                    backoff_delay(tries, base=self.rate_limit_base_delay, cap=30, rng=self.rng)
                )
                pending.appendleft(current)
            elif verdict is Verdict.SLOW_DOWN:
                delay = slow_down_delay(
                    failures,
                    error.retry_after,
                    base=self.rate_limit_base_delay,
                    cap=SLOW_DOWN_CAP,
                    rng=self.rng,
                )
                log.warning("upstream_slow_down", status=error.status, delay=round(delay, 3))
                self.gate.hold(delay)
                pending.appendleft(current)
            elif verdict is Verdict.DOWN:
                self.gate.set_state("offline", error.summary)
                self.gate.hold(
                    backoff_delay(failures, base=0.5, cap=DOWN_BACKOFF_CAP, rng=self.rng)
                )
                pending.appendleft(current)
            else:  # SCHEMA_MISMATCH or REJECTED: nothing will pass until an operator acts
                state = "schema_mismatch" if verdict is Verdict.SCHEMA_MISMATCH else "rejected"
                self.gate.set_state(state, error.summary)
                self.gate.hold(PAUSE_PROBE_INTERVAL)
                pending.appendleft(current)

    async def _stored(self, batch: Batch) -> None:
        await self.ledger.acknowledge(batch.versions)
        self.status.consecutive_upload_failures = 0
        self.status.batches_uploaded += 1
        self.status.mark_synced([r.version.pc_id for r in batch.records])
        self.gate.set_state("connected", None)
        log.debug("batch_stored", records=len(batch), superseded=len(batch.superseded))
