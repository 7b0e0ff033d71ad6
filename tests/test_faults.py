"""Fault injection through the gateway stand-in, with the agent as a real subprocess.

After each fault the database must equal the NAS (every session, newest copy, exact content),
the dead letter must hold only what the fault made undeliverable, and the agent must still run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import infra
from tests.support.agent import AgentProcess, agent_env, run_cli, running_agent
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.truth import mismatches
from tests.support.waits import dead_letters, queue_figures, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e


class PostCounter:
    """Counts upsert POSTs as they arrive at the gateway, with their arrival times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[float] = []

    def arrive(self, request: infra.GatewayRequest) -> int:
        with self.lock:
            self.arrivals.append(time.monotonic())
            return len(self.arrivals)


def is_upsert(request: infra.GatewayRequest) -> bool:
    return request.method == "POST" and request.path == "/gfx_sessions"


@pytest.fixture
def setup(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> Iterator[tuple[Path, Path, infra.Gateway, dict]]:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=4, sessions_per_pc=25, seed=7, max_hands=6)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        rate_limit_base_delay=0.2,
        log_level="INFO",
    )
    ctx = {"env": env, "sessions": sessions, "tmp": tmp_path, "dsn": clean_db.dsn}
    yield nas, tmp_path / "queue", fresh_gateway, ctx


def start(ctx: dict, **overrides: object) -> AbstractContextManager[AgentProcess]:
    """The agent for a `with` block: it must stop cleanly (exit 0 within 15 s) at its end."""
    env = dict(ctx["env"])
    env.update({f"GFX_SYNC_{k.upper()}": str(v) for k, v in overrides.items()})
    return running_agent(env, ctx["tmp"] / "agent.log")


def polls_after(agent: AgentProcess, count: int, timeout: float = 60) -> None:
    """Until every PC has completed `count` more polls (read from /api/status)."""

    def polls() -> dict[str, int]:
        pcs = httpx.get(f"{agent.url}/api/status").json()["pcs"]
        return {pc["id"]: pc["polls"] for pc in pcs}

    start_at = polls()
    wait_for(
        lambda: all(n >= start_at.get(pc, 0) + count for pc, n in polls().items()),
        timeout,
        f"{count} more polls of every PC",
    )


def grow_some(sessions: dict, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for path in rng.sample(sorted(sessions), count):
        grow(path, sessions[path], rng, hands=2)


def test_blackout_during_backfill_queues_then_recovers(setup) -> None:
    nas, queue, gateway, ctx = setup
    counter = PostCounter()
    lifted = threading.Event()

    def fault(request: infra.GatewayRequest) -> None:
        if is_upsert(request) and counter.arrive(request) == 3:
            gateway.blackout = True  # from the next request on: connections closed unanswered

    gateway.fault = fault
    with start(ctx):
        wait_for(lambda: gateway.blackout, 30, "the blackout to start")
        blackout_started = time.monotonic()
        grow_some(ctx["sessions"], 5, seed=1)  # live changes while upstream is gone
        # the agent keeps reading and commits what it cannot send to the offline queue
        wait_for(lambda: queue_figures(queue)["pending"] >= 50, 25, "records in the offline queue")
        time.sleep(max(0.0, 30 - (time.monotonic() - blackout_started)))
        gateway.blackout = False
        lifted.set()
        recovered = wait_until_equal(nas, ctx["dsn"], timeout=30)
        print(f"blackout 30 s: table equal to the NAS {recovered:.2f}s after upstream returned")
        assert wait_for(lambda: queue_figures(queue)["pending"] == 0, 10, "an empty queue")
        figures = queue_figures(queue)
        assert figures["refused"] == 0 and figures["quarantined"] == 0
        assert gateway.bad_bearer_count == 0


def test_429_storm_honours_retry_after_for_every_request(setup) -> None:
    nas, queue, gateway, ctx = setup
    counter = PostCounter()
    answered_429: list[tuple[float, float]] = []  # (answer time, retry-after)
    early: list[float] = []

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if not is_upsert(request):
            return None
        n = counter.arrive(request)
        now = time.monotonic()
        with counter.lock:
            for answered_at, retry_after in answered_429:
                if answered_at < now < answered_at + retry_after - 0.02:
                    early.append(now - answered_at)
        if 3 <= n <= 10:
            with counter.lock:
                answered_429.append((time.monotonic(), 2.0))
            body = orjson.dumps({"message": "Too Many Requests"})
            return 429, {"retry-after": "2", "content-type": "application/json"}, body
        return None

    gateway.fault = fault
    with start(ctx):
        took = wait_until_equal(nas, ctx["dsn"], timeout=60)
        print(f"429 storm (8 answers, Retry-After 2): equal to the NAS after {took:.2f}s")
        assert len(answered_429) == 8
        assert early == [], f"requests sent before Retry-After allowed: {early}"
        assert queue_figures(queue)["refused"] == 0


@pytest.mark.parametrize("fault_kind", ["503", "timeout", "reset"])
def test_transient_faults_end_equal(setup, fault_kind: str) -> None:
    nas, queue, gateway, ctx = setup
    counter = PostCounter()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if not is_upsert(request):
            return None
        n = counter.arrive(request)
        if not 2 <= n <= 6:
            return None
        if fault_kind == "503":
            return 503, {"content-type": "application/json"}, b'{"message":"upstream busy"}'
        if fault_kind == "timeout":
            time.sleep(3.0)  # past the agent's 2 s request timeout; then it goes through
            return None
        raise infra._DropConnection

    gateway.fault = fault
    with start(ctx, request_timeout=2):
        took = wait_until_equal(nas, ctx["dsn"], timeout=60)
        print(f"{fault_kind} x5: equal to the NAS after {took:.2f}s")
        wait_for(lambda: queue_figures(queue)["pending"] == 0, 15, "an empty queue")
        assert queue_figures(queue)["refused"] == 0


def test_413_splits_batches_and_dead_letters_only_the_oversized_record(setup) -> None:
    nas, queue, gateway, ctx = setup
    limit = 40_000
    big = make_session(999, 40, random.Random(3))
    big_path = nas / "PC01" / "1020" / big.file_name
    write_session(big_path, big)
    assert len(big.to_bytes()) > limit

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if is_upsert(request) and len(request.body) > limit:
            return 413, {"content-type": "application/json"}, b'{"message":"Payload too large"}'
        return None

    gateway.fault = fault
    with start(ctx, batch_size=500):

        def only_big_missing() -> bool:
            return mismatches(nas, ctx["dsn"]) == [f"missing ('PC01', {big.session_id})"]

        wait_for(only_big_missing, 60, "every session but the oversized one", interval=0.25)
        entries = wait_for(lambda: dead_letters(queue), 10, "the dead letter")
        assert [(e["reason"], e["status"], e["session_id"]) for e in entries] == [
            ("payload_too_large", 413, big.session_id)
        ]


def test_refused_record_is_isolated_dead_lettered_and_replayed(setup) -> None:
    nas, queue, gateway, ctx = setup
    victim_path = sorted(ctx["sessions"])[17]
    victim = ctx["sessions"][victim_path]
    marker = f'"session_id":{victim.session_id},'.encode()
    refusals = PostCounter()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if is_upsert(request) and marker in request.body:
            refusals.arrive(request)
            body = orjson.dumps(
                {"code": "23514", "message": 'new row violates check constraint "demo"'}
            )
            return 400, {"content-type": "application/json"}, body
        return None

    gateway.fault = fault
    with start(ctx, max_retries=2):
        entries = wait_for(lambda: dead_letters(queue), 60, "the refused record's dead letter")
        assert [(e["kind"], e["code"], e["session_id"], e["attempts"]) for e in entries] == [
            ("refused", "23514", victim.session_id, 3)
        ]
        want_missing = [f"missing ('{victim_path.parts[-3]}', {victim.session_id})"]
        wait_for(lambda: mismatches(nas, ctx["dsn"]) == want_missing, 30, "the rest stored")

        listing = run_cli(ctx["env"], "dlq", "list")
        assert listing.returncode == 0, listing.stderr
        assert str(victim.session_id) in listing.stdout and "23514" in listing.stdout
        shown = run_cli(ctx["env"], "dlq", "show", str(entries[0]["id"]))
        assert "check constraint" in shown.stdout

        gateway.fault = None  # the operator fixed the table
        replay = run_cli(ctx["env"], "dlq", "replay", str(entries[0]["id"]))
        assert replay.returncode == 0, replay.stderr
        took = wait_until_equal(nas, ctx["dsn"], timeout=30)
        print(f"dlq replay: stored {took:.2f}s after the command")
        assert queue_figures(queue)["refused"] == 0


def test_key_rotation_pauses_and_queues_without_dead_letters(setup) -> None:
    nas, queue, gateway, ctx = setup
    with start(ctx) as agent:
        wait_until_equal(nas, ctx["dsn"], timeout=60)
        old_key = gateway.key
        gateway.key = "sb_secret_ROTATED_" + "x" * 24  # Supabase now refuses the agent's key
        grow_some(ctx["sessions"], 6, seed=2)
        agent.wait_event("upstream_state", state="rejected", timeout=30)
        rejected_at = len(gateway.records)
        paused = time.monotonic()
        # while paused the crew keeps playing: every change is queued, none is sent
        for seed in (3, 4, 5):
            grow_some(ctx["sessions"], 3, seed=seed)
            polls_after(agent, 1)
        wait_for(lambda: queue_figures(queue)["pending"] >= 6, 30, "changes queued while rejected")
        during = gateway.records[rejected_at:]
        window = time.monotonic() - paused
        print(f"rejected key: {len(during)} requests in {window:.1f}s of pause: {during}")
        # paused means paused: at most the ~30 s re-probe, never an upload per change
        assert len(during) <= 2, during
        assert queue_figures(queue)["refused"] == 0
    # the operator puts the new key in .env and restarts the container
    restarted = time.monotonic()
    with start(ctx, supabase_secret_key=gateway.key) as agent:
        took = wait_until_equal(nas, ctx["dsn"], timeout=30, since=restarted)
        print(f"key rotation: synced {took:.2f}s after the restart with the new key")
        wait_for(lambda: queue_figures(queue)["pending"] == 0, 10, "an empty queue")
        assert old_key not in agent.log_path.read_text()
        assert gateway.key not in agent.log_path.read_text()


def test_bad_files_are_quarantined_once_and_retried_when_they_change(setup) -> None:
    nas, queue, _, ctx = setup
    broken = nas / "PC02" / "1019" / "PGFX_live_data_export GameID=638964779563363778.json"
    broken.write_bytes(b'{"ID": 638964779563363778, "Hands": [')  # stable and invalid
    no_id = nas / "PC03" / "1019" / "notes.json"
    no_id.write_bytes(b'{"Hands": []}')
    with start(ctx) as agent:
        entries = wait_for(
            lambda: len(dead_letters(queue)) == 2 and dead_letters(queue), 30, "two quarantines"
        )
        assert sorted((e["kind"], e["reason"]) for e in entries) == [
            ("quarantine", "no_session_id"),
            ("quarantine", "not_json"),
        ]
        copy = ctx["tmp"] / "queue" / "_error" / "PC02" / "1019" / broken.name
        assert copy.read_bytes() == broken.read_bytes()
        assert broken.read_bytes().startswith(b'{"ID"')  # the source is untouched
        polls_after(agent, 3)  # every PC polled three more times: still once per version
        events = agent.read_events()
        assert sum(e["event"] == "file_quarantined" for e in events) == 2

        # PokerGFX finishes the file: it is retried automatically and the quarantine clears
        session = make_session(4242, 3, random.Random(5))
        session.session_id = 638964779563363778
        write_session(broken, session)
        wait_for(lambda: len(dead_letters(queue)) == 1, 30, "the fixed file leaving quarantine")
        no_id.unlink()
        wait_until_equal(nas, ctx["dsn"], timeout=30)


def test_a_file_still_being_written_is_not_quarantined(setup) -> None:
    """A slow SMB write: the file grows through many polls before it is complete JSON. Steps of
    0.2 s against a 2 s poll leave a wide margin on a loaded machine; the agent must have seen
    the half-written file (file_unsettled), or the test would prove nothing."""
    nas, queue, _, ctx = setup
    with start(ctx, poll_interval=2.0, log_level="DEBUG") as agent:
        wait_until_equal(nas, ctx["dsn"], timeout=60)
        session = make_session(777, 12, random.Random(9))
        data = session.to_bytes()
        target = nas / "PC04" / "1020" / session.file_name
        rel = f"1020/{session.file_name}"
        step = len(data) // 30 + 1
        with open(target, "wb") as handle:
            for start_at in range(0, len(data), step):
                handle.write(data[start_at : start_at + step])
                handle.flush()
                time.sleep(0.2)
        wait_until_equal(nas, ctx["dsn"], timeout=30)
        events = agent.read_events()
        assert any(e["event"] == "file_unsettled" and e.get("path") == rel for e in events), (
            "the agent never read the file half-written: the test proved nothing"
        )
        assert queue_figures(queue)["quarantined"] == 0
        assert not any(e["event"] == "file_quarantined" for e in events)


def test_unwritable_error_folder_still_quarantines(setup) -> None:
    nas, queue, _, ctx = setup
    blocker = ctx["tmp"] / "not-a-folder"
    blocker.write_text("a file where the error folder should be")
    (nas / "PC01" / "1016" / "bad GameID=1.json").write_bytes(b'{"ID": "caf\xe9"}')
    with start(ctx, error_folder=blocker / "errors") as agent:
        wait_for(lambda: queue_figures(queue)["quarantined"] == 1, 30, "the quarantine")
        event = agent.wait_event("file_quarantined")
        assert event["reason"] == "bad_encoding"
        assert event["copied_to"] is None and event["copy_error"]
