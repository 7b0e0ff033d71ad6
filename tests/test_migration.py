"""The migration, checked in PostgreSQL and through the real PostgREST 12.0.2 behind the gateway.

The statuses and codes asserted here are what PostgREST 12.0.2 really answers; the uploader's
error policy (DESIGN section 5) is built on them. Observed with `?on_conflict=gfx_pc_id,session_id`
and `Prefer: resolution=merge-duplicates,return=minimal`:

    first insert of a key                         201, empty body
    upsert that updates, or the trigger skips     200, empty body (the agent cannot tell them apart)
    a batch with at least one new key             201
    POST [] with columns=<agent columns>          200, nothing written (the `check` probe)
    columns= naming a missing column              400 PGRST204 "Column 'x' of relation
                                                      'gfx_sessions' does not exist"
    an object key naming a missing column         400 PGRST204 (same message)
    the same conflict key twice in one array      400 21000 "ON CONFLICT DO UPDATE command cannot
                                                      affect row a second time"
    objects with different key sets               400 PGRST102 "All object keys must match"
    a value for the generated session_key         400 428C9
    on_conflict without a matching constraint     400 42P10
    a NOT NULL column sent as null                400 23502 (details hold the whole failing row,
                                                      raw_json included: never log them whole)
    a table that does not exist                   404 42P01 (12.0.2 has no PGRST205 yet)
    anon token (or none) on gfx_sessions          401 42501 "permission denied for table ..."
    service_role/authenticated lacking a GRANT    403 42501
    bad signature / expired token                 401 PGRST301
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import infra

# The PokerGFX session from the samples' README that exists as a 6-hand and a 130-hand copy.
SAMPLE_SESSION_ID = 638966318331324926

UPSERT_PARAMS = {"on_conflict": "gfx_pc_id,session_id"}
UPSERT_PREFER = "resolution=merge-duplicates,return=minimal"

# Every column, in table order: (name, data_type, nullable, default or generation expression).
EXPECTED_COLUMNS = [
    ("id", "uuid", "NO", "gen_random_uuid()"),
    ("gfx_pc_id", "text", "NO", None),
    ("session_id", "bigint", "NO", None),
    ("session_key", "text", "YES", "(session_id)::text"),
    ("file_name", "text", "NO", None),
    ("file_path", "text", "YES", None),
    ("file_hash", "text", "NO", None),
    ("file_size", "bigint", "YES", None),
    ("file_mtime", "timestamp with time zone", "YES", None),
    ("raw_json", "jsonb", "NO", None),
    ("table_type", "text", "YES", None),
    ("event_title", "text", "YES", None),
    ("software_version", "text", "YES", None),
    ("hand_count", "integer", "YES", "0"),
    ("player_count", "integer", "YES", None),
    ("session_created_at", "timestamp with time zone", "YES", None),
    ("sync_source", "text", "YES", "'nas_central'::text"),
    ("sync_status", "text", "YES", "'synced'::text"),
    ("created_at", "timestamp with time zone", "YES", "now()"),
    ("updated_at", "timestamp with time zone", "YES", "now()"),
    # the keep-newest migration (20261202100000): the agent's clock when it read the file
    ("version_stamp", "bigint", "YES", None),
]

# What the agent writes: everything but the generated, defaulted and trigger-owned columns.
AGENT_COLUMNS = [
    name
    for name, *_ in EXPECTED_COLUMNS
    if name not in {"id", "session_key", "created_at", "updated_at"}
]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def rest(gateway: infra.Gateway) -> Iterator[httpx.Client]:
    """A client of the gateway's /rest/v1 holding the sb_secret_ key, as the agent does."""
    with httpx.Client(
        base_url=f"{gateway.url}/rest/v1", headers={"apikey": gateway.key}, timeout=10
    ) as client:
        yield client


def session_row(**overrides: Any) -> dict[str, Any]:
    """A record with every agent column, so that any two rows have the same key set."""
    row: dict[str, Any] = {
        "gfx_pc_id": "PC01",
        "session_id": SAMPLE_SESSION_ID,
        "file_name": f"PGFX_live_data_export GameID={SAMPLE_SESSION_ID}.json",
        "file_path": f"1021/PGFX_live_data_export GameID={SAMPLE_SESSION_ID}.json",
        "file_hash": "0" * 64,
        "file_size": 576421,
        "file_mtime": "2025-10-21T12:00:00Z",
        "raw_json": {"ID": SAMPLE_SESSION_ID, "Hands": []},
        "table_type": "FEATURE_TABLE",
        "event_title": "",
        "software_version": "PokerGFX 3.2",
        "hand_count": 130,
        "player_count": 9,
        "session_created_at": "2025-10-17T11:19:12.4560670Z",
        "sync_source": "nas_central",
        "sync_status": "synced",
    }
    row.update(overrides)
    return row


def upsert(rest: httpx.Client, body: Any, **params: str) -> httpx.Response:
    # json.dumps, not httpx's json=: the body is sent byte for byte, 18-digit ints included.
    return rest.post(
        "/gfx_sessions",
        params={**UPSERT_PARAMS, **params},
        content=json.dumps(body),
        headers={"content-type": "application/json", "prefer": UPSERT_PREFER},
    )


def stored(db: infra.Database, session_id: int = SAMPLE_SESSION_ID) -> dict[str, Any]:
    rows = infra.query(
        db.dsn, "select * from public.gfx_sessions where session_id = %s", (session_id,)
    )
    assert len(rows) == 1, rows
    return rows[0]


def error_code(response: httpx.Response) -> str | None:
    return response.json().get("code")


# ---------------------------------------------------------------------------------------------
# Shape, keys, security
# ---------------------------------------------------------------------------------------------


def test_gfx_sessions_has_exactly_the_documented_columns(postgres_db: infra.Database) -> None:
    rows = infra.query(
        postgres_db.dsn,
        """select column_name, data_type, is_nullable,
                  coalesce(column_default, generation_expression) as default_or_expression,
                  is_generated
           from information_schema.columns
           where table_schema = 'public' and table_name = 'gfx_sessions'
           order by ordinal_position""",
    )
    actual = [
        (r["column_name"], r["data_type"], r["is_nullable"], r["default_or_expression"])
        for r in rows
    ]
    assert actual == EXPECTED_COLUMNS
    generated = [r["column_name"] for r in rows if r["is_generated"] == "ALWAYS"]
    assert generated == ["session_key"]


def test_primary_key_and_conflict_key(postgres_db: infra.Database) -> None:
    rows = infra.query(
        postgres_db.dsn,
        """select c.conname, c.contype,
                  array(select a.attname from unnest(c.conkey) with ordinality k(attnum, n)
                        join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
                        order by k.n)::text[] as columns
           from pg_constraint c
           where c.conrelid = 'public.gfx_sessions'::regclass and c.contype in ('p', 'u')
           order by c.contype""",
    )
    assert [(r["contype"], r["columns"]) for r in rows] == [
        ("p", ["id"]),
        ("u", ["gfx_pc_id", "session_id"]),
    ]
    assert rows[1]["conname"] == "gfx_sessions_pc_session_key"


def test_sync_events_shape_and_event_type_check(postgres_db: infra.Database) -> None:
    rows = infra.query(
        postgres_db.dsn,
        """select column_name, data_type, is_nullable from information_schema.columns
           where table_schema = 'public' and table_name = 'sync_events'
           order by ordinal_position""",
    )
    assert [(r["column_name"], r["data_type"], r["is_nullable"]) for r in rows] == [
        ("id", "bigint", "NO"),
        ("gfx_pc_id", "text", "NO"),
        ("event_type", "text", "NO"),
        ("file_path", "text", "YES"),
        ("record_count", "integer", "YES"),
        ("error_message", "text", "YES"),
        ("created_at", "timestamp with time zone", "YES"),
        ("agent_id", "text", "YES"),  # 20261205130000_gfx_fleet.sql
    ]
    with pytest.raises(psycopg.errors.CheckViolation):
        infra.query(
            postgres_db.dsn,
            "insert into public.sync_events (gfx_pc_id, event_type) values ('PC01', 'deleted')",
        )
    indexes = infra.query(
        postgres_db.dsn, "select indexdef from pg_indexes where tablename = 'sync_events'"
    )
    assert any("(gfx_pc_id, created_at)" in r["indexdef"] for r in indexes)


def test_rls_is_enabled_on_both_tables(postgres_db: infra.Database) -> None:
    rows = infra.query(
        postgres_db.dsn,
        """select relname, relrowsecurity from pg_class
           where relnamespace = 'public'::regnamespace
             and relname in ('gfx_sessions', 'sync_events')
           order by relname""",
    )
    assert [(r["relname"], r["relrowsecurity"]) for r in rows] == [
        ("gfx_sessions", True),
        ("sync_events", True),
    ]


def test_pc_status_view_runs_as_the_invoker(postgres_db: infra.Database) -> None:
    rows = infra.query(
        postgres_db.dsn, "select reloptions from pg_class where oid = 'public.pc_status'::regclass"
    )
    assert rows[0]["reloptions"] == ["security_invoker=on"]


# (function, role, object, privilege, expected). has_*_privilege answers true when ANY of a
# comma-separated list is held, so each privilege is asked on its own.
EXPECTED_PRIVILEGES = [
    ("has_schema_privilege", "service_role", "public", "usage", True),
    *[
        ("has_table_privilege", "service_role", "public.gfx_sessions", privilege, True)
        for privilege in ("select", "insert", "update", "delete")
    ],
    ("has_table_privilege", "service_role", "public.sync_events", "select", True),
    ("has_table_privilege", "service_role", "public.sync_events", "insert", True),
    ("has_table_privilege", "service_role", "public.sync_events", "delete", True),  # retention
    ("has_sequence_privilege", "service_role", "public.sync_events_id_seq", "usage", True),
    ("has_sequence_privilege", "service_role", "public.sync_events_id_seq", "select", True),
    ("has_table_privilege", "service_role", "public.pc_status", "select", True),
    *[
        ("has_table_privilege", "anon", table, "select", False)
        for table in ("public.gfx_sessions", "public.sync_events", "public.pc_status")
    ],
    # signed-in users read what RLS lets them (20261205130000_gfx_fleet.sql: the ops and live
    # tiers); gfx_sessions only column by column, never raw_json
    ("has_table_privilege", "authenticated", "public.gfx_sessions", "select", False),
    ("has_table_privilege", "authenticated", "public.sync_events", "select", True),
    ("has_table_privilege", "authenticated", "public.pc_status", "select", True),
    ("has_table_privilege", "authenticated", "public.sync_events", "insert", False),
]


@pytest.mark.parametrize(
    ("function", "role", "target", "privilege", "expected"), EXPECTED_PRIVILEGES
)
def test_privileges_are_explicit(
    postgres_db: infra.Database,
    function: str,
    role: str,
    target: str,
    privilege: str,
    expected: bool,
) -> None:
    # `function` comes from the constant above, never from input.
    rows = infra.query(
        postgres_db.dsn, f"select {function}(%s, %s, %s) as held", (role, target, privilege)
    )
    assert rows[0]["held"] is expected


def test_service_role_reads_and_writes_through_the_gateway(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    event = {
        "gfx_pc_id": "PC01",
        "event_type": "error",
        "file_path": "x.json",
        "error_message": "bad json",
    }
    assert (
        rest.post("/sync_events", json=event, headers={"prefer": "return=minimal"}).status_code
        == 201
    )
    assert upsert(rest, [session_row()]).status_code == 201

    status = rest.get("/pc_status")
    assert status.status_code == 200
    (line,) = status.json()
    assert (line["gfx_pc_id"], line["total_files"], line["error_count"]) == ("PC01", 1, 1)
    assert line["last_sync"] is not None


def test_anon_cannot_read_gfx_sessions(
    gateway: infra.Gateway, postgrest: infra.PostgrestServer
) -> None:
    without_key = httpx.get(f"{gateway.url}/rest/v1/gfx_sessions")
    assert (without_key.status_code, without_key.json()) == (401, {"message": "Invalid API key"})

    # Straight at PostgREST, past the gateway: anon has no GRANT. PostgREST answers 401 for the
    # anonymous role and 403 for a logged-in one (see the module docstring).
    direct = httpx.get(
        f"{postgrest.url}/gfx_sessions", headers={"authorization": f"Bearer {postgrest.anon_jwt()}"}
    )
    assert (direct.status_code, error_code(direct)) == (401, "42501")


# ---------------------------------------------------------------------------------------------
# Upsert and the keep-newest trigger
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(6, 130), (130, 6)], ids=["early-copy-first", "late-copy-first"])
def test_the_version_with_more_hands_wins_in_either_order(
    rest: httpx.Client, clean_db: infra.Database, order: tuple[int, int]
) -> None:
    for hands in order:
        assert upsert(rest, [session_row(hand_count=hands)]).status_code in (200, 201)
    assert stored(clean_db)["hand_count"] == 130


def test_an_older_version_is_skipped_and_a_newer_one_updates(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    assert upsert(rest, [session_row(hand_count=130)]).status_code == 201
    first = stored(clean_db)

    # Skipped by the trigger, yet PostgREST answers 200 as for an update: the agent acknowledges.
    assert upsert(rest, [session_row(hand_count=6, file_hash="6" * 64)]).status_code == 200
    after_older = stored(clean_db)
    assert after_older == first

    assert upsert(rest, [session_row(hand_count=131, file_hash="1" * 64)]).status_code == 200
    after_newer = stored(clean_db)
    assert (after_newer["hand_count"], after_newer["file_hash"]) == (131, "1" * 64)
    assert after_newer["updated_at"] > first["updated_at"]
    assert (after_newer["id"], after_newer["created_at"]) == (first["id"], first["created_at"])


def test_on_equal_hands_the_newer_file_mtime_wins(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    assert (
        upsert(
            rest, [session_row(file_mtime="2025-10-21T12:00:00Z", file_hash="a" * 64)]
        ).status_code
        == 201
    )
    first = stored(clean_db)

    assert (
        upsert(
            rest, [session_row(file_mtime="2025-10-21T11:59:59Z", file_hash="b" * 64)]
        ).status_code
        == 200
    )
    assert stored(clean_db) == first

    assert (
        upsert(
            rest, [session_row(file_mtime="2025-10-21T12:00:01Z", file_hash="c" * 64)]
        ).status_code
        == 200
    )
    newer = stored(clean_db)
    assert newer["file_hash"] == "c" * 64
    assert newer["file_mtime"] == datetime.fromisoformat("2025-10-21T12:00:01+00:00")
    assert newer["updated_at"] > first["updated_at"]


def test_session_key_is_the_exact_18_digit_id(rest: httpx.Client, clean_db: infra.Database) -> None:
    assert upsert(rest, [session_row()]).status_code == 201
    assert stored(clean_db)["session_key"] == "638966318331324926"

    # Read the raw text: json.loads would hide a rounding that a browser's JSON.parse performs.
    response = rest.get("/gfx_sessions", params={"select": "session_id,session_key"})
    assert response.text == '[{"session_id":638966318331324926,"session_key":"638966318331324926"}]'


# ---------------------------------------------------------------------------------------------
# Answers the error policy is built on
# ---------------------------------------------------------------------------------------------


def test_empty_upsert_probes_table_columns_and_conflict_key(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    # PostgREST 12.0.2: 200, empty body, nothing written. `check` uses this as a no-write probe.
    probe = upsert(rest, [], columns=",".join(AGENT_COLUMNS))
    assert probe.status_code == 200, probe.text
    assert infra.db_rows(clean_db.dsn) == []

    # PostgREST 12.0.2: 400 {"code":"PGRST204","message":"Column 'no_such_column' of relation
    # 'gfx_sessions' does not exist"}: a schema mismatch, even with an empty array.
    missing = upsert(rest, [], columns=",".join([*AGENT_COLUMNS, "no_such_column"]))
    assert (missing.status_code, error_code(missing)) == (400, "PGRST204"), missing.text


def test_the_same_conflict_key_twice_in_one_batch_is_refused(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    # PostgREST 12.0.2: 400 {"code":"21000","message":"ON CONFLICT DO UPDATE command cannot affect
    # row a second time"}; nothing of the batch is stored.
    response = upsert(rest, [session_row(hand_count=6), session_row(hand_count=130)])
    assert (response.status_code, error_code(response)) == (400, "21000"), response.text
    assert infra.db_rows(clean_db.dsn) == []


def test_objects_with_different_keys_are_refused(
    rest: httpx.Client, clean_db: infra.Database
) -> None:
    # PostgREST 12.0.2: 400 {"code":"PGRST102","message":"All object keys must match"}.
    partial = session_row(session_id=2)
    del partial["player_count"]
    response = upsert(rest, [session_row(), partial])
    assert (response.status_code, error_code(response)) == (400, "PGRST102"), response.text


# ---------------------------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------------------------


def test_a_bearer_that_is_not_a_jwt_is_refused_and_counted(
    fresh_gateway: infra.Gateway, rest: httpx.Client
) -> None:
    # What an agent does wrong with a new key: sending sb_secret_... as the bearer as well.
    response = rest.get("/gfx_sessions", headers={"authorization": f"Bearer {fresh_gateway.key}"})
    assert (response.status_code, response.json()) == (401, {"message": "Invalid JWT"})
    assert fresh_gateway.bad_bearer_count == 1
    assert fresh_gateway.count("GET", "/gfx_sessions", status=401) == 1


def test_a_legacy_jwt_key_is_forwarded_as_the_bearer(
    postgrest: infra.PostgrestServer, clean_db: infra.Database
) -> None:
    legacy_key = postgrest.service_role_jwt()
    gateway = infra.start_gateway(postgrest.url, postgrest.jwt_secret, key=legacy_key)
    try:
        headers = {"apikey": legacy_key, "authorization": f"Bearer {legacy_key}"}
        response = httpx.get(f"{gateway.url}/rest/v1/gfx_sessions", headers=headers)
        assert (response.status_code, response.json()) == (200, [])
        assert gateway.count("GET", "/gfx_sessions") == 1
    finally:
        gateway.close()


def test_gateway_fault_hook_and_blackout(fresh_gateway: infra.Gateway, rest: httpx.Client) -> None:
    fresh_gateway.fault = lambda request: (429, {"retry-after": "3"}, b'{"message":"slow down"}')
    limited = rest.get("/gfx_sessions")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")

    fresh_gateway.fault = None
    fresh_gateway.blackout = True
    with pytest.raises(httpx.RemoteProtocolError):
        rest.get("/gfx_sessions")
    assert [r.status for r in fresh_gateway.records] == [429, 0]

    assert httpx.get(f"{fresh_gateway.url}/health").status_code == 404


# ---------------------------------------------------------------------------------------------
# Re-applying
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "realtime", [False, True], ids=["plain-postgresql", "with-realtime-publication"]
)
def test_migration_applies_twice_in_a_row(realtime: bool) -> None:
    with infra.database(migrate=False) as db:
        if realtime:
            # What Supabase has and a plain PostgreSQL lacks: the guarded block adds the table once.
            infra.query(db.dsn, "create publication supabase_realtime")
        infra.apply_migration(db.dsn)
        infra.apply_migration(db.dsn)
        published = infra.query(db.dsn, "select pubname, tablename from pg_publication_tables")
        expected = (
            [{"pubname": "supabase_realtime", "tablename": "sync_events"}] if realtime else []
        )
        assert published == expected
        assert infra.query(db.dsn, "select count(*) as n from public.gfx_sessions") == [{"n": 0}]
