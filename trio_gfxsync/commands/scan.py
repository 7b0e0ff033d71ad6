"""`trio-gfxsync scan`: one backfill of every PC folder, then exit.

The same pipeline as `run` (so the same guarantees), with each scanner ending once its files
are acknowledged. Progress: a bar redrawn in place on a terminal; a plain line every few seconds
otherwise (what `docker run` and CI logs want). Exit 0 when everything was stored, quarantined
or dead-lettered; 1 when records are left in the offline queue (upstream unreachable).
"""

from __future__ import annotations

import sys
import time

import trio

from ..agent import Agent
from ..observe.status import AgentStatus
from ..observe.upstream import Upstream
from ..settings import Settings
from ..state.rows import QueueCounts
from ..state.store import Store

BAR_WIDTH = 30
TTY_REFRESH = 0.2
LINE_REFRESH = 5.0


def progress_figures(status: AgentStatus) -> tuple[int, int, int]:
    """(files read, files to read so far, sessions stored)."""
    read = sum(status.files_seen.values())
    backlog = sum(pc.scan.backlog for pc in status.pcs.values())
    return read, read + backlog, sum(status.sessions_upserted.values())


def render(status: AgentStatus, elapsed: float, *, tty: bool) -> str:
    read, total, stored = progress_figures(status)
    queued = status.queue_counts.pending
    tail = f"{read}/{total} files read, {stored} sessions stored, {elapsed:.0f}s"
    if status.upstream not in (Upstream.CONNECTED, Upstream.UNKNOWN):
        tail += f", upstream {status.upstream} ({queued} queued)"
    if not tty:
        return f"scan: {tail}"
    done = read / total if total else 0.0
    filled = int(BAR_WIDTH * done)
    return f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:4.0%} {tail}\x1b[K"


async def show_progress(status: AgentStatus, started: float) -> None:
    tty = sys.stdout.isatty()
    while True:
        sys.stdout.write(
            render(status, time.monotonic() - started, tty=tty) + ("" if tty else "\n")
        )
        sys.stdout.flush()
        await trio.sleep(TTY_REFRESH if tty else LINE_REFRESH)


async def run_scan(settings: Settings) -> int:
    agent = Agent(settings, once=True)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(show_progress, agent.status, started)
        await agent.run()
        nursery.cancel_scope.cancel()
    counts = await _final_counts(settings)
    read, _, stored = progress_figures(agent.status)
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    print(
        f"scan done in {time.monotonic() - started:.1f}s: {read} files read, {stored} sessions "
        f"stored, {counts.pending} queued, {counts.quarantined} quarantined, "
        f"{counts.dead_letters} dead letters"
    )
    for pc_id, pc in sorted(agent.status.pcs.items()):
        if pc.state == "error":
            print(f"PC {pc_id}: {pc.reason}")
    if agent.shutdown.requested:
        print("interrupted: run `scan` again (or `run`) to finish")
        return 1
    return 1 if counts.pending else 0


async def _final_counts(settings: Settings) -> QueueCounts:
    store = await Store.open(settings.queue_db_path)
    try:
        return await store.counts()
    finally:
        await store.close()
