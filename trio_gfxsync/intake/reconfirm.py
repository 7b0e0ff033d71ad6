"""The NAS's say on a row the table skipped (delivery/skipped.py): which copy of a session is
the winner *now*, read again from the files themselves.

Delivery knows this only as its `Reconfirm` protocol: the table said it holds a row with a
larger stamp and other bytes; before the agent writes over it, the bytes it sent must be shown,
by a read made after the skip, to still be the session's winner (keep_newest.py). Every copy the
agent knows of is read again (the path sent, the stored row's path, every acknowledged copy),
so a stale copy can never win for want of looking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import NasUnavailable
from ..keep_newest import winner
from ..nas_calls import NasCalls, NasHung
from ..pokergfx import SessionRecord
from ..records import make_stat
from ..state.ledger import FileLedger
from .reader import Unreadable, Unsettled, copy_of, read_change
from .scanner import WatchedPc
from .tracker import reread


@dataclass
class Reconfirmer:
    ledger: FileLedger
    watched: dict[str, WatchedPc]  # the registry watcher's
    max_file_bytes: int
    # NAS threads with a deadline, one outstanding call per PC (nas_calls.py). Not the PC's
    # reader turn (`pc.reads`): a reader holding it may wait on the very upload that waits here.
    nas: NasCalls

    async def current_winner(
        self, pc_id: str, session_id: int, paths: Sequence[str]
    ) -> SessionRecord | None:
        pc = self.watched.get(pc_id)
        if pc is None:
            raise NasUnavailable(f"PC {pc_id} is not watched now")
        acked = await self.ledger.store.copies(pc_id, session_id)
        fresh: dict[str, SessionRecord] = {}
        for rel in sorted({*paths, *(c.rel_path for c in acked)}):
            # a stat nothing matches: a parse error reads as "still being written"
            change = reread(pc_id, rel, make_stat(-1, 0, 0, 0))
            try:
                outcome = await self.nas.call(
                    ("reconfirm", pc_id),
                    read_change,
                    pc.root / rel,
                    change,
                    self.max_file_bytes,
                    None,
                )
            except NasHung as exc:
                raise NasUnavailable(exc.reason) from None
            if isinstance(outcome, Unsettled | Unreadable):
                raise NasUnavailable(f"{rel} cannot be read now ({type(outcome).__name__})")
            if isinstance(outcome, SessionRecord) and outcome.session_id == session_id:
                fresh[rel] = outcome
        if not fresh:
            return None
        return fresh[winner(copy_of(r) for r in fresh.values()).rel_path]
