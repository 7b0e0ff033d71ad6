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
import time
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
from ..policy import (
    Action,
    Verdict,
    backoff_delay,
    decide,
    failure_reason,
    maybe_the_records,
    slow_down_delay,
)
from ..records import FileVersion, Written
from ..state.ledger import FileLedger
from ..state.rows import QueuedRecord, RecordFailure
from ..targets.base import Target
from .batcher import SPILL_TIMEOUT, UploadSlots
from .batching import Batch, R, partition, split
from .gate import PAUSE_STATE, UpstreamGate
from .skipped import Reconfirm, SkipResolver

log = get_logger("uploader")

SLOW_DOWN_CAP = 60.0  # longest self-chosen pause between 429/503 retries (Retry-After may exceed)
REFUSAL_BACKOFF_CAP = 60.0
ALONE_BACKOFF_CAP = 60.0  # longest pause between tries of a record that fails alone
# A record failing alone is dead-lettered only after max_retries failures *and* this long: an
# overloaded database must not dead-letter big sessions within minutes.
ALONE_DEAD_LETTER_AFTER = 1800.0


def stamps(batch: Batch[R]) -> list[tuple[tuple[str, int], int]]:
    """(key, stamp) of each stored record: queued copies with a smaller stamp are done."""
    return [(r.key, r.version_stamp) for r in batch.records if r.version_stamp is not None]


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
    reconfirm: Reconfirm | None = None  # the NAS, for rows the table skipped (skipped.py)
    alone: bool = False  # the lane of records that failed alone (failing.py)
    # queued batches stop at the first upstream trouble (they stay queued, the drainer probes)
    stop_on_trouble: ClassVar[bool] = False
    last_verdict: Verdict | None = None  # of the last answer, for the drainer's judgement
    last_error_kind: str | None = None

    def __post_init__(self) -> None:
        self.skips: SkipResolver[R] = SkipResolver(
            self.target, self.gate, self.ledger, self.status, self.reconfirm
        )

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
                sent_at = trio.current_time()
                answer: list[Written] = []
                verdict, error = await self.gate.send(
                    partial(self._upsert, current, answer), alone=self.alone
                )
                self.last_verdict = verdict
                self.last_error_kind = error.kind if error is not None else None
                action = decide(
                    verdict,
                    len(current),
                    slow_tries,
                    self.rate_limit_max_retries,
                    maybe_records=error is not None
                    and maybe_the_records(error.status, error.code, error.kind),
                )
                if action is Action.ACKNOWLEDGE:
                    written, skipped = partition(current, answer[0])
                    if written.records:
                        await self.stored(written)
                    if skipped.records:
                        # a 2xx for rows the keep-newest trigger skipped: not stored (skipped.py)
                        await self.skips.resolve(skipped, self)
                    pending.popleft()
                    self.gate.set_state(Upstream.CONNECTED)
                    self.status.consecutive_upload_failures = 0
                    continue
                assert error is not None, "only a stored answer comes without an error"
                if action is Action.ISOLATE:
                    if not await self.upstream_answers(sent_at):
                        self.status.consecutive_upload_failures += 1
                        self.gate.set_state(Upstream.OFFLINE, error.summary)
                        await self.upstream_unavailable(current, error)
                        pending.popleft()
                        if self.stop_on_trouble:
                            return
                    elif len(current) > 1:
                        pending.popleft()
                        pending.extendleft(reversed(split(current)))
                    else:
                        # upstream answers others: this record's trouble is its own
                        await self.failed_alone(current, error)
                        pending.popleft()
                    continue
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

    async def _upsert(self, batch: Batch[R], answer: list[Written]) -> None:
        started = trio.current_time()
        try:
            answer.append(await self.target.upsert_sessions(batch.body))
        finally:
            self.status.upload_seconds.observe(trio.current_time() - started)

    async def upstream_answers(self, since: float) -> bool:
        """Did upstream answer a request after `since` (a probe now if nothing else did)? Then
        a failure of a request sent at `since` was that request's own."""
        if self.gate.last_answer_ok > since:
            return True
        verdict, _ = await self.gate.send(self.target.probe)
        return verdict is Verdict.STORED

    def failure_of(self, error: UpstreamError) -> RecordFailure:
        return RecordFailure(
            failure_reason(error.status, error.code), error.status, error.code, error.message
        )

    def alone_delay(self, failures: int) -> float:
        return backoff_delay(
            failures - 1, base=self.rate_limit_base_delay, cap=ALONE_BACKOFF_CAP, rng=self.rng
        )

    def note_failed_alone(self, record: R, failure: RecordFailure, failures: int) -> None:
        v = record.version
        log.warning(
            "record_failing",
            pc_id=v.pc_id,
            path=v.rel_path,
            session_id=str(record.session_id),
            reason=failure.reason,
            status=failure.status,
            code=failure.code,
            error=failure.message,
            failures=failures,
        )
        self.status.activity.add(
            "error",
            f"failing alone ({failure.reason}): {failure.message}",
            pc_id=v.pc_id,
            path=v.rel_path,
            session_id=record.session_id,
        )

    # -- what differs between live and queued batches --

    async def stored(self, batch: Batch[R]) -> None:
        raise NotImplementedError

    async def refused(self, batch: Batch[R], error: UpstreamError) -> None:
        raise NotImplementedError

    async def upstream_unavailable(self, batch: Batch[R], error: UpstreamError | None) -> None:
        raise NotImplementedError

    async def spill(self, batch: Batch[R]) -> None:
        raise NotImplementedError

    async def failed_alone(self, batch: Batch[R], error: UpstreamError) -> None:
        """A single record failed while upstream answers others: its own backoff, apart from
        the rest of the queue; the gate and the upstream state are left alone."""
        raise NotImplementedError

    # -- skipped rows (skipped.SkipOutcomes) --

    async def superseded(self, batch: Batch[R]) -> None:
        raise NotImplementedError

    async def unsettled(self, batch: Batch[R], delay: float) -> None:
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
        await self.ledger.acknowledge(batch.versions, stored=stamps(batch))
        note_stored(self.status, batch)
        log.debug("batch_stored", records=len(batch), superseded=len(batch.superseded))

    async def superseded(self, batch: Batch[SessionRecord]) -> None:
        await self.ledger.acknowledge(batch.versions)

    async def unsettled(self, batch: Batch[SessionRecord], delay: float) -> None:
        await self.ledger.enqueue(
            batch.records, batch.versions, error="skipped by keep-newest, unsettled", delay=delay
        )

    async def failed_alone(self, batch: Batch[SessionRecord], error: UpstreamError) -> None:
        failure = self.failure_of(error)
        await self.ledger.enqueue(
            batch.records,
            batch.versions,
            error=error.summary,
            failure=failure,
            delay=self.alone_delay(1),
        )
        self.note_failed_alone(batch.records[0], failure, 1)

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

    async def superseded(self, batch: Batch[QueuedRecord]) -> None:
        await self.ledger.store.remove_queued(batch.records)  # its file version is acknowledged
        self.ledger.made_room()

    async def unsettled(self, batch: Batch[QueuedRecord], delay: float) -> None:
        await self.ledger.store.postpone(batch.records, delay)

    async def failed_alone(self, batch: Batch[QueuedRecord], error: UpstreamError) -> None:
        record = batch.records[0]
        failure = self.failure_of(error)
        failures = record.failures + 1
        since = record.first_failed_at if record.first_failed_at is not None else time.time()
        if failures >= self.max_retries and time.time() - since >= ALONE_DEAD_LETTER_AFTER:
            await self.dead_letter(record, [], failure.reason, error, attempts=failures)
            self.ledger.made_room()
            return
        await self.ledger.store.failed_alone(record, failure, self.alone_delay(failures))
        self.note_failed_alone(record, failure, failures)

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
