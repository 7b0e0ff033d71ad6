"""keep_newest.py as a protocol: random histories of writes to several paths holding one
session, read by two agents in any interleaving, their upserts arriving in any order.

The model follows the reader (intake/reader.py): each read records that path's latest copy;
the winner among the agent's copies is sent with the read's stamp when it is the path just read,
and re-sent with a fresh stamp when the path just read held the lead and lost it (a voided
hand, a reset). The database keeps the larger stamp (`stored_row_wins`, the trigger's rule).
An agent reads a path only when it changed since it last looked (as the scanner does). Once
both have caught up with the last write, the row must be the winner among the files as they
are, whatever the order the upserts arrived in."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gfxsync.keep_newest import Copy, rank, stored_row_wins, winner

PATHS = ("1016/a.json", "1017/a.json", "1021/a.json")
NOW = 10**18  # every mtime below is in the past of the agents' clock


@dataclass
class Agent:
    copies: dict[str, Copy] = field(default_factory=dict)
    sent: list[tuple[int, Copy]] = field(default_factory=list)  # (stamp, content)

    def read(self, path: str, content: Copy, stamp: int) -> None:
        previous = self.copies.get(path)
        self.copies[path] = content
        best = winner(self.copies.values(), NOW)
        if best.rel_path == path:
            self.sent.append((stamp, content))
        elif previous is not None and rank(previous, NOW) >= rank(best, NOW):
            self.sent.append((stamp, best))  # this path held the lead: the new winner again


def apply(messages: list[tuple[int, Copy]]) -> Copy | None:
    row: tuple[int, Copy] | None = None
    for stamp, content in messages:
        if row is None or not stored_row_wins(row[0], stamp):
            row = (stamp, content)
    return None if row is None else row[1]


write = st.tuples(st.sampled_from(PATHS), st.integers(min_value=0, max_value=8))
step = st.one_of(
    st.tuples(st.just("write"), write),
    st.tuples(st.just("read"), st.tuples(st.integers(0, 1), st.sampled_from(PATHS))),
)


@settings(max_examples=400, deadline=None)
@given(
    history=st.lists(step, min_size=1, max_size=14),
    final_orders=st.tuples(st.permutations(PATHS), st.permutations(PATHS)),
    arrival=st.randoms(use_true_random=False),
)
def test_the_row_is_the_winner_of_the_files_in_any_arrival_order(
    history: list, final_orders: tuple, arrival
) -> None:
    files: dict[str, Copy] = {}
    agents = (Agent(), Agent())
    clock = itertools.count(1)
    for kind, (a, b) in history:
        t = next(clock)
        if kind == "write":
            files[a] = Copy(a, b, t)  # hands b, mtime t (a rewrite is newer than what it replaced)
        elif b in files and agents[a].copies.get(b) != files[b]:
            agents[a].read(b, files[b], t)  # a poll that saw this path change
    if not files:
        return
    # the agents catch up: each reads what changed since it last looked, nothing else
    for agent, order in zip(agents, final_orders, strict=True):
        for path in order:
            if path in files and agent.copies.get(path) != files[path]:
                agent.read(path, files[path], next(clock))
    expected = winner(files.values(), NOW)
    messages = agents[0].sent + agents[1].sent
    for _ in range(4):
        arrival.shuffle(messages)
        assert apply(messages) == expected


def test_the_issue_example_ends_on_one_row_in_every_order() -> None:
    """A6 on path A, then B130 and B5 on path B: a pairwise rule ends on three rows."""
    a6, b130, b5 = Copy("A", 6, 1), Copy("B", 130, 2), Copy("B", 5, 3)
    for order in itertools.permutations([a6, b130, b5]):
        agent = Agent()
        latest: dict[str, Copy] = {}
        for stamp, copy in enumerate(order, start=1):
            # a copy read later than a newer one of its path is the file as it was: skipped
            if copy.rel_path in latest and latest[copy.rel_path].mtime_ns > copy.mtime_ns:
                continue
            latest[copy.rel_path] = copy
            agent.read(copy.rel_path, copy, stamp)
        # the files as they are: A6 and B5; the most complete is A6
        assert apply(agent.sent) == a6, order


def test_a_clock_in_2300_ranks_as_now_and_never_beats_more_hands() -> None:
    future = Copy("1016/a.json", 5, NOW * 10)
    assert rank(future, NOW)[1] == NOW  # clamped to the agent's clock
    assert winner([future, Copy("1021/a.json", 6, NOW - 10**12)], NOW).hand_count == 6
