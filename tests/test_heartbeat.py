"""Heartbeats (trio_gfxsync/observe/heartbeat.py, fleet_report.py): what a heartbeat says, the
gate's idle-only lane, the agent's id file, and one heartbeat through the real PostgREST into
gfx_agents and gfx_fleet. The agents as subprocesses are in test_fleet_e2e.py."""

from __future__ import annotations

import functools
import itertools
import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.support import infra
from trio_gfxsync.delivery.gate import UpstreamGate
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.logs import register_secret
from trio_gfxsync.observe.alerts import Alert
from trio_gfxsync.observe.fleet_report import AgentIdentity, agent_row, pc_state
from trio_gfxsync.observe.heartbeat import AGENT_ID_FILE, Heartbeat, load_agent_id
from trio_gfxsync.observe.status import AgentStatus, LiveHand, PcStatus, next_live_hand
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.pokergfx import last_hand_num, parse_session
from trio_gfxsync.policy import Verdict
from trio_gfxsync.settings import load_settings
from trio_gfxsync.targets.postgrest import PostgrestClient

PC_FIELDS = [
    "id",
    "state",
    "reason",
    "sync_lag_s",
    "files_waiting",
    "last_sync",
    "session_key",
    "hand_num",
    "hand_age_s",
]


# ---------------------------------------------------------------------------------------------
# The parser's last HandNum, and the live hand of a PC
# ---------------------------------------------------------------------------------------------


def test_the_parser_reads_the_last_handnum_of_real_exports(samples_dir: Path) -> None:
    files = sorted((samples_dir / "table-pokercaster").glob("*/*.json"))
    assert files
    for path in files:
        data = path.read_bytes()
        document = json.loads(data)
        record = parse_session(
            data, pc_id="PC01", rel_path=path.name, mtime_ns=0, max_file_bytes=2**26
        )
        assert record.last_hand_num == document["Hands"][-1]["HandNum"], path.name


@pytest.mark.parametrize(
    ("hands", "expected"),
    [
        ([], None),
        ([{"HandNum": 1}, {"HandNum": 2}], 2),
        ([{"HandNum": 7}, {"Other": 1}], 7),  # the last hand with a usable HandNum
        ([{"HandNum": 3}, {"HandNum": "4"}], 3),
        ([{"HandNum": True}], None),
        ([{"HandNum": -1}], None),
        ([{"HandNum": 2**40}], None),  # beyond the integer column of the hand tables
        (["not a hand"], None),
    ],
)
def test_last_hand_num_takes_only_usable_numbers(hands: list[object], expected: int | None) -> None:
    assert last_hand_num(hands) == expected


def test_the_live_hand_follows_the_newest_session_and_only_the_agents_clock() -> None:
    # backfill read: the hand is known, its age is not (the PC's mtime is never used)
    hand = next_live_hand(None, 100, 5, live=False, now=10.0)
    assert hand == LiveHand(100, 5, None) and hand.age(50.0) is None
    # an older session read later changes nothing; nor does an early copy of this one
    assert next_live_hand(hand, 99, 80, live=False, now=11.0) is hand
    assert next_live_hand(hand, 100, 3, live=False, now=11.0) is hand
    # a live rewrite with a new hand: its age counts from now on the agent's clock
    live = next_live_hand(hand, 100, 6, live=True, now=20.0)
    assert live == LiveHand(100, 6, 20.0) and live.age(27.5) == 7.5
    # the same hand read again keeps its time
    assert next_live_hand(live, 100, 6, live=True, now=30.0) is live
    # a voided hand (fewer hands) on a live rewrite is the truth
    assert next_live_hand(live, 100, 5, live=True, now=31.0) == LiveHand(100, 5, 31.0)
    # a new session takes over
    assert next_live_hand(live, 101, 1, live=True, now=40.0) == LiveHand(101, 1, 40.0)


# ---------------------------------------------------------------------------------------------
# What a heartbeat says
# ---------------------------------------------------------------------------------------------


def identity() -> AgentIdentity:
    return AgentIdentity("agent-1", "Venue A", "nas-1", "9.9", 15.0)


def test_a_heartbeat_row_has_every_field_and_ages_from_the_agents_clock() -> None:
    status = AgentStatus()
    pc = PcStatus("PC01", "PC01", state="running")
    pc.scan.waiting = 2
    pc.scan.waiting_since = 95.0
    pc.note_read(638966318331324926, 130, live=True, now=90.0)
    status.pcs["PC01"] = pc
    status.pcs["PC02"] = PcStatus("PC02", "PC02", state="starting")
    row = agent_row(identity(), status, now=100.0)
    assert set(row) == {
        "agent_id",
        "venue",
        "host",
        "version",
        "started_at",
        "heartbeat_interval_s",
        "status",
        "reasons",
        "reason_codes",
        "queue",
        "alerts",
        "pcs",
    }
    assert "last_seen" not in row  # the database's clock sets it
    assert row["queue"] == {"pending": 0, "dead_letters": 0, "quarantined": 0}
    first, second = row["pcs"]
    assert list(first) == PC_FIELDS
    assert first["session_key"] == "638966318331324926"  # a string: 18 digits
    assert (first["hand_num"], first["hand_age_s"]) == (130, 10.0)
    assert (first["sync_lag_s"], first["files_waiting"]) == (5.0, 2)
    assert (second["state"], second["hand_num"], second["hand_age_s"]) == ("starting", None, None)


def test_reasons_and_alerts_go_through_the_one_redaction() -> None:
    secret = "sb_secret_HEARTBEATLEAK_0123456789abcdef"
    register_secret(secret)
    status = AgentStatus()
    status.pcs["PC01"] = PcStatus("PC01", "PC01", state="error", reason=f"denied {secret}")
    status.alerts = [Alert("upload_failures", "warn", f"answer echoed {secret}")]
    status.upstream = Upstream.OFFLINE
    status.upstream_reason = f"proxy said key={secret}"
    text = json.dumps(agent_row(identity(), status, now=1.0))
    assert "HEARTBEATLEAK" not in text and secret[:12] not in text
    row = json.loads(text)
    assert row["status"] == "degraded" and row["reasons"]


def test_pc_states_in_the_fleets_words() -> None:
    def state(**changes: object) -> str:
        pc = PcStatus("PC01", "PC01", state="running")
        for name, value in changes.items():
            setattr(pc, name, value)
        return pc_state(pc, poll_interval=1.0, now=100.0)

    assert state() == "running"
    assert state(state="starting") == "starting"
    assert state(state="error") == "error"
    assert state(missing=True, state="error") == "missing"
    assert state(read_hung="a read hangs") == "hung"
    pc = PcStatus("PC01", "PC01", state="running")
    pc.scan.last_scan_at = 0.0
    assert pc_state(pc, poll_interval=1.0, now=100.0) == "stale"


# ---------------------------------------------------------------------------------------------
# The gate's idle-only lane: never in a session's way, never changing the gate
# ---------------------------------------------------------------------------------------------


async def test_nothing_is_sent_while_the_gate_is_busy_held_or_down(autojump_clock) -> None:
    gate = UpstreamGate(AgentStatus())
    sent: list[str] = []

    async def heartbeat() -> None:
        sent.append("heartbeat")

    async def session_upload() -> None:
        await trio.sleep(5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.send, session_upload)
        await trio.sleep(1)
        assert gate.busy
        assert await gate.send_if_idle(heartbeat, deadline=1) is None
    assert await gate.send_if_idle(heartbeat, deadline=1) == (Verdict.STORED, None)

    gate.hold(10)
    assert await gate.send_if_idle(heartbeat, deadline=1) is None
    await trio.sleep(10)
    for state in (Upstream.OFFLINE, Upstream.REJECTED, Upstream.SCHEMA_MISMATCH):
        gate.set_state(state, "test")
        assert await gate.send_if_idle(heartbeat, deadline=1) is None
    gate.set_state(Upstream.CONNECTED)
    assert await gate.send_if_idle(heartbeat, deadline=1) == (Verdict.STORED, None)
    assert sent == ["heartbeat", "heartbeat"]


async def test_an_overdue_heartbeat_takes_its_turn_between_two_uploads(autojump_clock) -> None:
    gate = UpstreamGate(AgentStatus())
    order: list[str] = []

    async def upload(name: str) -> None:
        order.append(f"{name} starts")
        await trio.sleep(5)
        order.append(f"{name} ends")

    async def heartbeat() -> None:
        order.append("heartbeat")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.send, lambda: upload("first"))
        await trio.sleep(1)
        assert await gate.send_if_idle(heartbeat, deadline=1) is None  # busy: not sent
        nursery.start_soon(functools.partial(gate.send_if_idle, heartbeat, deadline=1, wait=True))
        await trio.sleep(1)
        nursery.start_soon(gate.send, lambda: upload("second"))
    # one request at a time: after the upload in flight, before the next one
    assert order == ["first starts", "first ends", "heartbeat", "second starts", "second ends"]

    # in turn, but never through a hold or a pause
    gate.hold(10)
    assert await gate.send_if_idle(heartbeat, deadline=1, wait=True) is None
    await trio.sleep(10)
    gate.set_state(Upstream.OFFLINE, "test")
    assert await gate.send_if_idle(heartbeat, deadline=1, wait=True) is None
    assert not gate.busy and order.count("heartbeat") == 1


async def test_a_heartbeats_answer_never_changes_the_gate(autojump_clock) -> None:
    gate = UpstreamGate(AgentStatus())
    gate.set_state(Upstream.CONNECTED)

    async def limited() -> None:
        raise UpstreamError(429, None, "slow down", retry_after=30.0)

    async def missing() -> None:
        raise UpstreamError(404, "PGRST205", "Could not find the table 'public.gfx_agents'")

    verdict, error = await gate.send_if_idle(limited, deadline=1) or (None, None)
    assert verdict is Verdict.SLOW_DOWN and error is not None
    verdict, _ = await gate.send_if_idle(missing, deadline=1) or (None, None)
    assert verdict is Verdict.SCHEMA_MISMATCH
    assert gate.state is Upstream.CONNECTED and gate.idle  # no hold, no pause

    async def hangs() -> None:
        await trio.sleep_forever()

    start = trio.current_time()
    verdict, error = await gate.send_if_idle(hangs, deadline=2) or (None, None)
    assert verdict is Verdict.DOWN and error is not None and error.kind == "Timeout"
    assert trio.current_time() - start >= 2
    assert gate.state is Upstream.CONNECTED and not gate.busy


class RecordingTarget:
    """Where heartbeats go, recorded with the (virtual) time they left."""

    def __init__(self) -> None:
        self.beats: list[float] = []
        self.checks: list[float] = []

    async def upsert_agent(self, body: bytes) -> None:
        assert json.loads(body)["agent_id"] == "agent-1"
        self.beats.append(trio.current_time())

    async def rpc(self, function: str, args: dict[str, object]) -> object:
        assert function == "gfx_fleet_check"
        self.checks.append(trio.current_time())
        return []


async def test_heartbeats_wait_for_idle_moments_and_never_fall_silent(autojump_clock) -> None:
    """A gate that is never idle (uploads back to back): a heartbeat still goes out every
    OVERDUE intervals at least, between two uploads; an idle gate gets one every interval."""
    status = AgentStatus()
    gate = UpstreamGate(status)
    target = RecordingTarget()
    heartbeat = Heartbeat(identity(), status, gate, target)  # interval 15 s
    uploads = 0

    async def backfill() -> None:
        nonlocal uploads

        async def upload() -> None:
            await trio.sleep(0.3)

        start = trio.current_time()
        while trio.current_time() - start < 120:
            await gate.send(upload)
            uploads += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfill)
        nursery.start_soon(heartbeat.run)
        await trio.sleep(120)
        during = list(target.beats)
        await trio.sleep(60)  # idle now
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise([0.0, *during])]
    assert during and max(gaps) <= 2 * 15 + 1, gaps
    idle = [b for b in target.beats if b > 121]
    assert len(idle) >= 3 and all(b - a <= 15.5 for a, b in itertools.pairwise(idle))
    assert uploads > 300


# ---------------------------------------------------------------------------------------------
# The agent's id: made once, in a file of its own
# ---------------------------------------------------------------------------------------------


def test_the_agent_id_is_made_once_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    first = load_agent_id(folder)
    assert (folder / AGENT_ID_FILE).read_text().strip() == first
    (folder / "pending.db").write_bytes(b"recreated")  # the queue database is no part of it
    assert load_agent_id(folder) == first
    (folder / AGENT_ID_FILE).write_text("  \n")
    replaced = load_agent_id(folder)
    assert replaced != first and load_agent_id(folder) == replaced
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------------
# One heartbeat through the real PostgREST
# ---------------------------------------------------------------------------------------------


async def test_a_heartbeat_lands_in_gfx_agents_and_the_fleet(
    gateway: infra.Gateway, postgres_db: infra.Database, caplog: pytest.LogCaptureFixture
) -> None:
    infra.query(postgres_db.dsn, "delete from public.gfx_agents where agent_id = 'hb-test'")
    settings = load_settings(supabase_url=gateway.url, supabase_secret_key=gateway.key)
    status = AgentStatus()
    status.pcs["PC01"] = PcStatus("PC01", "PC01", state="running")
    status.pcs["PC01"].note_read(638966318331324926, 12, live=True, now=trio.current_time())
    gate = UpstreamGate(status)
    caplog.set_level(logging.INFO, logger="trio_gfxsync")
    try:
        async with PostgrestClient(settings) as client:
            heartbeat = Heartbeat(
                AgentIdentity("hb-test", "Venue HB", "nas-hb", "9.9", 15.0), status, gate, client
            )
            assert await heartbeat.beat()
            assert await heartbeat.beat()
        assert heartbeat.sent == 2
        (row,) = infra.query(
            postgres_db.dsn,
            "select venue, state, worst_pc_state, pcs, status from public.gfx_fleet "
            "where agent_id = 'hb-test'",
        )
    finally:
        infra.query(postgres_db.dsn, "delete from public.gfx_agents where agent_id = 'hb-test'")
    assert (row["venue"], row["state"], row["worst_pc_state"]) == ("Venue HB", "online", "running")
    assert row["pcs"][0]["hand_num"] == 12
    assert row["pcs"][0]["session_key"] == "638966318331324926"
    assert gate.state is Upstream.UNKNOWN  # heartbeats never set the upstream state
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
