"""Every NAS call has a deadline, and hung threads starve nothing (issue 22, "Every NAS call
has a deadline"): `NasCalls` and one PC's reads (`PcReads`), with real threads blocked on real
events standing in for a stale mount (a thread blocked in a read is a thread blocked)."""

from __future__ import annotations

import threading

import pytest
import trio

from trio_gfxsync.intake.pc_reads import PcReads
from trio_gfxsync.intake.tracker import FileChange
from trio_gfxsync.nas_calls import NasCalls, NasHung


class Mount:
    """Calls that block until the mount 'answers again' (a real thread, really blocked)."""

    def __init__(self) -> None:
        self.answering = threading.Event()
        self.entered = 0
        self.lock = threading.Lock()

    def hang(self, value: object = None) -> object:
        with self.lock:
            self.entered += 1
        self.answering.wait(30)
        return value


def change(rel: str, *, live: bool = True) -> FileChange:
    return FileChange("PC02", rel, 10, 1, "created", True, live)


async def test_a_call_past_its_deadline_raises_and_the_next_one_waits_for_no_thread() -> None:
    mount = Mount()
    nas = NasCalls(timeout=0.2)
    with pytest.raises(NasHung, match=r"within 0\.2 s"):
        await nas.call(("read", "PC02"), mount.hang)
    assert nas.hung(("read", "PC02")) and nas.abandoned == 1
    for _ in range(5):  # every poll would have hung one more thread on main
        with pytest.raises(NasHung):
            await nas.call(("read", "PC02"), mount.hang)
    assert mount.entered == 1, "no second thread while the first has not returned"
    # another key is not held up by it
    assert await nas.call(("read", "PC01"), lambda: "PC01 answers") == "PC01 answers"
    returned = trio.Event()
    assert nas.when_returned(("read", "PC02"), returned.set)
    mount.answering.set()
    with trio.fail_after(10):
        await returned.wait()
    assert not nas.hung(("read", "PC02")) and nas.abandoned == 0
    assert await nas.call(("read", "PC02"), mount.hang, "answers again") == "answers again"


async def test_hung_threads_hold_no_token_of_the_calls_that_follow_nor_of_trios_default() -> None:
    mount = Mount()
    nas = NasCalls(timeout=0.2, calls=2)
    default = trio.to_thread.current_default_thread_limiter()
    before = default.borrowed_tokens
    for pc in range(6):  # more hung PCs than the NAS limiter has tokens
        with pytest.raises(NasHung):
            await nas.call(("read", f"PC{pc}"), mount.hang)
    assert mount.entered == 6
    assert default.borrowed_tokens == before, "NAS threads never take trio's default tokens"
    with trio.fail_after(5):  # two calls at once still fit, beside six hung threads
        async with trio.open_nursery() as nursery:
            for pc in ("A", "B"):
                nursery.start_soon(nas.call, ("read", pc), lambda: None)
    mount.answering.set()
    with trio.fail_after(10):
        while nas.abandoned:
            await trio.sleep(0.01)
    assert nas.limiter.total_tokens == 2


async def test_a_cancelled_call_is_abandoned_and_counted_too() -> None:
    mount = Mount()
    nas = NasCalls(timeout=60)
    with trio.move_on_after(0.2):  # a shutdown: cancelled from outside, not by its deadline
        await nas.call(("reconcile",), mount.hang)
    assert nas.hung(("reconcile",)) and nas.abandoned == 1
    mount.answering.set()


# ------------------------------------------------------------------ one PC's reads


def reads_for(nas: NasCalls) -> tuple[PcReads, list[FileChange], list[str | None]]:
    given: list[FileChange] = []
    shown: list[str | None] = []
    return PcReads("PC02", nas, give_back=given.append, show=shown.append), given, shown


async def test_one_read_at_a_time_the_rest_parked_newest_version_and_live_first() -> None:
    reads, given, _ = reads_for(NasCalls(timeout=5))
    assert reads.begin(change("a.json"))
    assert not reads.begin(change("old.json", live=False))
    assert not reads.begin(change("b.json"))
    newer = FileChange("PC02", "b.json", 20, 2, "modified", True, True)
    assert not reads.begin(newer)
    assert reads.next() == newer, "a live change before the backfill, its newest version only"
    assert reads.next() == change("old.json", live=False)
    assert reads.next() is None and not reads.busy
    assert given == []


async def test_a_hung_read_parks_everything_until_its_thread_returns_then_reads_it_again() -> None:
    mount = Mount()
    reads, given, shown = reads_for(NasCalls(timeout=0.2))
    stuck = change("stuck.json")
    assert reads.begin(stuck)
    with pytest.raises(NasHung):
        await reads.read(mount.hang, change=stuck)
    assert reads.hung is not None and shown == [reads.hung]
    assert reads.hung == "a read has not returned within 0.2 s (NAS not answering?)"
    assert reads.next() is None and reads.busy, "the stuck read still holds the PC"
    for rel in ("c.json", "d.json"):
        assert not reads.begin(change(rel)), "parked, not read (and not dropped)"
    backfill_waits = trio.Event()

    async def feeder() -> None:
        await reads.wait_ready()
        backfill_waits.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feeder)
        await trio.sleep(0.3)
        assert not backfill_waits.is_set(), "a hung PC's backfill stays in its scanner"
        assert mount.entered == 1
        mount.answering.set()
        with trio.fail_after(10):
            while reads.hung is not None:
                await trio.sleep(0.01)
        assert shown[-1] is None
        # one change goes back to the readers; whoever takes it reads the others after it
        assert given == [change("c.json")]
        assert reads.begin(given[0])
        assert [reads.next(), reads.next(), reads.next()] == [
            change("d.json"),
            stuck,
            None,
        ], "the stuck change is read again"
    assert backfill_waits.is_set()


async def test_the_reconciler_waits_its_turn_and_a_hung_pc_refuses_it_at_once() -> None:
    mount = Mount()
    reads, _, _ = reads_for(NasCalls(timeout=0.2))
    assert reads.begin(change("a.json"))
    entered = trio.Event()

    async def reconcile() -> None:
        async with reads.exclusive():
            entered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconcile)
        await trio.sleep(0.05)
        assert not entered.is_set(), "one read of the PC at a time, the reconciler's too"
        assert reads.next() is None
    assert entered.is_set() and not reads.busy
    assert reads.begin(change("b.json"))
    with pytest.raises(NasHung):
        await reads.read(mount.hang, change=change("b.json"))
    with pytest.raises(NasHung):
        async with reads.exclusive():
            pass
    mount.answering.set()
