"""The reconciler's shell on real files: what it reads again from the NAS is queued only while
its bytes are still the acknowledged ones (README, Reconcile); a file that changed since is the
scanner's to send (`changed`)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from tests.support.tree import make_session, write_session
from trio_gfxsync.intake.reader import ReadOutcome, read_change
from trio_gfxsync.intake.reconciler import read_again
from trio_gfxsync.intake.tracker import FileChange
from trio_gfxsync.pokergfx import SessionRecord
from trio_gfxsync.reconciliation import Resend
from trio_gfxsync.records import file_stat

MAX_FILE_BYTES = 1 << 22


def acknowledged(root: Path, rel: str, session_id: int) -> Resend:
    """What the agent acknowledged of the file as it is now: its stat and the sha of its bytes."""
    path = root / rel
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Resend(session_id, rel, file_stat(os.stat(path)), sha, "missing")


async def test_only_bytes_still_equal_to_the_acknowledged_ones_are_queued(tmp_path: Path) -> None:
    root = tmp_path / "PC01"
    rng = random.Random(3)
    same, grown, gone = (make_session(n, 2, rng) for n in (1, 2, 3))
    for session in (same, grown, gone):
        write_session(root / "1016" / session.file_name, session)
    resends = [acknowledged(root, f"1016/{s.file_name}", s.session_id) for s in (same, grown, gone)]
    acked_sha = {r.session_id: r.sha256 for r in resends}
    # after the acknowledgement: one file rewritten with a hand more, one deleted
    grown.hands.append(dict(grown.hands[-1], HandNum=3))
    write_session(root / "1016" / grown.file_name, grown)
    (root / "1016" / gone.file_name).unlink()

    queued: list[SessionRecord] = []

    async def queue(records: list[SessionRecord]) -> None:
        queued.extend(records)

    async def read(path: Path, change: FileChange) -> ReadOutcome:
        return read_change(path, change, MAX_FILE_BYTES)

    result = await read_again(root, "PC01", resends, MAX_FILE_BYTES, queue, lambda: 7, read)
    assert (result.queued, result.changed, result.unreadable) == (1, 2, 0)
    assert [(r.session_id, r.hand_count) for r in queued] == [(same.session_id, 2)]
    assert queued[0].version.sha256 == acked_sha[same.session_id]
    assert queued[0].version_stamp == 7
