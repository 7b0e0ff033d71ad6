"""Registry watcher: keeps one supervised scanner running per enabled PC.

The registry (or, without one, the folder list of the NAS base) is re-read every poll. A PC
added or enabled starts its scanner, one removed or disabled stops it; nothing else restarts.
An invalid registry keeps the last good one. A scanner that fails marks its PC `error` and is
retried with backoff: a missing or unreadable folder never takes the agent down.

What it should be watching survives a blink and a restart (the queue database keeps it):
- the last good registry file: while the file is gone (an editor saving by rename, a copy over
  SMB) it stays in force, `registry_missing` in /health; discovery runs only when no registry
  was ever stored (`trio-gfxsync registry forget` goes back to it on purpose);
- the PCs watched so far: without a registry, one whose folder is gone stays listed, `missing`,
  until it comes back or `trio-gfxsync pcs forget ID` (with a registry, until it drops it);
- nothing to watch at all is said in /health (`no_pc_watched`) once the start is over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import RegistryError
from ..logs import get_logger
from ..nas_calls import NasCalls
from ..observe.activity import iso
from ..observe.health import NothingWatched
from ..observe.pc_state import RUNNING
from ..observe.status import AgentStatus, PcStatus
from ..settings import Settings
from ..state.ledger import FileLedger
from ..state.rows import KeptRegistry
from .change_queue import ChangeQueue, Producer
from .folder_index import FolderIndex
from .pc_reads import PcReads
from .registry import (
    PcEntry,
    Registry,
    base_entries,
    discover_pcs,
    read_registry_file,
    registry_from_bytes,
    resolve_watch_path,
)
from .scanner import NasPoller, PcScan, ScanTiming, WatchedPc, compile_pattern
from .tracker import FileTracker

log = get_logger("watcher")

RETRY_MIN = 1.0
REGISTRY_EVERY = 5.0  # seconds between reads of the registry (or the list of PC folders)
RETRY_MAX = 30.0
SETTLE_EXTRA = 5.0  # no_pc_watched waits 2 x poll_interval + this after the start


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
    _kept: KeptRegistry | None = None  # the last good registry file, as stored
    _known: dict[str, str] = field(default_factory=dict)  # PCs watched so far, as stored

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
        store = self.ledger.store
        settle_at = trio.current_time() + 2 * self.settings.poll_interval + SETTLE_EXTRA
        self._kept = await store.kept_registry()
        self._known = await store.known_pcs()
        while True:
            registry: Registry | None = None
            try:
                # one registry read out at a time: a hung one is not joined by another each poll
                registry = await self._read_registry()
            except (RegistryError, OSError) as exc:
                message = str(exc) if isinstance(exc, RegistryError) else _os_reason(exc)
                self.status.registry_error = message
                if message != last_error:
                    log.error("registry_invalid", error=message, kept=sorted(self.running))
                    self.status.activity.add("registry", f"invalid, last good kept: {message}")
                    last_error = message
                if not started and self._kept is not None:
                    # at the start, "the last good one" is the one stored by the last run
                    try:
                        registry = await self._from_kept(self._kept)
                    except (RegistryError, OSError):
                        registry = None
            else:
                if last_error is not None:
                    log.info("registry_recovered")
                last_error = None
                self.status.registry_error = None
            if registry is not None:
                await self._apply(registry, nursery, changes)
                await self._remember(registry)
                await self._nothing_watched(registry)
            if not started:
                started = True
                self.status.watch_settled_at = max(trio.current_time(), settle_at)
                task_status.started()
            if self.once:
                return  # the nursery waits for the scanners to catch up
            await trio.sleep(max(self.settings.poll_interval, REGISTRY_EVERY))

    async def _read_registry(self) -> Registry:
        """The registry in force: the file; while it is gone, the last good one stored;
        discovery only when none was ever stored."""
        settings = self.settings
        store = self.ledger.store
        data = await self.nas.call(("registry",), read_registry_file, settings.registry_file)
        if data is not None:
            registry = await self.nas.call(
                ("registry",), registry_from_bytes, settings.nas_base_path, data
            )
            if self._kept is None or self._kept.data != data:
                kept = KeptRegistry(data, time.time())
                await store.keep_registry(kept.data, kept.stored_at)
                self._kept = kept
            self._registry_missing(None)
            return registry
        # read again each time: `registry forget` beside the agent goes back to discovery
        self._kept = await store.kept_registry()
        if self._kept is not None:
            registry = await self._from_kept(self._kept)
            self._registry_missing(
                f"registry file {settings.registry_file} missing: the last good one from "
                f"{iso(self._kept.stored_at)} kept"
            )
            return registry
        self._registry_missing(None)
        discovered = await self.nas.call(
            ("registry",), _discover, settings.nas_base_path, self.excludes
        )
        # a PC watched before (this run or an earlier one) whose folder is gone stays listed:
        # its scanner finds no folder, and it shows `missing`
        self._known = await store.known_pcs()
        found = {pc.id for pc in discovered}
        gone = tuple(
            PcEntry(id=pc_id, watch_path=watch_path)
            for pc_id, watch_path in sorted(self._known.items())
            if pc_id not in found
        )
        return Registry(discovered + gone, "discovered")

    async def _from_kept(self, kept: KeptRegistry) -> Registry:
        return await self.nas.call(
            ("registry",), registry_from_bytes, self.settings.nas_base_path, kept.data, "kept"
        )

    def _registry_missing(self, message: str | None) -> None:
        if message is not None and self.status.registry_missing is None:
            log.warning("registry_missing", path=str(self.settings.registry_file), kept=message)
            self.status.activity.add("registry", message)
        elif message is None and self.status.registry_missing is not None:
            log.info("registry_file_back", path=str(self.settings.registry_file))
        self.status.registry_missing = message

    async def _note_known(self, pc: PcEntry) -> None:
        """A PC whose folder is there is watched: stored at once, before a scan of it can
        fail (a folder that vanishes takes its files first, then itself)."""
        if self._known.get(pc.id) != pc.watch_path:
            await self.ledger.store.note_known_pcs({pc.id: pc.watch_path}, time.time())
            self._known[pc.id] = pc.watch_path

    async def _remember(self, registry: Registry) -> None:
        """With a registry, the PCs it no longer enables are no longer watched; a PC scanned
        and forgotten beside the agent (`pcs forget`) while its folder is there is again."""
        store = self.ledger.store
        for pc_id, running in self.running.items():
            pc_status = self.status.pcs.get(pc_id)
            if pc_status is not None and pc_status.state == RUNNING:
                await self._note_known(running.entry)
        if registry.source != "discovered":
            dropped = sorted(set(self._known) - set(registry.enabled))
            if dropped:
                await store.forget_pcs(dropped)
                for pc_id in dropped:
                    del self._known[pc_id]

    async def _nothing_watched(self, registry: Registry) -> None:
        if registry.enabled:
            self.status.nothing_watched = None
            return
        base = self.settings.nas_base_path
        try:
            entries = await self.nas.call(("base",), base_entries, base)
        except OSError:
            entries = None
        if registry.source == "discovered":
            detail = f"{entries or 0} entr(ies), none a PC folder"
        else:
            detail = (
                f"{len(registry.pcs)} PC(s) in the registry {self.settings.registry_file}, "
                "none enabled"
            )
        self.status.nothing_watched = NothingWatched(str(base), not entries, detail)

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
                        await self._note_known(pc)
                        await scan.run(
                            changes,
                            on_gone=self.ledger.forget,
                            once=self.once,
                            task_status=_Ready(pc_status),
                        )
                        return  # only a one-shot scan ends
                    except (OSError, RegistryError) as exc:
                        if pc_status.state == RUNNING:
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


def _discover(base: Path, excludes: frozenset[str]) -> tuple[PcEntry, ...]:
    """Blocking: the PC folders of the base; none when the base itself is missing (/health
    says so: no_pc_watched, and the PCs watched before are `missing`)."""
    try:
        return discover_pcs(base, excludes)
    except (FileNotFoundError, NotADirectoryError):
        return ()


def _show(pc_status: PcStatus, entry: PcEntry) -> None:
    pc_status.name, pc_status.description = entry.name, entry.description
    pc_status.watch_path = entry.watch_path


class _Ready:
    """task_status stand-in: marks the PC running after its first complete scan."""

    def __init__(self, pc_status: PcStatus) -> None:
        self.pc_status = pc_status

    def started(self, value: object = None) -> None:
        if self.pc_status.state != RUNNING:
            if self.pc_status.reason is not None:
                log.info("pc_scan_recovered", pc_id=self.pc_status.id)
            log.info(
                "pc_scanned",
                pc_id=self.pc_status.id,
                files=self.pc_status.scan.files,
                backlog=self.pc_status.scan.backlog,
                seconds=round(self.pc_status.scan.last_scan_seconds, 3),
            )
        self.pc_status.state, self.pc_status.reason = RUNNING, None
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
