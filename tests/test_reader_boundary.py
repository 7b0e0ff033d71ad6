"""The reader/store boundary as a property: whatever a file is called, stamped and holds, reading
it gives an outcome (never an exception out of the stage), and whatever that outcome is, the
store takes it (acknowledged, queued or quarantined) and gives the name back unchanged.

Real files on disk, the real `read_change` and the real SQLite store; hypothesis picks the name
(any bytes but NUL and "/"), the mtime (0 to the year 2262 and beyond what ext4 keeps), and the
bytes (a real export, cut anywhere, behind a BOM, or noise). A whole export, with or without a
BOM, must read as its session; so must every real PokerGFX export in ../shared/samples."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
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
def contents(draw: st.DrawFn) -> tuple[str, bytes, dict[str, Any]]:
    """(kind, the file's bytes, the export they were made from)."""
    session = new_session(
        random.Random(draw(st.integers(0, 2**32))), datetime(2025, 5, 1, tzinfo=UTC)
    )
    for _ in range(draw(st.integers(0, 3))):
        session.hand()
    whole = session.to_bytes()
    document = orjson.loads(whole)
    kind = draw(st.sampled_from(["whole", "cut", "bom", "noise", "empty"]))
    if kind == "cut":
        return kind, whole[: draw(st.integers(0, len(whole)))], document
    if kind == "bom":
        return kind, b"\xef\xbb\xbf" + whole, document
    if kind == "noise":
        return kind, draw(st.binary(max_size=300)), document
    return kind, b"" if kind == "empty" else whole, document


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
    name: bytes, data: tuple[str, bytes, dict[str, Any]], mtime_ns: int
) -> None:
    assume(name not in (b".", b".."))
    kind, data, document = data
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
        if kind in ("whole", "bom"):
            # a whole export, with or without a BOM, is a session whatever its name and mtime
            assert_session_of(outcome, document)
        trio.run(_store_it, root / "pending.db", rel, stat, data, outcome)


def assert_session_of(outcome: object, document: dict[str, Any]) -> None:
    assert isinstance(outcome, SessionRecord), outcome
    assert (outcome.session_id, outcome.hand_count) == (document["ID"], len(document["Hands"]))
    assert orjson.loads(outcome.raw_json) == document


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["whole", "bom"])
def test_every_real_export_whole_or_behind_a_bom_reads_as_its_session(
    tmp_path: Path, samples_dir: Path, bom: bytes
) -> None:
    """The real PokerGFX exports (../shared/samples/pokergfx) read as sessions, the session and
    hand counts their own JSON holds."""
    exports = sorted(samples_dir.rglob("PGFX_live_data_export GameID=*.json"))
    assert len(exports) >= 10, exports
    for number, source in enumerate(exports):
        raw = source.read_bytes()
        rel = f"{number}/{source.name}"
        path = tmp_path / rel
        path.parent.mkdir()
        path.write_bytes(bom + raw)
        stat = stat_fields(file_stat(os.stat(path)))
        change = FileChange(
            "PC01", rel, stat[0], stat[1], "created", True, ctime_ns=stat[2], inode=stat[3]
        )
        outcome = read_change(path, change, 1 << 22, version_stamp=1)
        assert_session_of(outcome, orjson.loads(raw))


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
