"""The live hand tables (deploy/supabase/migrations/20261203100000_gfx_hands.sql, with the
security delay of 20261205110000_gfx_hands_delay.sql on top): derived by the database from
gfx_sessions.raw_json, checked against the real PokerGFX exports, PostgreSQL and PostgREST
12.0.2 behind the gateway. The tiers and the delay themselves: tests/test_hands_delay.py.

This module owns its stack (tests/support/hand_stack.py: a database with the hand migrations,
PostgREST, the agent's gateway and a browser's); the graphics desk's JWT is a signed-in user's
with `app_metadata.gfx_access = live`. Sessions go in the way the agent sends them:
`parse_session` rows, upserted through /rest/v1/gfx_sessions.

The expected values are computed here from the JSON, independently of the SQL.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from tests.support import infra
from tests.support.hand_stack import (
    EARLY_COPY,
    LATE_COPY,
    MTIME_BASE,
    SPLIT_SESSION,
    HandStack,
    cards,
    document,
    encode,
    hand_stack,
    renumbered,
    sample_bytes,
    sample_files,
    session_row,
    store_session,
    upsert,
)
from tests.support.realtime import user_claims
from trio_gfxsync.commands.hands import (
    HANDS_VERSION,
    check_hands,
    hands_migration_sql,
    rebuild_hands,
    run_hands_rebuild,
    sql_for_schema,
)
from trio_gfxsync.commands.results import CheckResult
from trio_gfxsync.settings import Settings, load_settings
from trio_gfxsync.targets.postgrest import PostgrestClient

# The hand tables themselves; infra.apply_hands_migrations adds their upgrades.
HANDS_MIGRATION = infra.MIGRATIONS_DIR / "20261203100000_gfx_hands.sql"
HAND_TABLES = ("gfx_hands", "gfx_hand_players", "gfx_hand_events", "gfx_hand_errors")
READABLE = (
    "gfx_hands",
    "gfx_hand_players",
    "gfx_hand_events",
    "gfx_hand_errors",
    "gfx_hand_sessions",
    "gfx_current_hand",
    "gfx_chip_counts",
)


# ---------------------------------------------------------------------------------------------
# The module's own stack (tests/support/hand_stack.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[HandStack]:
    try:
        with hand_stack() as built:
            yield built
    except infra.InfraError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def clean(stack: HandStack) -> HandStack:
    """No sessions. TRUNCATE of gfx_sessions empties the hand tables too (a trigger)."""
    infra.query(stack.db.dsn, "truncate public.gfx_sessions")
    assert infra.query(stack.db.dsn, "select count(*) as n from public.gfx_hand_sessions") == [
        {"n": 0}
    ]
    return stack


# ---------------------------------------------------------------------------------------------
# What the tables must hold, computed from the JSON
# ---------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"(-)?P(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?"
)


def iso_seconds(text: str | None) -> Decimal | None:
    if text is None:
        return None
    match = _DURATION.fullmatch(text)
    assert match, text
    sign, days, hours, minutes, seconds = match.groups()
    total = (
        Decimal(days or 0) * 86400
        + Decimal(hours or 0) * 3600
        + Decimal(minutes or 0) * 60
        + Decimal(seconds or 0)
    )
    return -total if sign else total


def utc(text: str) -> datetime:
    """7 fractional digits, as a datetime within a microsecond."""
    head, _, fraction = text.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return base + timedelta(microseconds=float("0." + (fraction or "0")) * 1e6)


def hand_keys(hands: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(HandNum, occurrence): PokerGFX repeats a HandNum now and then; both hands are kept."""
    seen: Counter[int] = Counter()
    keys = []
    for hand in hands:
        seen[hand["HandNum"]] += 1
        keys.append((hand["HandNum"], seen[hand["HandNum"]]))
    return keys


def contenders(hand: dict[str, Any]) -> list[int]:
    folded = {e["PlayerNum"] for e in hand["Events"] if e["EventType"] == "FOLD"}
    return [
        p["PlayerNum"]
        for p in hand["Players"]
        if not p["SittingOut"] and cards(p["HoleCards"]) and p["PlayerNum"] not in folded
    ]


def expected_hand(hand: dict[str, Any]) -> dict[str, Any]:
    blinds = hand["FlopDrawBlinds"]
    events = hand["Events"]
    players = hand["Players"]
    winners = sorted(
        (p for p in players if p["EndStackAmt"] > p["StartStackAmt"]),
        key=lambda p: (p["StartStackAmt"] - p["EndStackAmt"], p["PlayerNum"]),
    )
    at_end = contenders(hand)
    return {
        "game_variant": hand["GameVariant"],
        "game_class": hand["GameClass"],
        "bet_structure": hand["BetStructure"],
        "start_time_text": hand["StartDateTimeUTC"],
        "duration_iso": hand["Duration"],
        "duration_seconds": iso_seconds(hand["Duration"]),
        "recording_offset_iso": hand["RecordingOffsetStart"],
        "recording_offset_seconds": iso_seconds(hand["RecordingOffsetStart"]),
        "num_boards": hand["NumBoards"],
        "run_it_num_times": hand["RunItNumTimes"],
        "ante_amt": hand["AnteAmt"],
        "bomb_pot_amt": hand["BombPotAmt"],
        "description": hand["Description"],
        "blinds": {
            "ante_type": blinds["AnteType"],
            "big_blind_amt": blinds["BigBlindAmt"],
            "big_blind_player_num": blinds["BigBlindPlayerNum"],
            "small_blind_amt": blinds["SmallBlindAmt"],
            "small_blind_player_num": blinds["SmallBlindPlayerNum"],
            "button_player_num": blinds["ButtonPlayerNum"],
            "third_blind_amt": blinds["ThirdBlindAmt"],
            "third_blind_player_num": blinds["ThirdBlindPlayerNum"],
            "blind_level": blinds["BlindLevel"],
        },
        "ante_type": blinds["AnteType"],
        "small_blind_amt": blinds["SmallBlindAmt"],
        "big_blind_amt": blinds["BigBlindAmt"],
        "third_blind_amt": blinds["ThirdBlindAmt"],
        "blind_level": blinds["BlindLevel"],
        "button_seat": blinds["ButtonPlayerNum"],
        "small_blind_seat": blinds["SmallBlindPlayerNum"],
        "big_blind_seat": blinds["BigBlindPlayerNum"],
        "third_blind_seat": blinds["ThirdBlindPlayerNum"],
        "stud_limits": hand["StudLimits"],
        "pot_size": max((e["Pot"] for e in events), default=0),
        "player_count": len(players),
        "showdown_count": len(at_end) if len(at_end) >= 2 else 0,
        "board_cards": [
            card
            for e in events
            if e["EventType"] == "BOARD CARD" and (e["BoardNum"] or 0) <= 1
            for card in cards(e["BoardCards"])
        ],
        "second_board_cards": [
            card
            for e in events
            if e["EventType"] == "BOARD CARD" and e["BoardNum"] == 2
            for card in cards(e["BoardCards"])
        ],
        "winner_name": winners[0]["Name"] if winners else None,
        "winner_seat": winners[0]["PlayerNum"] if winners else None,
    }


def expected_players(hand: dict[str, Any]) -> list[dict[str, Any]]:
    at_end = contenders(hand)
    rows = [
        {
            "seat_num": p["PlayerNum"],
            "player_name": p["Name"],
            "long_name": p["LongName"],
            "hole_cards": cards(p["HoleCards"]),
            "has_shown": bool(cards(p["HoleCards"])),
            "start_stack_amt": p["StartStackAmt"],
            "end_stack_amt": p["EndStackAmt"],
            "stack_change": p["EndStackAmt"] - p["StartStackAmt"],
            "cumulative_winnings_amt": p["CumulativeWinningsAmt"],
            "blind_bet_straddle_amt": p["BlindBetStraddleAmt"],
            "sitting_out": p["SittingOut"],
            "elimination_rank": p["EliminationRank"],
            "is_winner": p["EndStackAmt"] > p["StartStackAmt"],
            "at_showdown": len(at_end) >= 2 and p["PlayerNum"] in at_end,
            "vpip_percent": p["VPIPPercent"],
            "preflop_raise_percent": p["PreFlopRaisePercent"],
            "aggression_frequency_percent": p["AggressionFrequencyPercent"],
            "went_to_showdown_percent": p["WentToShowDownPercent"],
        }
        for p in hand["Players"]
    ]
    return sorted(rows, key=lambda r: r["seat_num"])


def expected_events(hand: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "event_order": i,
            "event_type": e["EventType"].replace(" ", "_").upper(),
            "event_type_raw": e["EventType"],
            "player_num": e["PlayerNum"],
            "bet_amt": e["BetAmt"],
            "pot": e["Pot"],
            "board_cards": e["BoardCards"],
            "board_num": e["BoardNum"],
            "num_cards_drawn": e["NumCardsDrawn"],
            "event_time_text": e["DateTimeUTC"],
        }
        for i, e in enumerate(hand["Events"])
    ]


def stored_hands(dsn: str, pc: str, session_id: int) -> dict[str, Any]:
    """The hand tables' rows of one session, keyed by (hand_num, hand_seq)."""
    key = {"pc": pc, "session": session_id}
    where = "where gfx_pc_id = %(pc)s and session_id = %(session)s"
    hands = infra.query(dsn, f"select * from public.gfx_hands {where}", key)
    players = infra.query(
        dsn, f"select * from public.gfx_hand_players {where} order by seat_num", key
    )
    events = infra.query(
        dsn, f"select * from public.gfx_hand_events {where} order by event_order", key
    )
    result: dict[tuple[int, int], dict[str, Any]] = {
        (h["hand_num"], h["hand_seq"]): {"hand": h, "players": [], "events": []} for h in hands
    }
    for p in players:
        result[(p["hand_num"], p["hand_seq"])]["players"].append(p)
    for e in events:
        result[(e["hand_num"], e["hand_seq"])]["events"].append(e)
    return result


def subset(row: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in keys}


def assert_session_matches(dsn: str, pc: str, doc: dict[str, Any]) -> None:
    """Every hand of the file, field by field, and nothing else."""
    session_id = doc["ID"]
    stored = stored_hands(dsn, pc, session_id)
    keys = hand_keys(doc["Hands"])
    assert sorted(stored) == sorted(keys), f"session {session_id}"
    for key, hand in zip(keys, doc["Hands"], strict=True):
        row = stored[key]
        expected = expected_hand(hand)
        where = f"session {session_id} hand {key}"
        assert subset(row["hand"], expected) == expected, where
        assert row["hand"]["session_key"] == str(session_id), where
        assert abs(row["hand"]["start_time"] - utc(hand["StartDateTimeUTC"])) <= timedelta(
            microseconds=1
        ), where
        players = expected_players(hand)
        assert [subset(p, players[0]) for p in row["players"]] == players, where
        events = expected_events(hand)
        assert [subset(e, events[0]) for e in row["events"]] == events, where
        assert all(p["session_key"] == str(session_id) for p in row["players"]), where
        assert all(e["session_key"] == str(session_id) for e in row["events"]), where


def status(dsn: str) -> dict[str, Any]:
    """gfx_hands_status() without its "release" part (tests/test_hands_delay.py checks that)."""
    answer: dict[str, Any] = infra.query(dsn, "select public.gfx_hands_status() as s")[0]["s"]
    answer.pop("release")
    return answer


def xmins(dsn: str, pc: str) -> dict[str, dict[tuple[int, ...], str]]:
    """The row version (xmin) of every hand-table row of a PC: unchanged means not rewritten."""
    result = {}
    for table, key in (
        ("gfx_hands", "hand_num, hand_seq"),
        ("gfx_hand_players", "hand_num, hand_seq, seat_num"),
        ("gfx_hand_events", "hand_num, hand_seq, event_order"),
    ):
        rows = infra.query(
            dsn,
            f"select {key}, xmin::text as version from public.{table} where gfx_pc_id = %s",
            (pc,),
        )
        result[table] = {
            tuple(v for k, v in r.items() if k != "version"): r["version"] for r in rows
        }
    return result


@contextlib.contextmanager
def keep_newest_relaxed(dsn: str) -> Iterator[None]:
    """What the coming version-stamp rule allows (DESIGN 3.4): a path's latest content wins
    even with fewer hands. Simulated by switching off gfx_sessions' own BEFORE triggers,
    whatever their names (this migration's are all AFTER triggers named gfx_hands_on_*)."""
    names = [
        r["tgname"]
        for r in infra.query(
            dsn,
            """select tgname from pg_trigger
               where tgrelid = 'public.gfx_sessions'::regclass and not tgisinternal
                 and (tgtype & 2) = 2 and tgname not like 'gfx_hands_on_%'""",
        )
    ]
    assert names, "gfx_sessions has no BEFORE trigger to relax"
    for name in names:
        infra.query(dsn, f'alter table public.gfx_sessions disable trigger "{name}"')
    try:
        yield
    finally:
        for name in names:
            infra.query(dsn, f'alter table public.gfx_sessions enable trigger "{name}"')


# ---------------------------------------------------------------------------------------------
# The real exports, field by field, in both arrival orders
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("late_first", [False, True], ids=["early-copy-first", "late-copy-first"])
def test_every_real_session_is_derived_field_by_field(
    clean: HandStack, samples_dir: Path, late_first: bool
) -> None:
    files = sample_files(samples_dir)
    if late_first:
        files.remove(LATE_COPY)
        files.insert(files.index(EARLY_COPY), LATE_COPY)
    assert (files.index(LATE_COPY) < files.index(EARLY_COPY)) is late_first
    for i, rel in enumerate(files):
        upsert(clean.rest, session_row("PC1", rel, sample_bytes(samples_dir, rel), MTIME_BASE + i))

    winners = {}
    for rel in files:
        doc = document(sample_bytes(samples_dir, rel))
        if rel != EARLY_COPY:
            winners[doc["ID"]] = doc
    assert len(winners) == 9
    for doc in winners.values():
        assert_session_matches(clean.db.dsn, "PC1", doc)
    total = sum(len(doc["Hands"]) for doc in winners.values())
    assert status(clean.db.dsn) | {"version": None} == {
        "version": None,
        "schema": "public",
        "sessions": 9,
        "derived": 9,
        "missing": 0,
        "stale": 0,
        "inconsistent": 0,
        "orphaned": 0,
        "hands": total,
        "hand_errors": 0,
    }

    # Repeated hand numbers exist in the real data: both hands are rows.
    repeats = infra.query(
        clean.db.dsn, "select count(*) as n from public.gfx_hands where hand_seq > 1"
    )
    assert repeats == [{"n": 3}]

    # Exact ids and 7-digit times, read as text the way a browser receives them.
    raw = clean.rest.get(
        "/gfx_hands",
        params={
            "select": "session_id,session_key,hand_num,start_time_text",
            "session_key": f"eq.{SPLIT_SESSION}",
            "hand_num": "eq.130",
        },
    )
    assert raw.status_code == 200, raw.text
    start = winners[SPLIT_SESSION]["Hands"][-1]["StartDateTimeUTC"]
    assert re.fullmatch(r".*\.[0-9]{7}Z", start)
    assert raw.text == (
        f'[{{"session_id":{SPLIT_SESSION},"session_key":"{SPLIT_SESSION}",'
        f'"hand_num":130,"start_time_text":"{start}"}}]'
    )


# ---------------------------------------------------------------------------------------------
# Incremental: one more hand, one fewer, a voided one
# ---------------------------------------------------------------------------------------------


def test_a_rewrite_touches_only_the_hands_that_changed(clean: HandStack, samples_dir: Path) -> None:
    dsn, pc = clean.db.dsn, "PC-rewrite"
    data = sample_bytes(samples_dir, LATE_COPY)
    doc = document(data)
    assert len(doc["Hands"]) == 130
    upsert(clean.rest, session_row(pc, LATE_COPY, data, MTIME_BASE))
    before = xmins(dsn, pc)
    stamps_sql = (
        "select hand_num, created_at, updated_at from public.gfx_hands "
        "where gfx_pc_id = %s and hand_num <= 130 order by hand_num"
    )
    stamps = infra.query(dsn, stamps_sql, (pc,))

    # PokerGFX finished hand 131: the whole file is rewritten, one hand longer.
    grown = copy.deepcopy(doc)
    grown["Hands"].append(renumbered(doc["Hands"][-1], 131, 5))
    upsert(clean.rest, session_row(pc, LATE_COPY, encode(grown), MTIME_BASE + 1))
    after = xmins(dsn, pc)
    for table in before:
        new_rows = {k: v for k, v in after[table].items() if k not in before[table]}
        assert {k[0] for k in new_rows} == {131}, table
        assert {k: after[table][k] for k in before[table]} == before[table], (
            f"{table}: rows of hands 1..130 were rewritten"
        )
    assert infra.query(dsn, stamps_sql, (pc,)) == stamps
    assert_session_matches(dsn, pc, grown)

    # The same file again (a retry, a replay from the queue): nothing is derived at all.
    upsert(clean.rest, session_row(pc, LATE_COPY, encode(grown), MTIME_BASE + 1))
    assert xmins(dsn, pc) == after

    # Under today's keep-newest rule a copy with fewer hands is skipped by the BEFORE trigger:
    # the session row stays, and so do its hands.
    upsert(clean.rest, session_row(pc, LATE_COPY, data, MTIME_BASE + 2))
    assert xmins(dsn, pc) == after

    # Once the newest content of a path wins with fewer hands (a voided hand 131), the hand and
    # its players and events go; the other 130 hands stay untouched.
    with keep_newest_relaxed(dsn):
        upsert(clean.rest, session_row(pc, LATE_COPY, data, MTIME_BASE + 3))
    shrunk = xmins(dsn, pc)
    for table in before:
        assert shrunk[table] == before[table], table
    assert_session_matches(dsn, pc, doc)

    # Today's rule, same count: hand 77 voided and hand 131 dealt. 77 goes, 131 comes, the rest
    # stays.
    voided = copy.deepcopy(doc)
    del voided["Hands"][76]
    voided["Hands"].append(renumbered(doc["Hands"][-1], 131, 5))
    upsert(clean.rest, session_row(pc, LATE_COPY, encode(voided), MTIME_BASE + 4))
    final = xmins(dsn, pc)
    hands = {k[0] for k in final["gfx_hands"]}
    assert 77 not in hands and 131 in hands and len(hands) == 130
    for table in before:
        kept = {k: v for k, v in before[table].items() if k[0] != 77}
        assert {k: final[table][k] for k in kept} == kept, table
        assert not any(k[0] == 77 for k in final[table]), table
    assert_session_matches(dsn, pc, voided)
    assert status(dsn)["inconsistent"] == 0


# ---------------------------------------------------------------------------------------------
# Bad data: the session is stored, the hand is reported
# ---------------------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(hand: dict[str, Any]) -> dict[str, Any]:
        target: Any = hand
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return hand

    return mutate


def _duplicate_seat(hand: dict[str, Any]) -> dict[str, Any]:
    hand["Players"][3]["PlayerNum"] = hand["Players"][2]["PlayerNum"]
    return hand


def _without_hand_num(hand: dict[str, Any]) -> dict[str, Any]:
    del hand["HandNum"]
    return hand


MALFORMED = [
    (
        "stack-not-a-number",
        _set(("Players", 1, "EndStackAmt"), "lots"),
        'Players[1].EndStackAmt: invalid input syntax for type bigint: "lots"',
        3,
    ),
    ("hand-not-an-object", lambda hand: 42, "hand is a JSON number, not an object", None),
    ("players-not-an-array", _set(("Players",), {}), "Players is a JSON object, not an array", 3),
    (
        "start-time-not-a-time",
        _set(("StartDateTimeUTC",), "now"),
        "StartDateTimeUTC is not an ISO 8601 date and time: now",
        3,
    ),
    (
        "duration-not-iso-8601",
        _set(("Duration",), "35 minutes"),
        "Duration is not an ISO 8601 duration: 35 minutes",
        3,
    ),
    ("seat-twice", _duplicate_seat, "appears twice in the hand", 3),
    ("hand-num-missing", _without_hand_num, "HandNum is missing", None),
    (
        "event-not-an-object",
        _set(("Events", 0), "FOLD"),
        "Events[0] is a JSON string, not an object",
        3,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "reason", "hand_num"),
    [pytest.param(m, r, n, id=name) for name, m, r, n in MALFORMED],
)
def test_a_malformed_hand_is_an_error_row_and_the_session_is_stored(
    clean: HandStack, samples_dir: Path, mutate: Any, reason: str, hand_num: int | None
) -> None:
    dsn, pc = clean.db.dsn, "PC-bad"
    data = sample_bytes(samples_dir, EARLY_COPY)
    doc = document(data)
    bad = copy.deepcopy(doc)
    bad["Hands"][2] = mutate(bad["Hands"][2])
    upsert(clean.rest, session_row(pc, EARLY_COPY, encode(bad), MTIME_BASE))

    session = infra.query(
        dsn, "select hand_count, raw_json from public.gfx_sessions where gfx_pc_id = %s", (pc,)
    )
    assert [s["hand_count"] for s in session] == [6]
    errors = infra.query(
        dsn,
        "select hand_index, hand_num, hand_seq, reason, file_hash, session_key "
        "from public.gfx_hand_errors where gfx_pc_id = %s",
        (pc,),
    )
    assert len(errors) == 1, errors
    (error,) = errors
    assert (error["hand_index"], error["hand_num"]) == (2, hand_num)
    assert reason in error["reason"], error["reason"]
    assert error["session_key"] == str(SPLIT_SESSION)
    stored = stored_hands(dsn, pc, SPLIT_SESSION)
    assert sorted(stored) == [(n, 1) for n in (1, 2, 4, 5, 6)]
    good = copy.deepcopy(bad)
    del good["Hands"][2]
    assert_session_matches(dsn, pc, good)
    assert status(dsn)["hand_errors"] == 1

    # The next rewrite that repairs the hand clears the error and derives it.
    upsert(clean.rest, session_row(pc, EARLY_COPY, data, MTIME_BASE + 1))
    assert infra.query(dsn, "select count(*) as n from public.gfx_hand_errors") == [{"n": 0}]
    assert_session_matches(dsn, pc, doc)


def test_hands_that_are_not_an_array_are_one_session_error(
    clean: HandStack, samples_dir: Path
) -> None:
    doc = document(sample_bytes(samples_dir, EARLY_COPY))
    doc["Hands"] = {"1": doc["Hands"][0]}
    upsert(clean.rest, session_row("PC-odd", EARLY_COPY, encode(doc), MTIME_BASE))
    assert infra.query(
        clean.db.dsn, "select hand_index, hand_num, reason from public.gfx_hand_errors"
    ) == [{"hand_index": None, "hand_num": None, "reason": "Hands is a JSON object, not an array"}]
    assert infra.query(clean.db.dsn, "select count(*) as n from public.gfx_sessions") == [{"n": 1}]


def test_one_bad_hand_among_many_keeps_the_others(clean: HandStack, samples_dir: Path) -> None:
    doc = document(sample_bytes(samples_dir, LATE_COPY))
    doc["Hands"][99]["Players"][0]["VPIPPercent"] = "high"
    upsert(clean.rest, session_row("PC-one-bad", LATE_COPY, encode(doc), MTIME_BASE))
    (error,) = infra.query(clean.db.dsn, "select hand_num, reason from public.gfx_hand_errors")
    assert error["hand_num"] == 100
    assert error["reason"].startswith("Players[0].VPIPPercent: invalid input syntax")
    stored = stored_hands(clean.db.dsn, "PC-one-bad", SPLIT_SESSION)
    assert len(stored) == 129 and (100, 1) not in stored


# ---------------------------------------------------------------------------------------------
# Graphics desk: right after the upsert, through PostgREST
# ---------------------------------------------------------------------------------------------


def test_the_latest_hand_is_readable_right_after_its_upsert(
    clean: HandStack, samples_dir: Path
) -> None:
    pc = "PC-live"
    doc = document(sample_bytes(samples_dir, LATE_COPY))
    upsert(clean.rest, session_row(pc, LATE_COPY, encode(doc), MTIME_BASE))
    with clean.as_reader("live") as desk:
        for num in (131, 132):
            doc["Hands"].append(renumbered(doc["Hands"][-1], num, 3))
            started = time.monotonic()
            upsert(clean.rest, session_row(pc, LATE_COPY, encode(doc), MTIME_BASE + num))
            # No waiting: the trigger ran inside the upsert's transaction.
            current = desk.get("/gfx_current_hand", params={"gfx_pc_id": f"eq.{pc}"})
            elapsed = time.monotonic() - started
            assert current.status_code == 200, current.text
            (hand,) = current.json()
            assert (hand["hand_num"], hand["session_key"]) == (num, str(SPLIT_SESSION))
            print(f"hand {num}: upsert + read {elapsed:.3f}s")  # a figure, not a timed assert
            latest = doc["Hands"][-1]
            assert [
                (p["seat_num"], p["player_name"], p["end_stack_amt"], p["hole_cards"])
                for p in hand["players"]
            ] == sorted(
                (p["PlayerNum"], p["Name"], p["EndStackAmt"], cards(p["HoleCards"]))
                for p in latest["Players"]
            )

        chips = desk.get(
            "/gfx_chip_counts", params={"gfx_pc_id": f"eq.{pc}", "order": "chip_rank,seat_num"}
        )
        assert chips.status_code == 200, chips.text
        expected = sorted(
            ((p["EndStackAmt"], p["PlayerNum"]) for p in latest["Players"] if p["EndStackAmt"]),
            key=lambda t: (-t[0], t[1]),
        )
        assert [(c["end_stack_amt"], c["seat_num"]) for c in chips.json()] == expected
        assert chips.json()[0]["chip_rank"] == 1

        shown = desk.get("/rpc/gfx_recent_showdowns", params={"n": 10, "gfx_pc_id": f"eq.{pc}"})
        assert shown.status_code == 200, shown.text
        last_ten = list(reversed(doc["Hands"][-10:]))
        expected_shown = [
            (ago, hand["HandNum"], sorted(contenders(hand)))
            for ago, hand in enumerate(last_ten)
            if len(contenders(hand)) >= 2
        ]
        assert expected_shown, "the sample's last hands hold showdowns"
        assert [
            (s["hands_ago"], s["hand_num"], [p["seat_num"] for p in s["players"]])
            for s in shown.json()
        ] == expected_shown
        assert all(s["session_key"] == str(SPLIT_SESSION) for s in shown.json())


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


def test_the_desk_reads_anon_does_not_and_nobody_writes(
    clean: HandStack, samples_dir: Path
) -> None:
    upsert(
        clean.rest,
        session_row("PC-acl", EARLY_COPY, sample_bytes(samples_dir, EARLY_COPY), MTIME_BASE),
    )
    with clean.as_reader("live") as desk, clean.as_reader(None) as anon:
        for name in READABLE:
            read = desk.get(f"/{name}", params={"limit": "1"})
            assert read.status_code == 200, (name, read.text)
            assert len(read.json()) == (0 if name == "gfx_hand_errors" else 1), name
            refused = anon.get(f"/{name}", params={"limit": "1"})
            assert (refused.status_code, refused.json()["code"]) == (401, "42501"), name
        assert desk.get("/rpc/gfx_recent_showdowns", params={"n": 3}).status_code == 200
        assert anon.get("/rpc/gfx_recent_showdowns", params={"n": 3}).status_code == 401

        # Dashboards read, never write; the rebuild is for the agent's key only.
        write = desk.post("/gfx_hands", json={"gfx_pc_id": "x"})
        assert (write.status_code, write.json()["code"]) == (403, "42501"), write.text
        rebuild = desk.post("/rpc/gfx_hands_rebuild", json={})
        assert (rebuild.status_code, rebuild.json()["code"]) == (403, "42501"), rebuild.text

    # service_role (the agent's key) reads and rebuilds, but writes only through the trigger.
    assert clean.rest.get("/gfx_hands", params={"limit": "1"}).status_code == 200
    write = clean.rest.post("/gfx_hand_errors", json={"gfx_pc_id": "x", "session_id": 1})
    assert (write.status_code, write.json()["code"]) == (403, "42501"), write.text
    privileges = infra.query(
        clean.db.dsn,
        """select p.proname, p.prosecdef, p.proconfig
           from pg_proc p where p.pronamespace = 'public'::regnamespace
             and p.proname in ('gfx_hands_sync_session', 'gfx_hands_rebuild')
           order by 1""",
    )
    assert [(p["proname"], p["prosecdef"], p["proconfig"]) for p in privileges] == [
        ("gfx_hands_rebuild", True, ['search_path=""']),
        ("gfx_hands_sync_session", True, ['search_path=""']),
    ]
    views = infra.query(
        clean.db.dsn,
        "select relname, reloptions from pg_class where relname in "
        "('gfx_current_hand', 'gfx_chip_counts') order by 1",
    )
    assert [v["reloptions"] for v in views] == [["security_invoker=on"]] * 2


# ---------------------------------------------------------------------------------------------
# Rebuild through the RPC, and check
# ---------------------------------------------------------------------------------------------


def snapshot(dsn: str) -> dict[str, list[Any]]:
    """Everything derived, without the times a rewrite sets."""
    result = {}
    for table in (*HAND_TABLES, "gfx_hand_sessions"):
        rows = infra.query(
            dsn,
            f"select to_jsonb(t) - 'created_at' - 'updated_at' - 'derived_at' - 'id' as r "
            f"from public.{table} t",
        )
        result[table] = sorted(json.dumps(r["r"], sort_keys=True) for r in rows)
    return result


async def test_rebuild_rederives_everything_in_chunks(
    clean: HandStack, samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = clean.db.dsn
    for i, rel in enumerate(sample_files(samples_dir)):
        upsert(clean.rest, session_row("PC-A", rel, sample_bytes(samples_dir, rel), MTIME_BASE + i))
    for i, rel in enumerate(sample_files(samples_dir)[:3]):
        upsert(clean.rest, session_row("PC-B", rel, sample_bytes(samples_dir, rel), MTIME_BASE + i))
    bad = document(sample_bytes(samples_dir, EARLY_COPY))
    bad["Hands"][1]["AnteAmt"] = "big"
    upsert(clean.rest, session_row("PC-C", EARLY_COPY, encode(bad), MTIME_BASE))
    expected = snapshot(dsn)
    sessions = 9 + 3 + 1
    assert len(expected["gfx_hand_sessions"]) == sessions
    assert len(expected["gfx_hand_errors"]) == 1

    settings = load_settings(
        supabase_url=clean.gateway.url,
        supabase_secret_key=clean.gateway.key,
        request_timeout=60,
    )
    async with PostgrestClient(settings) as client:
        assert [(r.name, r.ok) for r in await check_hands(client)] == [
            ("hand tables", True),
            ("hand tables match gfx_sessions", True),
            ("security delay", True),
            ("delayed release", True),
        ]

        infra.query(dsn, "truncate public.gfx_hands cascade")
        assert infra.query(dsn, "select count(*) as n from public.gfx_hand_players") == [{"n": 0}]
        assert status(dsn)["inconsistent"] == sessions
        lines = await check_hands(client)
        assert [(r.name, r.ok) for r in lines] == [
            ("hand tables", True),
            ("hand tables match gfx_sessions", False),
            ("security delay", True),
            ("delayed release", True),
        ]
        assert "hands rebuild" in lines[1].detail

        # In chunks of 3, through PostgREST: the cursor carries exact 18-digit ids.
        clean.gateway.reset()
        totals = await rebuild_hands(client, chunk_sessions=3, max_chunk=3)
        assert (totals.sessions, totals.requests, totals.busy) == (sessions, 5, 0)
        assert clean.gateway.count("POST", "/rpc/gfx_hands_rebuild", status=200) == (
            totals.requests
        )
        assert snapshot(dsn) == expected
        assert status(dsn) | {"version": None} == {
            "version": None,
            "schema": "public",
            "sessions": sessions,
            "derived": sessions,
            "missing": 0,
            "stale": 0,
            "inconsistent": 0,
            "orphaned": 0,
            "hands": totals.hands,
            "hand_errors": 1,
        }
        lines = await check_hands(client)
        assert all(r.ok for r in lines), lines
        assert "1 hands not derivable" in lines[1].detail

    # Sessions stored before the migration (no gfx_hand_sessions row at all) and orphans of a
    # session deleted behind the triggers' back: the command fixes both, for one PC.
    infra.query(
        dsn,
        "delete from public.gfx_hand_sessions where gfx_pc_id = 'PC-B'; "
        "alter table public.gfx_sessions disable trigger gfx_hands_on_delete; "
        "delete from public.gfx_sessions where gfx_pc_id = 'PC-B' and session_id = ("
        "  select min(session_id) from public.gfx_sessions where gfx_pc_id = 'PC-B'); "
        "alter table public.gfx_sessions enable trigger gfx_hands_on_delete",
    )
    before = status(dsn)
    assert (before["missing"], before["orphaned"]) == (2, 1)
    capsys.readouterr()
    assert await run_hands_rebuild(settings, "PC-B") == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"hands rebuild: 2 sessions, [0-9]+ hands, 0 errors", out[0]), out
    assert out[-1].startswith("hands rebuild done: 2 sessions"), out
    after = status(dsn)
    assert (after["missing"], after["orphaned"], after["inconsistent"]) == (0, 0, 0)
    assert after["sessions"] == sessions - 1


async def test_a_forced_rebuild_rewrites_every_row(clean: HandStack, samples_dir: Path) -> None:
    upsert(
        clean.rest,
        session_row("PC-F", EARLY_COPY, sample_bytes(samples_dir, EARLY_COPY), MTIME_BASE),
    )
    before = xmins(clean.db.dsn, "PC-F")
    answer = clean.rest.post("/rpc/gfx_hands_rebuild", json={"pc": "PC-F", "force": True})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "sessions": 1,
        "hands": 6,
        "written": 6,
        "errors": 0,
        "busy": 0,
        "orphans_removed": 0,
        "next_pc": None,
        "next_session": None,
        "next_session_key": None,
    }
    after = xmins(clean.db.dsn, "PC-F")
    assert after.keys() == before.keys()
    assert all(after[t].keys() == before[t].keys() and after[t] != before[t] for t in before), (
        "force rewrites every row"
    )


async def test_a_rebuild_skips_a_session_the_agent_is_writing(
    clean: HandStack, samples_dir: Path
) -> None:
    for i, rel in enumerate(sample_files(samples_dir)[:3]):
        upsert(clean.rest, session_row("PC-L", rel, sample_bytes(samples_dir, rel), MTIME_BASE + i))
    settings = load_settings(supabase_url=clean.gateway.url, supabase_secret_key=clean.gateway.key)
    # An upsert in flight holds its session's row until it commits; the rebuild must not wait.
    with psycopg.connect(clean.db.dsn) as writer:
        locked = writer.execute(
            "select session_id from public.gfx_sessions where gfx_pc_id = 'PC-L' "
            "order by session_id limit 1 for no key update"
        ).fetchone()
        assert locked is not None
        with trio.fail_after(30):
            async with PostgrestClient(settings) as client:
                totals = await rebuild_hands(client, "PC-L", force=True)
        writer.rollback()
    assert (totals.sessions, totals.busy, totals.passes) == (2 * 3, 1, 3)
    assert totals.written == totals.hands


# ---------------------------------------------------------------------------------------------
# The migration itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "realtime", [False, True], ids=["plain-postgresql", "with-realtime-publication"]
)
def test_migration_applies_twice(realtime: bool) -> None:
    with infra.database() as db:
        if realtime:
            infra.query(db.dsn, "create publication supabase_realtime")
            infra.apply_migration(db.dsn)  # the core file adds sync_events
        infra.apply_hands_migrations(db.dsn)
        infra.apply_hands_migrations(db.dsn)
        published = infra.query(
            db.dsn, "select tablename from pg_publication_tables order by tablename"
        )
        # the hand tables go out by Broadcast, not in the publication (20261205110000)
        assert [r["tablename"] for r in published] == (["sync_events"] if realtime else [])
        triggers = infra.query(
            db.dsn,
            "select tgname from pg_trigger where tgrelid = 'public.gfx_sessions'::regclass "
            "and tgname like 'gfx_hands_on_%' order by 1",
        )
        assert [t["tgname"] for t in triggers] == [
            "gfx_hands_on_delete",
            "gfx_hands_on_insert",
            "gfx_hands_on_truncate",
            "gfx_hands_on_update",
        ]
        assert status(db.dsn)["version"] == HANDS_VERSION


def test_migration_needs_the_core_migration_first() -> None:
    with infra.database(migrate=False) as db:
        with pytest.raises(psycopg.errors.RaiseException) as refused:
            infra.apply_migration(db.dsn, HANDS_MIGRATION)
        assert "public.gfx_sessions does not exist" in str(refused.value)
        assert "20261126150000_gfx_sync.sql" in (refused.value.diag.message_hint or "")


# A trimmed copy of the author's table (garimto81/automation_schema, 01_gfx_schema.sql): the
# same names and types, without its enum types and the tables it references.
AUTHOR_GFX_HANDS = """
create table public.gfx_hands (
    id uuid primary key default gen_random_uuid(),
    session_id bigint not null,
    hand_num integer not null,
    game_variant text default 'HOLDEM',
    duration_seconds integer default 0,
    start_time timestamptz not null,
    ante_amt integer default 0,
    blinds jsonb default '{}'::jsonb,
    pot_size bigint default 0,
    board_cards text[] default array[]::text[],
    winner_name text,
    created_at timestamptz default now(),
    constraint uq_session_hand unique (session_id, hand_num)
);
insert into public.gfx_hands (session_id, hand_num, start_time) values (1, 1, now());
"""


def test_an_existing_table_of_another_shape_is_refused_and_another_schema_works(
    samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with infra.database() as db:
        infra.query(db.dsn, AUTHOR_GFX_HANDS)
        with pytest.raises(psycopg.errors.DuplicateTable) as refused:
            infra.apply_migration(db.dsn, HANDS_MIGRATION)
        message = str(refused.value)
        assert message.startswith("gfx_hands: table public.gfx_hands already exists"), message
        assert "it has no column gfx_pc_id (expected text)" in message
        assert "another schema" in (refused.value.diag.message_hint or "")
        # One transaction: nothing of the file stayed, the author's table is untouched.
        leftovers = infra.query(
            db.dsn,
            "select to_regclass('public.gfx_hand_players') as t, "
            "(select count(*) from pg_trigger where tgname like 'gfx_hands_on_%') as triggers, "
            "(select count(*) from public.gfx_hands) as author_rows",
        )
        assert leftovers == [{"t": None, "triggers": 0, "author_rows": 1}]

        # Beside it, in a schema of its own: both hand migrations, as `schema --hands` prints.
        text = hands_migration_sql("gfx_live")
        for _ in range(2):
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                conn.execute(text.encode())
        data = sample_bytes(samples_dir, EARLY_COPY)
        store_session(db.dsn, session_row("PC1", EARLY_COPY, data, MTIME_BASE))
        counts = infra.query(
            db.dsn,
            "select (select count(*) from gfx_live.gfx_hands) as ours, "
            "(select count(*) from public.gfx_hands) as theirs",
        )
        assert counts == [{"ours": 6, "theirs": 1}]
        # Installing the public file as well would give gfx_sessions two writers: refused.
        with pytest.raises(psycopg.errors.DuplicateObject) as twice:
            infra.apply_migration(db.dsn, HANDS_MIGRATION)
        assert "already installed in schema gfx_live" in str(twice.value)

        # Exposed through PostgREST (on Supabase: Settings > API > Exposed schemas) and read
        # with Accept-Profile.
        infra.query(
            db.dsn,
            f"alter role authenticator in database {db.name} "
            "set pgrst.db_schemas = 'public, gfx_live'",
        )
        server = infra.start_postgrest(db)
        try:
            desk = user_claims(app_metadata={"gfx_access": "live"})
            bearer = {"authorization": f"Bearer {infra.make_jwt(server.jwt_secret, desk)}"}
            current = httpx.get(
                f"{server.url}/gfx_current_hand",
                headers={**bearer, "accept-profile": "gfx_live"},
            )
            assert current.status_code == 200, current.text
            assert [h["hand_num"] for h in current.json()] == [6]
            service = {"authorization": f"Bearer {server.service_role_jwt()}"}
            found = httpx.post(
                f"{server.url}/rpc/gfx_hands_status",
                json={},
                headers={**service, "content-profile": "gfx_live"},
            )
            assert (found.status_code, found.json()["schema"]) == (200, "gfx_live")
            # Without the profile header the default schema (public) has no such function.
            missing = httpx.post(f"{server.url}/rpc/gfx_hands_status", json={}, headers=service)
            assert (missing.status_code, missing.json()["code"]) == (404, "PGRST202")

            # So the agent's commands, which use the default schema, find nothing installed.
            settings = load_settings(
                supabase_url=server.url,
                supabase_secret_key=server.service_role_jwt(),
                rest_path="",
            )
            lines, code = trio.run(_check_and_rebuild, settings)
        finally:
            server.close()
        assert [(r.name, r.ok, r.detail) for r in lines] == [
            ("hand tables", True, "not installed (optional: `trio-gfxsync schema --hands`)")
        ]
        assert code == 1
        assert "the hand tables are not installed" in capsys.readouterr().out


async def _check_and_rebuild(settings: Settings) -> tuple[list[CheckResult], int]:
    async with PostgrestClient(settings) as client:
        lines = await check_hands(client)
    return lines, await run_hands_rebuild(settings, None)


def test_sql_for_schema_keeps_gfx_sessions_and_refuses_odd_names() -> None:
    text = hands_migration_sql()
    moved = sql_for_schema(text, "gfx_live")
    assert sql_for_schema(text, "public") == text
    kept = ("public.gfx_sessions", "public.gfx_access")
    rest = moved
    for name in kept:
        rest = rest.replace(name, "")
    assert re.search(r"\bpublic\b", rest) is None
    for name in kept:  # the session table and the project's claim stay where they are
        assert moved.count(name) == text.count(name) > 0, name
    assert "from PUBLIC, anon" in moved
    for name in ("Gfx", "gfx-live", "x; drop table y", ""):
        with pytest.raises(ValueError):
            sql_for_schema(text, name)
