"""Rows the table skipped: the shell of `keep_newest.after_skip`.

An upsert answers 2xx for every row, also for one the keep-newest trigger skipped because the
stored row carries a larger stamp (another agent whose clock runs fast, this NAS before NTP
corrected it, an earlier run of this agent). Such a record was not stored, whatever the 2xx
says. For each one the agent asks the table what it holds (one read per PC), and if those are
not the bytes it sent, the NAS what is current now:

- the table holds the bytes sent: stored;
- a read made now shows the bytes sent are still the session's winner: they are written over
  the stored row *conditionally* (`version_stamp=eq.<the stamp seen>`, a larger stamp); if the
  row moved meanwhile, read it and try again, at most `MAX_REPLACE_ROUNDS` times, then from the
  queue (never a refusal);
- otherwise the NAS shows another current winner: the record sent is superseded, and the fresh
  read goes out like any other record.

A stamp is never raised for bytes that were not just re-confirmed against the NAS: a lagging
agent's stale copy (from its queue after a SIGKILL, a reconcile, a `dlq replay`) can never
overwrite its peer's newer row this way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol

from ..errors import NasUnavailable, UpstreamError
from ..keep_newest import AfterSkip, StoredRow, after_skip
from ..logs import get_logger
from ..observe.status import AgentStatus
from ..pokergfx import SessionRecord, restamp
from ..state.ledger import FileLedger
from ..targets.base import Target
from .batching import Batch, R, subset
from .gate import UpstreamGate

log = get_logger("keep_newest")

MAX_REPLACE_ROUNDS = 3
UNSETTLED_DELAY = 5.0  # seconds before a skipped record that could not be settled is tried again


class Reconfirm(Protocol):
    """The NAS's say (intake's `Reconfirmer`): delivery knows the scanners only through this."""

    async def current_winner(
        self, pc_id: str, session_id: int, paths: Sequence[str]
    ) -> SessionRecord | None:
        """Read the session's copies now (these paths and every acknowledged copy) and return
        the winner (not stamped yet); None when no copy is left. Raises NasUnavailable when
        the NAS cannot tell now."""
        ...


class SkipOutcomes(Protocol[R]):
    """What a delivery does with a skipped record once it is settled (live or queued)."""

    async def stored(self, batch: Batch[R]) -> None: ...

    async def superseded(self, batch: Batch[R]) -> None: ...

    async def unsettled(self, batch: Batch[R], delay: float) -> None: ...


@dataclass
class SkipResolver(Generic[R]):
    target: Target
    gate: UpstreamGate
    ledger: FileLedger
    status: AgentStatus
    reconfirm: Reconfirm | None  # None: nothing to read the NAS with (records wait)

    async def resolve(self, batch: Batch[R], outcomes: SkipOutcomes[R]) -> None:
        by_pc: dict[str, list[R]] = {}
        for record in batch.records:
            by_pc.setdefault(record.version.pc_id, []).append(record)
        for pc_id, records in by_pc.items():
            try:
                rows = await self._stored(pc_id, [r.session_id for r in records])
            except UpstreamError as exc:
                log.warning("skipped_rows_unread", pc_id=pc_id, error=exc.summary)
                await outcomes.unsettled(subset(batch, records), UNSETTLED_DELAY)
                continue
            for record in records:
                await self._settle(subset(batch, [record]), rows.get(record.session_id), outcomes)

    async def _stored(self, pc_id: str, session_ids: list[int]) -> dict[int, StoredRow]:
        return await self.gate.fetch(partial(self.target.stored_versions, pc_id, session_ids))

    async def _settle(
        self, batch: Batch[R], stored: StoredRow | None, outcomes: SkipOutcomes[R]
    ) -> None:
        record = batch.records[0]
        v = record.version
        fields = {"pc_id": v.pc_id, "path": v.rel_path, "session_id": str(record.session_id)}
        if stored is None:
            # gone between the upsert and the read (deleted by hand, a restore): send it again
            log.warning("skipped_row_gone", **fields)
            await outcomes.unsettled(batch, 0.0)
            return
        fresh: SessionRecord | None = None
        if stored.file_hash != v.sha256:
            # the table holds other bytes: only a read of the NAS made now can tell whose
            paths = [v.rel_path]
            if stored.file_path and stored.file_path != v.rel_path:
                paths.append(stored.file_path)
            try:
                if self.reconfirm is None:
                    raise NasUnavailable("no NAS reader")
                fresh = await self.reconfirm.current_winner(v.pc_id, record.session_id, paths)
            except NasUnavailable as exc:
                log.warning("skipped_row_unconfirmed", **fields, error=str(exc))
                await outcomes.unsettled(batch, UNSETTLED_DELAY)
                return
        decision = after_skip(v.sha256, stored, fresh.version.sha256 if fresh else None)
        (log.info if decision is AfterSkip.STORED else log.warning)(
            "row_skipped",
            **fields,
            sent_stamp=record.version_stamp,
            stored_stamp=stored.version_stamp,
            stored_path=stored.file_path,
            decision=decision.value,
        )
        if decision is AfterSkip.STORED:
            await outcomes.stored(batch)
        elif decision is AfterSkip.SUPERSEDED:
            await outcomes.superseded(batch)
            if fresh is not None:
                await self._fresh_winner(fresh, stored)
        else:
            assert fresh is not None, "only a confirmed winner is replaced"
            await self._replace(batch, fresh, stored, outcomes)

    async def _fresh_winner(self, fresh: SessionRecord, stored: StoredRow) -> None:
        """The winner read after the skip: the table holds it already, or it goes out."""
        fresh = restamp(fresh, self.ledger.issue_stamp(above=stored.version_stamp))
        if fresh.version.sha256 == stored.file_hash:
            await self.ledger.acknowledge([fresh.version])
        else:
            await self.ledger.enqueue([fresh], [fresh.version], error=None, front=True)

    async def _replace(
        self,
        batch: Batch[R],
        fresh: SessionRecord,
        stored: StoredRow,
        outcomes: SkipOutcomes[R],
    ) -> None:
        key = batch.records[0].key
        for _ in range(MAX_REPLACE_ROUNDS):
            stamp = self.ledger.issue_stamp(above=stored.version_stamp)
            row = restamp(fresh, stamp)
            moved: StoredRow | None = None
            try:
                done = await self.gate.fetch(
                    partial(self.target.replace_session, *key, row.row, stored.version_stamp)
                )
                if not done:
                    # the row moved since it was read (another agent, another write): look again
                    moved = (await self._stored(key[0], [key[1]])).get(key[1])
            except UpstreamError as exc:
                log.warning(
                    "row_replace_failed", pc_id=key[0], session_id=str(key[1]), error=exc.summary
                )
                await outcomes.unsettled(batch, UNSETTLED_DELAY)
                return
            if done:
                repeated = self.status.note_replaced(key, time.monotonic())
                log.warning(
                    "row_replaced",
                    pc_id=key[0],
                    path=row.version.rel_path,
                    session_id=str(key[1]),
                    stamp=stamp,
                    over_stamp=stored.version_stamp,
                    replaced_lately=repeated,
                )
                await self.ledger.acknowledge([row.version], stored=[(key, stamp)])
                await outcomes.stored(batch)
                return
            if moved is None:
                await outcomes.unsettled(batch, 0.0)
                return
            if moved.file_hash == fresh.version.sha256:
                await outcomes.stored(batch)
                return
            stored = moved
        log.warning("row_replace_gave_up", pc_id=key[0], session_id=str(key[1]))
        await outcomes.unsettled(batch, UNSETTLED_DELAY)
