"""Acknowledgement: the one path by which a file version becomes "done" (DESIGN 4.1).

It writes `file_state` durably first and only then tells the PC's scanner, so that a crash
between the two costs at most a repeated upsert, never a lost one.
"""

from __future__ import annotations

from collections.abc import Iterable

from .pokergfx import FileVersion
from .scanner import FileTracker
from .store import AckedFile, Store


class FileLedger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.trackers: dict[str, FileTracker] = {}

    def acked_hash(self, pc_id: str, rel_path: str) -> str | None:
        tracker = self.trackers.get(pc_id)
        acked = tracker.acked.get(rel_path) if tracker else None
        return acked.sha256 if acked else None

    async def acknowledge(self, versions: Iterable[FileVersion]) -> None:
        # One version per file: a batch may carry an older copy of a file beside its newer one.
        latest: dict[tuple[str, str], FileVersion] = {}
        for version in versions:
            key = (version.pc_id, version.rel_path)
            if key not in latest or version.mtime_ns > latest[key].mtime_ns:
                latest[key] = version
        await self.store.acknowledge(latest.values())
        for version in latest.values():
            tracker = self.trackers.get(version.pc_id)
            if tracker is not None:
                tracker.acknowledge(
                    version.rel_path, AckedFile(version.size, version.mtime_ns, version.sha256)
                )

    async def forget(self, pc_id: str, rel_paths: list[str]) -> None:
        await self.store.forget(pc_id, rel_paths)
