"""reconciliation.plan: what the table lacks, as properties over random NAS states and tables."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gfxsync.reconciliation import AckedCopy, plan
from trio_gfxsync.records import make_stat, stat_fields

NOW = 10**18
PATHS = ("1016/a.json", "1017/a.json", "1021/a.json")

copies_strategy = st.lists(
    st.builds(
        lambda session, path, hands, mtime, ctime, content: AckedCopy(
            session, path, hands, make_stat(100 + hands, mtime, ctime, 1), f"sha-{content}"
        ),
        st.integers(1, 6),
        st.sampled_from(PATHS),
        st.integers(0, 3),
        # PC clocks: equal mtimes, some far in the future (a clock in 2300)
        st.sampled_from([NOW - 5, NOW, NOW, NOW + 3, 10**19]),
        st.integers(NOW - 10, NOW),  # the NAS's clock when it wrote the file
        st.integers(0, 3),
    ),
    max_size=14,
).map(lambda cs: list({(c.session_id, c.rel_path): c for c in cs}.values()))  # one per path


def winners(copies: list[AckedCopy]) -> dict[int, AckedCopy]:
    """The oracle, written apart from keep_newest: most hands, then the later of mtime and
    the NAS's ctime (whichever is earlier: no PC clock pushes it ahead), then the path."""
    chosen: dict[int, AckedCopy] = {}
    for c in copies:
        _, mtime, ctime, _ = stat_fields(c.stat)
        key = (c.hand_count, min(mtime, ctime), c.rel_path)
        best = chosen.get(c.session_id)
        if best is None:
            chosen[c.session_id] = c
            continue
        _, best_mtime, best_ctime, _ = stat_fields(best.stat)
        if key > (best.hand_count, min(best_mtime, best_ctime), best.rel_path):
            chosen[c.session_id] = c
    return chosen


@given(
    copies=copies_strategy,
    table=st.dictionaries(
        st.integers(0, 8), st.one_of(st.none(), st.sampled_from(["sha-0", "sha-1", "sha-2", "x"]))
    ),
    busy=st.sets(st.integers(0, 8)),
    seed=st.integers(),
)
def test_plan_names_exactly_what_the_table_lacks(
    copies: list[AckedCopy], table: dict[int, str | None], busy: set[int], seed: int
) -> None:
    found = plan("PC01", copies, table, busy)
    want = winners(copies)
    named = {r.session_id: r for r in found.resend}
    for session_id, best in want.items():
        held = table.get(session_id, "absent")
        if held == best.sha256:
            assert session_id not in named, "a row that holds the winner is not sent again"
        elif session_id in busy:
            assert session_id not in named, "a session with a waiting record is left to it"
        else:
            resend = named[session_id]
            assert (resend.rel_path, resend.sha256, resend.stat) == (
                best.rel_path,
                best.sha256,
                best.stat,
            )
            assert resend.reason == ("different" if session_id in table else "missing")
    # never anything the NAS does not hold: a row without files is left alone, never deleted
    assert set(named) <= set(want)
    assert found.on_nas == len(want) and found.in_table == len(table)
    assert found.missing + found.different == len(found.resend)
    # the order the store lists the copies in does not matter
    shuffled = list(copies)
    random.Random(seed).shuffle(shuffled)
    assert plan("PC01", shuffled, table, busy) == found
    # sending what it names converges: the next pass finds nothing
    healed = dict(table) | {r.session_id: r.sha256 for r in found.resend}
    assert plan("PC01", copies, healed, busy).resend == ()


def test_a_deleted_row_and_a_restored_old_version() -> None:
    copies = [
        AckedCopy(7, "1016/s7.json", 6, make_stat(10, 5, 5, 1), "early"),
        AckedCopy(7, "1021/s7.json", 130, make_stat(99, 9, 9, 2), "late"),  # the most complete wins
        AckedCopy(8, "1021/s8.json", 3, make_stat(30, 4, 4, 3), "s8"),
        AckedCopy(9, "1021/s9.json", 3, make_stat(30, 4, 4, 4), "s9"),
    ]
    # 7 restored to its early copy, 8 deleted by hand, 9 as it should be, 42 without files
    found = plan("PC01", copies, {7: "early", 9: "s9", 42: "gone"}, set())
    assert [(r.session_id, r.rel_path, r.reason) for r in found.resend] == [
        (7, "1021/s7.json", "different"),
        (8, "1021/s8.json", "missing"),
    ]
    assert (found.on_nas, found.in_table, found.missing, found.different) == (3, 3, 1, 1)


HOUR = 3600 * 10**9
# a write: (path, session, hands, the writing PC's clock minus the NAS's)
writes_strategy = st.lists(
    st.tuples(
        st.sampled_from(PATHS),
        st.integers(1, 3),
        st.integers(0, 3),
        st.sampled_from([-HOUR, -1, 0, 0, 10**9, 2 * HOUR, 10**19 - NOW]),
    ),
    min_size=1,
    max_size=20,
)


def acked_after(writes: list[tuple[str, int, int, int]]) -> list[AckedCopy]:
    """The NAS after `writes`, as an agent that caught up with it acknowledged it: the NAS's
    clock (ctime) steps on with every write; each PC's clock says what it likes, often the
    same mtime twice, sometimes 2300."""
    files: dict[str, AckedCopy] = {}
    for n, (path, session, hands, skew) in enumerate(writes):
        ctime = NOW + n
        stat = make_stat(100 + hands, ctime + skew, ctime, 1 + n)
        files[path] = AckedCopy(session, path, hands, stat, f"sha-{n}")
    return list(files.values())


@settings(deadline=None)  # pure and fast; a loaded machine must not make it flaky
@given(writes=writes_strategy, stop_at=st.integers(0, 20), seed=st.integers())
def test_two_agents_one_stopped_and_the_table_ends_on_the_nas_winner(
    writes: list[tuple[str, int, int, int]], stop_at: int, seed: int
) -> None:
    """An HA pair: the first agent stops after `stop_at` writes (its table rows are the
    winners of what it had seen), the second carries on. The second's pass heals the table
    to the NAS's winners as the oracle above defines them, whatever the first left there;
    had the first seen every write too, the two would name the same resends."""
    stopped = acked_after(writes[:stop_at])
    living = acked_after(writes)
    random.Random(seed).shuffle(living)  # learned in another order, at other times
    table: dict[int, str | None] = {s: c.sha256 for s, c in winners(stopped).items()}
    found = plan("PC01", living, table, set())
    healed = table | {r.session_id: r.sha256 for r in found.resend}
    want = winners(living)
    assert {s: healed[s] for s in want} == {s: c.sha256 for s, c in want.items()}
    if stop_at >= len(writes):
        assert plan("PC01", acked_after(writes), table, set()) == found
