"""/health knows what it should be watching (issue 23), against the agent as a subprocess:

- nothing watched never reads healthy (an empty NAS base: unhealthy; folders but no PC enabled:
  degraded), `no_pc_watched`;
- a PC folder that vanishes stays listed as `missing` (watched_pcs, the watch_path_missing
  alert, gfxsync_pc_up 0), across a restart too, until `pcs forget`;
- a registry missing for a while keeps the last good one in force (across a restart): no row
  ever appears under a PC it does not enable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.tree import build_nas, make_session, write_session
from tests.support.waits import wait_for, wait_until_equal

pytestmark = pytest.mark.e2e


def health(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/health", timeout=10)
    return response.status_code, response.json()


def pc_ids_in_table(dsn: str) -> list[str]:
    rows = infra.query(dsn, "select distinct gfx_pc_id from gfx_sessions order by 1")
    return [row["gfx_pc_id"] for row in rows]


def pc_up(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    up = {}
    for line in text.splitlines():
        if line.startswith("gfxsync_pc_up{"):
            labels, value = line.rsplit(" ", 1)
            up[labels.split('pc="', 1)[1].split('"', 1)[0]] = float(value)
    return up


def _polls(url: str) -> dict[str, int]:
    status = httpx.get(f"{url}/api/status", timeout=10).json()
    return {pc["id"]: pc["polls"] for pc in status["pcs"]}


def settled(url: str) -> None:
    """Every PC listed has polled three more times, and nothing waits to be sent: what a PC
    would have uploaded by now, it has."""
    before = _polls(url)
    wait_for(
        lambda: all(n >= before.get(pc, 0) + 3 for pc, n in _polls(url).items()),
        30,
        "three polls",
    )

    def idle() -> bool:
        status = httpx.get(f"{url}/api/status", timeout=10).json()
        return status["queue"]["batch_pending"] == 0 and not any(
            pc["files_waiting"] for pc in status["pcs"]
        )

    wait_for(idle, 30, "nothing waiting")


def test_nothing_watched_never_reads_healthy(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()  # a typo in the bind-mount path: docker creates an empty folder
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        code, document = wait_for(
            lambda: (answer := health(agent.url))[1]["status"] != "healthy" and answer,
            30,
            "/health not healthy on an empty NAS base",
        )
        assert code == 503 and document["status"] == "unhealthy", document
        assert document["reason_codes"] == ["no_pc_watched"], document
        assert str(nas) in document["reasons"][0]
        assert document["watched_pcs"] == []

        # folders, but the registry enables none of them: degraded, still no_pc_watched
        (nas / "PC01").mkdir()
        (nas / "config").mkdir()
        registry = {"pcs": [{"id": "PC01", "watch_path": "PC01", "enabled": False}]}
        (nas / "config" / "pc_registry.json").write_text(json.dumps(registry))
        code, document = wait_for(
            lambda: (answer := health(agent.url))[1]["status"] == "degraded" and answer,
            30,
            "degraded",
        )
        assert code == 200 and document["reason_codes"] == ["no_pc_watched"], document
        assert "none enabled" in document["reasons"][0]


def test_a_pc_that_vanishes_stays_missing_until_forgotten(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=2, seed=23)
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=60)  # PC01 and PC02, discovered
        assert health(agent.url)[1]["status"] == "healthy"
        (nas / "PC02").rename(tmp_path / "PC02-moved")  # renamed, moved, its mount gone
        agent.wait_event("pc_scan_failed", pc_id="PC02")
        # and the registry (here: the folder list) read again since: PC01 polled 8 more
        # times at 1 s, the watcher reads the folders every 5 s
        before = _polls(agent.url)["PC01"]
        wait_for(lambda: _polls(agent.url)["PC01"] >= before + 8, 30, "eight polls of PC01")
        code, document = health(agent.url)
        assert document["watched_pcs"] == ["PC01", "PC02"], document
        assert code == 200 and document["status"] == "degraded"
        assert "pc_missing:PC02" in document["reason_codes"], document
        wait_for(
            lambda: "alert:watch_path_missing" in health(agent.url)[1]["reason_codes"],
            30,
            "the watch_path_missing alert",
        )
        assert pc_up(agent.url) == {"PC01": 1.0, "PC02": 0.0}
        status = httpx.get(f"{agent.url}/api/status", timeout=10).json()
        assert {pc["id"]: pc["state"] for pc in status["pcs"]} == {
            "PC01": "running",
            "PC02": "missing",
        }

    # a restart: PC02 has acknowledged files and no folder, so it is still missing
    with running_agent(env, tmp_path / "agent2.log") as agent:
        code, document = wait_for(
            lambda: (
                "pc_missing:PC02" in (answer := health(agent.url))[1]["reason_codes"] and answer
            ),
            30,
            "PC02 missing after a restart",
        )
        assert document["watched_pcs"] == ["PC01", "PC02"]
        done = run_cli(env, "pcs", "forget", "PC02")
        assert done.returncode == 0, done.stderr
        assert "PC02" in done.stdout
        code, document = wait_for(
            lambda: (answer := health(agent.url))[1]["status"] == "healthy" and answer,
            30,
            "healthy once PC02 is forgotten",
        )
        assert document["watched_pcs"] == ["PC01"]
    assert pc_ids_in_table(clean_db.dsn) == ["PC01", "PC02"]  # the table keeps what was synced


def _absence_seen(events: list[dict[str, Any]]) -> bool:
    return any(
        e.get("event") == "registry_missing"
        or (e.get("event") == "registry_loaded" and e.get("source") == "discovered")
        for e in events
    )


def test_a_registry_missing_for_a_while_publishes_no_phantom_pc(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=2, seed=31)
    (nas / "config").mkdir()
    registry_file = nas / "config" / "pc_registry.json"
    registry = {
        "pcs": [
            {"id": "table-1", "watch_path": "PC01", "enabled": True},
            {"id": "PC02", "watch_path": "PC02", "enabled": False},
        ]
    }
    registry_file.write_text(json.dumps(registry))
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        agent.wait_event("pc_scanned", pc_id="table-1")
        settled(agent.url)
        assert pc_ids_in_table(clean_db.dsn) == ["table-1"]

        # an editor saving by rename, a copy over SMB: the file is gone for a while
        registry_file.rename(tmp_path / "pc_registry.json.bak")
        extra = make_session(900, 2, random.Random(5))
        write_session(nas / "PC03" / "1016" / extra.file_name, extra)
        wait_for(lambda: _absence_seen(agent.read_events()), 30, "the registry's absence")
        settled(agent.url)
        assert pc_ids_in_table(clean_db.dsn) == ["table-1"]
        code, document = health(agent.url)
        assert code == 200 and document["status"] == "degraded", document
        assert document["reason_codes"] == ["registry_missing"]
        assert "last good one from" in document["reasons"][0]
        assert document["watched_pcs"] == ["table-1"]

    # a restart while it is still missing: the stored one is in force
    with running_agent(env, tmp_path / "agent2.log") as agent:
        wait_for(
            lambda: health(agent.url)[1]["reason_codes"] == ["registry_missing"],
            30,
            "registry_missing after a restart",
        )
        settled(agent.url)
        assert pc_ids_in_table(clean_db.dsn) == ["table-1"]
        (tmp_path / "pc_registry.json.bak").rename(registry_file)
        agent.wait_event("registry_file_back")
        wait_for(lambda: health(agent.url)[1]["status"] == "healthy", 30, "healthy again")

        # `registry forget` while the file is there: refused (the agent would store it again)
        refused = run_cli(env, "registry", "forget")
        assert refused.returncode == 1 and "still there" in refused.stderr
        # back to discovery on purpose: the file removed, the stored one forgotten
        registry_file.unlink()
        forgotten = run_cli(env, "registry", "forget")
        assert forgotten.returncode == 0, forgotten.stderr
        agent.wait_event("registry_loaded", source="discovered")
        wait_for(
            lambda: pc_ids_in_table(clean_db.dsn) == ["PC01", "PC02", "PC03", "table-1"],
            60,
            "the discovered PCs' rows",
        )


def test_reconcile_deletes_the_rows_of_pcs_the_registry_does_not_name(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=2, seed=41)
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    with running_agent(env, tmp_path / "agent.log"):
        wait_until_equal(nas, clean_db.dsn, timeout=60)  # discovered: PC01 and PC02 uploaded
    assert pc_ids_in_table(clean_db.dsn) == ["PC01", "PC02"]
    (nas / "config").mkdir()
    registry = {"pcs": [{"id": "PC01", "watch_path": "PC01"}]}
    (nas / "config" / "pc_registry.json").write_text(json.dumps(registry))

    dry = run_cli(env, "reconcile", "--unknown-pcs")
    assert dry.returncode == 0, dry.stderr
    assert "PC02" in dry.stdout and "2 row(s)" in dry.stdout and "dry run" in dry.stdout
    assert pc_ids_in_table(clean_db.dsn) == ["PC01", "PC02"]

    applied = run_cli(env, "reconcile", "--unknown-pcs", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "PC02" in applied.stdout and "deleted 2 row(s)" in applied.stdout
    assert pc_ids_in_table(clean_db.dsn) == ["PC01"]
    again = run_cli(env, "reconcile", "--unknown-pcs")
    assert "every row of the table is under a PC id the registry names" in again.stdout
