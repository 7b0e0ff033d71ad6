"""Reconciliation's shell: page the table, read the winners again, queue what the table lacks.

The comparison is `reconciliation.plan` (pure). What is re-sent goes into the offline queue and
out through the drainer: the same batching, error policy and keep-newest stamps as any record,
so a pass needs no delivery of its own and survives an outage like everything else. A winner is
read again from the NAS and queued only when its bytes are still the ones acknowledged: a file
that changed since is the scanner's to send, and reconciliation never sends older bytes.

`Reconciler` is the agent's periodic pass (`GFX_SYNC_RECONCILE_INTERVAL`, hourly by default);
`trio-gfxsync reconcile` runs the same pass once, as a dry run unless told to queue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ..errors import StoreError, UpstreamError
from ..logs import get_logger
from ..nas_calls import NasCalls, NasHung
from ..observe.upstream import Upstream
from ..pokergfx import SessionRecord, restamp
from ..reconciliation import Plan, Resend, plan
from ..state.ledger import FileLedger
from ..state.store import Store
from ..targets.base import Target
from .reader import ReadOutcome, Unreadable, read_change
from .scanner import WatchedPc
from .tracker import FileChange, reread

log = get_logger("reconcile")

PAGE_ROWS = 1000  # what Supabase answers at most per request
QUEUE_CHUNK_BYTES = 16 * 2**20  # rows read again, held before they are queued


async def table_hashes(target: Target, pc_id: str) -> dict[int, str | None]:
    """Every (session_id, file_hash) of a PC in the table, page by page (by key, not offset)."""
    stored: dict[int, str | None] = {}
    after: int | None = None
    while True:
        page = await target.stored_hashes(pc_id, after, PAGE_ROWS)
        if not page:
            return stored
        stored.update(page)
        last = max(session_id for session_id, _ in page)
        if after is not None and last <= after:
            return stored  # a server that ignores the filter would page for ever
        after = last


async def plan_for(
    store: Store, target: Target, pc_id: str, in_flight: set[int] | None = None
) -> Plan:
    # the table is read last: a record acknowledged meanwhile is then already in it
    copies = await store.acked_copies(pc_id)
    waiting = await store.waiting_sessions(pc_id)
    stored = await table_hashes(target, pc_id)
    return plan(pc_id, copies, stored, waiting | (in_flight or set()))


# how a winner is read again: blocking `read_change` run somewhere, within a deadline
ReadAgain = Callable[[Path, FileChange], Awaitable[ReadOutcome]]


@dataclass
class Resent:
    queued: int = 0
    changed: int = 0  # the file changed or went since it was acknowledged: the scanner's
    unreadable: int = 0


async def read_again(
    root: Path,
    pc_id: str,
    resends: Sequence[Resend],
    max_file_bytes: int,
    queue: Callable[[list[SessionRecord]], Awaitable[None]],
    stamp: Callable[[], int],
    read: ReadAgain,
) -> Resent:
    """Read each winner again and queue it, in chunks bounded in bytes. `stamp` issues the
    version stamp of each (keep_newest.StampClock): the table skips a smaller one, and the
    skip is resolved against the NAS (delivery/skipped.py). NasHung when the NAS stops
    answering: the pass ends for this PC (the next one plans again)."""
    result = Resent()
    chunk: list[SessionRecord] = []
    held = 0
    for resend in resends:
        change = reread(pc_id, resend.rel_path, resend.stat, live=False)
        outcome = await read(root / resend.rel_path, change)
        if not isinstance(outcome, SessionRecord):
            # still being written, gone, or unreadable now: the scanner and reader see to it
            if isinstance(outcome, Unreadable):
                result.unreadable += 1
            else:
                result.changed += 1
            continue
        if outcome.version.sha256 != resend.sha256:
            result.changed += 1
            continue
        chunk.append(restamp(outcome, stamp()))
        held += len(outcome.row)
        if held >= QUEUE_CHUNK_BYTES:
            await queue(chunk)
            result.queued += len(chunk)
            chunk, held = [], 0
    if chunk:
        await queue(chunk)
        result.queued += len(chunk)
    return result


def nas_read_again(nas: NasCalls, pc_id: str, max_file_bytes: int) -> ReadAgain:
    """A one-shot command's way: a NAS thread with the deadline, one read of the PC out."""

    async def read(path: Path, change: FileChange) -> ReadOutcome:
        return await nas.call(("read", pc_id), read_change, path, change, max_file_bytes, None)

    return read


@dataclass
class Reconciler:
    """The agent's periodic pass, in the intake nursery (shutdown cancels it with the scanners)."""

    ledger: FileLedger
    target: Target
    watched: dict[str, WatchedPc]  # the registry watcher's
    upstream: Callable[[], Upstream]
    interval: float
    max_file_bytes: int

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            await self.reconcile()

    async def reconcile(self) -> None:
        if self.upstream() != Upstream.CONNECTED:
            log.info("reconcile_skipped", upstream=str(self.upstream()))
            return  # the drainer's probe tells when it is back; the next pass looks again
        for pc_id, pc in list(self.watched.items()):
            try:
                found = await plan_for(
                    self.ledger.store, self.target, pc_id, set(pc.tracker.inflight)
                )
            except UpstreamError as exc:
                log.warning("reconcile_failed", pc_id=pc_id, error=exc.summary)
                return
            except (sqlite3.Error, StoreError) as exc:
                # an extra pass, not a stage: a locked or failing queue database ends this
                # pass (the uploads report it); the next hour tries again
                log.warning("reconcile_failed", pc_id=pc_id, error=f"{type(exc).__name__}: {exc}")
                return
            resent = Resent()
            if found.resend:
                try:
                    resent = await read_again(
                        pc.root,
                        pc_id,
                        found.resend,
                        self.max_file_bytes,
                        self._queue,
                        self.ledger.issue_stamp,
                        self._reader(pc),
                    )
                except NasHung as exc:
                    # its PC shows it hung; the other PCs are looked at all the same
                    log.warning("reconcile_failed", pc_id=pc_id, error=exc.reason)
                    continue
            (log.warning if found.resend else log.debug)(
                "reconcile_pass",
                pc_id=pc_id,
                on_nas=found.on_nas,
                in_table=found.in_table,
                missing=found.missing,
                different=found.different,
                waiting=found.busy,
                queued=resent.queued,
                changed=resent.changed,
                unreadable=resent.unreadable,
            )

    def _reader(self, pc: WatchedPc) -> ReadAgain:
        """One of the PC's reads: its turn after the readers', with the deadline."""
        max_file_bytes = self.max_file_bytes

        async def read(path: Path, change: FileChange) -> ReadOutcome:
            async with pc.reads.exclusive():
                return await pc.reads.read(
                    read_change, path, change, max_file_bytes, None, change=None
                )

        return read

    async def _queue(self, records: list[SessionRecord]) -> None:
        await self.ledger.enqueue(records, [], error=None, front=True)
