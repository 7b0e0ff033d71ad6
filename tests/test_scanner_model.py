"""Model-based test of the scanner (FolderIndex + FileTracker) on a real temporary folder.

Hypothesis drives random creates, whole-file rewrites, truncations, partial writes, rewrites that
keep both size and mtime, replacements by rename, deletes, new sub-folders and files that must be
ignored; the scanner's first walk, full polls, hot ticks and the passing of time (a fake clock);
and a simulated reader that acknowledges a report, sends it back as "still being written", or
keeps it in flight. After every look the reports are checked against a plain model:

- nothing is reported twice, and a report is the file's current version;
- a change that touches its directory (a new file, a replacement by rename) and a deletion are
  found by the next full poll;
- a rewrite in place is found at the next hot tick if the file is hot, and within one sweep
  in any case: the agent's own slice (`ScanTiming.sweep_slice`) must stat every file within
  FULL_SWEEP_INTERVAL and at least 32 files a poll, so `sweep_polls_bound` polls (written
  from those two promises, not from the code), plus one for the round in progress;
- a file sent back as unsettled is reported again only after its stat has held for SETTLE
  seconds, or, as a version other than the one sent back, unchanged since the look before;
  and then at the first such look.

Directory mtimes here look old to the index (its wall clock runs ahead), so a directory is listed
again only because its stat changed; the racy-mtime rule has a test of its own below.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from trio_gfxsync.intake.folder_index import RACY_SECONDS, FolderIndex, Observation
from trio_gfxsync.intake.scanner import ScanTiming, compile_pattern
from trio_gfxsync.intake.tracker import FileTracker
from trio_gfxsync.records import Stat, make_stat, stat_fields

PATTERN = compile_pattern("*.json")
SETTLE = 2.0
SWEEP_POLLS = 3
POLL_INTERVAL = 2.0
MIN_FILES_A_POLL = 32  # the README's "a small folder is swept in a few polls", as a figure
names = st.text(alphabet="abcdefgh =0123456789", min_size=1, max_size=8).map(
    lambda s: f"GameID={s.strip() or 'x'}.json"
)
folders = st.sampled_from(["", "1016/", "1017/", "1017/late/"])


def sweep_polls_bound(files: int, timing: ScanTiming) -> int:
    """The most polls a file may wait for its sweep stat, from the promises alone: every file
    once per FULL_SWEEP_INTERVAL (that many poll intervals), and at least MIN_FILES_A_POLL
    files a poll (a folder of 32 files is swept at every poll)."""
    by_interval = math.ceil(timing.full_sweep_interval / timing.poll_interval)
    by_minimum = math.ceil(files / MIN_FILES_A_POLL)
    return max(1, min(by_interval, by_minimum))


def disk_stat(path: Path) -> Stat:
    """What the disk says, field by field (the model's own reading), packed as the agent's."""
    st_ = os.stat(path)
    return make_stat(st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_ino)


class ScannerMachine(RuleBasedStateMachine):
    files = Bundle("files")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="scanner-model-"))
        self.now = 1000.0  # the index's monotonic clock
        self.index = FolderIndex(
            self.root,
            PATTERN,
            settle_seconds=SETTLE,
            clock=lambda: self.now,
            wall_clock=lambda: time.time() + 10_000,
        )
        # a small hot set, so that the sweep and the listings have to find the rest
        self.tracker = FileTracker(pc_id="PC01", acked={}, hot_window=5.0, hot_max=2, hot_newest=1)
        self.mtime = 1_700_000_000_000_000_000
        self.started = False
        self.polls = 0
        # the model
        self.stat: dict[str, Stat] = {}  # what is on disk
        self.acked: dict[str, Stat] = {}
        self.in_flight: dict[str, Stat] = {}  # reported, no outcome yet
        self.waiting_settle: dict[str, Stat] = {}  # the version sent back as unsettled
        self.stable_since: dict[str, float] = {}  # when the index first saw the current stat
        self.ever_reported: set[tuple[str, Stat]] = set()
        # changes not reported yet: rel -> ("listed" | "in_place", full polls since)
        self.pending: dict[str, tuple[str, int]] = {}
        self.folder_mtimes: dict[str, int] = {}  # at the last full poll
        self.timing = ScanTiming(poll_interval=POLL_INTERVAL)
        self.most_files = 0  # the largest folder the sweep has had to cover

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the file system --

    def _write(self, rel: str, data: bytes, *, mtime: int | None = None) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        new = rel not in self.stat
        path.write_bytes(data)
        if mtime is None:
            self.mtime += 1_000_003
            mtime = self.mtime
        os.utime(path, ns=(mtime, mtime))
        self._changed(rel, "listed" if new else "in_place")
        return rel

    def _changed(self, rel: str, kind: str) -> None:
        self.stat[rel] = disk_stat(self.root / rel)
        previous = self.pending.get(rel)
        if previous is not None and previous[0] == "listed":
            kind = "listed"  # still new since the last full poll
        self.pending[rel] = (kind, 0 if previous is None else previous[1])

    @initialize(
        target=files,
        existing=st.lists(st.tuples(folders, names, st.integers(0, 300)), max_size=8),
        walk_now=st.booleans(),
        # a sweep of 2 and 3 polls, and the default 300: the 32-file minimum must carry it
        full_sweep_interval=st.sampled_from([4.0, 6.0, 600.0]),
    )
    def files_before_the_start(
        self, existing: list[tuple[str, str, int]], walk_now: bool, full_sweep_interval: float
    ):
        """A NAS that already holds files, acknowledged by an earlier run: none of them is hot
        but the newest, so the listings and the sweep must find what happens to them."""
        self.timing = ScanTiming(
            poll_interval=POLL_INTERVAL, full_sweep_interval=full_sweep_interval
        )
        rels = [self._write(folder + name, b"x" * size) for folder, name, size in existing]
        if walk_now:
            self.first_walk()
            for rel in list(self.in_flight):
                self.tracker.acknowledge(rel, self.in_flight[rel])
                self.acked[rel] = self.in_flight.pop(rel)
        return multiple(*dict.fromkeys(rels))

    @rule(target=files, folder=folders, name=names, size=st.integers(0, 300))
    def create(self, folder: str, name: str, size: int) -> str:
        return self._write(folder + name, b"x" * size)

    @rule(rel=files, size=st.integers(0, 300))
    def rewrite_whole_file(self, rel: str, size: int) -> None:
        if rel in self.stat:
            self._write(rel, b"y" * size)

    @rule(rel=files, keep=st.floats(0, 1))
    def truncate(self, rel: str, keep: float) -> None:
        if rel in self.stat:
            self._write(rel, b"z" * int(stat_fields(self.stat[rel])[0] * keep))

    @rule(rel=files, extra=st.integers(1, 50))
    def partial_write(self, rel: str, extra: int) -> None:
        if rel in self.stat:
            self._write(rel, b"p" * (stat_fields(self.stat[rel])[0] + extra))

    @rule(rel=files)
    def rewrite_keeping_size_and_mtime(self, rel: str) -> None:
        """A copy tool that preserves both: only ctime tells (stat polling by size and mtime
        alone could not see it)."""
        if rel in self.stat:
            size, mtime = stat_fields(self.stat[rel])[:2]
            self._write(rel, b"k" * size, mtime=mtime)

    @rule(rel=files)
    def replace_by_rename(self, rel: str) -> None:
        """Write a temporary file beside it and rename it over: a new inode, same size and mtime,
        and the directory's listing changes."""
        if rel not in self.stat:
            return
        path = self.root / rel
        size, mtime = stat_fields(self.stat[rel])[:2]
        temp = path.with_name(".tmp-" + path.name)
        temp.write_bytes(b"r" * size)
        os.utime(temp, ns=(mtime, mtime))
        os.replace(temp, path)
        self._changed(rel, "listed")

    @rule(rel=consumes(files))
    def delete(self, rel: str) -> None:
        if rel in self.stat:
            (self.root / rel).unlink()
            del self.stat[rel]
            self.pending[rel] = ("deleted", 0)

    @rule(folder=st.sampled_from(["1018", "1019/deep", ".hidden", "_tmp", "@eaDir"]))
    def new_subfolder(self, folder: str) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)

    @rule(name=st.sampled_from(["export.txt", ".~lock.json", "._GameID=1.json", "a.json.tmp"]))
    def ignored_file(self, name: str) -> None:
        (self.root / "1016").mkdir(exist_ok=True)
        (self.root / "1016" / name).write_bytes(b"ignored")

    @rule(name=names, folder=st.sampled_from([".hidden", "@eaDir", "#recycle"]))
    def file_in_a_folder_never_scanned(self, name: str, folder: str) -> None:
        (self.root / folder).mkdir(exist_ok=True)
        (self.root / folder / name).write_bytes(b"{}")

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 3.0, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(folder=st.sampled_from(["", "1016", "1017", "1017/late"]))
    def coarse_folder_clock(self, folder: str) -> None:
        """A file system whose mtimes tick coarsely (FAT, some SMB servers): the folder's
        mtime looks as it did at the last poll although an entry changed; its ctime tells."""
        path = self.root / folder
        mtime = self.folder_mtimes.get(folder)
        if path.is_dir() and mtime is not None:
            os.utime(path, ns=(mtime, mtime))

    # -- the scanner --

    @precondition(lambda self: not self.started)
    @rule()
    def first_walk(self) -> None:
        obs = self.index.walk()
        assert {rel: s.stat for rel, s in obs.seen.items()} == self.stat, "the walk sees all"
        self.started = True
        self._check(obs, tick="walk")

    @precondition(lambda self: self.started)
    @rule(count=st.integers(1, SWEEP_POLLS + 1))
    def full_polls(self, count: int) -> None:
        for _ in range(count):
            self.most_files = max(self.most_files, len(self.index.files), len(self.stat))
            slice_ = self.timing.sweep_slice(len(self.index.files))
            obs = self._poll(full=True, sweep_slice=slice_)
            self.polls += 1
            self._check(obs, tick="full")
            self.now += 0.5
        self.folder_mtimes = {
            folder: (self.root / folder).stat().st_mtime_ns
            for folder in ("", "1016", "1017", "1017/late")
            if (self.root / folder).is_dir()
        }

    @precondition(lambda self: self.started)
    @rule()
    def hot_tick(self) -> None:
        self._check(self._poll(full=False, sweep_slice=0), tick="hot")

    def _poll(self, *, full: bool, sweep_slice: int) -> Observation:
        self.hot = self.tracker.hot(self.now, self.index.newest)
        if full:
            return self.index.poll(hot=self.hot, sweep_slice=sweep_slice)
        obs = self.index.tick(self.hot)
        assert obs is not None, "no poll runs at the same time here"
        return obs

    def _newer_and_still(self, rel: str, obs: Observation) -> bool:
        """Looked at as a version other than the one sent back unsettled, unchanged since the
        look before (a table playing faster than SETTLE never holds still that long)."""
        seen = obs.seen.get(rel)
        return seen is not None and not seen.changed and seen.stat != self.waiting_settle[rel]

    def _check(self, obs: Observation, *, tick: str) -> None:
        for rel, seen in obs.seen.items():
            if seen.changed:
                self.stable_since[rel] = self.now
        changes, gone = self.tracker.observe(
            obs.seen, obs.gone, self.now, poll=tick != "hot", initial=tick == "walk"
        )
        reported = {c.rel_path: c.stat for c in changes}
        assert len(reported) == len(changes), "one report per file per look"
        for change in changes:
            rel, version = change.rel_path, change.stat
            assert self.stat.get(rel) == version, "a report is the file's current version"
            assert (rel, version) not in self.ever_reported, "a version reported twice"
            assert change.kind == ("modified" if rel in self.acked else "created")
            if rel in self.waiting_settle:
                assert self.now - self.stable_since[rel] >= SETTLE or self._newer_and_still(
                    rel, obs
                ), "reported before it settled"
        acked_deleted = {rel for rel in self.acked if rel not in self.stat}
        if tick == "hot":
            assert set(gone) <= acked_deleted
        else:
            assert set(gone) == acked_deleted, "a deletion is found by the next full poll"
        # what must have been found by now
        for rel, (kind, polls) in list(self.pending.items()):
            version = self.stat.get(rel)
            if kind == "deleted":
                if tick in ("walk", "full"):
                    assert rel not in self.index.files, f"{rel} deleted but still known"
                    del self.pending[rel]
                continue
            assert version is not None
            if self.acked.get(rel) == version or self.in_flight.get(rel) == version:
                del self.pending[rel]
                continue
            found = reported.get(rel) == version
            if rel in self.waiting_settle:
                settled = self.now - self.stable_since.get(rel, self.now) >= SETTLE
                if (settled and rel in obs.seen) or self._newer_and_still(rel, obs):
                    assert found, f"{rel} settled and looked at, but not reported"
                if not found:
                    continue
            if found:
                del self.pending[rel]
                continue
            due = tick == "walk" or (tick == "full" and kind == "listed")
            if tick == "hot" and kind == "in_place" and rel in self.hot:
                due = True
            # never stricter than SWEEP_POLLS: a change seen by the sweep may still have to
            # settle (a stricter bound here failed with seed 3); the bound itself is proved by
            # test_the_agents_sweep_slice_reaches_every_file_within_its_bound below
            sweep = max(SWEEP_POLLS, sweep_polls_bound(self.most_files, self.timing))
            if tick == "full" and polls + 1 >= sweep + 1:
                due = True  # one sweep, plus the round in progress
            assert not due, f"{rel} ({kind}, {polls} polls) changed but was not reported ({tick})"
            if tick == "full":
                self.pending[rel] = (kind, polls + 1)
        for rel in gone:
            self.acked.pop(rel, None)
        for rel in list(self.in_flight):
            if rel not in self.stat:
                del self.in_flight[rel]
        self.waiting_settle = {r: v for r, v in self.waiting_settle.items() if r in self.stat}
        for rel, version in reported.items():
            self.in_flight[rel] = version
            self.waiting_settle.pop(rel, None)
            self.ever_reported.add((rel, version))

    # -- the simulated reader --

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def reader_acknowledges(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.in_flight)))
        version = self.in_flight.pop(rel)
        self.tracker.acknowledge(rel, version)
        self.acked[rel] = version

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def reader_finds_it_unsettled(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.in_flight)))
        version = self.in_flight.pop(rel)
        self.tracker.retry_when_settled(rel, version)
        self.waiting_settle[rel] = version
        self.ever_reported.discard((rel, version))  # sent back: it may be reported again
        if self.stat.get(rel) == version:
            self.pending[rel] = ("in_place", 0)

    @invariant()
    def tracker_forgets_deleted_files(self) -> None:
        if self.started:
            known = set(self.tracker.acked) | set(self.tracker.reported)
            deleted = {rel for rel, (kind, _) in self.pending.items() if kind == "deleted"}
            assert known <= set(self.stat) | deleted


TestScannerModel = ScannerMachine.TestCase
TestScannerModel.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_folder_listed_within_its_mtime_tick_is_listed_again(tmp_path: Path) -> None:
    """mtime ties are racy: an entry added in the same tick as the listing leaves the folder's
    mtime unchanged. Within RACY_SECONDS of its mtime a folder is listed at every poll."""
    (tmp_path / "1016").mkdir()
    wall = [time.time()]
    index = FolderIndex(tmp_path, PATTERN, wall_clock=lambda: wall[0])
    index.walk()
    folder_stat = os.stat(tmp_path / "1016")
    new = tmp_path / "1016" / "GameID=1.json"
    new.write_bytes(b"{}")
    # the entry change lands within the same mtime and ctime: restore both as a coarse clock
    # would have shown them (ctime cannot be set; the folder's stat is patched in the index)
    index.folders["1016/"].stat = (
        os.stat(tmp_path / "1016").st_mtime_ns,
        os.stat(tmp_path / "1016").st_ctime_ns,
        folder_stat.st_ino,
    )
    assert index.folders["1016/"].racy, "listed within its mtime's tick"

    def poll() -> Observation:
        return index.poll(hot=[], sweep_slice=0)

    assert "1016/GameID=1.json" in poll().seen, "the racy folder was listed again"
    wall[0] += RACY_SECONDS + 60  # later polls: the listing is no longer racy
    poll()
    assert not index.folders["1016/"].racy


def test_files_deleted_during_a_sweep_round_do_not_slow_it(tmp_path: Path) -> None:
    """The sweep's slice is counted in stats of live files: a round that began with 9 files, 8
    of them deleted since, still reaches the one left within two polls (the old round's end,
    a new round) instead of spending a poll on each deleted entry. Found by the model above."""
    for n in range(8):
        (tmp_path / "1016").mkdir(exist_ok=True)
        (tmp_path / "1016" / f"GameID={n}.json").write_bytes(b"{}")
    cold = tmp_path / "1017" / "GameID=9.json"
    cold.parent.mkdir()
    cold.write_bytes(b"{}")
    # a clock past RACY_SECONDS: the folders just made would otherwise be listed every poll
    index = FolderIndex(tmp_path, PATTERN, wall_clock=lambda: time.time() + RACY_SECONDS + 60)
    index.walk()
    index.poll(hot=[], sweep_slice=3)  # the round begins
    for n in range(8):
        (tmp_path / "1016" / f"GameID={n}.json").unlink()
    mtime = cold.stat().st_mtime_ns
    cold.write_bytes(b"[]")  # rewritten in place, size and mtime kept: only ctime tells
    os.utime(cold, ns=(mtime, mtime))
    found = []
    for _ in range(2):
        obs = index.poll(hot=[], sweep_slice=1)  # one file left: one stat a poll
        found += [rel for rel, seen in obs.seen.items() if seen.changed]
    assert found == ["1017/GameID=9.json"]


def test_a_pc_folder_replaced_between_polls_is_read_afresh_and_no_descriptor_is_kept(
    tmp_path: Path,
) -> None:
    """A poll stats the folders through a descriptor of the root opened for that poll: a root
    renamed away and made again (an SMB share remounted, a folder restored from backup) is
    read as it is now, not through the old one, and no poll leaves a descriptor open."""
    root = tmp_path / "PC01"
    (root / "1016").mkdir(parents=True)
    (root / "1016" / "GameID=1.json").write_bytes(b"{}")
    index = FolderIndex(root, PATTERN, wall_clock=lambda: time.time() + RACY_SECONDS + 60)
    index.walk()
    assert not index.poll(hot=[], sweep_slice=10).changed
    root.rename(tmp_path / "PC01-away")
    (root / "1016").mkdir(parents=True)
    (root / "1016" / "GameID=2.json").write_bytes(b"{}")
    obs = index.poll(hot=["1016/GameID=1.json"], sweep_slice=10)
    assert obs.gone == {"1016/GameID=1.json"}
    assert [rel for rel, seen in obs.seen.items() if seen.changed] == ["1016/GameID=2.json"]
    open_fds = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert not index.poll(hot=["1016/GameID=2.json"], sweep_slice=10).changed
    assert len(os.listdir("/proc/self/fd")) == open_fds


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.integers(1, 240),
    # polls per sweep: 1, 2, 3, 4.5 and the default 300 (where the 32-file minimum carries it)
    full_sweep_interval=st.sampled_from([2.0, 4.0, 6.0, 9.0, 600.0]),
    which=st.integers(0, 10**6),
    polls_before=st.integers(0, 12),
)
def test_the_agents_sweep_slice_reaches_every_file_within_its_bound(
    files: int, full_sweep_interval: float, which: int, polls_before: int
) -> None:
    """The slice the scanner asks for (`ScanTiming.sweep_slice`, not one of the test's own)
    reaches a cold file rewritten in place (only its stat tells) within the sweep: once per
    FULL_SWEEP_INTERVAL, and within a few polls in a folder of 32 files or so."""
    timing = ScanTiming(poll_interval=POLL_INTERVAL, full_sweep_interval=full_sweep_interval)
    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        root = Path(folder)
        rels = [f"10{16 + n % 4}/GameID={n}.json" for n in range(files)]
        for rel in rels:
            (root / rel).parent.mkdir(exist_ok=True)
            (root / rel).write_bytes(b"{}")
        index = FolderIndex(root, PATTERN, wall_clock=lambda: time.time() + RACY_SECONDS + 60)
        index.walk()
        for _ in range(polls_before):  # the rewrite falls anywhere in a round
            index.poll(hot=[], sweep_slice=timing.sweep_slice(len(index.files)))
        target = rels[which % files]
        (root / target).write_bytes(b"[1]")  # in place: its folder's listing does not change
        bound = sweep_polls_bound(files, timing) + 1  # plus the round in progress
        for _ in range(bound):
            obs = index.poll(hot=[], sweep_slice=timing.sweep_slice(len(index.files)))
            if target in obs.seen and obs.seen[target].changed:
                return
        raise AssertionError(f"{target} of {files} files not swept within {bound} polls")
