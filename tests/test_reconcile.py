"""Reconciliation end to end: rows deleted by hand or restored to an old version heal without
touching the NAS, through `trio-gfxsync reconcile` (a dry run, then --apply) and the agent's own
periodic pass. Real PostgREST with Supabase's 1,000-row cap, so the table is read in pages."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.truth import expected_rows, mismatches
from tests.support.waits import queue_figures, wait_for, wait_until_equal
from trio_gfxsync.simulator.virtual_pc import write_archive

pytestmark = pytest.mark.e2e

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def damage(dsn: str) -> tuple[list[int], list[int]]:
    """Delete five PC01 rows (the last one past the first page of 1,000) and put three back
    as an older version (a point-in-time restore); return their session ids."""
    ids = [
        r["session_id"]
        for r in infra.query(
            dsn, "select session_id from gfx_sessions where gfx_pc_id = 'PC01' order by session_id"
        )
    ]
    assert len(ids) > 1000, "PC01 must need more than one page"
    deleted = [ids[0], ids[10], ids[500], ids[999], ids[-1]]
    restored = [ids[3], ids[1000], ids[-2]]
    infra.query(dsn, "delete from gfx_sessions where session_id = any(%s)", (deleted,))
    infra.query(
        dsn,
        "update gfx_sessions set file_hash = 'restored', hand_count = 0,"
        " raw_json = '{}'::jsonb where session_id = any(%s)",
        (restored,),
    )
    return deleted, restored


def test_reconcile_command_heals_a_damaged_table(
    clean_db: infra.Database, fresh_gateway: infra.Gateway, tmp_path: Path
) -> None:
    nas = tmp_path / "nas"
    write_archive(nas, pcs=2, sessions=2100, seed=11, start=START, hands=(1, 2))
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log"):
        wait_until_equal(nas, clean_db.dsn, timeout=90)
        deleted, restored = damage(clean_db.dsn)
        problems = mismatches(nas, clean_db.dsn)
        assert len(problems) >= len(deleted) + len(restored)
        posts = fresh_gateway.count("POST", "/gfx_sessions")

        dry = run_cli(env, "reconcile")
        assert dry.returncode == 0, dry.stderr
        pc01, pc02 = (line for line in dry.stdout.splitlines() if line.startswith("PC0"))
        assert "on NAS   1050" in pc01 and "in table   1045" in pc01, dry.stdout
        assert "missing     5" in pc01 and "different     3" in pc01, dry.stdout
        assert "missing     0" in pc02 and "different     0" in pc02, dry.stdout
        assert "8 to send again" in dry.stdout and "dry run" in dry.stdout
        # a dry run changes nothing: no write, the same table, nothing queued
        assert fresh_gateway.count("POST", "/gfx_sessions") == posts
        assert mismatches(nas, clean_db.dsn) == problems
        assert queue_figures(tmp_path / "queue")["pending"] == 0
        # the table was read in pages: Supabase answers at most 1,000 rows a request
        reads = [r for r in fresh_gateway.records if r.method == "GET" and "file_hash" in r.query]
        assert len(reads) >= 3, reads

        applied = run_cli(env, "reconcile", "--apply")
        assert applied.returncode == 0, applied.stderr
        assert "queued 8" in applied.stdout, applied.stdout
        # the running agent sees the queue change and sends them: the table equals the NAS
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        wait_for(lambda: queue_figures(tmp_path / "queue")["pending"] == 0, 10, "queue drained")

        again = run_cli(env, "reconcile")
        assert again.returncode == 0, again.stderr
        assert "holds every acknowledged session" in again.stdout, again.stdout


def test_the_agent_heals_the_table_by_itself_and_never_deletes(tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    write_archive(nas, pcs=2, sessions=40, seed=5, start=START, hands=(1, 4))
    target = tmp_path / "queue" / "target.db"
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url="",
        key="",
        target="sqlite",
        reconcile_interval=1,
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, target, timeout=30)
        want = expected_rows(nas)
        (pc, victim), (_, restored) = sorted(want)[:2]
        with sqlite3.connect(target) as conn:
            conn.execute(
                "delete from gfx_sessions where gfx_pc_id = ? and session_id = ?", (pc, victim)
            )
            conn.execute(
                "update gfx_sessions set file_hash = 'old', hand_count = 0"
                " where gfx_pc_id = ? and session_id = ?",
                (pc, restored),
            )
            # a row whose files are gone from the NAS: reconciliation leaves it
            conn.execute(
                "insert into gfx_sessions (id, gfx_pc_id, session_id, file_name, file_path,"
                " file_hash, raw_json, created_at, updated_at) values ('gone', ?, 1,"
                " 'gone.json', 'gone.json', 'gone', '{}', 'then', 'then')",
                (pc,),
            )
        agent.wait_event("reconcile_pass", timeout=20, pc_id=pc, missing=1, different=1)

        def healed() -> bool:
            problems = mismatches(nas, target)
            return problems == [f"unexpected {(pc, 1)}"]

        wait_for(healed, 20, "the deleted and restored rows healed, the extra row kept")


def test_the_periodic_pass_survives_an_upstream_error_and_heals_afterwards(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """The table's reads for reconciliation answered 500 for a while (seen failing at the
    gateway, pass after pass): the agent goes on, and once they answer again a row deleted by
    hand meanwhile comes back."""
    nas = tmp_path / "nas"
    write_archive(nas, pcs=1, sessions=6, seed=9, start=START, hands=(1, 3))
    failing = threading.Event()
    failing.set()

    def reconcile_read(request: infra.GatewayRequest) -> bool:
        select = parse_qs(request.query).get("select", [""])[0]
        return request.method == "GET" and select == "session_id,file_hash"

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if failing.is_set() and reconcile_read(request):
            return 500, {"content-type": "application/json"}, b'{"message":"internal error"}'
        return None

    fresh_gateway.fault = fault
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        reconcile_interval=1,
        log_level="INFO",
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        victim = infra.query(clean_db.dsn, "select session_id from gfx_sessions limit 1")[0]
        infra.query(
            clean_db.dsn, "delete from gfx_sessions where session_id = %s", (victim["session_id"],)
        )
        wait_for(
            lambda: fresh_gateway.count("GET", "/gfx_sessions", 500) >= 3,
            30,
            "three reconcile passes failing upstream",
        )
        assert mismatches(nas, clean_db.dsn), "nothing healed while the reads fail"
        failing.clear()
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        assert agent.running
