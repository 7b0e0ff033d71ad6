"""keep_newest.py as a protocol, against an oracle written apart from it.

A model of the whole loop around the pure parts: a NAS whose files are rewritten (PC clocks
that say anything, the NAS's own ctime that only grows), a table with the keep-newest trigger
and conditional replaces, and two agents whose wall clocks differ by up to an hour, step back
across restarts, lose or orphan requests when killed, and stop for good. The agents use the real
`winner`, `StampClock` and `after_skip`; the messages between agents and table arrive in any
order, a conditional replace may race with anything. Whatever happens, once the living agents
have caught up with the NAS (and made their reconcile pass), the table holds the NAS's current
winner as `expected_winner` below defines it, and nothing was acknowledged as stored that the
table did not hold at that moment.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_gfxsync.keep_newest import (
    AfterSkip,
    Copy,
    StampClock,
    StoredRow,
    after_skip,
    rank,
    stored_row_wins,
    winner,
)

PATHS = ("1016/a.json", "1017/a.json", "1021/a.json")
SECOND = 10**9
HOUR = 3600 * SECOND
T0 = 1_800_000_000 * SECOND  # the model's real time at the start (2027)


@dataclass(frozen=True)
class Content:
    """One version of one file: what a read returns (its bytes stand for `id`)."""

    id: int
    path: str
    hands: int
    mtime: int  # the PC's clock: anything
    ctime: int  # the NAS's clock when written: only grows

    @property
    def sha(self) -> str:
        return f"sha-{self.id}"

    @property
    def copy(self) -> Copy:
        return Copy(self.path, self.hands, self.mtime, self.ctime)


def expected_winner(files: dict[str, Content]) -> Content:
    """DESIGN 3.4 written apart from keep_newest: the most hands; then the later of the times
    no PC clock can push ahead (the mtime, unless the NAS wrote the file before it); then the
    path."""
    return max(files.values(), key=lambda c: (c.hands, min(c.mtime, c.ctime), c.path))


@dataclass
class Row:
    stamp: int
    content: Content


@dataclass
class Message:
    kind: str  # "upsert" or "replace"
    agent: Agent
    content: Content
    stamp: int
    expected: int | None = None  # replace: the stamp the row must still carry
    rounds: int = 0
    orphan: bool = False  # committed after its agent was killed: no one hears the answer


@dataclass
class World:
    now: int = T0
    ctime: int = T0  # the NAS's clock
    files: dict[str, Content] = field(default_factory=dict)
    row: Row | None = None
    in_flight: list[Message] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def write(self, path: str, hands: int, pc_clock_offset: int) -> None:
        self.ctime += SECOND
        self.files[path] = Content(
            next(self.ids), path, hands, self.ctime + pc_clock_offset, self.ctime
        )


@dataclass(eq=False)
class Agent:
    world: World
    offset: int  # this machine's clock minus real time
    stamps: StampClock = field(default_factory=StampClock)
    acked: dict[str, tuple[Content, int | None]] = field(default_factory=dict)  # file_state
    known: dict[str, Content] = field(default_factory=dict)  # acked or in flight (tracker)
    alive: bool = True

    def wall(self) -> int:
        return self.world.now + self.offset

    def seen_stamp(self) -> int | None:
        stamps = [s for _, s in self.acked.values() if s is not None]
        return max(stamps, default=None)

    def issue(self, above: int | None = None) -> int:
        """The reader's stamp: above every one acknowledged for the session (and `above`)."""
        floor = [s for s in (above, self.seen_stamp()) if s is not None]
        return self.stamps.issue(self.wall(), above=max(floor, default=None))

    def send(self, content: Content, stamp: int) -> None:
        self.known[content.path] = content
        self.world.in_flight.append(Message("upsert", self, content, stamp))

    def ack(self, content: Content, stamp: int | None) -> None:
        self.acked[content.path] = (content, stamp)
        self.known[content.path] = content

    # -- the reader --

    def read(self, path: str, *, again: bool = False) -> None:
        """A poll saw `path` change (or, `again`, its winner must be sent again)."""
        content = self.world.files.get(path)
        if content is None or (not again and self.known.get(path) == content):
            return
        previous = self.known.get(path)
        copies = {p: c.copy for p, c in self.known.items()}
        copies[path] = content.copy
        best = winner(copies.values())
        stamp = self.issue()
        if best.rel_path == path:
            self.send(content, stamp)
            return
        self.ack(content, stamp)  # superseded by another path's copy
        if previous is not None and rank(previous.copy) >= rank(best):
            self.read(best.rel_path, again=True)  # this path held the lead: the winner again

    # -- answers --

    def stored(self, message: Message) -> None:
        row = self.world.row
        assert row is not None and row.content == message.content, "acknowledged unstored"
        self.ack(message.content, message.stamp)

    def resolve_skip(self, message: Message, row: Row) -> None:
        stored = StoredRow(row.stamp, row.content.sha, row.content.path)
        sent = message.content
        if stored.file_hash == sent.sha:
            self.stored(message)
            return
        # the NAS now: every copy this agent knows of, and the stored row's path
        paths = {*self.known, sent.path, row.content.path}
        fresh = {p: self.world.files[p] for p in paths if p in self.world.files}
        best = fresh[winner(c.copy for c in fresh.values()).rel_path] if fresh else None
        decision = after_skip(sent.sha, stored, best.sha if best else None)
        if decision is AfterSkip.STORED:
            self.stored(message)
        elif decision is AfterSkip.SUPERSEDED:
            assert best is None or best != sent, "superseded needs another winner on the NAS"
            self.ack(sent, message.stamp)
            if best is not None:
                stamp = self.issue(above=row.stamp)
                if best.sha == row.content.sha:
                    self.ack(best, stamp)
                else:
                    self.send(best, stamp)
        else:
            assert best == sent, "only bytes re-confirmed on the NAS are written over a row"
            stamp = self.issue(above=row.stamp)
            self.world.in_flight.append(
                Message("replace", self, sent, stamp, expected=row.stamp, rounds=1)
            )

    def moved(self, message: Message, row: Row) -> None:
        """A conditional replace found the row moved."""
        if row.content == message.content:
            self.stored(message)
        elif message.rounds < 3:
            stamp = self.issue(above=row.stamp)
            self.world.in_flight.append(
                Message(
                    "replace",
                    self,
                    message.content,
                    stamp,
                    expected=row.stamp,
                    rounds=message.rounds + 1,
                )
            )
        else:
            self.send(message.content, message.stamp)  # from the queue, later: skipped again

    def reconcile(self) -> None:
        """The hourly pass: the table against the winner of this agent's acknowledged copies."""
        copies = {p: c for p, (c, _) in self.acked.items()}
        if not copies:
            return
        best = copies[winner(c.copy for c in copies.values()).rel_path]
        row = self.world.row
        if (row is None or row.content.sha != best.sha) and self.world.files.get(best.path) == best:
            self.send(best, self.issue())

    def restart(self, step_back: int) -> None:
        """SIGKILL and start again: the tracker is gone, the clock may have stepped back;
        stamps start from the largest one the queue database holds."""
        self.offset -= step_back
        self.known = {p: c for p, (c, _) in self.acked.items()}
        self.stamps = StampClock(self.seen_stamp() or 0)
        for message in self.world.in_flight:
            if message.agent is self:
                message.orphan = True


def deliver(world: World, message: Message) -> None:
    row = world.row
    agent = message.agent
    if message.kind == "upsert":
        if row is None or not stored_row_wins(row.stamp, message.stamp):
            world.row = Row(message.stamp, message.content)
            if not message.orphan:
                agent.stored(message)
        elif not message.orphan and agent.alive:
            agent.resolve_skip(message, row)
        return
    assert row is not None
    if row.stamp == message.expected and message.stamp > row.stamp:
        world.row = Row(message.stamp, message.content)
        if not message.orphan:
            agent.stored(message)
    elif not message.orphan and agent.alive:
        agent.moved(message, row)


FAST_PC = 300 * 365 * 24 * HOUR  # a PC clock in 2300
step = st.one_of(
    st.tuples(
        st.just("write"),
        st.sampled_from(PATHS),
        st.integers(0, 3),  # hands: voided hands and resets included; ties are common
        st.sampled_from([-HOUR, -SECOND, 0, 0, SECOND, 2 * HOUR, FAST_PC]),
    ),
    st.tuples(st.just("read"), st.integers(0, 1), st.sampled_from(PATHS)),
    st.tuples(st.just("deliver"), st.integers(0, 30)),
    st.tuples(st.just("tick"), st.integers(1, 20)),
    st.tuples(st.just("restart"), st.integers(0, 1), st.sampled_from([0, SECOND, HOUR])),
    st.tuples(st.just("stop"), st.integers(0, 1)),
)


# two copies with as many hands, the first written by a PC whose clock says 2300
FUTURE_COPY = [("write", PATHS[0], 3, FAST_PC), ("write", PATHS[1], 3, 0)]
# agent 0's clock an hour fast writes a row; a restart steps it back; the file grows
STEPPED_BACK = [
    ("write", PATHS[0], 1, 0),
    ("read", 0, PATHS[0]),
    ("deliver", 0),
    ("restart", 0, HOUR),
    ("write", PATHS[0], 2, 0),
    ("read", 1, PATHS[0]),
    ("deliver", 0),
]


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    offsets=st.tuples(st.integers(-HOUR, HOUR), st.integers(-HOUR, HOUR)),
    history=st.lists(step, min_size=1, max_size=30),
    data=st.data(),
)
def test_the_table_ends_on_the_nas_winner_whatever_the_clocks(
    offsets: tuple[int, int], history: list[tuple[object, ...]], data: st.DataObject
) -> None:
    simulate(offsets, history, lambda n: data.draw(st.integers(0, n - 1)), data.draw)


def test_a_future_mtime_and_a_clock_stepped_back_in_examples() -> None:
    for offsets, history in (((0, 0), FUTURE_COPY), ((HOUR, 0), STEPPED_BACK)):
        for first in (True, False):
            simulate(
                offsets,
                history,
                (lambda n: 0) if first else (lambda n: n - 1),
                lambda strategy: PATHS,
            )


def simulate(
    offsets: tuple[int, int],
    history: list[tuple[object, ...]],
    choose: Callable[[int], int],
    draw: Callable[[st.SearchStrategy[tuple[str, ...]]], tuple[str, ...]],
) -> None:
    """Play `history`, let the living agents catch up; `choose(n)` picks which of n messages
    in flight arrives next."""
    world = World()
    agents = [Agent(world, offsets[0]), Agent(world, offsets[1])]
    for kind, *args in history:
        if kind == "write":
            path, hands, pc_clock = args
            world.write(str(path), int(hands), int(pc_clock))  # type: ignore[call-overload]
        elif kind == "read":
            agent = agents[int(args[0])]  # type: ignore[call-overload]
            if agent.alive:
                agent.read(str(args[1]))
        elif kind == "deliver" and world.in_flight:
            deliver(world, world.in_flight.pop(int(args[0]) % len(world.in_flight)))  # type: ignore[call-overload]
        elif kind == "tick":
            world.now += int(args[0]) * SECOND  # type: ignore[call-overload]
        elif kind == "restart":
            agents[int(args[0])].restart(int(args[1]))  # type: ignore[call-overload]
        elif kind == "stop" and sum(a.alive for a in agents) > 1:
            stopped = agents[int(args[0])]  # type: ignore[call-overload]
            stopped.alive = False
            for message in world.in_flight:
                message.orphan = message.orphan or message.agent is stopped
    if not world.files:
        return
    # the living agents catch up with the NAS and make their reconcile pass; what is in flight
    # arrives in any order, answers and all
    living = [a for a in agents if a.alive]
    for _ in range(2):
        world.now += 10 * SECOND
        for agent in living:
            for path in draw(st.permutations(PATHS)):
                agent.read(path)
        drain(world, choose)
        for agent in living:
            agent.reconcile()
    drain(world, choose)
    assert world.row is not None
    assert world.row.content == expected_winner(world.files)


def drain(world: World, choose: Callable[[int], int]) -> None:
    for _ in range(400):
        if not world.in_flight:
            return
        deliver(world, world.in_flight.pop(choose(len(world.in_flight))))
    raise AssertionError("the exchanges do not settle")


def test_stamps_grow_whatever_the_wall_clock_does() -> None:
    clock = StampClock(floor=5 * HOUR)
    first = clock.issue(HOUR)  # the clock stepped back four hours across a restart
    assert first == 5 * HOUR + 1
    assert clock.issue(HOUR, above=9 * HOUR) == 9 * HOUR + 1  # the table holds a larger one
    assert clock.issue(20 * HOUR) == 20 * HOUR  # the wall clock is ahead again: it leads


def test_after_skip_trusts_only_the_table_or_a_fresh_read() -> None:
    stored = StoredRow(10, "sha-b", "1016/a.json")
    assert after_skip("sha-b", stored, None) is AfterSkip.STORED  # the table holds these bytes
    assert after_skip("sha-a", stored, "sha-a") is AfterSkip.REPLACE  # re-confirmed on the NAS
    assert after_skip("sha-a", stored, "sha-c") is AfterSkip.SUPERSEDED  # the NAS moved on
    assert after_skip("sha-a", stored, None) is AfterSkip.SUPERSEDED  # no copy left


def test_two_agents_an_hour_apart_choose_the_same_copy() -> None:
    """The issue's example: with mtimes straddling the agents' clocks, a clamp to the agent's
    own clock made them choose differently; the NAS's ctime makes the choice the NAS's."""
    n = T0
    early = Copy("1016/a", 3, n + 5 * HOUR, n)  # a PC clock five hours fast, written at n
    late = Copy("1021/a", 3, n + 3 * HOUR, n + SECOND)
    assert winner([early, late]) == winner([late, early]) == late


def test_a_clock_in_2300_never_beats_more_hands_nor_a_later_write() -> None:
    future = Copy("1016/a.json", 5, 10**19, T0)
    assert rank(future)[1] == T0  # clamped to when the NAS wrote it
    assert winner([future, Copy("1021/a.json", 6, T0 - HOUR, T0 - HOUR)]).hand_count == 6
    assert winner([future, Copy("1021/a.json", 5, T0 + SECOND, T0 + SECOND)]).rel_path == (
        "1021/a.json"
    )
