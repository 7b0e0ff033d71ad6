"""What the hand-table tests share: a database with the hand migrations behind the real
PostgREST and two gateways, and real sessions upserted the way the agent sends them.

`hand_stack()` owns its database (the core migrations, optionally Supabase's Realtime stand-in
and publication, then every hand migration), its PostgREST and two gateways: one holding the
agent's sb_secret_ key (service_role), one holding a legacy anon key that forwards the caller's
JWT, as Supabase's gateway does for a browser.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.support import infra, realtime
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.targets.postgrest import UPSERT_PARAMS, UPSERT_PREFER

TABLE = "table-pokercaster"
# The session that exists as an early 6-hand copy (1017/) and the later 130-hand one (1021/).
SPLIT_SESSION = 638966318331324926
EARLY_COPY = f"1017/PGFX_live_data_export GameID={SPLIT_SESSION}.json"
LATE_COPY = f"1021/PGFX_live_data_export GameID={SPLIT_SESSION}.json"
MTIME_BASE = 1_760_000_000 * 10**9  # 2025-10-09, as ns


@dataclass
class HandStack:
    db: infra.Database
    server: infra.PostgrestServer
    gateway: infra.Gateway  # sb_secret_ key: service_role, as the agent
    browser_gateway: infra.Gateway  # legacy anon key: forwards the caller's bearer
    rest: httpx.Client  # the agent's client of gateway

    def as_user(self, claims: Mapping[str, Any] | None) -> httpx.Client:
        """A browser's client: the anon key, and the bearer of a user with these JWT claims
        (None: not signed in, the anon key's own token)."""
        token = (
            infra.make_jwt(self.server.jwt_secret, dict(claims))
            if claims is not None
            else self.server.anon_jwt()
        )
        return httpx.Client(
            base_url=f"{self.browser_gateway.url}/rest/v1",
            headers={"apikey": self.browser_gateway.key, "authorization": f"Bearer {token}"},
            timeout=30,
        )

    def as_reader(self, access: str | None) -> httpx.Client:
        """A signed-in user whose app_metadata.gfx_access is `access` (None: not signed in)."""
        if access is None:
            return self.as_user(None)
        return self.as_user(realtime.user_claims(app_metadata={"gfx_access": access}))


@contextlib.contextmanager
def hand_stack(*, with_realtime: bool = False, hands: bool = True) -> Iterator[HandStack]:
    """with_realtime: Supabase's publication and Realtime objects exist before the migrations,
    as on a Supabase project. hands=False: the core migrations only (the fleet's tests)."""
    db = infra.create_database(migrate=False)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(infra.drop_database, db.name)
        if with_realtime:
            infra.query(db.dsn, "create publication supabase_realtime")
            realtime.install_realtime(db.dsn)
        infra.apply_migration(db.dsn)
        if hands:
            infra.apply_hands_migrations(db.dsn)
        server = infra.start_postgrest(db)
        cleanup.callback(server.close)
        gateway = infra.start_gateway(server.url, server.jwt_secret)
        cleanup.callback(gateway.close)
        browser_gateway = infra.start_gateway(server.url, server.jwt_secret, key=server.anon_jwt())
        cleanup.callback(browser_gateway.close)
        rest = httpx.Client(
            base_url=f"{gateway.url}/rest/v1", headers={"apikey": gateway.key}, timeout=60
        )
        cleanup.callback(rest.close)
        yield HandStack(db, server, gateway, browser_gateway, rest)


# ---------------------------------------------------------------------------------------------
# Sessions as the agent sends them
# ---------------------------------------------------------------------------------------------


def sample_files(samples_dir: Path) -> list[str]:
    """Every real export, relative to the table's folder ('1017/PGFX... GameID=....json')."""
    root = samples_dir / TABLE
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.json"))
    assert len(files) == 10, files
    return files


def sample_bytes(samples_dir: Path, rel: str) -> bytes:
    return (samples_dir / TABLE / rel).read_bytes()


def session_row(pc: str, rel: str, data: bytes, mtime_ns: int) -> bytes:
    record = parse_session(data, pc_id=pc, rel_path=rel, mtime_ns=mtime_ns, max_file_bytes=2**26)
    return record.row


def upsert(rest: httpx.Client, *rows: bytes) -> httpx.Response:
    response = rest.post(
        "/gfx_sessions",
        params=UPSERT_PARAMS,
        content=b"[" + b",".join(rows) + b"]",
        headers={"content-type": "application/json", "prefer": UPSERT_PREFER},
    )
    assert response.status_code in (200, 201), response.text
    return response


def store_statement(row: bytes) -> tuple[str, tuple[str]]:
    """The statement (and its parameters) that writes one agent row into gfx_sessions the way
    PostgREST's upsert does (INSERT ... ON CONFLICT DO UPDATE)."""
    values = json.loads(row)
    columns = ", ".join(values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values)
    return (
        f"insert into public.gfx_sessions ({columns}) select {columns} "
        "from jsonb_populate_record(null::public.gfx_sessions, %s::jsonb) "
        f"on conflict (gfx_pc_id, session_id) do update set {updates}",
        (json.dumps(values),),
    )


def store_session(dsn: str, row: bytes) -> None:
    """One agent row into gfx_sessions in SQL, as a superuser: for databases without a
    PostgREST."""
    infra.query(dsn, *store_statement(row))


def document(data: bytes) -> dict[str, Any]:
    # Python's json keeps 18-digit integers exact
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def cards(values: list[str] | str | None) -> list[str]:
    """HoleCards or BoardCards as the tables hold them: ["ah kd"] -> ["ah", "kd"]."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return " ".join(values).split()


def query_as(
    dsn: str, claims: Mapping[str, Any], statement: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Rows of `statement` run as PostgREST runs a request: the JWT's role, and its claims in
    request.jwt.claims, inside one transaction."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (claims.get("role", "anon"), json.dumps(claims)),
        )
        rows = conn.execute(statement, params).fetchall()  # type: ignore[arg-type]
        conn.rollback()
    return rows


def renumbered(hand: dict[str, Any], num: int, minutes_later: int) -> dict[str, Any]:
    """A copy of a real hand under another HandNum, started later."""
    new = copy.deepcopy(hand)
    new["HandNum"] = num
    start = datetime.strptime(hand["StartDateTimeUTC"][:19], "%Y-%m-%dT%H:%M:%S")
    fraction = hand["StartDateTimeUTC"][19:]
    new["StartDateTimeUTC"] = (start + timedelta(minutes=minutes_later)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    ) + fraction
    return new
