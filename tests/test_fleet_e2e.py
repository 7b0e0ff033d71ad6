"""Every venue from anywhere: agents as subprocesses heartbeat into the real PostgREST.

Two agents of two venues run on trees of their own; one is killed with SIGKILL. gfx_fleet
shows it stale, then offline, each no sooner than its threshold (3 and 6 heartbeat intervals,
from the database's clock), and sync_events holds exactly one agent_offline for it, whoever
calls gfx_fleet_check(): the living agent after each heartbeat, and the test's own concurrent
callers. Back with the same queue folder (its queue database gone) it is the same agent, and
agent_online is recorded once.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import wait_for

pytestmark = pytest.mark.e2e

INTERVAL = 1.0  # GFX_SYNC_HEARTBEAT_INTERVAL: stale after 3 s, offline after 6 s


def fleet(dsn: str) -> dict[str, dict[str, Any]]:
    rows = infra.query(dsn, "select * from public.gfx_fleet")
    return {row["venue"]: row for row in rows}


def agent_events(dsn: str) -> list[dict[str, Any]]:
    return infra.query(
        dsn,
        "select gfx_pc_id, event_type, agent_id from public.sync_events "
        "where event_type like 'agent_%' order by id",
    )


def venue_tree(nas: Path, pcs: list[str], seed: int) -> dict[str, tuple[Path, Any]]:
    """A PC folder per name, each with one live session; {pc: (path, session)}."""
    rng = random.Random(seed)
    sessions = {}
    for index, pc in enumerate(pcs):
        session = make_session(seed * 10 + index, rng.randrange(2, 6), rng)
        path = nas / pc / "1016" / session.file_name
        write_session(path, session)
        sessions[pc] = (path, session)
    return sessions


def concurrent_checks(gateway: infra.Gateway, callers: int) -> list[Any]:
    barrier = threading.Barrier(callers)
    answers: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(
            base_url=f"{gateway.url}/rest/v1", headers={"apikey": gateway.key}, timeout=30
        ) as client:
            barrier.wait()
            response = client.post("/rpc/gfx_fleet_check", json={})
            with lock:
                answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_a_killed_agent_turns_stale_then_offline_and_is_recorded_once(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    dsn = clean_db.dsn
    trees = {
        "Venue A": venue_tree(tmp_path / "nas-a", ["A-PC01", "A-PC02"], seed=1),
        "Venue B": venue_tree(tmp_path / "nas-b", ["B-PC01"], seed=2),
    }

    def env(venue: str, name: str) -> dict[str, str]:
        return agent_env(
            nas=tmp_path / f"nas-{name}",
            queue=tmp_path / f"queue-{name}",
            gateway_url=fresh_gateway.url,
            key=fresh_gateway.key,
            poll_interval=0.5,
            log_level="INFO",
            venue=venue,
            heartbeat_interval=INTERVAL,
        )

    with (
        running_agent(env("Venue A", "a"), tmp_path / "a.log", ready="agent_started") as a,
        running_agent(env("Venue B", "b"), tmp_path / "b.log", ready="agent_started") as b,
    ):
        a_id = a.wait_event("heartbeats_on")["agent_id"]
        b_id = b.wait_event("heartbeats_on")["agent_id"]
        assert (tmp_path / "queue-a" / "agent_id").read_text().strip() == a_id

        # both venues, their PCs running, each PC's current hand
        def every_pc_running() -> bool:
            rows = fleet(dsn)
            return len(rows) == 2 and all(
                r["state"] == "online"
                and r["worst_pc_state"] == "running"
                and all(p["hand_num"] is not None for p in r["pcs"])
                for r in rows.values()
            )

        wait_for(every_pc_running, 30, "both agents online with their PCs running")
        rows = fleet(dsn)
        assert rows["Venue A"]["agent_id"] == a_id and rows["Venue B"]["agent_id"] == b_id
        for venue, tree in trees.items():
            reported = {p["id"]: p for p in rows[venue]["pcs"]}
            assert sorted(reported) == sorted(tree)
            for pc, (_, session) in tree.items():
                assert reported[pc]["session_key"] == str(session.session_id)
                assert reported[pc]["hand_num"] == session.hands[-1]["HandNum"]
                assert reported[pc]["hand_age_s"] is None  # read at start: its age is unknown
            assert rows[venue]["pc_conflict"] is False

        # a hand ends on B-PC01: the next heartbeat carries it, aged on the agent's clock
        path, session = trees["Venue B"]["B-PC01"]
        grow(path, session, random.Random(7))

        def new_hand() -> dict[str, Any] | None:
            (pc,) = fleet(dsn)["Venue B"]["pcs"]
            return pc if pc["hand_num"] == session.hands[-1]["HandNum"] else None

        pc = wait_for(new_hand, 30, "the new hand in gfx_fleet")
        assert pc["hand_age_s"] is not None and pc["hand_age_s"] >= 0

        # SIGKILL: no goodbye
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        stale = wait_for(
            lambda: (r := fleet(dsn)["Venue A"])["state"] != "online" and r, 30, "A not online"
        )
        assert stale["state"] == "stale", stale  # seen stale before offline
        assert stale["seen_age_s"] >= 3 * INTERVAL - 0.1
        assert agent_events(dsn) == []  # stale is no transition

        # the moment it turns offline, eight callers at once besides agent B
        wait_for(lambda: fleet(dsn)["Venue A"]["state"] == "offline", 30, "A offline")
        answers = concurrent_checks(fresh_gateway, 8)
        assert all(code == 200 for code, _ in answers), answers
        offline = fleet(dsn)["Venue A"]
        assert offline["seen_age_s"] >= 6 * INTERVAL - 0.1
        wait_for(lambda: agent_events(dsn), 30, "agent_offline recorded")

        # B goes on calling gfx_fleet_check after each heartbeat: still one event
        seen = infra.query(
            dsn, "select last_seen from public.gfx_agents where agent_id = %s", (b_id,)
        )
        wait_for(
            lambda: infra.query(
                dsn,
                "select 1 from public.gfx_agents where agent_id = %s "
                "and last_seen >= %s + interval '3 seconds'",
                (b_id, seen[0]["last_seen"]),
            ),
            30,
            "three more heartbeats of B",
        )
        assert agent_events(dsn) == [
            {"gfx_pc_id": "", "event_type": "agent_offline", "agent_id": a_id}
        ]
        assert fleet(dsn)["Venue B"]["state"] == "online"
        # agent events stay out of pc_status
        assert "" not in {
            r["gfx_pc_id"] for r in infra.query(dsn, "select * from public.pc_status")
        }

        # back, its queue database gone (a recovery): the same agent, recorded back once
        for leftover in (tmp_path / "queue-a").glob("pending.db*"):
            leftover.unlink()
        with running_agent(env("Venue A", "a"), tmp_path / "a2.log", ready="agent_started") as a2:
            assert a2.wait_event("heartbeats_on")["agent_id"] == a_id
            wait_for(
                lambda: (
                    [e["event_type"] for e in agent_events(dsn)]
                    == ["agent_offline", "agent_online"]
                ),
                30,
                "agent_online recorded",
            )
            assert fleet(dsn)["Venue A"]["state"] == "online"
            concurrent_checks(fresh_gateway, 4)
            assert len(agent_events(dsn)) == 2


def test_heartbeats_are_off_under_sqlite_and_without_a_venue(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    build_nas(tmp_path / "nas", pcs=1, sessions_per_pc=1, seed=3)
    base = agent_env(
        nas=tmp_path / "nas",
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        log_level="INFO",
    )
    sqlite = {**base, "GFX_SYNC_TARGET": "sqlite", "GFX_SYNC_VENUE": "Venue S"}
    with running_agent(sqlite, tmp_path / "sqlite.log", ready="agent_started") as agent:
        off = agent.wait_event("heartbeats_off")
        assert "TARGET=sqlite" in off["reason"] and off["level"] == "info"
    shutil.rmtree(tmp_path / "queue")
    with running_agent(base, tmp_path / "novenue.log", ready="agent_started") as agent:
        off = agent.wait_event("heartbeats_off")
        assert "GFX_SYNC_VENUE" in off["reason"] and off["level"] == "warning"
    assert not (tmp_path / "queue" / "agent_id").exists()
    assert infra.query(clean_db.dsn, "select * from public.gfx_agents") == []
    assert fresh_gateway.count(path_suffix="/gfx_agents") == 0


def test_without_the_fleet_migration_heartbeats_log_once_and_uploads_go_on(
    tmp_path: Path,
) -> None:
    """A database with every migration but the fleet's: PGRST205 is logged once, never taken
    for a schema mismatch that would pause the uploads."""
    with infra.database(migrate=False) as db:
        for path in infra.migration_paths():
            if not path.name.endswith("_gfx_fleet.sql"):
                infra.apply_migration(db.dsn, path)
        server = infra.start_postgrest(db)
        gateway = infra.start_gateway(server.url, server.jwt_secret)
        try:
            written = build_nas(tmp_path / "nas", pcs=2, sessions_per_pc=2, seed=4)
            env = agent_env(
                nas=tmp_path / "nas",
                queue=tmp_path / "queue",
                gateway_url=gateway.url,
                key=gateway.key,
                poll_interval=0.5,
                log_level="INFO",
                venue="Venue M",
                heartbeat_interval=INTERVAL,
            )
            with running_agent(env, tmp_path / "agent.log", ready="agent_started") as agent:
                missing = agent.wait_event("heartbeat_migration_missing")
                assert "20261205130000_gfx_fleet.sql" in missing["hint"]
                wait_for(
                    lambda: gateway.count(path_suffix="/gfx_agents") >= 5,
                    30,
                    "five heartbeats",
                )
                wait_for(
                    lambda: (
                        len(infra.query(db.dsn, "select 1 from public.gfx_sessions"))
                        == len(written)
                    ),
                    30,
                    "every session uploaded",
                )
                health = httpx.get(f"{agent.url}/health", timeout=5).json()
                assert health["status"] == "healthy", health
                assert health["components"]["supabase"] == "connected"
                events = agent.read_events()
                assert [e["event"] for e in events].count("heartbeat_migration_missing") == 1
                assert not [e for e in events if e.get("state") == "schema_mismatch"]
            check = run_cli(env, "check")
            assert check.returncode == 1, check.stdout
            assert re.search(r"^FAIL\s+fleet: .*20261205130000_gfx_fleet\.sql", check.stdout, re.M)
            assert re.search(r"^ok\s+keep-newest rule", check.stdout, re.M), check.stdout
        finally:
            gateway.close()
            server.close()
