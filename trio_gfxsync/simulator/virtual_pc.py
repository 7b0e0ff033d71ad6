"""Virtual GFX PCs writing into a NAS folder, as PokerGFX does: one file per session in a day
folder, the whole file rewritten in place as each hand ends.

- `write_archive`: N historical sessions at once, byte-identical (contents and mtimes) for the
  same seed, start and count: what benchmarks and crash tests build their trees from.
- `run_live`: PCs playing now, a hand every `hand_seconds`, a new session every few dozen hands,
  with optional trouble the agent must survive (`TROUBLES`).
"""

from __future__ import annotations

import codecs
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from ..logs import get_logger
from .exports import TICKS_PER_SECOND, Session, day_folder, file_name, new_session, ticks_of

log = get_logger("simulator")

# trouble: what a real NAS share sees now and then
TROUBLES = {
    "partial": "a rewrite caught half-way (the rest follows a moment later)",
    "truncated": "a file cut short that stays so until the next hand rewrites it",
    "bom": "a rewrite with a UTF-8 byte order mark",
    "old-copy": "an early copy of the session left in another day folder",
    "void-hand": "the last hand voided: the same file, one hand fewer",
}
HANDS_PER_SESSION = (1, 200)


def pc_name(number: int) -> str:
    return f"PC{number:02d}"


def session_path(nas: Path, pc: str, session: Session) -> Path:
    return nas / pc / day_folder(session.created_ticks) / file_name(session.session_id)


def write_file(path: Path, data: bytes, mtime_ticks: int | None = None) -> None:
    """Blocking: rewrite in place (PokerGFX truncates and writes; no rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime_ticks is not None:
        ns = _unix_ns(mtime_ticks)
        os.utime(path, ns=(ns, ns))


def _unix_ns(ticks: int) -> int:
    unix_epoch = ticks_of(datetime(1970, 1, 1, tzinfo=UTC))
    return (ticks - unix_epoch) * 100


def write_archive(
    nas: Path,
    *,
    pcs: int,
    sessions: int,
    seed: int,
    start: datetime,
    hands: tuple[int, int] = HANDS_PER_SESSION,
    gap_seconds: tuple[int, int] = (60, 3600),
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Blocking: `sessions` finished sessions spread over `pcs` PCs, oldest first from `start`,
    each file's mtime its last hand's end. Same arguments, same bytes and mtimes."""
    rng = random.Random(seed)
    written: list[Path] = []
    clocks = [
        start + timedelta(minutes=7 * pc, microseconds=rng.randrange(10**6)) for pc in range(pcs)
    ]
    for index in range(sessions):
        pc = index % pcs
        session = new_session(rng, clocks[pc], rng.choice(("FEATURE_TABLE", "FINAL_TABLE")))
        count = _hand_count(rng, hands)
        for _ in range(count):
            session.hand()
        path = session_path(nas, pc_name(pc + 1), session)
        write_file(path, session.to_bytes(), session.clock)
        written.append(path)
        seconds = (session.clock - session.created_ticks) // TICKS_PER_SECOND
        clocks[pc] += timedelta(
            seconds=seconds + rng.randrange(*gap_seconds), microseconds=rng.randrange(10**6)
        )
        if progress is not None and index % 100 == 99:
            progress(index + 1)
    return written


def _hand_count(rng: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    # real sessions: many short ones, some long (1 to 161 hands in the samples)
    return min(high, max(low, int(rng.triangular(low, high, low + (high - low) / 3))))


@dataclass
class LivePc:
    """One virtual PC at a table now."""

    nas: Path
    name: str
    rng: random.Random
    hands_per_session: int
    troubles: frozenset[str] = frozenset()
    trouble_rate: float = 0.0
    session: Session | None = None
    written: int = 0
    first_path: Path | None = None
    hands_at_start: list[int] = field(default_factory=list)

    def next_hand(self) -> list[str]:
        """Blocking: play a hand and rewrite the file; returns the troubles that happened."""
        now = datetime.now(UTC)
        if self.session is None or len(self.session.hands) >= self.hands_per_session:
            self.session = new_session(self.rng, now)
            self.session.clock = ticks_of(now)
        session = self.session
        session.clock = max(session.clock, ticks_of(now))
        session.hand()
        path = session_path(self.nas, self.name, session)
        happened = [t for t in sorted(self.troubles) if self.rng.random() < self.trouble_rate]
        if "void-hand" in happened and len(session.hands) > 1:
            session.void_last_hand()
        data = session.to_bytes()
        if "bom" in happened:
            data = codecs.BOM_UTF8 + data
        if "truncated" in happened:
            write_file(path, data[: len(data) // 2])
        elif "partial" in happened:
            write_file(path, data[: len(data) // 3])
        else:
            write_file(path, data)
        if "old-copy" in happened:
            # the samples hold such a pair: 6 hands in 1017/, 130 hands in 1021/
            later_day = day_folder(session.created_ticks + 86_400 * TICKS_PER_SECOND)
            copy = self.nas / self.name / later_day / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        self.written += 1
        return happened

    def finish_partial(self) -> None:
        """Blocking: the rest of a partial write lands."""
        if self.session is not None:
            write_file(session_path(self.nas, self.name, self.session), self.session.to_bytes())


async def run_live(
    nas: Path,
    *,
    pcs: int,
    hand_seconds: float,
    seed: int | None = None,
    hands_per_session: int = 40,
    troubles: frozenset[str] = frozenset(),
    trouble_rate: float = 0.05,
    task_status: trio.TaskStatus[list[LivePc]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """PCs playing until cancelled: each writes its first hand at once, then one per
    `hand_seconds` (jittered, so the PCs do not beat in step)."""
    master = random.Random(seed)
    tables = [
        LivePc(
            nas,
            pc_name(n),
            random.Random(master.random()),
            hands_per_session,
            troubles,
            trouble_rate,
        )
        for n in range(1, pcs + 1)
    ]
    async with trio.open_nursery() as nursery:
        for table in tables:
            nursery.start_soon(_play, table, hand_seconds)
        task_status.started(tables)


async def _play(table: LivePc, hand_seconds: float) -> None:
    while True:
        happened = await trio.to_thread.run_sync(table.next_hand)
        if happened:
            log.info("simulated_trouble", pc_id=table.name, troubles=happened)
        if "partial" in happened:
            await trio.sleep(min(1.0, hand_seconds / 4))
            await trio.to_thread.run_sync(table.finish_partial)
        await trio.sleep(hand_seconds * table.rng.uniform(0.7, 1.3))
