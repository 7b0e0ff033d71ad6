"""Stage-level tests: the reader's read outcomes on real files, the batcher stage's timing under
trio's autojump clock, the alert book, and the log summary of repeated errors."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import orjson
import trio
import trio.testing

from tests.support.records import parsed_record
from trio_gfxsync.delivery.batcher import Batcher, UploadSlots
from trio_gfxsync.delivery.batching import Batch, BatchBuffer
from trio_gfxsync.errors import NotJson
from trio_gfxsync.intake.reader import Unreadable, Unsettled, Vanished, read_change
from trio_gfxsync.intake.scanner import FileChange
from trio_gfxsync.logs import RepeatSummary
from trio_gfxsync.observe.alerts import ALERT_NAMES, AlertBook, Figures, Thresholds, evaluate
from trio_gfxsync.observe.health import HealthInputs, assess
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.pokergfx import SessionRecord


def change_for(path: Path, rel: str, *, settled: bool) -> FileChange:
    st = path.stat()
    return FileChange(
        "PC01",
        rel,
        st.st_size,
        st.st_mtime_ns,
        "created",
        settled,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
    )


def test_reader_outcomes_on_real_files(tmp_path: Path) -> None:
    good = tmp_path / "GameID=5.json"
    good.write_bytes(orjson.dumps({"ID": 5, "Hands": [{}, {}]}))
    outcome = read_change(good, change_for(good, good.name, settled=False), 10**6)
    assert isinstance(outcome, SessionRecord) and outcome.hand_count == 2

    half = tmp_path / "GameID=6.json"
    half.write_bytes(b'{"ID": 6, "Hands": [')  # PokerGFX caught mid-rewrite
    assert isinstance(
        read_change(half, change_for(half, half.name, settled=False), 10**6), Unsettled
    )
    broken = read_change(half, change_for(half, half.name, settled=True), 10**6)
    assert isinstance(broken, Unreadable) and isinstance(broken.error, NotJson)
    assert len(broken.sha256) == 64

    moved = change_for(half, half.name, settled=True)
    os.utime(half, ns=(moved.mtime_ns + 10**9, moved.mtime_ns + 10**9))  # changed since the poll
    assert isinstance(read_change(half, moved, 10**6), Unsettled)

    big = tmp_path / "GameID=7.json"
    big.write_bytes(b" " * 5000)
    assert isinstance(read_change(big, change_for(big, big.name, settled=False), 4096), Unsettled)
    too_large = read_change(big, change_for(big, big.name, settled=True), 4096)
    assert isinstance(too_large, Unreadable) and too_large.error.reason == "too_large"

    gone = change_for(good, good.name, settled=True)
    good.unlink()
    assert isinstance(read_change(good, gone, 10**6), Vanished)


def rec(n: int, pc: str = "PC01") -> SessionRecord:
    return parsed_record(n, pc=pc, mtime_ns=n)


async def run_batcher_scenario(
    arrivals: list[tuple[float, int]], upload_seconds: float
) -> list[tuple[float, list[int]]]:
    """Feed records at the given times; one uploader takes `upload_seconds` per batch.
    Returns (time the batch was handed over, session numbers)."""
    status = AgentStatus()
    slots = UploadSlots()
    batcher = Batcher(
        BatchBuffer(batch_size=3, max_batch_bytes=10**6, linger=0.25, flush_interval=5.0),
        slots,
        status,
        None,  # type: ignore[arg-type]  # no spill in this scenario
    )
    record_send, record_recv = trio.open_memory_channel[SessionRecord](100)
    batch_send, batch_recv = trio.open_memory_channel[Batch](0)
    handed: list[tuple[float, list[int]]] = []
    start = trio.current_time()

    async def uploader() -> None:
        async with batch_recv:
            while True:
                slots.set_free(+1)
                try:
                    batch = await batch_recv.receive()
                except trio.EndOfChannel:
                    return
                finally:
                    slots.set_free(-1)
                handed.append(
                    (trio.current_time() - start, [r.session_id - 10**17 for r in batch.records])
                )
                await trio.sleep(upload_seconds)

    async def feeder() -> None:
        async with record_send:
            for at, n in arrivals:
                await trio.sleep_until(start + at)
                await record_send.send(rec(n))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploader)
        nursery.start_soon(feeder)
        nursery.start_soon(batcher.run, record_recv, batch_send)
    return handed


async def test_batcher_lingers_when_free_and_fills_while_busy(autojump_clock) -> None:
    handed = await run_batcher_scenario([(0.0, 1), (0.1, 2), (1.0, 3), (1.1, 4), (1.2, 5)], 2.0)
    # record 1 waits the linger (0.25 s) and takes record 2 along; the uploader is then busy
    # for 2 s, records 3-5 fill a batch (batch_size 3), which goes the moment it is free
    assert handed[0][1] == [1, 2] and abs(handed[0][0] - 0.25) < 1e-6
    assert handed[1][1] == [3, 4, 5] and abs(handed[1][0] - 2.25) < 1e-6


async def test_batcher_flushes_at_once_when_intake_ends(autojump_clock) -> None:
    handed = await run_batcher_scenario([(0.0, 1)], 0.0)
    assert handed == [(0.0, [1])]  # end of stream: no linger


def test_alert_book_reports_start_and_clear_once() -> None:
    t = Thresholds()
    quiet = Figures(10.0, 100.0, 0, 0, 0, 0, 0)
    loud = Figures(85.0, 600.0, 600, 6000, 12, 5, 2, ("PC09",))
    names = {a.name: a.level for a in evaluate(loud, t)}
    assert names == {
        "nas_disk_usage": "warn",
        "agent_memory": "warn",
        "batch_pending": "warn",
        "offline_pending": "critical",
        "records_retried": "review",
        "upload_failures": "warn",
        "dead_letters": "review",
        "watch_path_missing": "warn",
    }
    book = AlertBook()
    started, cleared = book.update(evaluate(loud, t), now=1.0)
    assert len(started) == 8 and cleared == []
    started, cleared = book.update(evaluate(loud, t), now=2.0)
    assert started == [] and cleared == []  # still on: not logged again
    assert book.active["dead_letters"][1] == 1.0  # since when
    started, cleared = book.update(evaluate(quiet, t), now=3.0)
    assert started == [] and len(cleared) == 8


def test_repeated_errors_are_logged_once_then_summarised() -> None:
    now = [0.0]
    summary = RepeatSummary(window=60.0, clock=lambda: now[0])

    def record(event: str, **fields: object) -> logging.LogRecord:
        r = logging.LogRecord("trio_gfxsync.x", logging.ERROR, __file__, 1, event, None, None)
        r.gfx_fields = fields  # type: ignore[attr-defined]
        return r

    assert summary.filter(record("pc_scan_failed", pc_id="PC01", error="gone"))
    for _ in range(29):  # every 2 s poll for a minute
        now[0] += 2
        assert not summary.filter(record("pc_scan_failed", pc_id="PC01", error="gone"))
    assert summary.filter(record("pc_scan_failed", pc_id="PC02", error="gone"))  # other PC
    now[0] += 2
    again = record("pc_scan_failed", pc_id="PC01", error="gone")
    assert summary.filter(again)
    assert again.gfx_fields["repeated"] == 29  # type: ignore[attr-defined]
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "file_created", None, None)
    info.gfx_fields = {}  # type: ignore[attr-defined]
    assert all(summary.filter(info) for _ in range(3))  # routine events are never held back


async def test_an_unreadable_sub_folder_is_not_mistaken_for_deleted_files(
    tmp_path: Path, monkeypatch
) -> None:
    """A day folder that cannot be listed keeps its files' last known state (no forget, no
    re-send when it comes back) and is named, while the rest of the PC is scanned."""
    from trio_gfxsync.intake import folder_index
    from trio_gfxsync.intake.change_queue import ChangeQueue
    from trio_gfxsync.intake.folder_index import FolderIndex
    from trio_gfxsync.intake.scanner import NasPoller, PcScan, ScanTiming, compile_pattern
    from trio_gfxsync.intake.tracker import FileTracker
    from trio_gfxsync.records import make_stat

    acked = {}
    for day in ("1016", "1017"):
        path = tmp_path / day / f"GameID={day}.json"
        path.parent.mkdir()
        path.write_bytes(b"{}")
        st = path.stat()
        acked[f"{day}/{path.name}"] = make_stat(2, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    tracker = FileTracker(pc_id="PC01", acked=dict(acked))
    forgotten: list[list[str]] = []

    async def on_gone(pc_id: str, rels: list[str]) -> None:
        forgotten.append(rels)

    # tests run as root, who can list any folder: the SMB permission error is injected
    real_scandir = os.scandir

    def scandir(folder):  # type: ignore[no-untyped-def]
        if str(folder).endswith("1017"):
            raise PermissionError(13, "Permission denied", str(folder))
        return real_scandir(folder)

    monkeypatch.setattr(folder_index.os, "scandir", scandir)
    timing = ScanTiming(poll_interval=0.1, hot_poll_interval=0.05, full_sweep_interval=0.3)
    scan = PcScan(
        tracker, FolderIndex(tmp_path, compile_pattern("*.json"), settle_seconds=0.1), timing
    )
    poller = NasPoller(timing)
    poller.scans["PC01"] = scan
    queue = ChangeQueue()
    stats = scan.stats

    async def polls_after(count: int) -> None:
        target = stats.polls + count
        while stats.polls < target:
            await trio.sleep(0.02)

    with trio.fail_after(20), queue.producer() as producer:
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            await nursery.start(partial(scan.run, producer, on_gone=on_gone))
            await polls_after(3)  # several polls with 1017 unreadable
            assert stats.problems == {"1017": "Permission denied"}
            assert forgotten == [] and set(tracker.acked) == set(acked)
            monkeypatch.undo()  # the SMB share lets us in again
            await polls_after(3)
            assert stats.problems == {}
            nursery.cancel_scope.cancel()
    assert forgotten == []
    assert set(tracker.acked) == set(acked)
    assert len(queue) == 0 and not scan.backlog  # nothing re-sent, then or since


def test_quarantined_and_unreadable_files_are_review_alerts_that_degrade_health() -> None:
    t = Thresholds()
    quiet = Figures(10.0, 100.0, 0, 0, 0, 0, 0)
    assert evaluate(quiet, t) == []
    for figures, name in (
        (replace(quiet, quarantined=1), "quarantined_files"),
        (replace(quiet, unreadable_files=2), "files_unreadable"),
    ):
        (alert,) = evaluate(figures, t)
        assert (alert.name, alert.level) == (name, "review")
        assert name in ALERT_NAMES
        inputs = HealthInputs(
            upstream=Upstream.CONNECTED,
            upstream_reason=None,
            pending=0,
            store_problem=None,
            failure=None,
            registry_error=None,
            pcs=(),
            alerts=(alert,),
        )
        verdict = assess(inputs)
        assert (verdict.status, verdict.http_code) == ("degraded", 200)
        assert any(name in reason for reason in verdict.reasons)


async def test_a_walks_backlog_waits_as_the_index_stat_and_goes_out_as_changes(
    tmp_path: Path,
) -> None:
    """What the first walk finds waits in the backlog as the index's own stat tuple (no
    FileChange per file while 10^5 wait), and still goes out newest first as backfill
    changes of kind created, each one the version the tracker holds as reported."""
    from trio_gfxsync.intake.change_queue import ChangeQueue
    from trio_gfxsync.intake.folder_index import FolderIndex
    from trio_gfxsync.intake.scanner import PcScan, ScanTiming, compile_pattern
    from trio_gfxsync.intake.tracker import FileTracker

    for n in range(6):
        path = tmp_path / "1016" / f"GameID={n}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"{}" * (n + 1))
        os.utime(path, ns=(n * 10**9, n * 10**9))
    tracker = FileTracker(pc_id="PC01", acked={})
    index = FolderIndex(tmp_path, compile_pattern("*.json"), settle_seconds=60)
    timing = ScanTiming(poll_interval=60, hot_poll_interval=60, full_sweep_interval=600)
    scan = PcScan(tracker, index, timing)
    queue = ChangeQueue(live_limit=8, backfill_limit=2)
    out: list[FileChange] = []
    with trio.fail_after(10), queue.producer() as producer:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(scan.run, producer))
            waiting = dict(scan.backlog)
            assert set(waiting) == set(index.files) and len(waiting) >= 4  # 2 may be queued
            for rel, entry in waiting.items():
                assert entry is index.files[rel]  # the one tuple, shared
            while len(out) < 6:
                out.append(await queue.get())
            nursery.cancel_scope.cancel()
    assert [c.rel_path for c in out] == [f"1016/GameID={n}.json" for n in reversed(range(6))]
    for change in out:
        assert change.kind == "created" and not change.live and not change.settled
        assert change.stat == index.files[change.rel_path] == tracker.reported[change.rel_path]
    assert not scan.backlog


def test_malloc_tuning_applies_on_glibc_and_yields_to_the_operator(monkeypatch) -> None:
    import platform

    from trio_gfxsync.malloc_tuning import SETTINGS, tune_malloc

    variables = [variable for _, variable, _ in SETTINGS]
    on_glibc = platform.libc_ver()[0] == "glibc"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    applied = tune_malloc()
    assert "MALLOC_ARENA_MAX" not in applied  # the operator's setting wins
    assert applied == (variables[1:] if on_glibc else [])
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert tune_malloc() == (variables if on_glibc else [])
