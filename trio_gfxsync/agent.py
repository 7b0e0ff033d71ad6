"""The agent: one nursery tree from the signal watcher down to the uploaders (DESIGN 2).

    root nursery
    ├── signal watcher        SIGTERM/SIGINT: cancel intake, then drain within shutdown_timeout
    └── core (drain scope)
        ├── offline drainer               probes upstream, re-sends pending_sync
        └── pipeline
            ├── uploader                  <- Batch          (capacity 0: "free" means waiting)
            ├── batcher                   <- SessionRecord  (bounded)
            └── intake (cancel scope)
                ├── reader x READERS      <- FileChange     (bounded)
                ├── reconciler            the table against the NAS, hourly
                └── registry watcher
                    └── scanner[PC] x N

Shutdown cancels the intake only: its send channels close, end-of-stream flows down, the
batcher sends what it holds, the uploaders finish, and the core ends by itself, or at the
drain deadline. Whatever was not acknowledged by then is found again by the next start.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from .delivery.batcher import Batcher, UploadSlots
from .delivery.batching import Batch, BatchBuffer
from .delivery.drainer import Drainer
from .delivery.failing import FailingLane
from .delivery.gate import UpstreamGate
from .delivery.retention import SyncEventsRetention
from .delivery.sync_events import SyncEventReporter
from .delivery.uploader import LiveDelivery, QueuedDelivery, Uploader
from .intake.change_queue import ChangeQueue
from .intake.error_folder import ErrorFolder
from .intake.reader import Reader
from .intake.reconciler import Reconciler
from .intake.reconfirm import Reconfirmer
from .intake.registry import discovery_excludes
from .intake.registry_watcher import RegistryWatcher
from .intake.scanner import WatchedPc
from .keep_newest import StampClock
from .logs import get_logger
from .memory_budget import ByteBudget
from .nas_calls import NasCalls
from .observe.heartbeat import open_heartbeat
from .observe.monitor import Monitor
from .observe.notifier import start_notifier
from .observe.status import AgentStatus
from .pokergfx import SessionRecord
from .settings import Settings
from .state.ledger import FileLedger
from .state.store import Store
from .targets.base import Target
from .targets.postgrest import PostgrestClient
from .targets.sqlite import SqliteTarget
from .web.server import run_http

log = get_logger("agent")
D = TypeVar("D", LiveDelivery, QueuedDelivery)

READERS = 4  # NAS reads wait on SMB; a few in parallel hide the latency
UPLOAD_WORKERS = 1  # one request in flight (the gate's slot): batches grow while it is busy
CHANGE_BUFFER = 8  # live changes waiting for a reader
BACKFILL_BUFFER = 2  # backfill waiting for a reader: live changes always go first anyway
MEMORY_BUDGET = 16 * 2**20  # bytes of records between the readers and the uploads
RECORD_BUFFER = 32
CLOSE_TIMEOUT = 1.5
CLIENT_CLOSE_TIMEOUT = 0.5
CRASH_GRACE = 1.5  # /health answers 503 with the reason this long before the process exits


def make_target(settings: Settings, status: AgentStatus | None = None) -> Target:
    if settings.target_kind == "sqlite":
        return SqliteTarget(settings.sqlite_target_file)
    return PostgrestClient(
        settings, on_clock_skew=status.note_clock_skew if status is not None else None
    )


class Shutdown:
    """The two cancel scopes a signal acts on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.intake = trio.CancelScope()
        self.drain = trio.CancelScope()
        self.requested = False

    def begin(self) -> None:
        self.requested = True
        self.intake.cancel()
        self.drain.deadline = trio.current_time() + self.settings.shutdown_timeout

    def force(self) -> None:
        self.intake.cancel()
        self.drain.cancel()


async def watch_signals(
    shutdown: Shutdown,
    status: AgentStatus,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.requested:
                log.info(
                    "shutdown_requested", signal=name, timeout=shutdown.settings.shutdown_timeout
                )
                status.shutting_down = True
                shutdown.begin()
            else:
                log.warning("shutdown_forced", signal=name)
                status.force_exit = True
                shutdown.force()


async def _within(scope: trio.CancelScope, task: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await task()


class Agent:
    def __init__(
        self, settings: Settings, *, target: Target | None = None, once: bool = False
    ) -> None:
        self.once = once  # `scan`: one backfill, then a graceful end
        self.settings = settings
        self.status = AgentStatus(
            poll_interval=settings.poll_interval, flush_interval=settings.flush_interval
        )
        self.shutdown = Shutdown(settings)
        self._target = target
        self.http_urls: list[str] = []
        # every NAS call's threads, deadline and keys: hung threads starve nothing else
        self.nas = NasCalls(settings.nas_read_timeout)
        self.finished = trio.Event()  # set when run() has returned, however it ended

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            self.finished.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        settings = self.settings
        http_stop = trio.Event()
        async with trio.open_nursery() as root:
            # signals first: a SIGTERM during a long quick_check still ends in a clean exit 0
            await root.start(watch_signals, self.shutdown, self.status)
            store = await Store.open(settings.queue_db_path)
            self.status.store = store
            if store.recovered:
                self.status.activity.add("error", f"queue database recreated: {store.recovered}")
            target = self._target or make_target(settings, self.status)
            try:
                if not self.once:  # a one-shot scan must not take the running agent's port
                    notify = await start_notifier(root, settings)
                    await root.start(Monitor(settings, self.status, store, self.nas, notify).run)
                    self.http_urls = await root.start(run_http, settings, self.status, http_stop)
                try:
                    await self._run_core(store, target, task_status)
                except Exception as exc:
                    await self._report_failure(exc)
                    raise
                finally:
                    http_stop.set()
            finally:
                # stop the monitor and the HTTP side first: nothing may query a closed store
                root.cancel_scope.cancel()
                # the store before the client: its last commits matter more than a TLS goodbye
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await store.close()
                    with trio.move_on_after(CLIENT_CLOSE_TIMEOUT):
                        await target.aclose()
        log.info("agent_stopped", graceful=self.shutdown.requested)

    async def _report_failure(self, exc: Exception) -> None:
        """A core stage died: say so on /health for a moment, then let `run` exit 1."""
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        self.status.failure = f"{type(leaf).__name__}: {leaf}"
        log.error("core_stage_died", exc_info=exc, error=self.status.failure)
        with trio.CancelScope(shield=True):
            await trio.sleep(CRASH_GRACE)

    async def _run_core(
        self, store: Store, target: Target, task_status: trio.TaskStatus[None]
    ) -> None:
        settings = self.settings
        status = self.status
        ledger = FileLedger(
            store,
            max_queue_size=settings.max_queue_size,
            max_queue_bytes=settings.max_queue_bytes,
            report=status.update_queue,
            # stamps go on from the largest one recorded, whatever the clock did meanwhile
            stamps=StampClock(await store.largest_stamp()),
        )
        gate = UpstreamGate(status, request_deadline=settings.request_timeout * 2)
        slots = UploadSlots()
        watched: dict[str, WatchedPc] = {}  # the registry watcher's, read by the readers
        rng = random.Random()
        changes = ChangeQueue(live_limit=CHANGE_BUFFER, backfill_limit=BACKFILL_BUFFER)
        record_send, record_recv = trio.open_memory_channel[SessionRecord](RECORD_BUFFER)
        # bytes of records in memory between the readers and the uploads (RECORD_BUFFER alone
        # would let 32 records of up to max_file_bytes wait)
        budget = ByteBudget(max(MEMORY_BUDGET, 2 * settings.max_batch_bytes))
        batch_send, batch_recv = trio.open_memory_channel[Batch[SessionRecord]](0)

        reconfirm = Reconfirmer(ledger, watched, settings.max_file_bytes, self.nas)

        def delivery(kind: type[D], alone: bool = False) -> D:
            return kind(
                target=target,
                ledger=ledger,
                gate=gate,
                status=status,
                max_retries=settings.max_retries,
                rate_limit_max_retries=settings.rate_limit_max_retries,
                rate_limit_base_delay=settings.rate_limit_base_delay,
                rng=rng,
                reconfirm=reconfirm,
                alone=alone,
            )

        live = delivery(LiveDelivery)
        queued = delivery(QueuedDelivery)
        failing = FailingLane(ledger, gate, delivery(QueuedDelivery, alone=True))
        uploader = Uploader(live)
        drainer = Drainer(
            target=target,
            ledger=ledger,
            gate=gate,
            status=status,
            delivery=queued,
            batch_size=settings.batch_size,
            max_batch_bytes=settings.max_batch_bytes,
            queue_process_interval=settings.queue_process_interval,
            poll_interval=settings.poll_interval,
            rng=rng,
            upstream_probe_interval=settings.upstream_probe_interval,
        )
        batcher = Batcher(
            BatchBuffer(
                batch_size=settings.batch_size,
                max_batch_bytes=settings.max_batch_bytes,
                linger=settings.linger,
                flush_interval=settings.flush_interval,
            ),
            slots,
            status,
            ledger,
            budget,
            defer_to_queue=not self.once,
        )
        errors = ErrorFolder(settings.error_dir, store, keep_out=(settings.nas_base_path,))
        reader = Reader(ledger, status, watched, settings.max_file_bytes, budget, errors)
        watcher = RegistryWatcher(
            settings,
            ledger,
            status,
            watched,
            discovery_excludes(settings.registry_path.as_posix(), settings.error_folder.name),
            once=self.once,
            nas=self.nas,
        )
        reporter = SyncEventReporter(target, gate, status, status.sync_events)
        reconciler = Reconciler(
            ledger,
            target,
            watched,
            lambda: gate.state,
            settings.reconcile_interval,
            settings.max_file_bytes,
        )
        with self.shutdown.drain:
            async with trio.open_nursery() as core:
                await core.start(drainer.run)
                failing_scope = trio.CancelScope()  # records failing alone: durable, like the queue
                core.start_soon(_within, failing_scope, failing.run)
                reporter_scope = trio.CancelScope()
                core.start_soon(_within, reporter_scope, reporter.run)
                heartbeat = (
                    None if self.once else await open_heartbeat(settings, status, gate, target)
                )
                heartbeat_scope = trio.CancelScope()  # into gfx_agents, when the gate is idle
                if heartbeat is not None:
                    core.start_soon(_within, heartbeat_scope, heartbeat.run)
                retention_scope = trio.CancelScope()
                if settings.sync_events_retention_days > 0 and not self.once:
                    retention = SyncEventsRetention(target, settings.sync_events_retention_days)
                    core.start_soon(_within, retention_scope, retention.run)
                async with trio.open_nursery() as pipeline:
                    async with batch_recv:
                        for _ in range(UPLOAD_WORKERS):
                            await pipeline.start(uploader.run, batch_recv.clone(), slots)
                    pipeline.start_soon(batcher.run, record_recv, batch_send)
                    async with record_send:
                        with self.shutdown.intake:
                            async with trio.open_nursery() as intake:
                                for _ in range(READERS):
                                    intake.start_soon(reader.run, changes, record_send.clone())
                                await intake.start(watcher.run, changes)
                                if settings.reconcile_interval > 0 and not self.once:
                                    await intake.start(reconciler.run)
                                log.info(
                                    "agent_started",
                                    pcs=sorted(status.pcs),
                                    registry=status.registry_source,
                                    queue_db=str(settings.queue_db_path),
                                    target=settings.target_kind,
                                    supabase_url=settings.supabase_url,
                                    pending=status.queue_counts.pending,
                                )
                                task_status.started()
                # the pipeline has drained (shutdown): the queue is durable, stop the drainer;
                # sync_events are best-effort and end here
                reporter_scope.cancel()
                heartbeat_scope.cancel()
                retention_scope.cancel()
                failing_scope.cancel()
                drainer.stop()
