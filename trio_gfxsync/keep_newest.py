"""Which copy of a session the table holds: a function of the NAS's current files (DESIGN 3.4).

- For one path, its latest content is the truth, even with fewer hands (a voided hand, a reset).
- Across paths holding the same session (an early copy left in another day folder), the most
  complete copy wins: more hands, then the newer mtime, then the path (only so that two agents
  choose alike). An mtime is clamped to the agent's clock: a PC whose clock says 2300 would
  otherwise win for ever.

A pairwise rule on the stored row cannot give that: with A6 on path A, then B130 and B5 on path
B, the orders B130,B5,A6 / A6,B130,B5 / B5,A6,B130 would end on three different rows. So the
agent chooses the winner here, from each path's latest version, and sends it with a *version
stamp*: the agent's clock when it read the file. Stamps only grow as the NAS changes (a file is
read after it was written), whichever agent reads it; the database keeps the row with the larger
stamp (`stored_row_wins`, the trigger's rule), so arrival order, retries, the offline queue and
which of two agents sent last do not matter. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Copy:
    """One path's latest known version of a session."""

    rel_path: str
    hand_count: int
    mtime_ns: int


def rank(copy: Copy, now_ns: int) -> tuple[int, int, str]:
    return (copy.hand_count, min(copy.mtime_ns, now_ns), copy.rel_path)


def winner(copies: Iterable[Copy], now_ns: int) -> Copy:
    """The copy the table must hold (copies: one per path, each that path's latest)."""
    return max(copies, key=lambda c: rank(c, now_ns))


def stored_row_wins(stored_stamp: int | None, incoming_stamp: int | None) -> bool:
    """The database's rule (the BEFORE UPDATE trigger): an incoming row replaces the stored one
    unless the stored one carries a larger stamp. A row without a stamp (written by an agent
    older than the stamps) never holds one back; one arriving without a stamp loses to one with."""
    if incoming_stamp is None:
        return stored_stamp is not None
    return stored_stamp is not None and stored_stamp > incoming_stamp
