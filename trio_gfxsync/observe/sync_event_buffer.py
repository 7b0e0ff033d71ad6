"""Buffer of `sync_events` rows, pure: `note` as things happen, `take_rows` when sending."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from ..logs import clip

MAX_ROWS = 1000
MAX_ERROR_TEXT = 1000


@dataclass
class SyncEventBuffer:
    """Pure accumulation: `note` as things happen, `take_rows` when it is time to send."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_path: dict[tuple[str, str], str] = field(default_factory=dict)
    errors: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=MAX_ROWS))
    retry: list[dict[str, object]] = field(default_factory=list)
    dropped: int = 0

    def note(self, pc_id: str, kind: str, path: str | None, error: str | None = None) -> None:
        if kind == "error":
            if len(self.errors) == self.errors.maxlen:
                self.dropped += 1
            self.errors.append(
                {
                    "gfx_pc_id": pc_id,
                    "event_type": "error",
                    "file_path": path,
                    "record_count": 1,
                    "error_message": clip(error or "", MAX_ERROR_TEXT),
                }
            )
            return
        self.counts[(pc_id, kind)] += 1
        if path is not None:
            self.last_path[(pc_id, kind)] = path

    def take_rows(self) -> list[dict[str, object]]:
        rows = list(self.retry)
        for (pc_id, kind), count in sorted(self.counts.items()):
            rows.append(
                {
                    "gfx_pc_id": pc_id,
                    "event_type": kind,
                    # one file: say which; many: the count says it all
                    "file_path": self.last_path.get((pc_id, kind)) if count == 1 else None,
                    "record_count": count,
                    "error_message": None,
                }
            )
        rows.extend(self.errors)
        self.counts.clear()
        self.last_path.clear()
        self.errors.clear()
        self.retry = []
        return rows

    def give_back(self, rows: list[dict[str, object]]) -> None:
        keep = rows[-MAX_ROWS:]
        self.dropped += len(rows) - len(keep)
        self.retry = keep
