"""The sync lag: the age of the oldest change the table does not hold yet (issue 28).

A pure property test of the tracker against a brute-force model: random streams of versions,
looks, acknowledgements and "still being written" answers per file, with polls at random
moments. The model keeps every version each file had and when the agent first saw it; the lag
is the age of the oldest one seen and not acknowledged (acknowledging a version ends every
version before it: the table holds newer bytes). The old code kept one timestamp per PC, set
when the count of waiting changes left 0 and cleared only when a poll found it at 0: a file
rewritten faster than a poll saw it acknowledged showed the whole busy stretch.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import infra
from tests.support.agent import AgentProcess, agent_env, running_agent
from tests.support.waits import wait_for, wait_until_equal
from trio_gfxsync.intake.folder_index import Seen
from trio_gfxsync.intake.tracker import FileTracker
from trio_gfxsync.records import Stat, make_stat

FILES = ("1016/a.json", "1016/b.json", "1017/c.json")


@dataclass
class ModelFile:
    """Every version the file had (oldest first), when the agent first saw each, and up to
    which one the table holds it."""

    versions: list[Stat] = field(default_factory=list)
    first_seen: dict[int, float] = field(default_factory=dict)
    acked_upto: int = -1

    def waiting_since(self) -> float | None:
        seen = [at for i, at in self.first_seen.items() if i > self.acked_upto]
        return min(seen) if seen else None


class Model:
    def __init__(self) -> None:
        self.files: dict[str, ModelFile] = {}
        self.made = 0

    def write(self, rel: str) -> Stat:
        self.made += 1
        # a new version: another size, mtime and ctime (the inode stays)
        stat = make_stat(1000 + self.made, 10**18 + self.made, 10**18 + self.made, 7)
        self.files.setdefault(rel, ModelFile()).versions.append(stat)
        return stat

    def oldest(self) -> float | None:
        times = [t for f in self.files.values() if (t := f.waiting_since()) is not None]
        return min(times) if times else None

    def waiting(self) -> int:
        return sum(1 for f in self.files.values() if f.waiting_since() is not None)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from(FILES), st.floats(0, 3)),
        st.tuples(st.just("look"), st.sampled_from(FILES), st.floats(0, 3)),
        st.tuples(st.just("ack"), st.sampled_from(FILES), st.integers(0, 5)),
        st.tuples(st.just("unsettled"), st.sampled_from(FILES), st.integers(0, 0)),
        st.tuples(st.just("gone"), st.sampled_from(FILES), st.integers(0, 0)),
        st.tuples(st.just("poll"), st.just(""), st.floats(0, 20)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(walk=st.sets(st.sampled_from(FILES)), steps=steps, start=st.floats(0, 1e6))
def test_the_lag_is_the_age_of_the_oldest_version_not_acknowledged(
    walk: set[str], steps: list[tuple[str, str, float]], start: float
) -> None:
    model = Model()
    tracker = FileTracker(pc_id="PC01", acked={})
    now = start
    # the first walk: every file there is reported at once (no entry each in the tracker)
    seen = {}
    for rel in sorted(walk):
        seen[rel] = Seen(model.write(rel), True, True)
        model.files[rel].first_seen[0] = now
    tracker.observe(seen, (), now, poll=True, initial=True)
    observed: dict[str, Stat] = {rel: s.stat for rel, s in seen.items()}

    def check() -> None:
        assert tracker.oldest_unacked() == model.oldest(), (now, model.files, tracker.unacked)
        assert tracker.waiting() == model.waiting()

    check()
    for kind, rel, arg in steps:
        file = model.files.get(rel)
        if kind == "write":
            now += float(arg)
            model.write(rel)
        elif kind == "look" and file is not None and file.versions:
            # a hot tick or a poll stats the file: a version new to the agent is first seen now
            now += float(arg)
            current = len(file.versions) - 1
            stat = file.versions[current]
            tracker.observe({rel: Seen(stat, observed.get(rel) != stat, True)}, (), now, poll=True)
            observed[rel] = stat
            file.first_seen.setdefault(current, now)
        elif kind == "ack" and file is not None:
            # the table stores (or the queue takes) a version the agent saw, newer than the
            # last one acknowledged: reads of one file are decided in the order they were made
            candidates = sorted(i for i in file.first_seen if i > file.acked_upto)
            if candidates:
                index = candidates[int(arg) % len(candidates)]
                tracker.acknowledge(rel, file.versions[index])
                file.acked_upto = index
        elif kind == "unsettled" and file is not None and file.first_seen:
            # the reader found the newest version it was given still being written: it is
            # reported again once it settles, and waits meanwhile
            newest = max(file.first_seen)
            tracker.retry_when_settled(rel, file.versions[newest])
        elif kind == "gone" and file is not None:
            tracker.observe({}, (rel,), now, poll=True)
            del model.files[rel]
            observed.pop(rel, None)
        elif kind == "poll":
            now += float(arg)
        check()


def fresh() -> tuple[Model, FileTracker]:
    return Model(), FileTracker(pc_id="PC01", acked={})


def test_a_file_rewritten_before_its_last_version_is_stored_shows_only_that_version() -> None:
    """The issue's case: a hand every 1.5 s, each stored as the next one is seen, so every
    look finds a version on its way; none ever waits longer than 1.5 s (the old code's lag
    grew for the whole 300 s)."""
    model, tracker = fresh()
    now, rel = 0.0, FILES[0]
    previous: Stat | None = None
    for _ in range(200):
        stat = model.write(rel)
        tracker.observe({rel: Seen(stat, True, True)}, (), now, poll=True)
        oldest = tracker.oldest_unacked()
        assert tracker.waiting() == 1 and oldest is not None
        assert now - oldest == (0.0 if previous is None else 1.5)
        if previous is not None:
            tracker.acknowledge(rel, previous)  # the last hand reaches the table now
        assert (tracker.oldest_unacked(), tracker.waiting()) == (now, 1)
        previous = stat
        now += 1.5


def test_a_version_read_before_any_look_saw_it_ends_the_lag_once_the_file_is_seen_at_it() -> None:
    """The read found newer bytes than the version reported (the file changed in between) and
    that version was acknowledged: where it stands among the waiting ones is not known, so they
    wait until a look finds the file at it; then nothing of the file waits."""
    model, tracker = fresh()
    rel = FILES[0]
    first = model.write(rel)
    tracker.observe({rel: Seen(first, True, True)}, (), 10.0, poll=True)
    second = model.write(rel)
    tracker.acknowledge(rel, second)
    assert tracker.oldest_unacked() == 10.0
    tracker.observe({rel: Seen(second, True, True)}, (), 10.5, poll=False)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (None, 0)
    assert tracker.caught_up()  # a one-shot scan ends: the stale report is gone too


def test_a_first_walks_files_share_its_time_and_wait_until_each_is_acknowledged() -> None:
    model, tracker = fresh()
    seen = {rel: Seen(model.write(rel), True, True) for rel in FILES}
    tracker.observe(seen, (), 5.0, poll=True, initial=True)
    assert tracker.unacked == {}  # no entry per file: the walk's time serves them all
    assert (tracker.oldest_unacked(), tracker.waiting()) == (5.0, 3)
    for rel in FILES[:2]:
        tracker.acknowledge(rel, seen[rel].stat)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (5.0, 1)
    # the last one rewritten before it was stored: the walk's version still waits
    newer = model.write(FILES[2])
    tracker.observe({FILES[2]: Seen(newer, True, True)}, (), 9.0, poll=True)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (5.0, 1)
    tracker.acknowledge(FILES[2], seen[FILES[2]].stat)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (9.0, 1)
    tracker.acknowledge(FILES[2], newer)
    assert (tracker.oldest_unacked(), tracker.waiting(), tracker.walked_at) == (None, 0, None)


def test_an_unreadable_file_leaves_the_lag_to_its_own_alert() -> None:
    model, tracker = fresh()
    rel = FILES[1]
    stat = model.write(rel)
    tracker.observe({rel: Seen(stat, True, True)}, (), 1.0, poll=True)
    tracker.give_up(rel, stat)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (None, 0)
    fixed = model.write(rel)
    tracker.observe({rel: Seen(fixed, True, True)}, (), 70.0, poll=True)
    assert (tracker.oldest_unacked(), tracker.waiting()) == (70.0, 1)


# ---------------------------------------------------------------------------------------------
# end to end: the agent subprocess, the project's simulator, the real PostgREST
# ---------------------------------------------------------------------------------------------

FAST_PLAY = 60.0  # seconds of a hand every 1-2 s per PC with nothing wrong
CUT = 20.0  # seconds every upsert is held at the gateway
# a hand every 1-2 s per PC: --hand-seconds is jittered by 0.7-1.3
SIMULATE = [sys.executable, "-m", "trio_gfxsync", "simulate", "--pcs", "4", "--seed", "28"]
SIMULATE += ["--hand-seconds", "1.5"]


def health_changes(agent: AgentProcess, since: int) -> list[dict[str, Any]]:
    return [e for e in agent.read_events()[since:] if e.get("event") == "health_changed"]


@pytest.mark.e2e
def test_fast_play_never_degrades_health_and_a_cut_upstream_does_naming_the_lag(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """Four simulated PCs, a hand every 1-2 s each. Every upsert lingers 1.5 s for companions
    (GFX_SYNC_LINGER = FLUSH_INTERVAL, as a busy agent's batches do) and a change is missing
    after 2 polls + that flush (5.5 s): nearly every poll finds a rewrite on its way, so the
    old per-PC timestamp, cleared only by a poll that found nothing waiting, turned `degraded`
    within a minute. Then
    every upsert is held at the gateway for 20 s: the wait shows, with its age (the PC's lag,
    or the offline queue's once the live lane gives the held records to it), and goes again."""
    nas = tmp_path / "nas"
    nas.mkdir()
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        poll_interval=2.0,
        flush_interval=1.5,
        linger=1.5,
        log_level="INFO",
    )
    hold = threading.Event()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        while hold.is_set() and request.method == "POST" and request.path == "/gfx_sessions":
            time.sleep(0.05)  # neither stored nor failed until released
        return None

    fresh_gateway.fault = fault
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_for(
            lambda: httpx.get(f"{agent.url}/health", timeout=5).json()["status"] == "healthy",
            30,
            "healthy before play",
        )
        since = len(agent.read_events())
        simulator = subprocess.Popen(
            [*SIMULATE, "--nas", str(nas), "--duration", str(FAST_PLAY + CUT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            began = time.monotonic()
            time.sleep(FAST_PLAY)
            degraded = [e for e in health_changes(agent, since) if e["status"] != "healthy"]
            assert degraded == [], f"health left healthy while every hand was stored: {degraded}"
            hands = infra.query(clean_db.dsn, "select sum(hand_count) as n from gfx_sessions")
            assert hands[0]["n"] >= 4 * 0.5 * FAST_PLAY / 1.5, hands  # the tables played
            since = len(agent.read_events())
            hold.set()
            cut_at = time.monotonic()
            change = wait_for(
                lambda: next(iter(health_changes(agent, since)), None), CUT, "health_changed"
            )
            noticed = time.monotonic() - cut_at
            assert change["status"] == "degraded", change
            # the change that waits: in no table yet (the lag), or queued once the batch
            # holding it gave up (a queued version is acknowledged: the queue's age shows)
            waits = ("change(s) not in the table yet, the oldest waiting", "in the offline queue")
            assert any(w in r for w in waits for r in change["reasons"]), change
            time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
            hold.clear()
            assert simulator.wait(timeout=60) == 0
        finally:
            hold.clear()
            if simulator.poll() is None:
                simulator.kill()
                simulator.wait()
        wait_until_equal(nas, clean_db.dsn, timeout=60)
        wait_for(
            lambda: httpx.get(f"{agent.url}/health", timeout=5).json()["status"] == "healthy",
            30,
            "healthy once every hand is stored",
        )
        print(
            f"{FAST_PLAY:.0f} s of fast play: healthy throughout; upserts held: "
            f"{change['reasons']} after {noticed:.1f} s; "
            f"{time.monotonic() - began:.0f} s in all"
        )
