"""The one vocabulary of a PC's state, pure: what /api/status, /metrics, the dashboard, /health
and heartbeats all say of a GFX PC.

In order of severity (a fleet view shows the worst of its PCs):

starting  its first scan has not completed yet
running   scanned, and recently
stale     no complete scan for a while (a hung SMB mount raises nothing)
hung      a read of it is past its deadline (GFX_SYNC_NAS_READ_TIMEOUT) and has not returned
missing   its folder is gone (renamed, moved, its mount gone): still listed until it comes back,
          the registry drops it, or `trio-gfxsync pcs forget ID`
error     its folder cannot be scanned (permissions, I/O, a watch_path the registry refuses)

The scanner knows three of them (starting, running, error, plus a missing folder); stale and hung
are what the clock and the reads add: `pc_state` makes the one word of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

STARTING: Final = "starting"
RUNNING: Final = "running"
STALE: Final = "stale"
HUNG: Final = "hung"
MISSING: Final = "missing"
ERROR: Final = "error"

PC_STATES: Final = (STARTING, RUNNING, STALE, HUNG, MISSING, ERROR)  # least severe first
SEVERITY: Final = {state: rank for rank, state in enumerate(PC_STATES)}


def pc_state(
    scanner: str, *, missing: bool = False, stale: bool = False, hung: bool = False
) -> str:
    """The PC's state from what its scanner says (`starting`, `running` or `error`), whether
    its folder is gone, its scan overdue, and a read of it hung."""
    if scanner == ERROR:
        return MISSING if missing else ERROR
    if hung:
        return HUNG
    if scanner == RUNNING and stale:
        return STALE
    return RUNNING if scanner == RUNNING else STARTING


def is_up(state: str) -> bool:
    """`gfxsync_pc_up`: 1 only while the PC is scanned as it should be."""
    return state == RUNNING


def worst(states: Iterable[str]) -> str | None:
    """The most severe of `states` (None for none); unknown words rank above `error`."""
    ranked = [(SEVERITY.get(state, len(PC_STATES)), state) for state in states]
    return max(ranked)[1] if ranked else None
