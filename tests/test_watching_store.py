"""What the agent should be watching, in the queue database (schema step 8): the kept registry
and the PCs watched so far, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from trio_gfxsync.state.schema import MIGRATIONS
from trio_gfxsync.state.store import Store


async def test_an_upgrade_knows_every_pc_with_acknowledged_files(tmp_path: Path) -> None:
    """A PC an older agent watched (its acknowledged files) and whose folder is gone by the
    upgrade still shows `missing`: step 8 lists it among the PCs watched."""
    path = tmp_path / "pending.db"
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:7]:
        conn.executescript(step)
    conn.execute(
        "INSERT INTO file_state (pc_id, rel_path, size, mtime_ns, sha256, acked_at) "
        "VALUES ('PC 02', 'a.json', 1, 2, 'abc', 5), ('PC 02', 'b.json', 1, 2, 'x', 3),"
        " ('PC01', 'c.json', 1, 2, 'y', 9)"
    )
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    store = await Store.open(path)
    try:
        assert await store.known_pcs() == {"PC 02": "PC 02", "PC01": "PC01"}
        assert await store.kept_registry() is None
    finally:
        await store.close()


async def test_the_kept_registry_and_the_known_pcs_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    store = await Store.open(path)
    try:
        await store.keep_registry(b'{"pcs": []}', 100.0)
        await store.keep_registry(b'{"pcs": [1]}', 200.0)  # replaced, one row
        await store.note_known_pcs({"PC01": "PC01", "table-2": "PC02"}, 1.0)
    finally:
        await store.close()
    store = await Store.open(path)
    try:
        kept = await store.kept_registry()
        assert kept is not None and (kept.data, kept.stored_at) == (b'{"pcs": [1]}', 200.0)
        assert await store.forget_pcs(["table-2", "PC09"]) == ["table-2"]
        assert await store.known_pcs() == {"PC01": "PC01"}
        assert await store.forget_registry() is True
        assert await store.forget_registry() is False
        assert await store.kept_registry() is None
    finally:
        await store.close()
