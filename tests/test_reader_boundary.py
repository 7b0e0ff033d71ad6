"""The reader/store boundary as a property: whatever a file is called, stamped and holds, reading
it gives an outcome (never an exception out of the stage), and whatever that outcome is, the
store takes it (acknowledged, queued or quarantined) and gives the name back unchanged.

Real files on disk, the real `read_change` and the real SQLite store; hypothesis picks the name
(any bytes but NUL and "/"), the mtime (0 to the year 2262 and beyond what ext4 keeps), and the
bytes (a real export, cut anywhere, behind a BOM, or noise)."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trio_gfxsync.intake.reader import Unreadable, Unsettled, Vanished, read_change
from trio_gfxsync.intake.tracker import FileChange
from trio_gfxsync.pokergfx import SessionRecord
from trio_gfxsync.records import FileVersion, file_stat, stat_fields
from trio_gfxsync.simulator.exports import new_session
from trio_gfxsync.state.store import Store

name_bytes = st.binary(min_size=1, max_size=120).map(
    lambda b: b.replace(b"\x00", b"_").replace(b"/", b"_")
)


@st.composite
def contents(draw: st.DrawFn) -> bytes:
    session = new_session(
        random.Random(draw(st.integers(0, 2**32))), datetime(2025, 5, 1, tzinfo=UTC)
    )
    for _ in range(draw(st.integers(0, 3))):
        session.hand()
    whole = session.to_bytes()
    kind = draw(st.sampled_from(["whole", "cut", "bom", "noise", "empty"]))
    if kind == "cut":
        return whole[: draw(st.integers(0, len(whole)))]
    if kind == "bom":
        return b"\xef\xbb\xbf" + whole
    if kind == "noise":
        return draw(st.binary(max_size=300))
    return b"" if kind == "empty" else whole


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    name=name_bytes,
    data=contents(),
    mtime_ns=st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 10**18])),
)
def test_any_file_reads_to_an_outcome_and_the_store_takes_it(
    name: bytes, data: bytes, mtime_ns: int
) -> None:
    assume(name not in (b".", b".."))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = os.path.join(os.fsencode(folder), name)
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        except (OverflowError, OSError):
            assume(False)  # a time the filesystem itself refuses: nothing to read
        rel = os.fsdecode(name)
        stat = stat_fields(file_stat(os.stat(path)))
        change = FileChange(
            "PC01", rel, stat[0], stat[1], "created", True, ctime_ns=stat[2], inode=stat[3]
        )
        outcome = read_change(root / rel, change, 1 << 20, version_stamp=1)
        assert isinstance(outcome, SessionRecord | Unsettled | Vanished | Unreadable)
        if isinstance(outcome, Unreadable):
            assert not isinstance(outcome.error, OSError), outcome  # a regular file, readable
        trio.run(_store_it, root / "pending.db", rel, stat, data, outcome)


async def _store_it(
    db: Path, rel: str, stat: tuple[int, int, int, int], data: bytes, outcome: object
) -> None:
    store = await Store.open(db)
    try:
        if isinstance(outcome, SessionRecord):
            await store.enqueue([outcome], [outcome.version])
            assert [r.version.rel_path for r in await store.due(10, 1 << 30)] == [rel]
        else:
            sha = hashlib.sha256(data).hexdigest()
            version = FileVersion("PC01", rel, stat[0], stat[1], sha, None, stat[2], stat[3])
            await store.quarantine(version, "invalid_json", "broken")
            assert [e.rel_path for e in await store.dead_letters()] == [rel]
        # the exact name comes back, whatever its bytes (the scanner finds the file by it)
        assert set(await store.file_states("PC01")) == {rel}
    finally:
        await store.close()
