"""End to end: `trio-gfxsync run` as a subprocess over a copy of the real exports, through the
gateway stand-in into the real PostgREST and PostgreSQL. No registry file: PCs are discovered.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.truth import (
    GROWING_SESSION,
    PC_FOLDER,
    copy_samples,
    expected_rows,
    mismatches,
    set_mtime,
)
from tests.support.waits import wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

EARLY_COPY = f"{PC_FOLDER}/1017/PGFX_live_data_export GameID={GROWING_SESSION}.json"
LATE_COPY = f"{PC_FOLDER}/1021/PGFX_live_data_export GameID={GROWING_SESSION}.json"


def add_hand(path: Path) -> int:
    """Rewrite the file in place as PokerGFX does when a hand ends; return the new hand count."""
    document = json.loads(path.read_bytes())
    hand = dict(document["Hands"][-1])
    hand["HandNum"] = hand.get("HandNum", 0) + 1
    document["Hands"].append(hand)
    path.write_bytes(json.dumps(document, indent=2).encode())
    return len(document["Hands"])


@pytest.mark.parametrize(
    ("read_first", "batch_size"),
    [("late_copy", 500), ("early_copy", 500), ("early_copy", 1)],
    ids=["130-hand-copy-first", "6-hand-copy-first", "6-hand-copy-first-batch-of-1"],
)
def test_samples_end_to_end(
    samples_dir: Path,
    clean_db: infra.Database,
    fresh_gateway: infra.Gateway,
    tmp_path: Path,
    read_first: str,
    batch_size: int,
) -> None:
    nas = copy_samples(samples_dir, tmp_path / "nas")
    # The backfill reads newest files first: mtimes decide which copy of the session goes first.
    now = time.time()
    first, second = (
        (LATE_COPY, EARLY_COPY) if read_first == "late_copy" else (EARLY_COPY, LATE_COPY)
    )
    set_mtime(nas / second, now - 7200)
    set_mtime(nas / first, now - 3600)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=batch_size,
    )
    with running_agent(env, tmp_path / "agent.log", ready=None) as agent:
        elapsed = wait_until_equal(nas, clean_db.dsn, timeout=60)
        rows = infra.query(
            clean_db.dsn,
            "select hand_count, session_key from gfx_sessions where session_id = %s",
            (GROWING_SESSION,),
        )
        assert rows == [{"hand_count": 130, "session_key": str(GROWING_SESSION)}]
        assert len(expected_rows(nas)) == 9  # 10 JSON files, one session twice
        assert fresh_gateway.bad_bearer_count == 0
        print(
            f"backfill of {len(expected_rows(nas))} sessions equal to the NAS after {elapsed:.2f}s"
        )
        seconds = agent.stop_cleanly()
        print(f"SIGTERM -> exit 0 in {seconds:.2f}s")

    # Restart: nothing changed, so nothing is sent. The first scan finds no backlog, and the
    # only upsert afterwards is the rewrite below (stored means the pipeline has run past it).
    fresh_gateway.reset()
    with running_agent(env, tmp_path / "agent.log", ready=None) as agent:
        scanned = agent.wait_event("pc_scanned", pc_id=PC_FOLDER)
        assert scanned["backlog"] == 0 and scanned["files"] == 10, scanned

        # A hand ends: the file is rewritten in place and its row must follow.
        target = nas / LATE_COPY
        hands = add_hand(target)
        written = time.monotonic()

        def updated() -> bool:
            rows = infra.query(
                clean_db.dsn,
                "select hand_count from gfx_sessions where session_id = %s",
                (GROWING_SESSION,),
            )
            return bool(rows) and rows[0]["hand_count"] == hands

        wait_for(updated, 20, "the rewritten session's row")
        latency = time.monotonic() - written
        print(f"rewritten file in the table after {latency:.2f}s (poll_interval 1.0)")
        assert mismatches(nas, clean_db.dsn) == []
        upserts = [
            r for r in fresh_gateway.records if r.method == "POST" and r.path == "/gfx_sessions"
        ]
        assert len(upserts) == 1, f"only the rewritten session is sent: {upserts}"
        agent.stop_cleanly()
        assert not [e for e in agent.events if e.get("level") == "error"], agent.tail()


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = agent_env(nas=tmp_path, queue=tmp_path, gateway_url="ftp://nowhere", key="sb_secret_x")
    env["GFX_SYNC_BATCH_SIZE"] = "zero"
    result = run_cli(env, "run", timeout=30)
    code, output = result.returncode, result.stdout + result.stderr
    assert code == 2
    assert "GFX_SYNC_SUPABASE_URL: must be an http:// or https:// URL" in output
    assert "GFX_SYNC_BATCH_SIZE:" in output
    assert "Traceback" not in output
    assert "sb_secret_x" not in output


def test_schema_prints_the_migration() -> None:
    result = run_cli({**os.environ}, "schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n".join(p.read_text() for p in infra.migration_paths())


def test_schema_hands_prints_the_hand_tables_migration() -> None:
    result = run_cli({**os.environ}, "schema", "--hands")
    assert result.returncode == 0, result.stderr
    hands = infra.hands_migration_paths()
    assert [p.name for p in hands] == [
        "20261203100000_gfx_hands.sql",
        "20261205110000_gfx_hands_delay.sql",
    ]
    assert result.stdout == "\n".join(p.read_text() for p in hands)
    moved = run_cli({**os.environ}, "schema", "--hands", "--schema", "graphics")
    assert moved.returncode == 0, moved.stderr
    assert "create table if not exists graphics.gfx_hands" in moved.stdout.lower()
    assert "public.gfx_sessions" in moved.stdout  # the session table stays where it is
    bad = run_cli({**os.environ}, "schema", "--hands", "--schema", "x; drop table y")
    assert bad.returncode == 2 and "plain lower-case identifier" in bad.stderr
    assert bad.stdout == ""
