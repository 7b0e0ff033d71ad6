"""Registry watcher: keeps one supervised scanner running per enabled PC.

The registry (or, without one, the folder list of the NAS base) is re-read every poll. A PC
added or enabled starts its scanner, one removed or disabled stops it; nothing else restarts.
An invalid registry keeps the last good one. A scanner that fails marks its PC `error` and is
retried with backoff: a missing or unreadable folder never takes the agent down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import RegistryError
from ..logs import get_logger
from ..nas_calls import NasCalls
from ..observe.status import AgentStatus, PcStatus
from ..settings import Settings
from ..state.ledger import FileLedger
from .change_queue import ChangeQueue, Producer
from .folder_index import FolderIndex
from .pc_reads import PcReads
from .registry import PcEntry, Registry, load_registry, resolve_watch_path
from .scanner import NasPoller, PcScan, ScanTiming, WatchedPc, compile_pattern
from .tracker import FileTracker

log = get_logger("watcher")

RETRY_MIN = 1.0
REGISTRY_EVERY = 5.0  # seconds between reads of the registry (or the list of PC folders)
RETRY_MAX = 30.0


@dataclass
class _Running:
    entry: PcEntry
    scope: trio.CancelScope


@dataclass
class RegistryWatcher:
    settings: Settings
    ledger: FileLedger
    status: AgentStatus
    watched: dict[str, WatchedPc]  # shared with the reader
    excludes: frozenset[str]
    once: bool = False  # `scan`: one registry, each scanner until caught up, then end
    # every NAS call: its threads, deadline and keys (nas_calls.py)
    nas: NasCalls = field(default_factory=lambda: NasCalls(30.0))
    running: dict[str, _Running] = field(default_factory=dict)
    poller: NasPoller = field(init=False)
    _scanners_done: trio.Event = field(default_factory=trio.Event)
    _active: int = 0

    def __post_init__(self) -> None:
        self.poller = NasPoller(self._timing(), nas=self.nas)

    async def run(
        self,
        changes: ChangeQueue,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Started once every scanner of the first registry has done its first scan. Its own
        producer keeps the queue open while no PC is watched; each scanner holds another."""
        with changes.producer():
            async with trio.open_nursery() as nursery:
                await nursery.start(self.poller.run)
                await self._watch(changes, nursery, task_status)
                if self.once:
                    # the nursery waits for the scanners; the poller must not keep it open
                    if self._active:
                        await self._scanners_done.wait()
                    nursery.cancel_scope.cancel()

    async def _watch(
        self, changes: ChangeQueue, nursery: trio.Nursery, task_status: trio.TaskStatus[None]
    ) -> None:
        last_error: str | None = None
        started = False
        while True:
            try:
                # one registry read out at a time: a hung one is not joined by another each poll
                registry = await self.nas.call(
                    ("registry",),
                    load_registry,
                    self.settings.nas_base_path,
                    self.settings.registry_file,
                    self.excludes,
                )
            except (RegistryError, OSError) as exc:
                message = str(exc) if isinstance(exc, RegistryError) else _os_reason(exc)
                self.status.registry_error = message
                if message != last_error:
                    log.error("registry_invalid", error=message, kept=sorted(self.running))
                    self.status.activity.add("registry", f"invalid, last good kept: {message}")
                    last_error = message
            else:
                if last_error is not None:
                    log.info("registry_recovered")
                last_error = None
                self.status.registry_error = None
                await self._apply(registry, nursery, changes)
            if not started:
                started = True
                task_status.started()
            if self.once:
                return  # the nursery waits for the scanners to catch up
            await trio.sleep(max(self.settings.poll_interval, REGISTRY_EVERY))

    async def _apply(
        self,
        registry: Registry,
        nursery: trio.Nursery,
        changes: ChangeQueue,
    ) -> None:
        if registry.source != self.status.registry_source:
            log.info("registry_loaded", source=registry.source, pcs=[pc.id for pc in registry.pcs])
            self.status.registry_source = registry.source
        wanted = registry.enabled
        for pc_id in list(self.running):
            entry = wanted.get(pc_id)
            if entry is None or entry.watch_path != self.running[pc_id].entry.watch_path:
                log.info("pc_stopped", pc_id=pc_id)
                self.running.pop(pc_id).scope.cancel()
                self.status.pcs.pop(pc_id, None)
        for pc_id, entry in wanted.items():
            if pc_id in self.running:
                self.running[pc_id].entry = entry
                _show(self.status.pcs[pc_id], entry)  # name/description edits show at once
                continue
            pc_status = self.status.pcs[pc_id] = PcStatus(id=pc_id, watch_path=entry.watch_path)
            _show(pc_status, entry)
            pc_status.scan.observe = self.status.scan_seconds.labels(pc_id).observe
            scope = await nursery.start(self._supervise, entry, pc_status, changes.producer())
            self.running[pc_id] = _Running(entry, scope)
            log.info("pc_started", pc_id=pc_id, watch_path=entry.watch_path)

    async def _supervise(
        self,
        pc: PcEntry,
        pc_status: PcStatus,
        changes: Producer,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own one PC's scanning: restart it with backoff on failure, carrying its state (what
        it has seen, what it has not sent yet) from one run to the next; stop when cancelled."""
        self._active += 1  # before started(): a one-shot scan waits for every scanner begun
        try:
            await self._scan_pc(pc, pc_status, changes, task_status)
        finally:
            self._active -= 1
            if self._active == 0:
                self._scanners_done.set()

    async def _scan_pc(
        self,
        pc: PcEntry,
        pc_status: PcStatus,
        changes: Producer,
        task_status: trio.TaskStatus[trio.CancelScope],
    ) -> None:
        settings = self.settings
        with changes, trio.CancelScope() as scope:
            task_status.started(scope)
            tracker = FileTracker(pc_id=pc.id, acked=await self.ledger.store.acked_stats(pc.id))
            self.ledger.trackers[pc.id] = tracker
            reads = PcReads(
                pc.id, self.nas, give_back=changes.put_back, show=_read_hung_shown(pc_status)
            )
            scan: PcScan | None = None
            delay = RETRY_MIN
            try:
                while True:
                    try:
                        root = await self.nas.call(
                            ("root", pc.id), resolve_watch_path, settings.nas_base_path, pc
                        )
                        if not await self.nas.call(("root", pc.id), root.is_dir):
                            raise FileNotFoundError(2, "watch folder not found", str(root))
                        if scan is None or scan.index.root != str(root):
                            scan = self._new_scan(tracker, root, pc_status, reads)
                            self.poller.scans[pc.id] = scan
                        self.watched[pc.id] = WatchedPc(root, tracker, reads)
                        await scan.run(
                            changes,
                            on_gone=self.ledger.forget,
                            once=self.once,
                            task_status=_Ready(pc_status),
                        )
                        return  # only a one-shot scan ends
                    except (OSError, RegistryError) as exc:
                        if pc_status.state == "running":
                            delay = RETRY_MIN  # it had recovered: start the backoff afresh
                        reason = str(exc) if isinstance(exc, RegistryError) else _os_reason(exc)
                        if pc_status.reason != reason:
                            log.error("pc_scan_failed", pc_id=pc.id, error=reason, retry_in=delay)
                            self.status.activity.add("error", reason, pc_id=pc.id)
                        pc_status.state, pc_status.reason = "error", reason
                        pc_status.last_error = reason
                        pc_status.missing = isinstance(exc, FileNotFoundError)
                        if self.once:
                            return  # a one-shot scan reports it and goes on without
                        await trio.sleep(delay)
                        delay = min(delay * 2, RETRY_MAX)
            finally:
                # a restarted PC (new watch_path) may already have registered its own
                if self.ledger.trackers.get(pc.id) is tracker:
                    del self.ledger.trackers[pc.id]
                    self.watched.pop(pc.id, None)
                if scan is not None and self.poller.scans.get(pc.id) is scan:
                    del self.poller.scans[pc.id]

    def _new_scan(
        self, tracker: FileTracker, root: Path, pc_status: PcStatus, reads: PcReads
    ) -> PcScan:
        settings = self.settings
        index = FolderIndex(
            root,
            compile_pattern(settings.file_pattern),
            skip=frozenset({settings.error_dir}),
            settle_seconds=settings.poll_interval,
        )
        return PcScan(
            tracker, index, self.poller.timing, stats=pc_status.scan, reads=reads, nas=self.nas
        )

    def _timing(self) -> ScanTiming:
        settings = self.settings
        return ScanTiming(
            poll_interval=settings.poll_interval,
            hot_poll_interval=min(settings.hot_poll_interval, settings.poll_interval),
            full_sweep_interval=settings.full_sweep_interval,
        )


def _show(pc_status: PcStatus, entry: PcEntry) -> None:
    pc_status.name, pc_status.description = entry.name, entry.description
    pc_status.watch_path = entry.watch_path


class _Ready:
    """task_status stand-in: marks the PC running after its first complete scan."""

    def __init__(self, pc_status: PcStatus) -> None:
        self.pc_status = pc_status

    def started(self, value: object = None) -> None:
        if self.pc_status.state != "running":
            if self.pc_status.reason is not None:
                log.info("pc_scan_recovered", pc_id=self.pc_status.id)
            log.info(
                "pc_scanned",
                pc_id=self.pc_status.id,
                files=self.pc_status.scan.files,
                backlog=self.pc_status.scan.backlog,
                seconds=round(self.pc_status.scan.last_scan_seconds, 3),
            )
        self.pc_status.state, self.pc_status.reason = "running", None
        self.pc_status.missing = False


def _read_hung_shown(pc_status: PcStatus) -> Callable[[str | None], None]:
    """How a PC's hung read shows: on its status (/health, /api/status, the dashboard)."""

    def show(reason: str | None) -> None:
        pc_status.read_hung = reason
        if reason is not None:
            pc_status.last_error = reason

    return show


def _os_reason(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"
