"""The reconciler's shell on real files: what it reads again from the NAS is queued only while
its bytes are still the acknowledged ones (README, Reconcile); a file that changed since is the
scanner's to send (`changed`)."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.support.tree import make_session, write_session
from trio_gfxsync.intake.pc_reads import PcReads
from trio_gfxsync.intake.reader import ReadOutcome, read_change
from trio_gfxsync.intake.reconciler import Reconciler, read_again
from trio_gfxsync.intake.scanner import WatchedPc
from trio_gfxsync.intake.tracker import FileChange, FileTracker, reread
from trio_gfxsync.nas_calls import NasCalls
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.pokergfx import SessionRecord
from trio_gfxsync.reconciliation import AckedCopy, Resend
from trio_gfxsync.records import file_stat
from trio_gfxsync.state.ledger import FileLedger
from trio_gfxsync.state.store import Store
from trio_gfxsync.targets.sqlite import SqliteTarget

MAX_FILE_BYTES = 1 << 22
HOUR = 3600.0


def acknowledged(root: Path, rel: str, session_id: int) -> Resend:
    """What the agent acknowledged of the file as it is now: its stat and the sha of its bytes."""
    path = root / rel
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Resend(session_id, rel, file_stat(os.stat(path)), sha, "missing")


async def test_only_bytes_still_equal_to_the_acknowledged_ones_are_queued(tmp_path: Path) -> None:
    root = tmp_path / "PC01"
    rng = random.Random(3)
    same, grown, gone = (make_session(n, 2, rng) for n in (1, 2, 3))
    for session in (same, grown, gone):
        write_session(root / "1016" / session.file_name, session)
    resends = [acknowledged(root, f"1016/{s.file_name}", s.session_id) for s in (same, grown, gone)]
    acked_sha = {r.session_id: r.sha256 for r in resends}
    # after the acknowledgement: one file rewritten with a hand more, one deleted
    grown.hands.append(dict(grown.hands[-1], HandNum=3))
    write_session(root / "1016" / grown.file_name, grown)
    (root / "1016" / gone.file_name).unlink()

    queued: list[SessionRecord] = []

    async def queue(records: list[SessionRecord]) -> None:
        queued.extend(records)

    async def read(path: Path, change: FileChange) -> ReadOutcome:
        return read_change(path, change, MAX_FILE_BYTES)

    result = await read_again(root, "PC01", resends, MAX_FILE_BYTES, queue, lambda: 7, read)
    assert (result.queued, result.changed, result.unreadable) == (1, 2, 0)
    assert [(r.session_id, r.hand_count) for r in queued] == [(same.session_id, 2)]
    assert queued[0].version.sha256 == acked_sha[same.session_id]
    assert queued[0].version_stamp == 7


async def test_the_periodic_pass_survives_a_failing_queue_read_and_the_next_one_resends(
    tmp_path: Path, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """README, Reconcile: "the pass survives a failing queue read". The hourly pass's read of
    the acknowledged files fails once (the queue database locked); the task logs it and lives
    on, and the next hour's pass queues the row the table lacks."""
    # only the reconciler's own hour is pending when the clock jumps: the store's and the
    # NAS's threads answer well within a second of real time, so the NAS deadline never fires
    mock_clock.autojump_threshold = 1.0
    root = tmp_path / "PC01"
    session = make_session(1, 2, random.Random(5))
    rel = f"1016/{session.file_name}"
    write_session(root / rel, session)
    record = read_change(
        root / rel, reread("PC01", rel, file_stat(os.stat(root / rel)), live=False), MAX_FILE_BYTES
    )
    assert isinstance(record, SessionRecord)
    target = SqliteTarget(tmp_path / "target.db")
    await target.probe()  # the table exists, without the acknowledged row: deleted by hand
    store = await Store.open(tmp_path / "pending.db")
    try:
        await store.acknowledge([record.version])
        real_read = store.acked_copies
        reads: list[float] = []

        async def locked_once(pc_id: str) -> list[AckedCopy]:
            reads.append(trio.current_time())
            if len(reads) == 1:
                raise sqlite3.OperationalError("database is locked")
            return await real_read(pc_id)

        store.acked_copies = locked_once  # type: ignore[method-assign]
        tracker = FileTracker(pc_id="PC01", acked={})
        reads_of_pc = PcReads("PC01", NasCalls(timeout=60), give_back=lambda change: None)
        reconciler = Reconciler(
            FileLedger(store),
            target,
            {"PC01": WatchedPc(root, tracker, reads_of_pc)},
            lambda: Upstream.CONNECTED,
            HOUR,
            MAX_FILE_BYTES,
        )
        with caplog.at_level(logging.DEBUG, logger="trio_gfxsync.reconcile"):
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                await nursery.start(reconciler.run)
                await trio.sleep(2.5 * HOUR)  # two passes
                nursery.cancel_scope.cancel()
        assert [t - start for t in reads] == [HOUR, 2 * HOUR]
        events = [(r.msg, r.gfx_fields) for r in caplog.records]  # type: ignore[attr-defined]
        assert events[0] == (
            "reconcile_failed",
            {"pc_id": "PC01", "error": "OperationalError: database is locked"},
        )
        assert events[1][0] == "reconcile_pass"
        assert (events[1][1]["missing"], events[1][1]["queued"]) == (1, 1)
        queued = await store.due(10, 1 << 30)
        assert [(q.version.pc_id, q.session_id) for q in queued] == [("PC01", session.session_id)]
    finally:
        await store.close()
