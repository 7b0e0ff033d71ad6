"""Which copy of a session the table holds, and the version stamps that keep it there whatever
the clocks do (DESIGN 3.4). Pure: no I/O, time comes in as an argument.

The rule:
- For one path, its latest content is the truth, even with fewer hands (a voided hand, a reset).
- Across paths holding the same session (an early copy left in another day folder), the most
  complete copy wins: more hands, then the newer mtime, then the path (only so that two agents
  choose alike). The mtime is clamped to the file's own ctime, which the NAS sets by its own
  clock when the file is written: a PC whose clock says 2300 would otherwise win for ever, and
  a clamp to the *agent's* clock would let two agents an hour apart prefer different copies and
  replace each other in turn. The winner is a function of the NAS alone.

A pairwise rule on the stored row cannot give that (with A6 on path A, then B130 and B5 on path
B, the orders B130,B5,A6 / A6,B130,B5 / B5,A6,B130 would end on three different rows). So the
agent chooses the winner, from each path's latest version, and sends it with a *version stamp*;
the database keeps the row with the larger stamp (`stored_row_wins`, the trigger's rule).

Stamps (`StampClock`): max(wall clock, the largest stamp this agent ever issued + 1, the
largest stamp sent or seen for that session + 1). They never go back within an agent, across its
restarts (seeded from the queue database), or below what the table holds for a session the
agent writes again. No clock orders two agents that see each other only through the table, so a
stamp is never trusted to say which *read* is newer: when the table skips a row (its stamp is
larger), the agent asks the table what it holds and the NAS what is current (`after_skip`), and
only bytes just re-confirmed against the NAS are written over the stored row, conditionally on
the stamp it saw.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN = -1  # a ctime not recorded (state written by an older agent)


@dataclass(frozen=True, slots=True)
class Copy:
    """One path's latest known version of a session."""

    rel_path: str
    hand_count: int
    mtime_ns: int
    ctime_ns: int = UNKNOWN


def rank(copy: Copy) -> tuple[int, int, str]:
    # min(mtime, ctime): the NAS stamps ctime on every write with its own clock; a restored
    # backup keeps an old mtime under a new ctime, a PC clock in 2300 a future mtime under a
    # present ctime: both are ranked by the earlier, which no PC clock can push ahead
    mtime = copy.mtime_ns if copy.ctime_ns == UNKNOWN else min(copy.mtime_ns, copy.ctime_ns)
    return (copy.hand_count, mtime, copy.rel_path)


def winner(copies: Iterable[Copy]) -> Copy:
    """The copy the table must hold (copies: one per path, each that path's latest)."""
    return max(copies, key=rank)


def stored_row_wins(stored_stamp: int | None, incoming_stamp: int | None) -> bool:
    """The database's rule (the BEFORE UPDATE trigger): an incoming row replaces the stored one
    unless the stored one carries a larger stamp. A row without a stamp (written by an agent
    older than the stamps) never holds one back; one arriving without a stamp loses to one with."""
    if incoming_stamp is None:
        return stored_stamp is not None
    return stored_stamp is not None and stored_stamp > incoming_stamp


class StampClock:
    """The stamps one agent issues: they only grow, whatever its wall clock does.

    Seeded at start with the largest stamp the queue database holds (acknowledged, queued or
    dead-lettered), so that a clock stepped back across a restart still issues larger stamps.
    """

    def __init__(self, floor: int = 0) -> None:
        self._last = floor

    @property
    def last(self) -> int:
        return self._last

    def issue(self, wall_ns: int, *, above: int | None = None) -> int:
        """A stamp larger than every one issued before and than `above` (the largest stamp
        sent or seen for the session at hand), and no smaller than the wall clock."""
        floor = self._last + 1 if above is None else max(self._last, above) + 1
        stamp = max(wall_ns, floor)
        self._last = stamp
        return stamp


@dataclass(frozen=True, slots=True)
class StoredRow:
    """What the table holds for one key (read back after it skipped an upsert)."""

    version_stamp: int | None
    file_hash: str | None
    file_path: str | None


class AfterSkip(enum.Enum):
    STORED = "stored"  # the table holds these very bytes: acknowledge as stored
    REPLACE = "replace"  # re-confirmed on the NAS: write over the stored row, conditionally
    SUPERSEDED = "superseded"  # the NAS shows another current winner: it takes the normal path


def after_skip(sent_hash: str, stored: StoredRow, fresh_winner_hash: str | None) -> AfterSkip:
    """The table skipped a row the agent sent (its stored stamp is larger). `fresh_winner_hash`:
    the hash of the session's winner read from the NAS *after* the skip (None: no copy left).

    Acknowledged as stored only when the table holds the bytes sent; replaced only when a read
    made now shows those bytes are still the winner; otherwise superseded, never stored."""
    if stored.file_hash == sent_hash:
        return AfterSkip.STORED
    if fresh_winner_hash == sent_hash:
        return AfterSkip.REPLACE
    return AfterSkip.SUPERSEDED
