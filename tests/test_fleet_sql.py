"""The fleet's tables, view and functions (deploy/supabase/migrations/20261205130000_gfx_fleet.sql)
against the real PostgreSQL and PostgREST.

Agents' heartbeats go in as the agent sends them (a PostgREST upsert with the service key);
readers are signed-in users whose JWTs are shaped as Supabase Auth mints them, through the
browser's gateway (the anon key, forwarding the user's bearer). Ages are real: agents here beat
every fraction of a second, and the tests wait for the database's clock to pass a threshold (a
lower bound, never an upper one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import infra, realtime
from tests.support.hand_stack import HandStack, hand_stack, query_as
from trio_gfxsync.commands.check import check_fleet, check_rule, schema_version
from trio_gfxsync.settings import load_settings
from trio_gfxsync.targets.postgrest import PostgrestClient

OPS = realtime.user_claims(app_metadata={"gfx_access": "ops"})
LIVE = realtime.user_claims(app_metadata={"gfx_access": "live"})
READERS = {"ops": OPS, "live": LIVE}
# Everyone who must read nothing of the fleet: None is the publishable (anon) key alone.
OUTSIDERS: dict[str, dict[str, Any] | None] = {
    "anon": None,
    "account-without-claim": realtime.user_claims(),
    "anonymous-sign-in": realtime.user_claims(anonymous=True),
    "delayed": realtime.user_claims(app_metadata={"gfx_access": "delayed"}),
    "another-value": realtime.user_claims(app_metadata={"gfx_access": "OPS"}),
    "user-metadata-ops": realtime.user_claims(user_metadata={"gfx_access": "ops"}),
}
FLEET_OBJECTS = ["gfx_fleet", "gfx_agents", "sync_events", "pc_status"]
UPSERT = {"prefer": "resolution=merge-duplicates,return=minimal"}


@pytest.fixture(scope="module")
def stack() -> Iterator[HandStack]:
    with hand_stack(hands=False) as s:
        yield s


@pytest.fixture
def fleet(stack: HandStack) -> HandStack:
    infra.query(
        stack.db.dsn,
        "truncate public.gfx_agents, public.gfx_sessions, public.sync_events restart identity",
    )
    return stack


def pc(pc_id: str, state: str = "running", **extra: Any) -> dict[str, Any]:
    return {"id": pc_id, "state": state, "reason": None, **extra}


def beat(
    rest: httpx.Client,
    agent_id: str,
    venue: str,
    pcs: list[dict[str, Any]] | None = None,
    interval: float = 15,
    **extra: Any,
) -> None:
    body = {
        "agent_id": agent_id,
        "venue": venue,
        "host": f"nas-{agent_id}",
        "version": "1.0",
        "started_at": "2026-12-05T08:00:00Z",
        "heartbeat_interval_s": interval,
        "status": "healthy",
        "reasons": [],
        "reason_codes": [],
        "queue": {"pending": 0, "dead_letters": 0, "quarantined": 0},
        "alerts": [],
        "pcs": pcs if pcs is not None else [],
        **extra,
    }
    response = rest.post(
        "/gfx_agents", params={"on_conflict": "agent_id"}, json=body, headers=UPSERT
    )
    assert response.status_code in (200, 201), response.text


def fleet_rows(s: HandStack) -> dict[str, dict[str, Any]]:
    response = s.rest.get("/gfx_fleet", params={"order": "agent_id"})
    assert response.status_code == 200, response.text
    return {row["agent_id"]: row for row in response.json()}


def wait_for_state(s: HandStack, agent_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = fleet_rows(s).get(agent_id)
        if row is not None and row["state"] == state:
            return row
        assert time.monotonic() < deadline, f"{agent_id} never {state}: {row}"
        time.sleep(0.05)


def agent_events(s: HandStack) -> list[dict[str, Any]]:
    return infra.query(
        s.db.dsn,
        "select gfx_pc_id, event_type, agent_id, error_message from public.sync_events "
        "where agent_id is not null order by id",
    )


def set_last_seen(s: HandStack, agent_id: str, age: str) -> None:
    """Age a row behind the trigger's back (a superuser with triggers off): only for ages no
    test can wait for."""
    with psycopg.connect(s.db.dsn, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "update public.gfx_agents set last_seen = now() - %s::interval where agent_id = %s",
            (age, agent_id),
        )


# ---------------------------------------------------------------------------------------------
# Heartbeats
# ---------------------------------------------------------------------------------------------


def test_last_seen_is_the_databases_clock_whatever_the_client_sends(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", last_seen="1999-01-01T00:00:00Z")
    (row,) = infra.query(
        fleet.db.dsn,
        "select extract(epoch from now() - last_seen) as age, first_seen = last_seen as first "
        "from public.gfx_agents",
    )
    assert 0 <= row["age"] < 3600 and row["first"]
    first = infra.query(fleet.db.dsn, "select first_seen from public.gfx_agents")[0]["first_seen"]
    beat(fleet.rest, "a1", "Venue A", last_seen="2999-01-01T00:00:00Z", first_seen="1999-01-01")
    (row,) = infra.query(
        fleet.db.dsn,
        "select last_seen, first_seen, now() - last_seen as age from public.gfx_agents",
    )
    assert row["first_seen"] == first and row["last_seen"] >= first
    assert row["age"].total_seconds() >= 0


def test_an_agent_turns_stale_after_3_intervals_and_offline_after_6(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", interval=0.5)
    assert fleet_rows(fleet)["a1"]["state"] == "online"
    stale = wait_for_state(fleet, "a1", "stale")
    assert stale["seen_age_s"] >= 1.5 - 0.05  # seen_age_s is rounded to 0.1 s
    offline = wait_for_state(fleet, "a1", "offline")
    assert offline["seen_age_s"] >= 3.0 - 0.05
    beat(fleet.rest, "a1", "Venue A", interval=0.5)
    assert fleet_rows(fleet)["a1"]["state"] == "online"


def test_agents_offline_for_7_days_are_hidden_and_forget_removes_one(fleet: HandStack) -> None:
    beat(fleet.rest, "old", "Venue A", interval=60)
    beat(fleet.rest, "gone", "Venue A", interval=60)
    beat(fleet.rest, "live", "Venue A", interval=60)
    set_last_seen(fleet, "old", "6 days 23 hours")
    set_last_seen(fleet, "gone", "7 days 7 minutes")  # offline (6 min) for more than 7 days
    rows = fleet_rows(fleet)
    assert sorted(rows) == ["live", "old"] and rows["old"]["state"] == "offline"

    forget = fleet.rest.post("/rpc/gfx_fleet_forget", json={"agent_id": "live"})
    assert (forget.status_code, forget.json()) == (200, True)
    again = fleet.rest.post("/rpc/gfx_fleet_forget", json={"agent_id": "live"})
    assert again.json() is False
    assert sorted(fleet_rows(fleet)) == ["old"]


# ---------------------------------------------------------------------------------------------
# PCs: the worst state, HA pairs, conflicts
# ---------------------------------------------------------------------------------------------

ORDER = ["starting", "running", "stale", "hung", "missing", "error"]


@pytest.mark.parametrize("worst", ORDER)
def test_worst_pc_state_follows_the_order(fleet: HandStack, worst: str) -> None:
    better = ORDER[: ORDER.index(worst)]
    pcs = [pc(f"PC{i}", state) for i, state in enumerate([*better, worst])]
    beat(fleet.rest, "a1", "Venue A", pcs=list(reversed(pcs)))
    assert fleet_rows(fleet)["a1"]["worst_pc_state"] == worst


def test_an_agent_without_pcs_has_no_worst_state(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", pcs=[])
    row = fleet_rows(fleet)["a1"]
    assert (row["worst_pc_state"], row["pc_conflict"], row["conflict_pcs"]) == (None, False, [])


def test_an_ha_pair_counts_a_pc_up_when_either_agent_has_it_running(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", pcs=[pc("PC01", "running"), pc("PC02", "running")])
    beat(fleet.rest, "a2", "Venue A", pcs=[pc("PC01", "hung"), pc("PC02", "running")])
    rows = fleet_rows(fleet)
    assert rows["a2"]["worst_pc_state"] == "running"
    assert not rows["a1"]["pc_conflict"] and not rows["a2"]["pc_conflict"]

    # the agent that has it running goes offline: its word no longer counts
    beat(fleet.rest, "a1", "Venue A", pcs=[pc("PC01", "running")], interval=0.2)
    wait_for_state(fleet, "a1", "offline")
    assert fleet_rows(fleet)["a2"]["worst_pc_state"] == "hung"


def test_a_pc_reported_by_two_venues_is_a_conflict(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", pcs=[pc("PC01"), pc("PC02")])
    beat(fleet.rest, "b1", "Venue B", pcs=[pc("PC02"), pc("PC03")])
    beat(fleet.rest, "c1", "Venue C", pcs=[pc("PC04")])
    rows = fleet_rows(fleet)
    assert (rows["a1"]["pc_conflict"], rows["a1"]["conflict_pcs"]) == (True, ["PC02"])
    assert (rows["b1"]["pc_conflict"], rows["b1"]["conflict_pcs"]) == (True, ["PC02"])
    assert (rows["c1"]["pc_conflict"], rows["c1"]["conflict_pcs"]) == (False, [])


# ---------------------------------------------------------------------------------------------
# gfx_fleet_check: each transition once
# ---------------------------------------------------------------------------------------------


def concurrent_checks(s: HandStack, callers: int) -> list[list[dict[str, Any]]]:
    """`callers` threads call rpc/gfx_fleet_check through PostgREST at the same moment."""
    barrier = threading.Barrier(callers)
    answers: list[list[dict[str, Any]]] = [[] for _ in range(callers)]
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            with httpx.Client(
                base_url=f"{s.gateway.url}/rest/v1", headers={"apikey": s.gateway.key}, timeout=30
            ) as client:
                barrier.wait()
                response = client.post("/rpc/gfx_fleet_check", json={})
                assert response.status_code == 200, response.text
                answers[i] = response.json()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return answers


def test_offline_and_back_are_recorded_once_with_concurrent_callers(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", interval=0.3)
    beat(fleet.rest, "b1", "Venue B", interval=60)
    assert concurrent_checks(fleet, 4) == [[]] * 4
    wait_for_state(fleet, "a1", "offline")

    answers = concurrent_checks(fleet, 8)
    recorded = [event for answer in answers for event in answer]
    assert [(e["agent_id"], e["venue"], e["event_type"]) for e in recorded] == [
        ("a1", "Venue A", "agent_offline")
    ]
    assert concurrent_checks(fleet, 3) == [[]] * 3
    events = agent_events(fleet)
    assert [(e["gfx_pc_id"], e["event_type"], e["agent_id"]) for e in events] == [
        ("", "agent_offline", "a1")
    ]
    assert "Venue A" in events[0]["error_message"]

    beat(fleet.rest, "a1", "Venue A", interval=0.3)
    recorded = [e for answer in concurrent_checks(fleet, 8) for e in answer]
    assert [(e["agent_id"], e["event_type"]) for e in recorded] == [("a1", "agent_online")]
    assert [e["event_type"] for e in agent_events(fleet)] == ["agent_offline", "agent_online"]


def test_concurrent_checks_in_sql_record_once(fleet: HandStack) -> None:
    """Many sessions in open transactions: each waits for the row, then finds it recorded."""
    beat(fleet.rest, "a1", "Venue A", interval=0.2)
    wait_for_state(fleet, "a1", "offline")
    conns = [psycopg.connect(fleet.db.dsn) for _ in range(4)]
    try:
        # the first holds the row in an open transaction; the others start and block on it
        first = conns[0].execute("select * from public.gfx_fleet_check()").fetchall()
        results: list[list[Any]] = []

        def check(conn: psycopg.Connection[Any]) -> None:
            results.append(conn.execute("select * from public.gfx_fleet_check()").fetchall())
            conn.commit()

        threads = [threading.Thread(target=check, args=(c,)) for c in conns[1:]]
        for t in threads:
            t.start()
        time.sleep(0.5)  # let them reach the row lock (a lower bound: they may be there sooner)
        conns[0].commit()
        for t in threads:
            t.join()
    finally:
        for c in conns:
            c.close()
    assert len(first) == 1 and results == [[], [], []]
    assert [e["event_type"] for e in agent_events(fleet)] == ["agent_offline"]


def test_a_heartbeat_never_changes_what_the_check_recorded(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", interval=0.2)
    wait_for_state(fleet, "a1", "offline")
    fleet.rest.post("/rpc/gfx_fleet_check", json={})
    beat(fleet.rest, "a1", "Venue A", interval=0.2, recorded_state="online")
    (row,) = infra.query(fleet.db.dsn, "select recorded_state from public.gfx_agents")
    assert row["recorded_state"] == "offline"


def test_agent_events_stay_out_of_pc_status(fleet: HandStack) -> None:
    beat(fleet.rest, "a1", "Venue A", interval=0.2)
    wait_for_state(fleet, "a1", "offline")
    assert len(fleet.rest.post("/rpc/gfx_fleet_check", json={}).json()) == 1
    assert fleet.rest.get("/pc_status").json() == []


def test_event_types_admit_the_agent_events_only(fleet: HandStack) -> None:
    infra.query(
        fleet.db.dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, agent_id) "
        "values ('', 'agent_online', 'x')",
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        infra.query(
            fleet.db.dsn,
            "insert into public.sync_events (gfx_pc_id, event_type) values ('PC01', 'agent_lost')",
        )


def test_schema_version_is_3(fleet: HandStack) -> None:
    response = fleet.rest.post("/rpc/gfx_sync_schema_version", json={})
    assert response.json() == 3


async def test_check_passes_and_fails_on_a_pc_claimed_by_two_venues(fleet: HandStack) -> None:
    settings = load_settings(
        supabase_url=fleet.gateway.url, supabase_secret_key=fleet.gateway.key, rest_path="/rest/v1"
    )
    beat(fleet.rest, "a1", "Venue A", pcs=[pc("PC01"), pc("PC02")])
    beat(fleet.rest, "a2", "Venue A", pcs=[pc("PC01")])  # an HA pair: no conflict
    async with PostgrestClient(settings) as client:
        version = await schema_version(client)
        assert check_rule(version).ok
        fine = await check_fleet(client, version)
        assert fine.ok, fine.line()
        beat(fleet.rest, "b1", "Venue B", pcs=[pc("PC02")])
        conflict = await check_fleet(client, version)
        assert not conflict.ok
        assert "Venue A (a1): PC02" in conflict.detail and "Venue B (b1): PC02" in conflict.detail
        old = await check_fleet(client, 2)
        assert not old.ok and "20261205130000_gfx_fleet.sql" in old.detail


# ---------------------------------------------------------------------------------------------
# Who reads it
# ---------------------------------------------------------------------------------------------


def seed(s: HandStack) -> None:
    beat(s.rest, "a1", "Venue A", pcs=[pc("PC01")])
    event = {"gfx_pc_id": "PC01", "event_type": "modified", "file_path": "x.json"}
    assert s.rest.post("/sync_events", json=event).status_code == 201
    infra.query(
        s.db.dsn,
        "insert into public.gfx_sessions (gfx_pc_id, session_id, file_name, file_hash, raw_json) "
        """values ('PC01', 638966318331324926, 'x.json', 'h', '{"Hands": []}')""",
    )


@pytest.mark.parametrize("tier", sorted(READERS))
def test_ops_and_live_read_the_fleet(fleet: HandStack, tier: str) -> None:
    seed(fleet)
    with fleet.as_user(READERS[tier]) as reader:
        for name in FLEET_OBJECTS:
            response = reader.get(f"/{name}")
            assert response.status_code == 200, (name, response.text)
            assert len(response.json()) == 1, (name, response.json())
        sessions = reader.get("/gfx_sessions", params={"select": "session_key,hand_count"})
        assert sessions.json() == [{"session_key": "638966318331324926", "hand_count": 0}]
        # raw_json stays with the service role
        for select in ("raw_json", "*"):
            refused = reader.get("/gfx_sessions", params={"select": select})
            assert (refused.status_code, refused.json()["code"]) == (403, "42501")
        # readers call none of the functions
        for rpc in ("gfx_fleet_check", "gfx_fleet_forget"):
            body = {"agent_id": "a1"} if rpc == "gfx_fleet_forget" else {}
            refused = reader.post(f"/rpc/{rpc}", json=body)
            assert (refused.status_code, refused.json()["code"]) == (403, "42501")
        # nor write
        assert reader.post("/gfx_agents", json={"agent_id": "x", "venue": "v"}).status_code == 403
    assert sorted(fleet_rows(fleet)) == ["a1"]


@pytest.mark.parametrize("who", sorted(OUTSIDERS))
def test_nobody_else_reads_anything_of_the_fleet(fleet: HandStack, who: str) -> None:
    seed(fleet)
    with fleet.as_user(OUTSIDERS[who]) as outsider:
        for name in [*FLEET_OBJECTS, "gfx_sessions?select=session_key"]:
            response = outsider.get(f"/{name}")
            if OUTSIDERS[who] is None:
                assert (response.status_code, response.json()["code"]) == (401, "42501"), name
            else:
                assert (response.status_code, response.json()) == (200, []), name
        refused = outsider.post("/rpc/gfx_fleet_check", json={})
        assert refused.status_code in (401, 403)


# ---------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["fleet-then-hands", "hands-then-fleet-again"])
def test_applies_twice_and_with_the_hand_tables_in_either_order(order: str) -> None:
    with infra.database(migrate=False) as db:
        infra.apply_migration(db.dsn)
        infra.apply_migration(db.dsn)
        infra.apply_hands_migrations(db.dsn)
        if order == "hands-then-fleet-again":
            infra.apply_migration(db.dsn)
        fleet_path = infra.MIGRATIONS_DIR / "20261205130000_gfx_fleet.sql"
        assert fleet_path.is_file()
        with psycopg.connect(db.dsn) as conn:
            conn.execute("insert into public.gfx_agents (agent_id, venue) values ('a1', 'Venue A')")
            conn.commit()
        rows = query_as(db.dsn, OPS, "select agent_id, state from public.gfx_fleet")
        assert rows == [{"agent_id": "a1", "state": "online"}]
        assert query_as(db.dsn, OPS, "select * from public.gfx_hands") == []
        assert (
            query_as(db.dsn, realtime.user_claims(), "select agent_id from public.gfx_fleet") == []
        )
