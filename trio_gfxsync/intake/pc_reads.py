"""One PC's reads of the NAS: one at a time, each within the deadline, none while one hangs.

A stale mount hangs every read of its PC, and a hung thread cannot be taken back. So a PC has
at most one read out at a time: a reader that takes a change of a PC whose read is in flight
parks it here and takes the next change (the reader holding the PC reads the parked ones after
its own, newest version of a path only), and a PC's backfill waits while anything is parked.
A read past GFX_SYNC_NAS_READ_TIMEOUT marks the PC hung (`show` puts the reason on its status):
its changes wait, parked, and none is read until the stuck thread returns. Then the change it
was reading is read again (its result came too late to trust), and the parked ones after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ..logs import get_logger
from ..nas_calls import NasCalls, NasHung
from .tracker import FileChange

T = TypeVar("T")
log = get_logger("reader")


class PcReads:
    def __init__(
        self,
        pc_id: str,
        nas: NasCalls,
        *,
        give_back: Callable[[FileChange], None],
        show: Callable[[str | None], None] = lambda reason: None,
    ) -> None:
        self.pc_id = pc_id
        self.nas = nas
        self.key = ("read", pc_id)
        self._give_back = give_back  # a change back to the readers' queue, at once
        self._show = show
        self.busy = False  # a read is out (in flight, or hung)
        self.hung: str | None = None
        self._stuck: FileChange | None = None
        self.parked: dict[str, FileChange] = {}
        self._changed = trio.Event()

    # -- the readers' side --

    def begin(self, change: FileChange) -> bool:
        """Take the PC for reading `change`; False: parked, the PC has a read out."""
        if self.busy:
            self._park(change)
            return False
        self.busy = True
        return True

    def next(self) -> FileChange | None:
        """After a read: the next parked change to read (the PC stays taken), or None (free)."""
        if self.hung is not None:
            return None  # the stuck read still holds the PC
        if self.parked:
            rel = next((r for r, c in self.parked.items() if c.live), next(iter(self.parked)))
            change = self.parked.pop(rel)
            self._notify()
            return change
        self.busy = False
        self._notify()
        return None

    async def read(self, fn: Callable[..., T], *args: object, change: FileChange | None) -> T:
        """`fn(*args)` in a NAS thread within the deadline (the caller has taken the PC).
        Past it the PC is hung, and `change` is read again when the stuck thread returns."""
        try:
            return await self.nas.call(self.key, fn, *args)
        except NasHung as exc:
            self._hang(change, exc.reason)
            raise

    # -- the reconciler's side: it waits its turn instead of parking --

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        while self.busy:
            if self.hung is not None:
                raise NasHung(self.hung)
            await self._changed.wait()
        self.busy = True
        try:
            yield
        finally:
            change = self.next()
            if change is not None:
                self.busy = False  # a reader takes the PC again with this change
                self._give_back(change)
                self._notify()

    # -- the backfill's side --

    async def wait_ready(self) -> None:
        """Until nothing of this PC is parked and no read of it hangs (the backfill feeds one
        file at a time: a hung PC's backlog stays in its scanner, not in memory here)."""
        while self.hung is not None or self.parked:
            await self._changed.wait()

    # -- inside --

    def _park(self, change: FileChange) -> None:
        # a newer change of the same path replaces the older: only the latest is worth a read
        self.parked.pop(change.rel_path, None)
        self.parked[change.rel_path] = change
        self._notify()

    def _hang(self, change: FileChange | None, reason: str) -> None:
        if self.hung is None:
            waited = f"{self.nas.timeout:g} s"
            self.hung = f"a read has not returned within {waited} (NAS not answering?)"
            self._stuck = change
            log.warning(
                "pc_read_hung",
                pc_id=self.pc_id,
                path=change.rel_path if change is not None else None,
                error=reason,
            )
            self._show(self.hung)
            self._notify()
        if not self.nas.when_returned(self.key, self._returned):
            self._returned()  # no thread is out after all (it never began, or just returned)

    def _returned(self) -> None:
        if self.hung is None:
            return
        log.info("pc_read_recovered", pc_id=self.pc_id, parked=len(self.parked))
        self.hung = None
        self._show(None)
        stuck, self._stuck = self._stuck, None
        if stuck is not None and stuck.rel_path not in self.parked:
            self.parked[stuck.rel_path] = stuck
        self.busy = False
        if self.parked:
            first = next(iter(self.parked))
            self._give_back(self.parked.pop(first))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
