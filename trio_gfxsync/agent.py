"""The agent: one nursery tree from the signal watcher down to the uploaders (DESIGN 2).

    root nursery
    ├── signal watcher        SIGTERM/SIGINT: cancel intake, then drain within shutdown_timeout
    └── core (drain scope)
        ├── uploader x UPLOAD_WORKERS     <- Batch          (capacity 0: "free" means waiting)
        ├── batcher                       <- SessionRecord  (bounded)
        └── intake (cancel scope)
            ├── reader x READERS          <- FileChange     (bounded)
            └── registry watcher
                └── scanner[PC] x N

Shutdown cancels the intake only: its send channels close, end-of-stream flows down, the
batcher sends what it holds, the uploaders finish, and the core ends by itself, or at the
drain deadline. Whatever was not acknowledged by then is found again by the next start.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import trio

from .batching import Batch, BatchBuffer
from .ledger import FileLedger
from .logs import get_logger
from .pipeline import Batcher, Reader
from .pokergfx import SessionRecord
from .postgrest import PostgrestClient
from .registry import discovery_excludes
from .scanner import FileChange
from .settings import Settings
from .status import AgentStatus
from .store import Store
from .uploader import Uploader, UploadSlots, UpstreamGate
from .watcher import RegistryWatcher

log = get_logger("agent")

READERS = 4  # NAS reads wait on SMB; a few in parallel hide the latency
UPLOAD_WORKERS = 2  # one lingers for batches, the second takes flush-due batches under load
CHANGE_BUFFER = 8  # small, so a live change never queues behind many backfill files
RECORD_BUFFER = 32
CLOSE_TIMEOUT = 2.0


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
                shutdown.force()


class Agent:
    def __init__(self, settings: Settings, *, client: PostgrestClient | None = None) -> None:
        self.settings = settings
        self.status = AgentStatus()
        self.shutdown = Shutdown(settings)
        self._client = client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        store = await Store.open(settings.queue_db_path)
        client = self._client or PostgrestClient(settings)
        try:
            async with trio.open_nursery() as root:
                await root.start(watch_signals, self.shutdown, self.status)
                await self._run_core(store, client, task_status)
                root.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await client.aclose()
                await store.close()
        log.info("agent_stopped", graceful=self.shutdown.requested)

    async def _run_core(
        self, store: Store, client: PostgrestClient, task_status: trio.TaskStatus[None]
    ) -> None:
        settings = self.settings
        ledger = FileLedger(store)
        gate = UpstreamGate(self.status)
        slots = UploadSlots()
        roots: dict[str, Path] = {}
        change_send, change_recv = trio.open_memory_channel[FileChange](CHANGE_BUFFER)
        record_send, record_recv = trio.open_memory_channel[SessionRecord](RECORD_BUFFER)
        batch_send, batch_recv = trio.open_memory_channel[Batch](0)
        uploader = Uploader(
            client=client,
            ledger=ledger,
            gate=gate,
            status=self.status,
            max_retries=settings.max_retries,
            rate_limit_base_delay=settings.rate_limit_base_delay,
            rng=random.Random(),
        )
        batcher = Batcher(
            BatchBuffer(
                batch_size=settings.batch_size,
                max_batch_bytes=settings.max_batch_bytes,
                linger=settings.linger,
                flush_interval=settings.flush_interval,
            ),
            slots,
            self.status,
        )
        reader = Reader(ledger, self.status, roots, settings.max_file_bytes)
        watcher = RegistryWatcher(
            settings,
            ledger,
            self.status,
            roots,
            discovery_excludes(settings.registry_path.as_posix(), settings.error_folder.name),
        )
        with self.shutdown.drain:
            async with trio.open_nursery() as core:
                async with batch_recv:
                    for _ in range(UPLOAD_WORKERS):
                        await core.start(uploader.run, batch_recv.clone(), slots)
                core.start_soon(batcher.run, record_recv, batch_send)
                async with change_recv, record_send:
                    with self.shutdown.intake:
                        async with trio.open_nursery() as intake:
                            for _ in range(READERS):
                                intake.start_soon(
                                    reader.run, change_recv.clone(), record_send.clone()
                                )
                            await intake.start(watcher.run, change_send)
                            log.info(
                                "agent_started",
                                pcs=sorted(self.status.pcs),
                                registry=self.status.registry_source,
                                queue_db=str(settings.queue_db_path),
                                supabase_url=settings.supabase_url,
                            )
                            task_status.started()
