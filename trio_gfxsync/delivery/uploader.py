"""Upload stage: send batches to the target and carry out the error policy's decisions.

`policy.decide` says what to do with an answer; `Delivery` does it. Two kinds of delivery share
that executor and differ only in where a batch comes from and goes back to:

- `LiveDelivery`: batches from the batcher. Upstream down, paused or slowing for too long ->
  the batch is committed to the offline queue (which acknowledges its files).
- `QueuedDelivery` (the drainer's): rows of pending_sync. Stored -> the rows are removed;
  upstream trouble -> they simply stay queued.

A record the table refuses is isolated by splitting, retried with backoff from the queue, and
after `max_retries` refusals dead-lettered with the target's code and message. Transport
failures and rate limits never count as refusals.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Generic

import trio

from ..errors import UpstreamError
from ..logs import get_logger
from ..observe.status import AgentStatus
from ..observe.upstream import Upstream
from ..pokergfx import SessionRecord
from ..policy import Action, Verdict, backoff_delay, decide, slow_down_delay
from ..records import FileVersion
from ..state.ledger import FileLedger
from ..state.rows import QueuedRecord
from ..targets.base import Target
from .batcher import SPILL_TIMEOUT, UploadSlots
from .batching import Batch, R, split
from .gate import PAUSE_STATE, UpstreamGate

log = get_logger("uploader")

SLOW_DOWN_CAP = 60.0  # longest self-chosen pause between 429/503 retries (Retry-After may exceed)
REFUSAL_BACKOFF_CAP = 60.0


def note_stored(status: AgentStatus, batch: Batch[R]) -> None:
    status.mark_synced([r.version.pc_id for r in batch.records])
    status.batch_records.observe(len(batch))
    first = batch.records[0]
    status.activity.add(
        "synced",
        f"{len(batch)} session(s) stored",
        pc_id=first.version.pc_id if len(batch) == 1 else None,
        session_id=first.session_id if len(batch) == 1 else None,
    )


@dataclass
class Delivery(Generic[R]):
    target: Target
    ledger: FileLedger
    gate: UpstreamGate
    status: AgentStatus
    max_retries: int
    rate_limit_max_retries: int
    rate_limit_base_delay: float
    rng: random.Random
    # queued batches stop at the first upstream trouble (they stay queued, the drainer probes)
    stop_on_trouble: ClassVar[bool] = False
    last_verdict: Verdict | None = None  # of the last answer, for the drainer's judgement
    last_error_kind: str | None = None

    async def deliver(self, batch: Batch[R]) -> None:
        # A batch leaves `pending` only once its outcome is durable (stored, queued, dead-
        # lettered): whatever interrupts us finds every unfinished record here to spill.
        pending: deque[Batch[R]] = deque([batch])
        slow_tries = 0
        try:
            while pending:
                current = pending[0]
                if not self.gate.sendable:
                    await self.upstream_unavailable(current, None)
                    pending.popleft()
                    if self.stop_on_trouble:
                        return
                    continue
                verdict, error = await self.gate.send(partial(self._upsert, current))
                self.last_verdict = verdict
                self.last_error_kind = error.kind if error is not None else None
                action = decide(verdict, len(current), slow_tries, self.rate_limit_max_retries)
                if action is Action.ACKNOWLEDGE:
                    await self.stored(current)
                    pending.popleft()
                    self.gate.set_state(Upstream.CONNECTED)
                    self.status.consecutive_upload_failures = 0
                    continue
                assert error is not None, "only a stored answer comes without an error"
                self.status.consecutive_upload_failures += 1
                self.status.last_upload_error = error.summary
                if action is Action.SPLIT:
                    if verdict is Verdict.SPLIT:
                        # the batcher's invariants should make this impossible: say so loudly
                        log.error("batch_invariant_broken", code=error.code, error=error.summary)
                    pending.popleft()
                    pending.extendleft(reversed(split(current)))
                elif action is Action.REFUSE_ONE:
                    await self.refused(current, error)
                    pending.popleft()
                elif action is Action.DEAD_LETTER:
                    record = current.records[0]
                    await self.dead_letter(
                        record,
                        [v for _, v in current.superseded],
                        "payload_too_large",
                        error,
                        attempts=record.attempts + 1,
                    )
                    pending.popleft()
                    self.ledger.made_room()
                elif action is Action.RETRY:
                    slow_tries += 1
                    delay = slow_down_delay(
                        slow_tries - 1,
                        error.retry_after,
                        base=self.rate_limit_base_delay,
                        cap=SLOW_DOWN_CAP,
                        rng=self.rng,
                    )
                    self.gate.set_state(Upstream.RATE_LIMITED, error.summary)
                    self.gate.hold(delay)
                    log.warning(
                        "upstream_slow_down",
                        status=error.status,
                        retry_after=error.retry_after,
                        delay=round(delay, 3),
                        attempt=slow_tries,
                    )
                else:  # QUEUE or PAUSE
                    state = PAUSE_STATE.get(verdict, Upstream.OFFLINE)
                    self.gate.set_state(state, error.summary)
                    await self.upstream_unavailable(current, error)
                    pending.popleft()
                    if self.stop_on_trouble:
                        return
        except BaseException:
            # shutdown deadline or a crash: what is read but not acknowledged goes to the queue
            # if it can in time (a second signal skips this: the restart re-sends it anyway)
            if not self.status.force_exit:
                with trio.CancelScope(shield=True), trio.move_on_after(SPILL_TIMEOUT):
                    for unsent in pending:
                        await self.spill(unsent)
            raise

    async def _upsert(self, batch: Batch[R]) -> None:
        started = trio.current_time()
        try:
            await self.target.upsert_sessions(batch.body)
        finally:
            self.status.upload_seconds.observe(trio.current_time() - started)

    # -- what differs between live and queued batches --

    async def stored(self, batch: Batch[R]) -> None:
        raise NotImplementedError

    async def refused(self, batch: Batch[R], error: UpstreamError) -> None:
        raise NotImplementedError

    async def upstream_unavailable(self, batch: Batch[R], error: UpstreamError | None) -> None:
        raise NotImplementedError

    async def spill(self, batch: Batch[R]) -> None:
        raise NotImplementedError

    # -- shared --

    async def dead_letter(
        self,
        record: R,
        superseded: Sequence[FileVersion],
        reason: str,
        error: UpstreamError,
        *,
        attempts: int,
    ) -> None:
        """The one place a refused record goes to the dead letter, live or queued."""
        await self.ledger.dead_letter(
            record,
            superseded,
            reason=reason,
            status=error.status,
            code=error.code,
            message=error.message,
            attempts=attempts,
        )
        pc_id, path = record.version.pc_id, record.version.rel_path
        text = f"dead letter {reason}: {error.message}"
        self.status.activity.add(
            "error", text, pc_id=pc_id, path=path, session_id=record.session_id
        )
        self.status.pc_error(pc_id, f"dead letter: {reason}")
        self.status.sync_events.note(pc_id, "error", path, text)

    async def refusal_counted(
        self, record: R, batch: Batch[R], error: UpstreamError, *, attempts: int
    ) -> bool:
        """Count one refusal of a record by the table; True when it went to the dead letter."""
        if attempts > self.max_retries:
            await self.dead_letter(
                record, [v for _, v in batch.superseded], "refused", error, attempts=attempts
            )
            return True
        log.warning(
            "record_refused",
            pc_id=record.version.pc_id,
            path=record.version.rel_path,
            session_id=str(record.session_id),
            status=error.status,
            code=error.code,
            error=error.message,
            attempts=attempts,
        )
        return False

    def refusal_delay(self, attempts: int) -> float:
        return backoff_delay(
            attempts, base=self.rate_limit_base_delay, cap=REFUSAL_BACKOFF_CAP, rng=self.rng
        )


class LiveDelivery(Delivery[SessionRecord]):
    async def stored(self, batch: Batch[SessionRecord]) -> None:
        await self.ledger.acknowledge(batch.versions)
        note_stored(self.status, batch)
        log.debug("batch_stored", records=len(batch), superseded=len(batch.superseded))

    async def refused(self, batch: Batch[SessionRecord], error: UpstreamError) -> None:
        # the first refusal: retried from the queue with backoff, so the live path never waits
        record = batch.records[0]
        if await self.refusal_counted(record, batch, error, attempts=1):
            return
        await self.ledger.enqueue(
            batch.records,
            batch.versions,
            error=error.summary,
            attempts={record.key: 1},
            delay=self.refusal_delay(1),
        )

    async def upstream_unavailable(
        self, batch: Batch[SessionRecord], error: UpstreamError | None
    ) -> None:
        await self.ledger.enqueue(
            batch.records, batch.versions, error=error.summary if error else self.gate.state
        )
        log.info("batch_queued", records=len(batch), upstream=self.gate.state)
        self.status.activity.add("queued", f"{len(batch)} sessions queued ({self.gate.state})")

    async def spill(self, batch: Batch[SessionRecord]) -> None:
        await self.ledger.enqueue(batch.records, batch.versions, error="shutdown", spill=True)


class QueuedDelivery(Delivery[QueuedRecord]):
    stop_on_trouble: ClassVar[bool] = True

    async def stored(self, batch: Batch[QueuedRecord]) -> None:
        await self.ledger.store.remove_queued(batch.records)
        self.ledger.made_room()
        note_stored(self.status, batch)
        log.info("queue_drained", records=len(batch))

    async def refused(self, batch: Batch[QueuedRecord], error: UpstreamError) -> None:
        record = batch.records[0]
        attempts = record.attempts + 1
        if await self.refusal_counted(record, batch, error, attempts=attempts):
            self.ledger.made_room()
            return
        await self.ledger.store.retry_later(
            record, attempts, self.refusal_delay(attempts), error.summary
        )

    async def upstream_unavailable(
        self, batch: Batch[QueuedRecord], error: UpstreamError | None
    ) -> None:
        return None  # the rows stay queued

    async def spill(self, batch: Batch[QueuedRecord]) -> None:
        return None  # already durable


@dataclass
class Uploader:
    delivery: LiveDelivery

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[Batch[SessionRecord]],
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
                await self.delivery.deliver(batch)
