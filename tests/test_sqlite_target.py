"""The embedded SQLite target, end to end: the same assertions as the PostgREST path.

The agent runs as a subprocess with GFX_SYNC_TARGET=sqlite over a copy of the real exports: every
session, the newest copy of the session stored twice (in both read orders), a restart that sends
nothing, a rewrite that follows; the keep-newest rule of the file compared with the trigger's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.truth import (
    GROWING_SESSION,
    PC_FOLDER,
    copy_samples,
    mismatches,
    set_mtime,
    sqlite_rows,
)
from tests.support.waits import wait_for, wait_until_equal
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.policy import Verdict
from trio_gfxsync.targets.sqlite import SqliteTarget

EARLY = f"{PC_FOLDER}/1017/PGFX_live_data_export GameID={GROWING_SESSION}.json"
LATE = f"{PC_FOLDER}/1021/PGFX_live_data_export GameID={GROWING_SESSION}.json"


def env_for(tmp: Path, nas: Path, **extra: object) -> dict[str, str]:
    env = agent_env(nas=nas, queue=tmp / "queue", gateway_url="", key="", target="sqlite", **extra)
    for name in ("GFX_SYNC_SUPABASE_URL", "GFX_SYNC_SUPABASE_SECRET_KEY"):
        env.pop(name)  # no Supabase at all
    return env


def add_hand(path: Path) -> int:
    document = json.loads(path.read_bytes())
    hand = dict(document["Hands"][-1])
    hand["HandNum"] += 1
    document["Hands"].append(hand)
    path.write_bytes(json.dumps(document).encode())
    return len(document["Hands"])


@pytest.mark.e2e
@pytest.mark.parametrize("read_first", ["late_copy", "early_copy"])
def test_the_real_exports_into_the_embedded_target(
    samples_dir: Path, tmp_path: Path, read_first: str
) -> None:
    nas = copy_samples(samples_dir, tmp_path / "nas")
    now = time.time()
    first, second = (LATE, EARLY) if read_first == "late_copy" else (EARLY, LATE)
    set_mtime(nas / second, now - 7200)
    set_mtime(nas / first, now - 3600)  # backfill goes newest first: this one is read first
    env = env_for(tmp_path, nas)
    target = tmp_path / "queue" / "target.db"
    with running_agent(env, tmp_path / "agent.log") as agent:
        took = wait_until_equal(nas, target, timeout=60)
        print(f"embedded target equal to the NAS after {took:.2f}s ({read_first} read first)")
        rows = sqlite_rows(target)
        assert rows[(PC_FOLDER, GROWING_SESSION)]["hand_count"] == 130
        assert rows[(PC_FOLDER, GROWING_SESSION)]["session_key"] == str(GROWING_SESSION)
        assert len(rows) == 9
        agent.wait_event("pc_scanned")
    updated = {key: row["updated_at"] for key, row in sqlite_rows(target).items()}

    # a restart over unchanged files sends nothing: no row is written again, even once a
    # rewrite (below) has gone through the whole pipeline after the backfill
    with running_agent(env, tmp_path / "agent.log") as agent:
        scanned = agent.wait_event("pc_scanned", pc_id=PC_FOLDER)
        assert scanned["backlog"] == 0
        hands = add_hand(nas / LATE)
        wait_for(
            lambda: sqlite_rows(target)[(PC_FOLDER, GROWING_SESSION)]["hand_count"] == hands,
            30,
            "the rewrite in the embedded target",
        )
        assert mismatches(nas, target) == []
        after = {key: row["updated_at"] for key, row in sqlite_rows(target).items()}
        changed = [key for key in updated if after[key] != updated[key]]
        assert changed == [(PC_FOLDER, GROWING_SESSION)], changed


def test_run_without_any_target_exits_2_and_says_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GFX_SYNC_")}
    env.update(
        GFX_SYNC_NAS_BASE_PATH=str(tmp_path / "nas"),
        GFX_SYNC_QUEUE_DB_PATH=str(tmp_path / "queue" / "q.db"),
    )
    result = run_cli(env, "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "GFX_SYNC_TARGET=sqlite" in result.stderr
    assert "GFX_SYNC_SUPABASE_URL" in result.stderr and "deploy/.env.example" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_queue_database_cannot_be_the_target(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GFX_SYNC_")}
    env.update(
        GFX_SYNC_TARGET="sqlite",
        GFX_SYNC_NAS_BASE_PATH=str(tmp_path),
        GFX_SYNC_QUEUE_DB_PATH=str(tmp_path / "q.db"),
        GFX_SYNC_SQLITE_TARGET_PATH=str(tmp_path / "q.db"),
    )
    result = run_cli(env, "run", cwd=tmp_path)
    assert result.returncode == 2 and "GFX_SYNC_SQLITE_TARGET_PATH" in result.stderr


def row(session_id: int, hands: int, stamp: int | None, path: str = "a.json") -> dict[str, object]:
    return {
        "gfx_pc_id": "PC01",
        "session_id": session_id,
        "file_name": path,
        "file_path": path,
        "file_hash": f"h{hands}-{stamp}",
        "file_size": 1,
        "file_mtime": "2025-10-16T10:00:00Z",
        "raw_json": {"ID": session_id, "Hands": [{}] * hands},
        "table_type": "FEATURE_TABLE",
        "event_title": None,
        "software_version": None,
        "hand_count": hands,
        "player_count": 0,
        "session_created_at": None,
        "version_stamp": stamp,
    }


async def test_the_embedded_target_keeps_the_larger_stamp_in_any_order(tmp_path: Path) -> None:
    """The trigger's rule: a later read wins, even with fewer hands (a voided hand)."""
    sid = 638966318331324926
    versions = [row(sid, 130, 10), row(sid, 129, 20), row(sid, 6, 5)]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]):
        target = SqliteTarget(tmp_path / f"t{order}.db")
        try:
            for i in order:
                await target.upsert_sessions(orjson.dumps([versions[i]]))
        finally:
            await target.aclose()
        stored = sqlite_rows(tmp_path / f"t{order}.db")[("PC01", sid)]
        assert (stored["hand_count"], stored["version_stamp"]) == (129, 20), order
        assert stored["raw_json"]["ID"] == sid, "18-digit ids stay exact"


async def test_embedded_target_failures_map_onto_the_policy(tmp_path: Path) -> None:
    target = SqliteTarget(tmp_path / "t.db")
    try:
        await target.probe_write()
        broken = row(1, 1, 1)
        broken["raw_json"] = None  # NOT NULL in the table: refused, like a 23502
        with pytest.raises(UpstreamError) as refused:
            await target.upsert_sessions(orjson.dumps([broken]))
        assert refused.value.verdict is Verdict.REFUSED
        with pytest.raises(UpstreamError) as mixed:
            await target.upsert_sessions(orjson.dumps([{"gfx_pc_id": "PC01"}]))
        assert mixed.value.verdict is Verdict.SPLIT
        # a table dropped under a running agent: a schema mismatch (pause), never a refusal
        conn = sqlite3.connect(tmp_path / "t.db")
        conn.execute("DROP TABLE gfx_sessions")
        conn.commit()
        conn.close()
        with pytest.raises(UpstreamError) as gone:
            await target.upsert_sessions(orjson.dumps([row(2, 1, 1)]))
        assert gone.value.verdict is Verdict.SCHEMA_MISMATCH
    finally:
        await target.aclose()


async def test_the_embedded_target_names_what_it_wrote_and_replaces_only_on_the_stamp_seen(
    tmp_path: Path,
) -> None:
    """As PostgREST with return=representation: a row the keep-newest rule skipped is absent
    from the answer; a conditional replace writes only over the stamp it names."""
    sid = 638966318331324926
    target = SqliteTarget(tmp_path / "t.db")
    try:
        first = await target.upsert_sessions(orjson.dumps([row(sid, 3, 50)]))
        assert first == {("PC01", sid): "h3-50"}
        skipped = await target.upsert_sessions(orjson.dumps([row(sid, 4, 40)]))  # older stamp
        assert skipped == {}
        stored = await target.stored_versions("PC01", [sid, 1])
        assert list(stored) == [sid] and stored[sid].version_stamp == 50
        assert stored[sid].file_hash == "h3-50"
        newer = orjson.dumps(row(sid, 4, 51))
        assert not await target.replace_session("PC01", sid, newer, 49), "the row moved"
        assert await target.replace_session("PC01", sid, newer, 50)
        assert (await target.stored_versions("PC01", [sid]))[sid].version_stamp == 51
    finally:
        await target.aclose()
