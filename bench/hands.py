"""What the hand-table trigger (20261203100000_gfx_hands.sql, with the security delay and
Broadcast of 20261205110000_gfx_hands_delay.sql) costs an upsert of gfx_sessions.

Two fresh databases on the local PostgreSQL (tests.support.infra): one with the core migration
only, one with the hand migrations on top (and the stand-in of Supabase Realtime's schema, so
that the live case really sends its Broadcast; the bench's PC is one the database knows). The
same upsert goes to both, straight through psycopg (no PostgREST, no gateway: the HTTP layers
cost the same with or without the trigger and would only add noise): the statement PostgREST 12
issues for the agent's
`POST /gfx_sessions?on_conflict=gfx_pc_id,session_id` (INSERT ... SELECT FROM
jsonb_populate_recordset ... ON CONFLICT DO UPDATE), with the agent's own row JSON from
`parse_session`, one session per statement, autocommit, on one warm connection per database.

Sessions are synthetic but made of real hands: the hands of the real exports in
../shared/samples/pokergfx (the script fails if they are absent), repeated in turn and
renumbered 1..N, under the header of a real file and a fresh session id each run.

    .venv/bin/python bench/hands.py [--repeat 7]

Prints the median (and min..max) wall time per scenario, with and without the trigger, then
the time of the graphics desk's reads on what the runs left in the database (one PC, every
synthetic session of the runs, all stored a day ago but the newest 30 hands): as the owner,
and as a `live` and a `delayed` reader (through the policies, as PostgREST runs a request).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
from common import infra

from tests.support import realtime
from trio_gfxsync.pokergfx import ROW_COLUMNS, parse_session

TABLE_DIR = infra.SAMPLES_DIR / "table-pokercaster"
HEADER_FILE = "1021/PGFX_live_data_export GameID=638966318331324926.json"
EARLY_COPY = "1017/PGFX_live_data_export GameID=638966318331324926.json"
FIRST_ID = 700_000_000_000_000_000  # above the real ids: never one of them

UPSERT = (
    f"insert into public.gfx_sessions ({', '.join(ROW_COLUMNS)}) "
    f"select {', '.join(ROW_COLUMNS)} "
    "from jsonb_populate_recordset(null::public.gfx_sessions, %s::jsonb) "
    "on conflict (gfx_pc_id, session_id) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS)
)


def real_hands() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A real file's header, and every hand of the real exports (the early copy left out)."""
    if not TABLE_DIR.is_dir():
        sys.exit(
            f"bench/hands.py needs the real PokerGFX exports in {TABLE_DIR} "
            "(../shared/samples/pokergfx): not found"
        )
    files = sorted(TABLE_DIR.glob("*/*.json"))
    hands = [
        hand
        for path in files
        if path.relative_to(TABLE_DIR).as_posix() != EARLY_COPY
        for hand in json.loads(path.read_bytes())["Hands"]
    ]
    header = json.loads((TABLE_DIR / HEADER_FILE).read_bytes())
    header["Hands"] = []
    print(f"hand pool: {len(hands)} real hands from {len(files)} files")
    return header, hands


class Sessions:
    """Synthetic sessions of N real hands, each with an id of its own."""

    def __init__(self, header: dict[str, Any], pool: list[dict[str, Any]]) -> None:
        self.header, self.pool = header, pool
        self.next_id = FIRST_ID

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def document(self, session_id: int, hands: int) -> bytes:
        doc = copy.copy(self.header)
        doc["ID"] = session_id
        doc["Hands"] = []
        for i in range(hands):
            hand = copy.copy(self.pool[i % len(self.pool)])
            hand["HandNum"] = i + 1
            doc["Hands"].append(hand)
        return json.dumps(doc).encode()

    @staticmethod
    def body(session_id: int, data: bytes, version: int) -> str:
        row = parse_session(
            data,
            pc_id="BENCH",
            rel_path=f"bench/PGFX_live_data_export GameID={session_id}.json",
            mtime_ns=1_760_000_000 * 10**9 + version,
            max_file_bytes=2**28,
        ).row
        return "[" + row.decode() + "]"


def timed(conn: psycopg.Connection[Any], body: str) -> float:
    started = time.perf_counter()
    conn.execute(UPSERT, (body,))  # type: ignore[arg-type]  # built from constants above
    return time.perf_counter() - started


def run_scenario(
    conn: psycopg.Connection[Any], prepare: Callable[[], tuple[str, str | None]], repeat: int
) -> list[float]:
    """`prepare` gives (the timed body, an untimed body to store first, or None)."""
    results = []
    for run in range(repeat + 1):  # the first run warms the plan caches and is dropped
        timed_body, setup_body = prepare()
        if setup_body is not None:
            conn.execute(UPSERT, (setup_body,))  # type: ignore[arg-type]
        elapsed = timed(conn, timed_body)
        if run:
            results.append(elapsed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per scenario")
    args = parser.parse_args()

    header, pool = real_hands()
    sessions = Sessions(header, pool)

    def new_session(hands: int) -> Callable[[], tuple[str, str | None]]:
        def prepare() -> tuple[str, str | None]:
            session_id = sessions.new_id()
            return sessions.body(session_id, sessions.document(session_id, hands), 1), None

        return prepare

    def one_more_hand(hands: int) -> Callable[[], tuple[str, str | None]]:
        def prepare() -> tuple[str, str | None]:
            session_id = sessions.new_id()
            before = sessions.body(session_id, sessions.document(session_id, hands), 1)
            after = sessions.body(session_id, sessions.document(session_id, hands + 1), 2)
            return after, before

        return prepare

    scenarios: list[tuple[str, Callable[[], tuple[str, str | None]]]] = [
        ("new session, 1 hand", new_session(1)),
        ("new session, 130 hands", new_session(130)),
        ("new session, 1,000 hands", new_session(1000)),
        ("130-hand session rewritten with hand 131", one_more_hand(130)),
        ("1,000-hand session rewritten with hand 1,001", one_more_hand(1000)),
    ]

    plain = infra.create_database()
    hands_db = infra.create_database()
    try:
        realtime.install_realtime(hands_db.dsn)
        infra.apply_hands_migrations(hands_db.dsn)
        # the bench's PC is one the database knows (its live rewrites are announced)
        known = sessions.new_id()
        with psycopg.connect(hands_db.dsn, autocommit=True) as warm:
            warm.execute(UPSERT, (sessions.body(known, sessions.document(known, 1), 1),))  # type: ignore[arg-type]
            warm.execute(
                "update public.gfx_hand_releases set first_stored_at = now() - interval '1 day'"
            )
        with (
            psycopg.connect(plain.dsn, autocommit=True) as without,
            psycopg.connect(hands_db.dsn, autocommit=True) as with_trigger,
        ):
            version = without.execute("show server_version").fetchone()
            print(f"PostgreSQL {version[0] if version else '?'}, psycopg, {args.repeat} runs")
            print()
            print(f"{'scenario':<46} {'without trigger':>24} {'with trigger':>24} {'added':>9}")
            for name, prepare in scenarios:
                base = run_scenario(without, prepare, args.repeat)
                trig = run_scenario(with_trigger, prepare, args.repeat)
                added = statistics.median(trig) - statistics.median(base)
                print(f"{name:<46} {_figure(base):>24} {_figure(trig):>24} {added * 1e3:>7.1f}ms")
            print()
            reads = (
                ("gfx_current_hand (every table)", "select * from public.gfx_current_hand"),
                ("gfx_chip_counts (every table)", "select * from public.gfx_chip_counts"),
                ("gfx_recent_showdowns(10)", "select * from public.gfx_recent_showdowns(10)"),
                ("gfx_hands_status()", "select public.gfx_hands_status()"),
            )
            # A day of play: every hand stored a day ago but the newest 30 of each table, which
            # are within the security delay (what a reader's policies meet in production).
            with_trigger.execute(
                "update public.gfx_hands h set first_stored_at = now() - interval '1 day' "
                "where (h.session_id, h.hand_num) < (select s.session_id, s.hand_num "
                "from public.gfx_hands s where s.gfx_pc_id = h.gfx_pc_id "
                "order by s.session_id desc, s.hand_num desc offset 29 limit 1)"
            )
            with_trigger.execute("vacuum analyze")
            readers = {
                "owner": None,
                "live": realtime.user_claims(app_metadata={"gfx_access": "live"}),
                "delayed": realtime.user_claims(app_metadata={"gfx_access": "delayed"}),
            }
            for reader, claims in readers.items():
                for name, statement in reads:
                    if claims is not None and "status" in name:
                        continue  # the agent's key only
                    times = []
                    for _ in range(args.repeat):
                        with with_trigger.transaction(force_rollback=True):
                            if claims is not None:
                                with_trigger.execute(
                                    "select set_config('role', 'authenticated', true), "
                                    "set_config('request.jwt.claims', %s, true)",
                                    (json.dumps(claims),),
                                )
                            started = time.perf_counter()
                            with_trigger.execute(statement).fetchall()  # type: ignore[arg-type]
                            times.append(time.perf_counter() - started)
                    print(f"read as {reader:<7} {name:<33} {_figure(times):>24}")
            rows = with_trigger.execute(
                "select (select count(*) from public.gfx_hands), "
                "(select count(*) from public.gfx_hand_players), "
                "(select count(*) from public.gfx_hand_events), "
                "(select count(*) from public.gfx_hand_errors)"
            ).fetchone()
            print()
            print(f"derived rows (hands, players, events, errors): {rows}")
    finally:
        infra.drop_database(plain.name)
        infra.drop_database(hands_db.name)


def _figure(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e3:7.1f}ms "
        f"({min(values) * 1e3:.1f}..{max(values) * 1e3:.1f})"
    )


if __name__ == "__main__":
    main()
