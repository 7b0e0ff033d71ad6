"""Heartbeats: every `heartbeat_interval` the agent upserts its row of gfx_agents, then asks
the database to record any agent that went offline or came back (rpc/gfx_fleet_check).

The fleet view (gfx_fleet, migration 20261205130000_gfx_fleet.sql) reads those rows from
anywhere. A heartbeat never delays a session: it goes only when the upstream gate is idle and
holds nothing, within a short deadline of its own, and its answer never changes the upstream
state (a missing migration is logged once; it never pauses uploads). While upstream is down it
is skipped, not queued: the next one says everything anyway. A gate that never idles (a long
backfill) would make a working agent look dead: after OVERDUE intervals without one, the next
heartbeat takes the gate's one slot in turn, between two uploads, for its few milliseconds. Off under TARGET=sqlite, and
while GFX_SYNC_VENUE is unset (in Docker the host name is a container id, new at every deploy).

The agent's id is made once and kept in a file of its own beside the queue database, so that
it survives a recovery of that database.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from .. import __version__, names
from ..errors import UpstreamError
from ..logs import get_logger
from ..policy import Verdict
from ..settings import Settings
from .fleet_report import AgentIdentity, agent_row
from .status import AgentStatus

log = get_logger("heartbeat")

AGENT_ID_FILE = "agent_id"
DEADLINE = 3.0  # seconds a heartbeat may hold the gate's one slot
BUSY_RETRY = 0.5  # seconds between looks at a busy gate, until the next beat is due
OVERDUE = 2  # intervals without a heartbeat sent before one waits for its turn at the gate
# what a database without the fleet migration answers (table, function missing)
MISSING_CODES = frozenset({"PGRST205", "PGRST202", "42P01", "42883"})
MIGRATION = "20261205130000_gfx_fleet.sql"


class IdleGate(Protocol):
    async def send_if_idle(
        self, request: Callable[[], Awaitable[object]], *, deadline: float, wait: bool = False
    ) -> tuple[Verdict, UpstreamError | None] | None: ...

    @property
    def sendable(self) -> bool: ...


@runtime_checkable
class FleetTarget(Protocol):
    async def upsert_agent(self, body: bytes) -> None: ...

    async def rpc(self, function: str, args: dict[str, object]) -> object: ...


def valid_agent_id(text: str) -> bool:
    return 1 <= len(text) <= 128 and text.isprintable() and not any(c.isspace() for c in text)


def load_agent_id(folder: Path) -> str:
    """The id kept in `folder`/agent_id, made (a UUID) and written atomically the first time.
    Blocking: run it in a thread."""
    path = folder / AGENT_ID_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if valid_agent_id(text):
        return text
    if text:
        log.warning("agent_id_invalid", path=str(path), action="a new one is made")
    agent_id = str(uuid.uuid4())
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{AGENT_ID_FILE}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as out:
        out.write(agent_id + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    log.info("agent_id_created", agent_id=agent_id, path=str(path))
    return agent_id


async def open_heartbeat(
    settings: Settings, status: AgentStatus, gate: IdleGate, target: object
) -> Heartbeat | None:
    """The heartbeat task for this agent, or None (off: the start-up line says why)."""
    if settings.target_kind == "sqlite" or not isinstance(target, FleetTarget):
        log.info(
            "heartbeats_off",
            reason="TARGET=sqlite: heartbeats go to Supabase's gfx_agents only",
        )
        return None
    if settings.venue is None:
        log.warning(
            "heartbeats_off",
            reason="GFX_SYNC_VENUE is unset: set it to show this agent in the fleet (gfx_fleet)",
        )
        return None
    folder = settings.queue_db_path.parent
    try:
        agent_id = await trio.to_thread.run_sync(load_agent_id, folder)
    except OSError as exc:
        # a read-only queue folder: heartbeats go on, under an id this run only
        agent_id = str(uuid.uuid4())
        log.warning("agent_id_not_kept", folder=str(folder), error=str(exc), agent_id=agent_id)
    identity = AgentIdentity(
        agent_id=agent_id,
        venue=settings.venue,
        host=socket.gethostname(),
        version=__version__,
        heartbeat_interval=settings.heartbeat_interval,
    )
    log.info(
        "heartbeats_on",
        agent_id=agent_id,
        venue=identity.venue,
        host=identity.host,
        interval=identity.heartbeat_interval,
    )
    return Heartbeat(identity, status, gate, target)


class Heartbeat:
    def __init__(
        self,
        identity: AgentIdentity,
        status: AgentStatus,
        gate: IdleGate,
        target: FleetTarget,
        *,
        deadline: float = DEADLINE,
    ) -> None:
        self.identity = identity
        self.status = status
        self.gate = gate
        self.target = target
        self.deadline = deadline
        self.sent = 0
        self.skipped = 0  # beats not sent: upstream down, or the gate never idle in time
        self._last_sent = trio.current_time()
        self._missing_logged = False
        self._failing: str | None = None  # the last failure logged, until a beat goes through

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        interval = self.identity.heartbeat_interval
        self._last_sent = trio.current_time()
        while True:
            due = trio.current_time() + interval
            while not await self.beat(wait=self._overdue()) and self.gate.sendable:
                # not sent: busy with sessions, or held by a Retry-After; look again until the
                # next one is due (a beat that was sent and refused waits for the next)
                if trio.current_time() + BUSY_RETRY >= due:
                    break
                await trio.sleep(BUSY_RETRY)
            await trio.sleep_until(due)

    def _overdue(self) -> bool:
        """No heartbeat left for OVERDUE intervals: the gate has had no idle moment (a long
        backfill). The next one takes the gate's slot in turn, between two requests, rather
        than let a working agent look stale (3 intervals) to the fleet."""
        return trio.current_time() - self._last_sent >= OVERDUE * self.identity.heartbeat_interval

    async def beat(self, *, wait: bool = False) -> bool:
        """One heartbeat, then one fleet check when it was stored; False when the heartbeat
        was not sent (the gate was not idle). `wait`: take the gate's slot in turn."""
        body = names.dumps(agent_row(self.identity, self.status, trio.current_time()))
        outcome = await self.gate.send_if_idle(
            lambda: self.target.upsert_agent(body), deadline=self.deadline, wait=wait
        )
        if outcome is None:
            self.skipped += 1
            return False
        self._last_sent = trio.current_time()
        if not self._stored("heartbeat", outcome):
            return True
        self.sent += 1
        answer: list[object] = []

        async def check() -> None:
            answer.append(await self.target.rpc("gfx_fleet_check", {}))

        checked = await self.gate.send_if_idle(check, deadline=self.deadline)
        if checked is not None and self._stored("gfx_fleet_check", checked) and answer:
            self._log_transitions(answer[0])
        return True

    def _stored(self, what: str, outcome: tuple[Verdict, UpstreamError | None]) -> bool:
        verdict, error = outcome
        if error is None and verdict is Verdict.STORED:
            if self._failing is not None:
                log.info("heartbeat_recovered", previous=self._failing)
                self._failing = None
            return True
        if error is not None and error.code in MISSING_CODES:
            if not self._missing_logged:
                log.warning(
                    "heartbeat_migration_missing",
                    request=what,
                    error=error.summary,
                    hint=f"apply {MIGRATION} (`trio-gfxsync schema` prints it); "
                    "uploads are not affected",
                )
                self._missing_logged = True
            return False
        summary = error.summary if error is not None else str(verdict)
        if self._failing != summary:
            log.warning("heartbeat_failed", request=what, error=summary)
            self._failing = summary
        return False

    def _log_transitions(self, answer: object) -> None:
        """gfx_fleet_check's answer: the transitions this call recorded (none, mostly)."""
        if not isinstance(answer, list):
            return
        for row in answer:
            if isinstance(row, dict):
                log.info(
                    "fleet_agent_" + str(row.get("event_type", "changed")).removeprefix("agent_"),
                    agent_id=row.get("agent_id"),
                    venue=row.get("venue"),
                    last_seen=row.get("last_seen"),
                )
