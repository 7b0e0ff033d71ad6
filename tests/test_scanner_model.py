"""Model-based test of the scanner on a real temporary folder.

Hypothesis drives random creates, whole-file rewrites, truncations, partial writes, deletes,
new sub-folders and files that must be ignored; after each poll the scanner's reports are
checked against a plain in-memory model of what must be reported. The reader is simulated by
rules that acknowledge a report, send it back as "still being written", or keep it in flight.

mtimes are set explicitly and always move forward: stat polling cannot see a rewrite that keeps
both size and mtime (a limit of the method, not of this code; PokerGFX files grow per hand).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from trio_gfxsync.intake.scanner import FileTracker, compile_pattern, walk_folder
from trio_gfxsync.state.rows import AckedFile

PATTERN = compile_pattern("*.json")
names = st.text(alphabet="abcdefgh =0123456789", min_size=1, max_size=8).map(
    lambda s: f"GameID={s.strip() or 'x'}.json"
)
folders = st.sampled_from(["", "1016/", "1017/", "1017/late/"])


class ScannerMachine(RuleBasedStateMachine):
    files = Bundle("files")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="scanner-model-"))
        self.tracker = FileTracker(pc_id="PC01", acked={})
        self.clock = 1_700_000_000_000_000_000
        # the model
        self.stat: dict[str, tuple[int, int]] = {}  # what is on disk
        self.acked: dict[str, tuple[int, int]] = {}
        self.in_flight: dict[str, tuple[int, int]] = {}  # reported, no outcome yet
        self.waiting_settle: set[str] = set()
        self.last_poll: dict[str, tuple[int, int]] = {}
        self.ever_reported: set[tuple[str, tuple[int, int]]] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the file system --

    def _write(self, rel: str, data: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.clock += 1_000_003
        os.utime(path, ns=(self.clock, self.clock))
        self.stat[rel] = (len(data), self.clock)
        return rel

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
            self._write(rel, b"z" * int(self.stat[rel][0] * keep))

    @rule(rel=files, extra=st.integers(1, 50))
    def partial_write(self, rel: str, extra: int) -> None:
        if rel in self.stat:
            self._write(rel, b"p" * (self.stat[rel][0] + extra))

    @rule(rel=consumes(files))
    def delete(self, rel: str) -> None:
        if rel in self.stat:
            (self.root / rel).unlink()
            del self.stat[rel]

    @rule(folder=st.sampled_from(["1018", "1019/deep", ".hidden", "_tmp"]))
    def new_subfolder(self, folder: str) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)

    @rule(name=st.sampled_from(["export.txt", ".~lock.json", "._GameID=1.json", "a.json.tmp"]))
    def ignored_file(self, name: str) -> None:
        (self.root / "1016").mkdir(exist_ok=True)
        (self.root / "1016" / name).write_bytes(b"ignored")

    @rule(name=names)
    def file_in_dot_folder(self, name: str) -> None:
        (self.root / ".hidden").mkdir(exist_ok=True)
        (self.root / ".hidden" / name).write_bytes(b"{}")

    # -- the scanner and the simulated reader --

    @rule()
    def poll(self) -> None:
        snapshot = walk_folder(self.root, PATTERN)
        assert snapshot == self.stat, "the walk sees exactly the matching, visible files"
        changes, gone = self.tracker.diff(snapshot)
        reported = {c.rel_path: (c.size, c.mtime_ns) for c in changes}
        assert len(reported) == len(changes), "one report per file per poll"
        for change in changes:
            version = (change.size, change.mtime_ns)
            assert self.stat.get(change.rel_path) == version
            assert (change.rel_path, version) not in self.ever_reported, "a version twice"
            assert change.kind == ("modified" if change.rel_path in self.acked else "created")
            assert change.settled == (self.last_poll.get(change.rel_path) == version)
        # what the model says must be reported now
        for rel, version in self.stat.items():
            if self.acked.get(rel) == version or self.in_flight.get(rel) == version:
                assert rel not in reported
                continue
            if rel in self.waiting_settle and self.last_poll.get(rel) != version:
                assert rel not in reported, "reported before it settled"
                continue
            assert reported.get(rel) == version, f"{rel} changed but was not reported"
        assert sorted(gone) == sorted(rel for rel in self.acked if rel not in self.stat)
        for rel in list(self.acked):
            if rel not in self.stat:
                del self.acked[rel]
        for rel in list(self.in_flight):
            if rel not in self.stat:
                del self.in_flight[rel]
        self.waiting_settle &= set(self.stat)
        for rel, version in reported.items():
            self.in_flight[rel] = version
            self.waiting_settle.discard(rel)
            self.ever_reported.add((rel, version))
        self.last_poll = dict(snapshot)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def reader_acknowledges(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.in_flight)))
        size, mtime = self.in_flight.pop(rel)
        self.tracker.acknowledge(rel, AckedFile(size, mtime, "sha"))
        self.acked[rel] = (size, mtime)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def reader_finds_it_unsettled(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.in_flight)))
        version = self.in_flight.pop(rel)
        self.tracker.retry_when_settled(rel, version)
        self.waiting_settle.add(rel)
        # a version sent back may be reported again once settled
        self.ever_reported.discard((rel, version))

    @invariant()
    def tracker_forgets_deleted_files(self) -> None:
        known = set(self.tracker.acked) | set(self.tracker.reported)
        assert known <= set(self.stat) | set(self.last_poll)


TestScannerModel = ScannerMachine.TestCase
TestScannerModel.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
