"""Registry changes while the agent runs: a PC added or disabled starts or stops its scanner and
nothing else restarts; an invalid registry keeps the last good one and says why in /health."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import wait_for, wait_until_equal

pytestmark = pytest.mark.e2e


def hands_of(dsn: str, pc_id: str, session_id: int) -> int:
    rows = infra.query(
        dsn,
        "select hand_count from gfx_sessions where session_id = %s and gfx_pc_id = %s",
        (session_id, pc_id),
    )
    return rows[0]["hand_count"]


def count(events: list[dict], name: str, pc_id: str) -> int:
    return sum(e.get("event") == name and e.get("pc_id") == pc_id for e in events)


def test_registry_changes_are_picked_up_while_running(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=4, seed=9)
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        url = agent.url
        wait_until_equal(nas, clean_db.dsn, timeout=60)  # PC01 and PC02, discovered

        # a registry appears: PC01 kept, PC02 disabled, PC03 added (a new folder)
        extra = make_session(500, 2, random.Random(1))
        write_session(nas / "PC03" / "1016" / extra.file_name, extra)
        registry = {
            "pcs": [
                {"id": "PC01", "watch_path": "PC01", "enabled": True, "name": "Feature"},
                {"id": "PC02", "watch_path": "PC02", "enabled": False},
                {"id": "PC03", "watch_path": "PC03", "enabled": True, "future_field": 1},
            ],
            "version": "1.0",
        }
        (nas / "config").mkdir()
        (nas / "config" / "pc_registry.json").write_text(json.dumps(registry))
        agent.wait_event("pc_stopped", pc_id="PC02")
        agent.wait_event("pc_scanned", pc_id="PC03")
        wait_for(
            lambda: infra.query(
                clean_db.dsn,
                "select 1 from gfx_sessions where gfx_pc_id = 'PC03' and session_id = %s",
                (extra.session_id,),
            ),
            15,
            "PC03's session",
        )
        events = agent.read_events()
        assert count(events, "pc_started", "PC01") == 1, "PC01 must not restart"
        status = httpx.get(f"{url}/api/status").json()
        assert [pc["id"] for pc in status["pcs"]] == ["PC01", "PC03"]
        assert status["pcs"][0]["name"] == "Feature"

        # PC02 is disabled: its changes are not read any more
        pc02 = next(p for p in sorted(sessions) if "PC02" in p.parts)
        grow(pc02, sessions[pc02], random.Random(2))
        pc01 = next(p for p in sorted(sessions) if "PC01" in p.parts)
        grow(pc01, sessions[pc01], random.Random(3))
        wait_for(
            lambda: (
                hands_of(clean_db.dsn, "PC01", sessions[pc01].session_id)
                == len(sessions[pc01].hands)
            ),
            15,
            "PC01's change",
        )
        # anchored: the running scanners have polled three more times since PC02's change
        # (a scanner still running for PC02 would have sent it at the first of them)
        polls = {pc["id"]: pc["polls"] for pc in httpx.get(f"{url}/api/status").json()["pcs"]}
        wait_for(
            lambda: all(
                pc["polls"] >= polls[pc["id"]] + 3
                for pc in httpx.get(f"{url}/api/status").json()["pcs"]
            ),
            30,
            "three more polls",
        )
        stored = hands_of(clean_db.dsn, "PC02", sessions[pc02].session_id)
        assert stored == len(sessions[pc02].hands) - 1

        # a broken edit: the last good registry stays, /health says why
        (nas / "config" / "pc_registry.json").write_text('{"pcs": [{"id": "PC/01"}]')
        agent.wait_event("registry_invalid")
        health = wait_for(
            lambda: (r := httpx.get(f"{url}/health").json())["status"] == "degraded" and r,
            10,
            "degraded",
        )
        assert any("registry invalid" in reason for reason in health["reasons"])
        assert sorted(health["watched_pcs"]) == ["PC01", "PC03"]
        grow(pc01, sessions[pc01], random.Random(4))
        wait_for(
            lambda: (
                hands_of(clean_db.dsn, "PC01", sessions[pc01].session_id)
                == len(sessions[pc01].hands)
            ),
            15,
            "PC01 still syncing with the last good registry",
        )
        (nas / "config" / "pc_registry.json").write_text(json.dumps(registry))
        agent.wait_event("registry_recovered")
        assert count(agent.read_events(), "pc_started", "PC01") == 1
