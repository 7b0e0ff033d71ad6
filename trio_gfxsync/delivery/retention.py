"""sync_events keeps `sync_events_retention_days` of history: the agent prunes it once a day.

Best effort, beside the uploads and never in their way: it deletes a few hundred rows a request
with a pause between requests (a long DELETE would hold locks that Realtime and the dashboards
wait on), stops after a bounded number per pass (the next day goes on), and a failure (a
migration not applied: no DELETE grant) is logged once per pass and changes nothing else: it
is not an upstream state, so it never pauses uploading.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

from ..errors import UpstreamError
from ..logs import get_logger
from ..targets.base import Target

log = get_logger("retention")

PASS_INTERVAL = 86_400.0  # once a day
FIRST_PASS_AFTER = 60.0  # not in the way of a start's backfill
BATCH_ROWS = 500
BATCH_PAUSE = 0.2
MAX_BATCHES = 2_000  # a pass deletes at most a million rows; the next day goes on


@dataclass
class SyncEventsRetention:
    target: Target
    retention_days: float
    first_pass_after: float = FIRST_PASS_AFTER
    interval: float = PASS_INTERVAL

    async def run(self) -> None:
        if self.retention_days <= 0:
            return  # 0: kept for ever
        await trio.sleep(self.first_pass_after)
        while True:
            await self.prune()
            await trio.sleep(self.interval)

    async def prune(self) -> int:
        """One pass; how many rows went."""
        if self.retention_days <= 0:
            return 0  # 0: kept for ever (the setting's promise, whoever calls)
        before = datetime.now(UTC) - timedelta(days=self.retention_days)
        deleted = 0
        try:
            for _ in range(MAX_BATCHES):
                gone = await self.target.delete_sync_events(before, BATCH_ROWS)
                deleted += gone
                if gone < BATCH_ROWS:
                    break
                await trio.sleep(BATCH_PAUSE)
        except UpstreamError as exc:
            log.warning(
                "sync_events_retention_failed",
                error=exc.summary,
                deleted=deleted,
                hint="apply migration 20261204100000_gfx_sync_events_retention.sql "
                "(grant delete on sync_events)",
            )
            return deleted
        if deleted:
            log.info("sync_events_pruned", deleted=deleted, before=before.isoformat())
        return deleted
