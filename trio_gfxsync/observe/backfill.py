"""Progress of the startup backfill, for the log: pure, the clock comes in.

A backfill of 10^5 files is told in a `backfill_progress` line every few seconds (files read,
sessions stored, rate, ETA) and one `backfill_done` summary, not in a line per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROGRESS_EVERY = 5.0  # seconds between progress lines


@dataclass
class BackfillProgress:
    started: float | None = None  # when a backlog was first seen
    files_at_start: int = 0
    stored_at_start: int = 0
    last_line: float = 0.0
    done: bool = False

    def update(
        self, now: float, *, backlog: int, files_read: int, sessions_stored: int, waiting: int
    ) -> tuple[str, dict[str, Any]] | None:
        """The log line due now (event name and fields), if any. `backlog`: files not read yet;
        `waiting`: records read but not stored or queued yet."""
        if self.done:
            return None
        if self.started is None:
            if backlog == 0:
                return None
            self.started, self.last_line = now, now
            self.files_at_start, self.stored_at_start = files_read, sessions_stored
            return None
        elapsed = max(now - self.started, 1e-9)
        read = files_read - self.files_at_start
        stored = sessions_stored - self.stored_at_start
        rate = read / elapsed
        fields: dict[str, Any] = {
            "files_read": read,
            "sessions_stored": stored,
            "files_left": backlog,
            "files_per_second": round(rate, 1),
            "seconds": round(elapsed, 1),
        }
        if backlog == 0 and waiting == 0:
            self.done = True
            return "backfill_done", fields
        if now - self.last_line < PROGRESS_EVERY:
            return None
        self.last_line = now
        fields["eta_seconds"] = round(backlog / rate) if rate > 0 else None
        return "backfill_progress", fields
