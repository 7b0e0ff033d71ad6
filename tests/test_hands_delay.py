"""Hole cards behind the security delay, and Realtime by Broadcast
(deploy/supabase/migrations/20261205110000_gfx_hands_delay.sql).

Readers are signed-in users whose JWTs are shaped as Supabase Auth mints them
(tests/support/realtime.py `user_claims`), sent through the browser's gateway to the real
PostgREST: `app_metadata.gfx_access` live reads everything at once, delayed only hands stored at
least gfx_security_delay(pc) ago, and anon, an account without the claim, an anonymous sign-in,
`ops`, another value and a `user_metadata` claim read nothing from any hand object. Sessions go
in as the agent sends them. Broadcasts land in a stand-in of Supabase Realtime's
`realtime.messages`, and joins are authorised the way Realtime does it. Delays here are a few
seconds: the tests wait for the database's clock to pass them (a lower bound, never an upper
one), and check that the reads meant to come before a delay did.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from tests.support import infra, realtime
from tests.support.hand_stack import (
    EARLY_COPY,
    MTIME_BASE,
    SPLIT_SESSION,
    HandStack,
    cards,
    document,
    encode,
    hand_stack,
    query_as,
    renumbered,
    sample_bytes,
    sample_files,
    session_row,
    store_session,
    store_statement,
    upsert,
)
from trio_gfxsync.commands.hands import check_hands
from trio_gfxsync.commands.hands_delay import (
    RELEASE_CRON_LINE,
    ReleaseStatus,
    format_delay,
    release_lines,
)
from trio_gfxsync.settings import load_settings
from trio_gfxsync.targets.postgrest import PostgrestClient

LIVE = realtime.user_claims(app_metadata={"gfx_access": "live"})
DELAYED = realtime.user_claims(app_metadata={"gfx_access": "delayed"})
OPS = realtime.user_claims(app_metadata={"gfx_access": "ops"})
# Everyone who must read nothing: None is the publishable (anon) key without a user.
OUTSIDERS: dict[str, dict[str, Any] | None] = {
    "anon": None,
    "account-without-claim": realtime.user_claims(),
    "anonymous-sign-in": realtime.user_claims(anonymous=True),
    "ops": OPS,
    "another-value": realtime.user_claims(app_metadata={"gfx_access": "LIVE"}),
    "user-metadata-live": realtime.user_claims(user_metadata={"gfx_access": "live"}),
}
# Every hand object PostgREST serves, and how to ask it for one PC.
OBJECTS = {
    "gfx_hands": "/gfx_hands",
    "gfx_hand_players": "/gfx_hand_players",
    "gfx_hand_events": "/gfx_hand_events",
    "gfx_hand_errors": "/gfx_hand_errors",
    "gfx_hand_sessions": "/gfx_hand_sessions",
    "gfx_current_hand": "/gfx_current_hand",
    "gfx_chip_counts": "/gfx_chip_counts",
    "gfx_recent_showdowns": "/rpc/gfx_recent_showdowns?n=1000",
    "gfx_hands_latest": "/rpc/gfx_hands_latest",
    "gfx_hands_tables": "/rpc/gfx_hands_tables",
}
# What the delayed tier never reads, even after the delay.
LIVE_ONLY = {"gfx_hand_errors", "gfx_hand_sessions"}


@pytest.fixture(scope="module")
def stack() -> Iterator[HandStack]:
    try:
        with hand_stack(with_realtime=True) as built:
            yield built
    except infra.InfraError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def fresh(stack: HandStack) -> HandStack:
    """No sessions, no broadcasts, the default delay of 30 minutes."""
    infra.query(stack.db.dsn, "truncate public.gfx_sessions")
    realtime.clear_broadcasts(stack.db.dsn)
    infra.query(
        stack.db.dsn,
        "delete from public.gfx_security_delays where gfx_pc_id <> '*'; "
        "update public.gfx_security_delays set delay = '30 minutes' where gfx_pc_id = '*'",
    )
    return stack


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def set_delay(stack: HandStack, seconds: float, pc: str | None) -> str:
    """Through PostgREST with the agent's key, as an operator's script would."""
    answer = stack.rest.post(
        "/rpc/gfx_set_security_delay", json={"delay": f"{seconds} seconds", "pc": pc}
    )
    assert answer.status_code == 200, answer.text
    in_force: str = answer.json()
    return in_force


def read(stack: HandStack, claims: dict[str, Any] | None, pc: str) -> dict[str, Any]:
    """Each hand object as this reader gets it for one PC: its rows, or 'refused <code>'."""
    result: dict[str, Any] = {}
    with stack.as_user(claims) as client:
        for name, path in OBJECTS.items():
            params = {} if name == "gfx_hands_tables" else {"gfx_pc_id": f"eq.{pc}"}
            answer = client.get(path, params=params)
            if answer.status_code in (401, 403):
                assert answer.json()["code"] == "42501", answer.text
                result[name] = f"refused {answer.json()['code']}"
                continue
            assert answer.status_code == 200, (name, answer.text)
            rows = answer.json()
            if name == "gfx_hands_tables":
                rows = [r for r in rows if r == pc]
            result[name] = rows
    return result


def nothing(seen: dict[str, Any]) -> bool:
    return all(rows == [] or str(rows).startswith("refused") for rows in seen.values())


def hands_in(seen: dict[str, Any], name: str) -> set[int]:
    rows = seen[name]
    return set() if isinstance(rows, str) else {row["hand_num"] for row in rows}


def db_now_before(dsn: str, pc: str, hand_nums: list[int], seconds: float) -> bool:
    """Is the database's clock still before these hands' delay has passed?"""
    (row,) = infra.query(
        dsn,
        "select now() < min(first_stored_at) + make_interval(secs => %s) as before "
        "from public.gfx_hands where gfx_pc_id = %s and hand_num = any(%s)",
        (seconds, pc, hand_nums),
    )
    return bool(row["before"])


def wait_until_released(dsn: str, pc: str, timeout: float = 60) -> None:
    """Until every hand of the PC is past its delay by the database's clock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (row,) = infra.query(
            dsn,
            "select bool_and(first_stored_at <= now() - public.gfx_security_delay(gfx_pc_id)) "
            "as due from public.gfx_hands where gfx_pc_id = %s",
            (pc,),
        )
        if row["due"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{pc}: hands still within their delay after {timeout} s")


def release(dsn: str) -> int:
    (row,) = infra.query(dsn, "select public.gfx_release_hands() as n")
    return int(row["n"])


def first_stored(dsn: str, pc: str) -> dict[tuple[int, int, int], Any]:
    """first_stored_at of each hand of the PC, keyed by (session_id, hand_num, hand_seq)."""
    rows = infra.query(
        dsn,
        "select session_id, hand_num, hand_seq, first_stored_at from public.gfx_hand_releases "
        "where gfx_pc_id = %s",
        (pc,),
    )
    return {(r["session_id"], r["hand_num"], r["hand_seq"]): r["first_stored_at"] for r in rows}


def sent(dsn: str, pc: str) -> list[tuple[str, str, int]]:
    """(topic's tier, event, hand_num) of every broadcast for one PC, sorted."""
    result = []
    for row in realtime.broadcasts(dsn):
        tier, _, topic_pc = row["topic"].removeprefix("gfx:").partition(":")
        if topic_pc == pc:
            result.append((tier, row["event"], int(row["payload"]["hand_num"])))
    return sorted(result)


def with_hands(doc: dict[str, Any], hands: list[dict[str, Any]]) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    new["Hands"] = copy.deepcopy(hands)
    return new


# ---------------------------------------------------------------------------------------------
# The tiers through PostgREST
# ---------------------------------------------------------------------------------------------


def test_each_tier_reads_what_its_claim_allows_and_when(
    fresh: HandStack, samples_dir: Path
) -> None:
    dsn, pc = fresh.db.dsn, "PC-tiers"
    doc = document(sample_bytes(samples_dir, EARLY_COPY))
    assert len(doc["Hands"]) == 6
    bad = copy.deepcopy(doc["Hands"][4])
    bad["AnteAmt"] = "big"  # hand 5 cannot be derived yet: an error row, for the live tier
    first = with_hands(doc, [*doc["Hands"][:4], bad])

    assert set_delay(fresh, 3600, pc) == "01:00:00"
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(first), MTIME_BASE))

    # live: everything, at once
    live = read(fresh, LIVE, pc)
    assert hands_in(live, "gfx_hands") == {1, 2, 3, 4}
    assert hands_in(live, "gfx_hand_players") == hands_in(live, "gfx_hand_events") == {1, 2, 3, 4}
    assert [e["hand_index"] for e in live["gfx_hand_errors"]] == [4]
    assert [s["session_key"] for s in live["gfx_hand_sessions"]] == [str(SPLIT_SESSION)]
    assert hands_in(live, "gfx_current_hand") == hands_in(live, "gfx_chip_counts") == {4}
    assert hands_in(live, "gfx_hands_latest") == {4}
    assert live["gfx_hands_tables"] == [pc]
    assert any(p["hole_cards"] for p in live["gfx_hand_players"])
    # delayed: nothing of a hand within its delay; everyone else: nothing ever
    assert nothing(read(fresh, DELAYED, pc)), read(fresh, DELAYED, pc)
    for who, claims in OUTSIDERS.items():
        assert nothing(read(fresh, claims, pc)), who

    # The delay becomes a few seconds: once it has passed, the delayed tier reads the hands,
    # exactly as the live tier does, but still not when hands end nor which failed.
    assert set_delay(fresh, 3, pc) == "00:00:03"
    wait_until_released(dsn, pc)
    delayed = read(fresh, DELAYED, pc)
    for name in OBJECTS:
        expected = [] if name in LIVE_ONLY else live[name]
        assert delayed[name] == expected, name
    hand_four = {name: live[name] for name in ("gfx_current_hand", "gfx_chip_counts")}

    # Hands 5 (repaired) and 6 arrive: the live tier has them at once, the delayed tier goes on
    # reading hands 1-4, and its current hand and chip counts are hand 4's, not an empty answer.
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(doc), MTIME_BASE + 1))
    live = read(fresh, LIVE, pc)
    delayed = read(fresh, DELAYED, pc)
    assert db_now_before(dsn, pc, [5, 6], 3), "the machine took over 3 s to read: no conclusion"
    assert hands_in(live, "gfx_hands") == {1, 2, 3, 4, 5, 6}
    assert hands_in(live, "gfx_current_hand") == {6}
    assert live["gfx_hand_errors"] == []
    assert hands_in(delayed, "gfx_hands") == {1, 2, 3, 4}
    for name in ("gfx_hand_players", "gfx_hand_events"):
        assert delayed[name] == [r for r in live[name] if r["hand_num"] <= 4], name
    # showdowns among the last hands the reader may see: hands_ago counts from hand 4
    shown = [r for r in live["gfx_recent_showdowns"] if r["hand_num"] <= 4]
    assert shown, "the sample's first hands hold a showdown"
    assert delayed["gfx_recent_showdowns"] == [{**r, "hands_ago": 4 - r["hand_num"]} for r in shown]
    assert hands_in(delayed, "gfx_current_hand") == hands_in(delayed, "gfx_chip_counts") == {4}
    for name, rows in hand_four.items():
        assert delayed[name] == rows, name

    wait_until_released(dsn, pc)
    delayed = read(fresh, DELAYED, pc)
    live = read(fresh, LIVE, pc)
    for name in OBJECTS:
        assert delayed[name] == ([] if name in LIVE_ONLY else live[name]), name
    assert hands_in(delayed, "gfx_current_hand") == {6}
    for who, claims in OUTSIDERS.items():
        assert nothing(read(fresh, claims, pc)), who


def test_a_voided_hand_disappears_for_every_tier_and_comes_back_without_a_new_delay(
    fresh: HandStack, samples_dir: Path
) -> None:
    dsn, pc = fresh.db.dsn, "PC-void"
    doc = document(sample_bytes(samples_dir, EARLY_COPY))
    hands = doc["Hands"]
    set_delay(fresh, 2, pc)
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(doc), MTIME_BASE))
    wait_until_released(dsn, pc)
    stored = first_stored(dsn, pc)
    for claims in (LIVE, DELAYED):
        assert hands_in(read(fresh, claims, pc), "gfx_hands") == {1, 2, 3, 4, 5, 6}

    # Hand 3 voided while hand 7 is dealt: the file keeps six hands, the newer one wins.
    voided = with_hands(doc, [*hands[:2], *hands[3:], renumbered(hands[-1], 7, 3)])
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(voided), MTIME_BASE + 1))
    for claims in (LIVE, DELAYED, OPS, None):
        seen = read(fresh, claims, pc)
        for name in ("gfx_hands", "gfx_hand_players", "gfx_hand_events", "gfx_recent_showdowns"):
            assert 3 not in hands_in(seen, name), name
    hand_three = (SPLIT_SESSION, 3, 1)
    assert first_stored(dsn, pc)[hand_three] == stored[hand_three], "kept through the void"
    assert ("live", "hand_voided", 3) in sent(dsn, pc)
    assert ("delayed", "hand_voided", 3) in sent(dsn, pc)  # it had been released
    assert ("live", "hand", 7) in sent(dsn, pc)
    assert ("delayed", "hand", 7) not in sent(dsn, pc)

    # Hand 3 comes back: its delay went on while it was away, so the delayed tier has it again
    # at once, and the delayed topic hears of it at once.
    realtime.clear_broadcasts(dsn)
    restored = with_hands(doc, [*hands, voided["Hands"][-1]])
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(restored), MTIME_BASE + 2))
    delayed = read(fresh, DELAYED, pc)
    (row,) = infra.query(
        dsn,
        "select now() < max(updated_at) + interval '2 seconds' as soon "
        "from public.gfx_hands where gfx_pc_id = %s",
        (pc,),
    )
    assert row["soon"], "the machine took over 2 s to read: no conclusion"
    assert 3 in hands_in(delayed, "gfx_hands")
    assert first_stored(dsn, pc)[hand_three] == stored[hand_three]
    assert sent(dsn, pc) == [("delayed", "hand", 3), ("live", "hand", 3)]


# ---------------------------------------------------------------------------------------------
# Broadcast
# ---------------------------------------------------------------------------------------------


def expected_payload(doc: dict[str, Any], index: int) -> dict[str, Any]:
    hand = doc["Hands"][index]
    return {
        "gfx_pc_id": "PC-rt",
        "session_key": str(doc["ID"]),
        "hand_num": hand["HandNum"],
        "hand_seq": 1,
        "players": [
            {
                "seat_num": p["PlayerNum"],
                "player_name": p["Name"],
                "start_stack_amt": p["StartStackAmt"],
                "end_stack_amt": p["EndStackAmt"],
                "hole_cards": cards(p["HoleCards"]),
            }
            for p in sorted(hand["Players"], key=lambda p: p["PlayerNum"])
        ],
    }


def payload_subset(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("gfx_pc_id", "session_key", "hand_num", "hand_seq")
    player_keys = ("seat_num", "player_name", "start_stack_amt", "end_stack_amt", "hole_cards")
    return {
        **{k: payload[k] for k in keys},
        "players": [{k: p[k] for k in player_keys} for p in payload["players"]],
    }


def test_hands_go_out_on_the_live_topic_at_once_and_on_the_delayed_topic_when_released(
    fresh: HandStack, samples_dir: Path
) -> None:
    dsn, pc = fresh.db.dsn, "PC-rt"
    doc = document(sample_bytes(samples_dir, EARLY_COPY))
    hands = doc["Hands"]
    set_delay(fresh, 3, pc)

    # A new table's first hand, then its second: each on the live topic as it is stored.
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(with_hands(doc, hands[:1])), MTIME_BASE))
    upsert(
        fresh.rest, session_row(pc, EARLY_COPY, encode(with_hands(doc, hands[:2])), MTIME_BASE + 1)
    )
    released = release(dsn)
    assert db_now_before(dsn, pc, [1], 3), "the machine took over 3 s: no conclusion"
    assert released == 0
    assert sent(dsn, pc) == [("live", "hand", 1), ("live", "hand", 2)]
    messages = realtime.broadcasts(dsn, f"gfx:live:{pc}")
    assert all(m["private"] for m in messages)
    assert [payload_subset(m["payload"]) for m in messages] == [
        expected_payload(doc, 0),
        expected_payload(doc, 1),
    ]
    assert messages[1]["payload"]["board_cards"] == [
        c
        for e in hands[1]["Events"]
        if e["EventType"] == "BOARD CARD"
        for c in cards(e["BoardCards"])
    ]

    # Once the delay has passed, gfx_release_hands announces each hand once on the delayed topic.
    wait_until_released(dsn, pc)
    assert release(dsn) == 2
    assert release(dsn) == 0
    delayed = realtime.broadcasts(dsn, f"gfx:delayed:{pc}")
    assert [m["event"] for m in delayed] == ["hand", "hand"]
    strip = {"id"}  # realtime.send adds one of its own to each payload
    assert [{k: v for k, v in m["payload"].items() if k not in strip} for m in delayed] == [
        {k: v for k, v in m["payload"].items() if k not in strip} for m in messages
    ]

    # A change to a released hand goes out on both topics at once.
    realtime.clear_broadcasts(dsn)
    changed = with_hands(doc, hands[:2])
    changed["Hands"][0]["Description"] = "corrected by the floor"
    upsert(fresh.rest, session_row(pc, EARLY_COPY, encode(changed), MTIME_BASE + 2))
    assert sent(dsn, pc) == [("delayed", "hand", 1), ("live", "hand", 1)]

    # Who may join which private channel, checked as Realtime checks it; nobody may send.
    live_topic, delayed_topic = f"gfx:live:{pc}", f"gfx:delayed:{pc}"
    rights = {
        "live": ({"broadcast": True, "presence": False}, {"broadcast": True, "presence": False}),
        "delayed": (
            {"broadcast": False, "presence": False},
            {"broadcast": True, "presence": False},
        ),
    }
    for who, claims in {"live": LIVE, "delayed": DELAYED}.items():
        assert realtime.join_rights(dsn, live_topic, claims) == rights[who][0], who
        assert realtime.join_rights(dsn, delayed_topic, claims) == rights[who][1], who
    for who, outsider in OUTSIDERS.items():
        claims = outsider or realtime.anon_claims()
        for topic in (live_topic, delayed_topic):
            assert realtime.join_rights(dsn, topic, claims) == {
                "broadcast": False,
                "presence": False,
            }, (who, topic)
            assert realtime.readable_broadcasts(dsn, topic, claims) == 0, (who, topic)
    for claims in (LIVE, DELAYED, OPS, realtime.anon_claims()):
        for topic in (live_topic, delayed_topic):
            assert not realtime.may_send(dsn, topic, claims), topic
    assert realtime.readable_broadcasts(dsn, live_topic, DELAYED) == 0
    assert realtime.readable_broadcasts(dsn, delayed_topic, DELAYED) == 1
    assert realtime.readable_broadcasts(dsn, live_topic, LIVE) == 1


def test_a_rebuild_and_a_first_backfill_send_nothing(fresh: HandStack, samples_dir: Path) -> None:
    dsn, pc = fresh.db.dsn, "PC-quiet"
    set_delay(fresh, 0, pc)  # any hand announced would go out on both topics at once
    files = [f for f in sample_files(samples_dir) if f != EARLY_COPY]
    by_id = sorted(files, key=lambda f: document(sample_bytes(samples_dir, f))["ID"], reverse=True)
    rows = {f: session_row(pc, f, sample_bytes(samples_dir, f), MTIME_BASE) for f in by_id}

    # The agent's first upload of a NAS: the newest sessions first, in batches.
    upsert(fresh.rest, *(rows[f] for f in by_id[:3]))
    upsert(fresh.rest, *(rows[f] for f in by_id[3:]))
    assert infra.query(dsn, "select count(*) as n from public.gfx_hands") != [{"n": 0}]
    assert sent(dsn, pc) == []
    assert release(dsn) == 0

    before = first_stored(dsn, pc)
    answer = fresh.rest.post("/rpc/gfx_hands_rebuild", json={"pc": pc, "force": True})
    assert answer.status_code == 200, answer.text
    # Rows removed behind the triggers' back, then derived again by a rebuild: nothing is
    # announced, and no hand's delay starts again.
    infra.query(dsn, "truncate public.gfx_hands cascade")
    answer = fresh.rest.post("/rpc/gfx_hands_rebuild", json={"pc": pc})
    assert answer.status_code == 200, answer.text
    assert answer.json()["hands"] == len(before)
    assert first_stored(dsn, pc) == before
    assert sent(dsn, pc) == []
    assert release(dsn) == 0

    # Then the table plays on: the newest session's next hand goes out at once.
    newest = document(sample_bytes(samples_dir, by_id[0]))
    last = newest["Hands"][-1]["HandNum"]
    newest["Hands"].append(renumbered(newest["Hands"][-1], last + 1, 3))
    upsert(fresh.rest, session_row(pc, by_id[0], encode(newest), MTIME_BASE + 1))
    assert sent(dsn, pc) == [("delayed", "hand", last + 1), ("live", "hand", last + 1)]


# ---------------------------------------------------------------------------------------------
# The delay's settings and `check`
# ---------------------------------------------------------------------------------------------


def test_the_security_delay_is_set_by_the_service_role_only(fresh: HandStack) -> None:
    assert set_delay(fresh, 45, None) == "00:00:45"
    assert set_delay(fresh, 600, "PC01") == "00:10:00"
    assert set_delay(fresh, 0, "PC02") == "00:00:00"
    negative = fresh.rest.post("/rpc/gfx_set_security_delay", json={"delay": "-1 second"})
    assert (negative.status_code, negative.json()["code"]) == (400, "22023"), negative.text
    assert "cannot be negative" in negative.json()["message"]
    # A null delay for a PC: it follows the default again; the default itself cannot be null.
    unset = fresh.rest.post("/rpc/gfx_set_security_delay", json={"delay": None, "pc": "PC01"})
    assert unset.json() == "00:00:45"
    refused = fresh.rest.post("/rpc/gfx_set_security_delay", json={"delay": None})
    assert (refused.status_code, refused.json()["code"]) == (400, "22004"), refused.text
    assert infra.query(
        fresh.db.dsn,
        "select gfx_pc_id, extract(epoch from delay)::int as s "
        "from public.gfx_security_delays order by 1",
    ) == [{"gfx_pc_id": "*", "s": 45}, {"gfx_pc_id": "PC02", "s": 0}]
    with fresh.as_user(LIVE) as desk:
        answer = desk.post("/rpc/gfx_set_security_delay", json={"delay": "0 seconds"})
        assert (answer.status_code, answer.json()["code"]) == (403, "42501"), answer.text
        answer = desk.post("/rpc/gfx_release_hands", json={})
        assert (answer.status_code, answer.json()["code"]) == (403, "42501"), answer.text
        assert desk.get("/gfx_security_delays").status_code == 403
        assert desk.get("/gfx_hand_releases").status_code == 403


async def _check_lines(stack: HandStack) -> list[tuple[str, bool, str]]:
    settings = load_settings(supabase_url=stack.gateway.url, supabase_secret_key=stack.gateway.key)
    async with PostgrestClient(settings) as client:
        return [(r.name, r.ok, r.detail) for r in await check_hands(client)]


def test_check_reports_the_delay_and_whether_the_release_is_scheduled(
    fresh: HandStack, samples_dir: Path
) -> None:
    dsn = fresh.db.dsn
    set_delay(fresh, 600, "PC01")
    upsert(
        fresh.rest,
        session_row("PC01", EARLY_COPY, sample_bytes(samples_dir, EARLY_COPY), MTIME_BASE),
    )

    def release_lines_now() -> list[tuple[str, bool, str]]:
        return trio.run(_check_lines, fresh)[2:]

    assert release_lines_now() == [
        ("security delay", True, "30 min for every table; PC01: 10 min"),
        (
            "delayed release",
            True,
            "pg_cron is not installed: call gfx_release_hands() every minute (docs/hands.md); "
            "0 hands waiting for their delay",
        ),
    ]
    try:
        realtime.install_pg_cron(dsn)
        (name, ok, detail) = release_lines_now()[1]
        assert (name, ok) == ("delayed release", False)
        assert (
            detail == f"pg_cron has no active job calling gfx_release_hands(): {RELEASE_CRON_LINE}"
        )
        infra.query(dsn, RELEASE_CRON_LINE)
        assert release_lines_now()[1] == (
            "delayed release",
            True,
            "scheduled by pg_cron (* * * * *); 0 hands waiting for their delay",
        )
        # Hands that waited an hour for a 10-minute delay: nobody runs the release.
        infra.query(
            dsn,
            "update public.gfx_hand_releases "
            "set first_stored_at = now() - interval '1 hour', released_at = null "
            "where gfx_pc_id = 'PC01'",
        )
        (name, ok, detail) = release_lines_now()[1]
        assert (name, ok) == ("delayed release", False)
        assert detail.startswith("6 hands still unannounced 5 min after their delay passed")
    finally:
        infra.query(dsn, "drop schema if exists cron cascade")


def test_release_lines_and_delays_read_as_an_operator_reads_them() -> None:
    assert [format_delay(s) for s in (0, 2.5, 45, 1800, 3600, 3605, 5400)] == [
        "0 s",
        "2.5 s",
        "45 s",
        "30 min",
        "1 h",
        "1 h 5 s",
        "1 h 30 min",
    ]
    status = ReleaseStatus.from_json(
        {
            "delay_seconds": 1800.0,
            "delays": {"PC02": 0, "PC01": 600},
            "release_scheduled": None,
            "release_schedule": None,
            "waiting": 2,
            "overdue": 0,
        }
    )
    assert [(r.name, r.ok) for r in release_lines(status)] == [
        ("security delay", True),
        ("delayed release", True),
    ]
    assert release_lines(status)[0].detail == "30 min for every table; PC01: 10 min, PC02: 0 s"
    for bad in (
        {"delays": []},
        {"delays": {}, "delay_seconds": -1},
        {"delays": {}, "waiting": "2"},
    ):
        with pytest.raises(ValueError):
            ReleaseStatus.from_json({**status_json(), **bad})


def status_json() -> dict[str, Any]:
    return {
        "delay_seconds": 1800,
        "delays": {},
        "release_scheduled": True,
        "release_schedule": "* * * * *",
        "waiting": 0,
        "overdue": 0,
    }


# ---------------------------------------------------------------------------------------------
# The migration
# ---------------------------------------------------------------------------------------------


def test_policies_compare_topics_without_like_and_let_no_client_broadcast(
    stack: HandStack,
) -> None:
    policies = infra.query(
        stack.db.dsn,
        "select schemaname, tablename, policyname, permissive, cmd, qual "
        "from pg_policies where policyname like 'gfx_%' order by 1, 2, 3",
    )
    on_messages = [p for p in policies if p["tablename"] == "messages"]
    assert [(p["policyname"], p["cmd"]) for p in on_messages] == [
        ("gfx_hands_delayed_receive", "SELECT"),
        ("gfx_hands_live_receive", "SELECT"),
    ]
    assert all("~~" not in p["qual"] and "like" not in p["qual"].lower() for p in on_messages)
    assert all("starts_with" in p["qual"] for p in on_messages)
    # What a browser may call through PostgREST at all: reading one's own claim, the delay, and
    # the readers' views as functions (each under the tables' policies).
    callable_by = {
        role: [
            r["proname"]
            for r in infra.query(
                stack.db.dsn,
                "select proname from pg_proc where pronamespace = 'public'::regnamespace "
                "and prorettype <> 'trigger'::regtype "
                "and has_function_privilege(%s, oid, 'execute') order by 1",
                (role,),
            )
        ]
        for role in ("anon", "authenticated")
    }
    assert callable_by == {
        "anon": ["gfx_access"],
        "authenticated": [
            "gfx_access",
            # the fleet view's state from last_seen (20261205130000_gfx_fleet.sql): a pure
            # function of its arguments and the clock
            "gfx_fleet_state",
            "gfx_hands_latest",
            "gfx_hands_tables",
            "gfx_recent_showdowns",
            "gfx_security_delay",
            "gfx_security_delay_max",
        ],
    }
    restrictive = {p["tablename"] for p in policies if p["permissive"] == "RESTRICTIVE"}
    assert restrictive == {
        "gfx_hands",
        "gfx_hand_players",
        "gfx_hand_events",
        "gfx_hand_errors",
        "gfx_hand_sessions",
    }


def test_upgrade_from_the_hand_tables_of_20261203100000(samples_dir: Path) -> None:
    old, new = infra.hands_migration_paths()
    with infra.database(migrate=False) as db:
        dsn = db.dsn
        infra.query(dsn, "create publication supabase_realtime")
        realtime.install_realtime(dsn)
        infra.apply_migration(dsn)
        infra.apply_migration(dsn, old)
        early = session_row("PC-old", EARLY_COPY, sample_bytes(samples_dir, EARLY_COPY), MTIME_BASE)
        store_session(dsn, early)
        other = "1019/PGFX_live_data_export GameID=638964779563363778.json"
        store_session(
            dsn, session_row("PC-old", other, sample_bytes(samples_dir, other), MTIME_BASE)
        )
        # One session stored two hours ago, the other a minute ago.
        infra.query(
            dsn,
            "update public.gfx_hands set created_at = now() - case when session_id = %s "
            "then interval '2 hours' else interval '1 minute' end",
            (SPLIT_SESSION,),
        )
        no_claim = realtime.user_claims()
        # The hole this migration closes: any account read every hole card at once.
        assert (
            query_as(dsn, no_claim, "select count(*) as n from public.gfx_hand_players")[0]["n"] > 0
        )
        hands = infra.query(
            dsn, "select session_id, hand_num, created_at from public.gfx_hands order by 1, 2"
        )

        infra.apply_migration(dsn, new)
        infra.apply_migration(dsn, new)
        upgraded = infra.query(
            dsn,
            "select h.session_id, h.hand_num, h.first_stored_at, r.first_stored_at as kept, "
            "r.released_at is null as waiting from public.gfx_hands h "
            "join public.gfx_hand_releases r using (gfx_pc_id, session_id, hand_num, hand_seq) "
            "order by 1, 2",
        )
        assert [(u["session_id"], u["hand_num"], u["first_stored_at"]) for u in upgraded] == [
            (h["session_id"], h["hand_num"], h["created_at"]) for h in hands
        ]
        assert all(u["kept"] == u["first_stored_at"] for u in upgraded)
        # Hands within the 30 minutes wait to be announced on the delayed topic; older ones not.
        assert {u["waiting"] for u in upgraded if u["session_id"] == SPLIT_SESSION} == {False}
        recent = [u for u in upgraded if u["session_id"] != SPLIT_SESSION]
        assert {u["waiting"] for u in recent} == {True}
        assert realtime.broadcasts(dsn) == [], "the upgrade announces nothing"
        published = infra.query(dsn, "select tablename from pg_publication_tables")
        assert published == [{"tablename": "sync_events"}]
        status = infra.query(dsn, "select public.gfx_hands_status() as s")[0]["s"]
        assert (status["version"], status["derived"], status["stale"]) == ("20261205110000", 2, 0)

        count = "select count(*) as n from public.gfx_hands"
        assert query_as(dsn, no_claim, count) == [{"n": 0}]
        assert query_as(dsn, DELAYED, count) == [{"n": 6}]
        assert query_as(dsn, LIVE, count) == [{"n": len(hands)}]
        assert release(dsn) == 0
        infra.query(dsn, "select public.gfx_set_security_delay('0 seconds')")
        assert release(dsn) == len(recent)
        assert {m["topic"] for m in realtime.broadcasts(dsn)} == {"gfx:delayed:PC-old"}
        assert release(dsn) == 0

        # The older file applied again (an old agent's `schema --hands`): its `using (true)`
        # policies come back, and still nobody without the claim reads a hand.
        infra.query(dsn, "select public.gfx_set_security_delay('30 minutes')")
        infra.apply_migration(dsn, old)
        assert query_as(dsn, no_claim, count) == [{"n": 0}]
        assert query_as(dsn, DELAYED, count) == [{"n": 6}]
        infra.apply_migration(dsn, new)


def test_plain_postgresql_derives_and_sends_nothing_and_a_failing_send_costs_nothing(
    samples_dir: Path,
) -> None:
    with infra.database() as db:
        dsn = db.dsn
        infra.apply_hands_migrations(dsn)
        infra.apply_hands_migrations(dsn)
        doc = document(sample_bytes(samples_dir, EARLY_COPY))
        infra.query(dsn, "select public.gfx_set_security_delay('0 seconds')")
        for n in (1, 2, 3):  # a new table's first hands: announced, were there a realtime schema
            hands = encode(with_hands(doc, doc["Hands"][:n]))
            store_session(dsn, session_row("PC-plain", EARLY_COPY, hands, MTIME_BASE + n))
        assert infra.query(dsn, "select count(*) as n from public.gfx_hands") == [{"n": 3}]
        assert release(dsn) == 0
        status = infra.query(dsn, "select public.gfx_hands_status() -> 'release' as r")[0]["r"]
        assert status["release_scheduled"] is None

        # Supabase's realtime schema, with a realtime.send that fails: the session is stored all
        # the same, its hand derived.
        realtime.install_realtime(dsn)
        infra.query(
            dsn,
            "create or replace function realtime.send(payload jsonb, event text, topic text, "
            "private boolean default true) returns void language plpgsql as "
            "$$ begin raise exception 'realtime is down'; end $$",
        )
        hands = encode(with_hands(doc, doc["Hands"][:4]))
        warnings: list[str] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
            statement, params = store_statement(
                session_row("PC-plain", EARLY_COPY, hands, MTIME_BASE + 4)
            )
            conn.execute(statement, params)  # type: ignore[arg-type]  # built from the row's keys
        assert infra.query(dsn, "select max(hand_num) as n from public.gfx_hands") == [{"n": 4}]
        assert any("not sent: realtime is down" in w for w in warnings), warnings
