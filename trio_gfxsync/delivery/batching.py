"""Batching decisions, pure: what goes into the next upsert and when it is due. No I/O, no trio.

Like a producer with linger: a batch is due when an uploader is free and the oldest record has
waited `linger`, when it is full (`batch_size` records or `max_batch_bytes`), when a record has
waited `flush_interval` (the bound that holds under load), or when intake has ended.

Records are de-duplicated by the conflict key (gfx_pc_id, session_id): PostgREST refuses an
INSERT that names one key twice (error 21000). The newest copy wins (more hands, then newer
mtime), and the copies it replaced ride along as `superseded`: they are acknowledged with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..pokergfx import SessionRecord
from ..records import Deliverable, FileVersion, Key, Written

ROW_OVERHEAD = 1  # the comma between rows in the JSON array

R = TypeVar("R", bound=Deliverable)  # live (SessionRecord) or queued (QueuedRecord) records


@dataclass(frozen=True, slots=True)
class Batch(Generic[R]):
    """One upsert request's records; the same type whether they come live or from the queue."""

    records: tuple[R, ...]
    # older copies dropped by de-duplication, with the key of the record that replaced them
    superseded: tuple[tuple[Key, FileVersion], ...] = ()

    @property
    def body(self) -> bytes:
        return b"[" + b",".join(record.row for record in self.records) + b"]"

    @property
    def versions(self) -> tuple[FileVersion, ...]:
        """Every file version this batch acknowledges once stored."""
        return tuple(r.version for r in self.records) + tuple(v for _, v in self.superseded)

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class _Entry:
    record: SessionRecord
    arrived: float
    superseded: list[FileVersion] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.record.row) + ROW_OVERHEAD


def keep_newest(current: SessionRecord, incoming: SessionRecord) -> SessionRecord:
    """The copy the database would keep; independent of which one arrived first."""
    return incoming if incoming.is_newer_than(current) else current


class BatchBuffer:
    """Records waiting for an upsert, in arrival order, one per conflict key."""

    def __init__(
        self, *, batch_size: int, max_batch_bytes: int, linger: float, flush_interval: float
    ) -> None:
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.linger = linger
        self.flush_interval = flush_interval
        self._entries: dict[Key, _Entry] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.batch_size or self._bytes >= self.max_batch_bytes

    @property
    def oldest_arrival(self) -> float | None:
        for entry in self._entries.values():
            return entry.arrived
        return None

    def add(self, record: SessionRecord, now: float) -> SessionRecord | None:
        """Add a record; returns the one the buffer no longer holds (the older copy of the same
        session), if any: only its file version stays, to be acknowledged with the winner."""
        entry = self._entries.get(record.key)
        if entry is None:
            self._entries[record.key] = _Entry(record, now)
            self._bytes += len(record.row) + ROW_OVERHEAD
            return None
        winner = keep_newest(entry.record, record)
        loser = record if winner is entry.record else entry.record
        if loser.version != winner.version:
            entry.superseded.append(loser.version)
        self._bytes += len(winner.row) - len(entry.record.row)
        entry.record = winner  # keeps its place and arrival time: it has waited since then
        return loser

    def due(self, now: float, *, uploader_free: bool, closed: bool) -> bool:
        oldest = self.oldest_arrival
        if oldest is None:
            return False
        # compare against the same sums next_deadline() returns: `now - oldest >= linger` can
        # disagree with `now >= oldest + linger` by one rounding and spin the dispatcher
        if closed or self.full or now >= oldest + self.flush_interval:
            return True
        return uploader_free and now >= oldest + self.linger

    def next_deadline(self, *, uploader_free: bool) -> float:
        """When `due` turns true by time alone (inf when empty)."""
        oldest = self.oldest_arrival
        if oldest is None:
            return math.inf
        wait = self.linger if uploader_free else self.flush_interval
        return oldest + wait

    def take(self) -> Batch[SessionRecord]:
        """The oldest records, up to batch_size and max_batch_bytes (always at least one)."""
        records: list[SessionRecord] = []
        superseded: list[tuple[Key, FileVersion]] = []
        nbytes = 2  # the brackets
        for key in list(self._entries):
            entry = self._entries[key]
            if records and (
                len(records) >= self.batch_size or nbytes + entry.size > self.max_batch_bytes
            ):
                break
            del self._entries[key]
            self._bytes -= entry.size
            nbytes += entry.size
            records.append(entry.record)
            superseded.extend((key, version) for version in entry.superseded)
        return Batch(tuple(records), tuple(superseded))


def split(batch: Batch[R]) -> tuple[Batch[R], Batch[R]]:
    """Halves, to isolate a refused record; superseded copies stay with the record they lost to."""
    middle = len(batch.records) // 2
    first, second = batch.records[:middle], batch.records[middle:]
    first_keys = {r.key for r in first}
    return (
        Batch(first, tuple(s for s in batch.superseded if s[0] in first_keys)),
        Batch(second, tuple(s for s in batch.superseded if s[0] not in first_keys)),
    )


def subset(batch: Batch[R], records: Iterable[R]) -> Batch[R]:
    """Some records of a batch, with the copies they superseded."""
    chosen = tuple(records)
    keys = {r.key for r in chosen}
    return Batch(chosen, tuple(s for s in batch.superseded if s[0] in keys))


def partition(batch: Batch[R], written: Written) -> tuple[Batch[R], Batch[R]]:
    """The records the target wrote (their key came back with the hash sent), and those it
    skipped (keep-newest: the stored row carries a larger stamp). A 2xx alone stores nothing:
    only a key in the answer does."""
    stored = [r for r in batch.records if written.get(r.key, "") == r.version.sha256]
    kept = {r.key for r in stored}
    return subset(batch, stored), subset(batch, (r for r in batch.records if r.key not in kept))
