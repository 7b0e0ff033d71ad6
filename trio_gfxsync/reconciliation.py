"""What the table lacks: the table's rows for one PC against the winners of its acknowledged files.

A row deleted by hand, a point-in-time restore, a table truncated by a test: the agent's own
state says every file was stored, so nothing would ever send them again. Reconciliation compares
`(session_id, file_hash)` in the table with the winner (keep_newest.py) among the PC's
acknowledged copies of each session, and names what must be sent again: sessions the table does
not hold, and sessions it holds with other bytes than the winner's. It never deletes: a row
whose files are gone from the NAS stays. Sessions with a record already waiting (queued, dead
lettered, in flight) are left to that record. Two agents of an HA pair see the same NAS and
choose the same winners, so they agree. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .keep_newest import Copy, winner
from .records import Stat, stat_fields


@dataclass(frozen=True, slots=True)
class AckedCopy:
    """One acknowledged file holding a session: what the store knows of it."""

    session_id: int
    rel_path: str
    hand_count: int
    stat: Stat
    sha256: str

    @property
    def copy(self) -> Copy:
        _, mtime_ns, ctime_ns, _ = stat_fields(self.stat)
        return Copy(self.rel_path, self.hand_count, mtime_ns, ctime_ns)


@dataclass(frozen=True, slots=True)
class Resend:
    session_id: int
    rel_path: str
    stat: Stat  # as acknowledged: a file that differs now is the scanner's, not ours
    sha256: str
    reason: Literal["missing", "different"]


@dataclass(frozen=True, slots=True)
class Plan:
    pc_id: str
    on_nas: int  # sessions among the acknowledged files
    in_table: int  # rows of this PC in the table
    busy: int  # differing sessions left to a record already waiting
    resend: tuple[Resend, ...] = field(default=())

    @property
    def missing(self) -> int:
        return sum(1 for r in self.resend if r.reason == "missing")

    @property
    def different(self) -> int:
        return sum(1 for r in self.resend if r.reason == "different")


def plan(
    pc_id: str,
    copies: Iterable[AckedCopy],
    stored: Mapping[int, str | None],
    busy: set[int],
) -> Plan:
    """`stored`: session_id -> file_hash of every row of this PC in the table."""
    by_session: dict[int, dict[str, AckedCopy]] = {}
    for c in copies:
        by_session.setdefault(c.session_id, {})[c.rel_path] = c
    resend: list[Resend] = []
    waiting = 0
    for session_id in sorted(by_session):
        candidates = by_session[session_id]
        best = candidates[winner(c.copy for c in candidates.values()).rel_path]
        if session_id in stored and stored[session_id] == best.sha256:
            continue
        if session_id in busy:
            waiting += 1
            continue
        reason: Literal["missing", "different"] = "different" if session_id in stored else "missing"
        resend.append(Resend(session_id, best.rel_path, best.stat, best.sha256, reason))
    return Plan(pc_id, len(by_session), len(stored), waiting, tuple(resend))
