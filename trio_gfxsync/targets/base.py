"""The seam between delivery and wherever rows are stored.

The uploader, the drainer and the sync_events reporter see only this protocol. A target stores
or raises `UpstreamError` whose `verdict` (policy.Verdict) says what the failure means; it never
retries, sleeps or queues on its own: that is the error policy's job, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ..keep_newest import StoredRow
from ..records import Written


class Target(Protocol):
    async def upsert_sessions(self, body: bytes) -> Written:
        """Upsert a JSON array of gfx_sessions rows (keep-newest applies in the target).

        Returns the key and stored file_hash of each row the target wrote. A key of the body
        that is missing was skipped by keep-newest (the stored row carries a larger stamp):
        nothing of it was stored."""
        ...

    async def stored_versions(self, pc_id: str, session_ids: Sequence[int]) -> dict[int, StoredRow]:
        """Stamp, hash and path of the rows the table holds for these sessions of one PC
        (a session without a row is absent)."""
        ...

    async def replace_session(
        self, pc_id: str, session_id: int, row: bytes, expected_stamp: int | None
    ) -> bool:
        """Write `row` (one JSON object) over the stored row of this key only if that still
        carries `expected_stamp`; False when it moved meanwhile (or is gone)."""
        ...

    async def insert_sync_events(self, body: bytes) -> None:
        """Append a JSON array of sync_events rows."""
        ...

    async def probe(self) -> None:
        """Is the target there and does it take our credentials? Stores nothing."""
        ...

    async def probe_write(self) -> None:
        """A write that writes nothing: checks privileges, columns and the conflict key."""
        ...

    async def stored_hashes(
        self, pc_id: str, after: int | None, limit: int
    ) -> list[tuple[int, str | None]]:
        """(session_id, file_hash) of a PC's rows, by session_id, after `after`: one page of at
        most `limit` rows (a server may answer fewer: Supabase caps a read at 1,000 rows)."""
        ...

    async def delete_sync_events(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` sync_events rows created before `before`, oldest first;
        how many went."""
        ...

    async def pcs_in_table(self) -> dict[str, int]:
        """Each gfx_pc_id the table holds rows under, with how many."""
        ...

    async def delete_pc_rows(self, pc_id: str) -> int:
        """Delete every row of one gfx_pc_id (the hand tables' trigger takes their rows with
        them); how many went. For `reconcile --unknown-pcs --apply` only: the agent never
        deletes a row."""
        ...

    async def aclose(self) -> None: ...
