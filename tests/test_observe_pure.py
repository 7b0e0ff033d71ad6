"""The pure parts of `observe` that only the end-to-end tests reached: the health table, the
activity feed, the sync_events buffer, the histograms, the Prometheus page, a stale scan.

No I/O and no clock but the ones passed in, so each rule is checked on its own: a broken row
of a table fails the test named after it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from trio_gfxsync.observe import metrics
from trio_gfxsync.observe.activity import MAX_EVENTS, MINUTES, Activity
from trio_gfxsync.observe.alerts import ALERT_NAMES, CRITICAL, REVIEW, WARN, Alert
from trio_gfxsync.observe.health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    HealthInputs,
    PcHealth,
    assess,
)
from trio_gfxsync.observe.histogram import Histogram
from trio_gfxsync.observe.status import (
    STALE_MIN,
    STALE_POLLS,
    AgentStatus,
    PcStatus,
    ScanStats,
)
from trio_gfxsync.observe.sync_event_buffer import MAX_ERROR_TEXT, MAX_ROWS, SyncEventBuffer
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.state.rows import QueueCounts

SESSION_ID = 638966318331324926  # 18 digits: beyond JavaScript's exact integers

# ---------------------------------------------------------------------------------------------
# health.assess: every row of the table in its docstring
# ---------------------------------------------------------------------------------------------

FLOWING = HealthInputs(
    upstream=Upstream.CONNECTED,
    upstream_reason=None,
    pending=0,
    store_problem=None,
    failure=None,
    registry_error=None,
    pcs=(PcHealth("PC01", "running", None),),
    alerts=(),
)


def test_everything_flowing_is_healthy_with_200_and_no_reasons() -> None:
    health = assess(FLOWING)
    assert (health.status, health.http_code, health.reasons) == (HEALTHY, 200, ())


DEGRADED_ROWS = {
    "upstream offline": (
        replace(FLOWING, upstream=Upstream.OFFLINE, upstream_reason="ConnectError: x", pending=12),
        "supabase unreachable: ConnectError: x; 12 sessions queued",
    ),
    "rate limited": (
        replace(FLOWING, upstream=Upstream.RATE_LIMITED, upstream_reason="HTTP 429"),
        "supabase rate limiting: HTTP 429",
    ),
    "PC folder unreadable": (
        replace(FLOWING, pcs=(PcHealth("PC02", "error", "folder missing"),)),
        "PC PC02: folder missing",
    ),
    "PC scan stale": (
        replace(FLOWING, pcs=(PcHealth("PC03", "running", None, stale_for=42.4),)),
        "PC PC03: no complete scan for 42 s (NAS not answering?)",
    ),
    "sub-folders unreadable": (
        replace(FLOWING, pcs=(PcHealth("PC04", "running", None, unreadable=("1016", "1017")),)),
        "PC PC04: sub-folder(s) unreadable: 1016, 1017",
    ),
    "registry invalid": (
        replace(FLOWING, registry_error="pcs[0]: `id` must be a non-empty string"),
        "registry invalid, last good one kept: pcs[0]: `id` must be a non-empty string",
    ),
    "warn alert": (
        replace(FLOWING, alerts=(Alert("nas_disk_usage", WARN, "NAS disk 91% full"),)),
        "alert nas_disk_usage: NAS disk 91% full",
    ),
    "review alert": (
        replace(FLOWING, alerts=(Alert("dead_letters", REVIEW, "1 dead letter(s)"),)),
        "alert dead_letters: 1 dead letter(s)",
    ),
    "shutting down": (replace(FLOWING, shutting_down=True), "shutting down"),
    "changes not in the table after 2 polls + a flush": (
        replace(
            FLOWING,
            missing_after=9.0,
            pcs=(PcHealth("PC05", "running", None, waiting=3, sync_lag=9.6),),
        ),
        "PC PC05: 3 change(s) not in the table yet, the oldest waiting 10 s",
    ),
    "connected, yet sessions wait in the queue": (
        replace(FLOWING, missing_after=9.0, pending=4, queued_for=30.2),
        "4 session(s) in the offline queue, the oldest for 30 s",
    ),
}


def test_a_live_rewrite_in_flight_is_not_missing_yet() -> None:
    """Health does not flap on every rewrite: a change waiting less than 2 polls + a flush is
    on its way, and a queue drained at once after an outage is not a reason either."""
    waiting = replace(
        FLOWING,
        missing_after=9.0,
        pcs=(PcHealth("PC05", "running", None, waiting=1, sync_lag=8.9),),
    )
    assert assess(waiting).status == HEALTHY
    assert assess(replace(FLOWING, missing_after=9.0, pending=4, queued_for=8.0)).status == HEALTHY
    # no lag at all when nothing waits, whatever the clock says
    assert assess(
        replace(FLOWING, pcs=(PcHealth("PC05", "running", None, waiting=0, sync_lag=99.0),))
    ).status == (HEALTHY)


@pytest.mark.parametrize("row", sorted(DEGRADED_ROWS))
def test_each_degraded_reason_answers_200_with_that_reason(row: str) -> None:
    inputs, reason = DEGRADED_ROWS[row]
    health = assess(inputs)
    assert (health.status, health.http_code, health.reasons) == (DEGRADED, 200, (reason,))


UNHEALTHY_ROWS = {
    "key rejected": (
        replace(FLOWING, upstream=Upstream.REJECTED, upstream_reason="HTTP 401 PGRST301"),
        "supabase rejected the key or a grant is missing: HTTP 401 PGRST301",
    ),
    "schema mismatch": (
        replace(FLOWING, upstream=Upstream.SCHEMA_MISMATCH, upstream_reason="HTTP 400 PGRST204"),
        "gfx_sessions schema mismatch: HTTP 400 PGRST204",
    ),
    "request rejected": (
        replace(FLOWING, upstream=Upstream.REQUEST_REJECTED, upstream_reason="HTTP 405"),
        "supabase refused the upload request: HTTP 405",
    ),
    "queue database unusable": (
        replace(FLOWING, store_problem="queue database full: database or disk is full"),
        "queue database full: database or disk is full",
    ),
    "offline queue full": (
        replace(FLOWING, queue_full=True),
        "offline queue full: intake is paused until it drains",
    ),
    "critical alert": (
        replace(FLOWING, alerts=(Alert("offline_pending", CRITICAL, "5000 sessions queued"),)),
        "alert offline_pending: 5000 sessions queued",
    ),
    "core stage died": (
        replace(FLOWING, failure="RuntimeError: boom"),
        "core stage died: RuntimeError: boom",
    ),
}


@pytest.mark.parametrize("row", sorted(UNHEALTHY_ROWS))
def test_each_unhealthy_reason_answers_503_with_that_reason(row: str) -> None:
    inputs, reason = UNHEALTHY_ROWS[row]
    health = assess(inputs)
    assert (health.status, health.http_code, health.reasons) == (UNHEALTHY, 503, (reason,))


def test_unhealthy_wins_over_degraded_and_every_reason_is_kept_bad_ones_first() -> None:
    inputs = replace(
        FLOWING,
        upstream=Upstream.RATE_LIMITED,
        upstream_reason="HTTP 429",
        queue_full=True,
        failure="ValueError: x",
        shutting_down=True,
        pcs=(PcHealth("PC02", "error", "gone"),),
        alerts=(
            Alert("batch_pending", WARN, "600 waiting"),
            Alert("offline_pending", CRITICAL, "6000 queued"),
        ),
    )
    health = assess(inputs)
    assert health.status == UNHEALTHY and health.http_code == 503
    assert health.reasons == (
        "core stage died: ValueError: x",
        "offline queue full: intake is paused until it drains",
        "alert offline_pending: 6000 queued",
        "supabase rate limiting: HTTP 429",
        "PC PC02: gone",
        "alert batch_pending: 600 waiting",
        "shutting down",
    )


def test_several_degraded_reasons_stay_degraded_and_are_all_named() -> None:
    inputs = replace(
        FLOWING,
        upstream=Upstream.OFFLINE,
        upstream_reason="ConnectError: refused",
        pending=3,
        registry_error="bad json",
        pcs=(PcHealth("PC01", "running", None, stale_for=31.0), PcHealth("PC02", "error", "x")),
    )
    health = assess(inputs)
    assert (health.status, health.http_code) == (DEGRADED, 200)
    assert len(health.reasons) == 4
    assert health.reasons[0].startswith("supabase unreachable")


GOOD_UPSTREAMS = (Upstream.UNKNOWN, Upstream.CONNECTED)
MEH_UPSTREAMS = (Upstream.OFFLINE, Upstream.RATE_LIMITED)
BAD_UPSTREAMS = (Upstream.REJECTED, Upstream.SCHEMA_MISMATCH, Upstream.REQUEST_REJECTED)
text = st.text(max_size=20)
pc_health = st.builds(
    PcHealth,
    id=st.text(min_size=1, max_size=8),
    state=st.sampled_from(["starting", "running", "error"]),
    reason=st.none() | text,
    stale_for=st.none() | st.floats(0, 1e6),
    unreadable=st.lists(st.text(min_size=1, max_size=5), max_size=3).map(tuple),
    waiting=st.integers(0, 3),
    sync_lag=st.floats(0, 100),
    read_hung=st.none() | text,
)
alert = st.builds(
    Alert,
    name=st.sampled_from(sorted(ALERT_NAMES)),
    level=st.sampled_from([WARN, REVIEW, CRITICAL]),
    message=text,
)
health_inputs = st.builds(
    HealthInputs,
    upstream=st.sampled_from(list(Upstream)),
    upstream_reason=st.none() | text,
    pending=st.integers(0, 10**6),
    store_problem=st.none() | text,
    failure=st.none() | text,
    registry_error=st.none() | text,
    pcs=st.lists(pc_health, max_size=4).map(tuple),
    alerts=st.lists(alert, max_size=4).map(tuple),
    shutting_down=st.booleans(),
    queue_full=st.booleans(),
    missing_after=st.floats(0, 100) | st.just(float("inf")),
    queued_for=st.none() | st.floats(0, 100),
)


def expected_reasons(h: HealthInputs) -> tuple[int, int]:
    """(bad, meh): how many reasons of each kind the inputs call for, from the table in
    health.py's docstring and the README, written here apart from `assess`."""
    bad = sum(
        (
            bool(h.failure),
            h.upstream in BAD_UPSTREAMS,
            bool(h.store_problem),
            h.queue_full,
            sum(a.level == CRITICAL for a in h.alerts),
        )
    )
    # records wait in the offline queue longer than a change may take while upstream answers
    queue_waits = (
        h.upstream in GOOD_UPSTREAMS
        and h.pending > 0
        and h.queued_for is not None
        and h.queued_for > h.missing_after
    )
    meh = sum(
        (
            h.upstream in MEH_UPSTREAMS,
            queue_waits,
            bool(h.registry_error),
            sum(a.level != CRITICAL for a in h.alerts),
            h.shutting_down,
        )
    )
    for p in h.pcs:
        meh += p.state == "error" or p.stale_for is not None  # the folder or its scan
        # changes seen longer ago than a change may take, not in the table (a stale scan's
        # figures are its last poll's: the stale scan is the reason then)
        meh += p.stale_for is None and p.waiting > 0 and p.sync_lag > h.missing_after
        meh += p.read_hung is not None and p.read_hung != ""
        meh += bool(p.unreadable)
    return bad, meh


@settings(max_examples=500, deadline=None)
@given(health_inputs)
def test_assess_never_raises_and_gives_one_reason_for_each_input_that_calls_for_one(
    h: HealthInputs,
) -> None:
    health = assess(h)
    bad, meh = expected_reasons(h)
    want = UNHEALTHY if bad else DEGRADED if meh else HEALTHY
    assert health.status == want
    assert health.http_code == (503 if bad else 200)
    assert len(health.reasons) == bad + meh, health.reasons
    assert all(isinstance(r, str) for r in health.reasons)


# ---------------------------------------------------------------------------------------------
# status.PcStatus.stale_for: a hung scan shows in /health without any error being raised
# ---------------------------------------------------------------------------------------------


def running_pc(last_scan_at: float | None) -> PcStatus:
    return PcStatus("PC01", "PC01", state="running", scan=ScanStats(last_scan_at=last_scan_at))


def test_a_pc_is_stale_after_three_polls_or_ten_seconds_whichever_is_longer() -> None:
    assert (STALE_POLLS, STALE_MIN) == (3, 10.0)
    pc = running_pc(last_scan_at=100.0)
    assert pc.stale_for(poll_interval=2.0, now=110.0) is None  # 10 s: not yet past the floor
    assert pc.stale_for(poll_interval=2.0, now=110.5) == pytest.approx(10.5)
    assert pc.stale_for(poll_interval=5.0, now=114.0) is None  # 3 polls = 15 s
    assert pc.stale_for(poll_interval=5.0, now=116.0) == pytest.approx(16.0)
    assert running_pc(last_scan_at=None).stale_for(2.0, now=1e9) is None  # never scanned yet
    starting = replace(pc, state="starting")
    assert starting.stale_for(2.0, now=1e9) is None
    errored = replace(pc, state="error")
    assert errored.stale_for(2.0, now=1e9) is None  # the error itself is the reason shown


def test_a_hung_scan_makes_the_agent_degraded_with_the_pc_named() -> None:
    status = AgentStatus(poll_interval=2.0, upstream=Upstream.CONNECTED)
    status.pcs["PC01"] = running_pc(last_scan_at=1000.0)
    status.pcs["PC02"] = running_pc(last_scan_at=1049.0)
    assert status.health(now=1005.0).status == HEALTHY
    health = status.health(now=1050.0)
    assert health.status == DEGRADED and health.http_code == 200
    assert health.reasons == ("PC PC01: no complete scan for 50 s (NAS not answering?)",)


def test_a_hung_scan_does_not_claim_changes_missing_from_its_last_poll_figures() -> None:
    """The waiting count is the last poll's: changes acknowledged since are not subtracted."""
    hung = PcHealth("PC02", "running", None, stale_for=30.0, waiting=4, sync_lag=30.0)
    health = assess(replace(FLOWING, pcs=(hung,)))
    assert health.reasons == ("PC PC02: no complete scan for 30 s (NAS not answering?)",)


# ---------------------------------------------------------------------------------------------
# activity.Activity: bounded events, sessions per minute over an hour
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_activity_keeps_the_newest_events_newest_first_within_its_bound() -> None:
    clock = FakeClock(1_760_000_000.0)
    activity = Activity(clock)
    for n in range(MAX_EVENTS + 50):
        clock.now += 1
        activity.add("synced", f"event {n}")
    assert len(activity.events) == MAX_EVENTS
    recent = activity.recent(limit=3)
    assert [e["message"] for e in recent] == [f"event {MAX_EVENTS + 49 - i}" for i in range(3)]
    assert len(activity.recent(limit=10_000)) == MAX_EVENTS
    assert activity.recent(limit=MAX_EVENTS)[-1]["message"] == "event 50"  # oldest kept


def test_activity_session_ids_are_strings_and_times_iso_utc() -> None:
    activity = Activity(FakeClock(0.0))
    activity.add("modified", "3 hands", pc_id="PC01", path="1016/a.json", session_id=SESSION_ID)
    activity.add("error", "no id")
    first, second = activity.recent()
    assert second == {
        "ts": "1970-01-01T00:00:00Z",
        "kind": "modified",
        "pc_id": "PC01",
        "path": "1016/a.json",
        "session_id": "638966318331324926",
        "message": "3 hands",
    }
    assert first["session_id"] is None


def test_activity_version_moves_on_every_change() -> None:
    activity = Activity(FakeClock(0.0))
    versions = [activity.version]
    activity.add("synced", "x")
    versions.append(activity.version)
    activity.count_synced(3)
    versions.append(activity.version)
    activity.count_synced(0)
    versions.append(activity.version)
    assert versions == sorted(set(versions)), "strictly increasing"
    activity.throughput()
    activity.recent()
    assert activity.version == versions[-1], "reading is not a change"


def test_throughput_counts_sessions_per_minute_for_the_last_hour_oldest_first() -> None:
    clock = FakeClock(600 * 60 + 5.0)  # minute 600, 5 s in
    activity = Activity(clock)
    activity.count_synced(4)
    clock.now += 30
    activity.count_synced(1)  # the same minute
    clock.now += 60
    activity.count_synced(7)  # minute 601
    series = activity.throughput()
    assert len(series) == MINUTES
    assert series[-1] == {"minute": "1970-01-01T10:01:00Z", "sessions": 7}
    assert series[-2] == {"minute": "1970-01-01T10:00:00Z", "sessions": 5}
    assert sum(int(p["sessions"]) for p in series) == 12
    minutes = [p["minute"] for p in series]
    assert minutes == sorted(minutes)

    clock.now = 600 * 60 + (MINUTES - 1) * 60  # minute 659: minute 600 is the oldest shown
    assert activity.throughput()[0] == {"minute": "1970-01-01T10:00:00Z", "sessions": 5}
    clock.now += 60  # minute 660: minute 600 has left the hour
    assert sum(int(p["sessions"]) for p in activity.throughput()) == 7
    activity.count_synced(1)  # and its bucket is dropped, not kept for ever
    assert 600 not in activity._per_minute
    assert len(activity._per_minute) <= MINUTES


# ---------------------------------------------------------------------------------------------
# sync_event_buffer.SyncEventBuffer
# ---------------------------------------------------------------------------------------------


def test_changes_are_counted_per_pc_and_kind_with_the_path_only_for_a_single_file() -> None:
    buffer = SyncEventBuffer()
    for path in ("1016/a.json", "1016/b.json", "1016/c.json"):
        buffer.note("PC01", "created", path)
    buffer.note("PC01", "modified", "1016/a.json")
    buffer.note("PC02", "created", "1017/z.json")
    rows = buffer.take_rows()
    assert rows == [
        {
            "gfx_pc_id": "PC01",
            "event_type": "created",
            "file_path": None,
            "record_count": 3,
            "error_message": None,
        },
        {
            "gfx_pc_id": "PC01",
            "event_type": "modified",
            "file_path": "1016/a.json",
            "record_count": 1,
            "error_message": None,
        },
        {
            "gfx_pc_id": "PC02",
            "event_type": "created",
            "file_path": "1017/z.json",
            "record_count": 1,
            "error_message": None,
        },
    ]
    assert buffer.take_rows() == [], "taken rows are gone"


def test_errors_are_one_row_each_truncated_and_bounded_with_a_dropped_count() -> None:
    buffer = SyncEventBuffer()
    buffer.note("PC01", "error", "1016/x.json", "y" * (MAX_ERROR_TEXT + 500))
    buffer.note("PC01", "error", "1016/x.json", "again")
    rows = buffer.take_rows()
    assert [(r["event_type"], r["record_count"]) for r in rows] == [("error", 1), ("error", 1)]
    assert rows[0]["error_message"] == "y" * MAX_ERROR_TEXT
    for n in range(MAX_ROWS + 7):
        buffer.note("PC01", "error", f"{n}.json", f"bad {n}")
    assert buffer.dropped == 7
    rows = buffer.take_rows()
    assert len(rows) == MAX_ROWS
    assert rows[0]["file_path"] == "7.json" and rows[-1]["file_path"] == f"{MAX_ROWS + 6}.json"


def test_give_back_keeps_the_newest_rows_first_in_line_and_counts_the_rest() -> None:
    buffer = SyncEventBuffer()
    failed = [{"gfx_pc_id": "PC01", "event_type": "error", "n": n} for n in range(MAX_ROWS + 3)]
    buffer.give_back(failed)
    assert buffer.dropped == 3
    buffer.note("PC01", "created", "new.json")
    rows = buffer.take_rows()
    assert [r.get("n") for r in rows[:2]] == [3, 4]
    assert rows[MAX_ROWS - 1]["n"] == MAX_ROWS + 2
    assert rows[-1]["event_type"] == "created", "what was given back goes before new rows"
    assert len(rows) == MAX_ROWS + 1


note = st.tuples(
    st.sampled_from(["PC01", "PC02"]),
    st.sampled_from(["created", "modified", "error"]),
    st.none() | st.sampled_from(["a.json", "b.json", "1017/c.json"]),
)
step = st.one_of(
    st.tuples(st.just("note"), note),
    st.tuples(st.just("send"), st.booleans()),  # True: the insert is stored; False: it fails
)


def tally(rows: list[dict[str, object]], into: Counter[tuple[str, str]]) -> None:
    for row in rows:
        into[(str(row["gfx_pc_id"]), str(row["event_type"]))] += int(str(row["record_count"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=60))
def test_take_rows_and_give_back_lose_and_duplicate_nothing_below_the_bound(
    steps: list[tuple[str, object]],
) -> None:
    buffer = SyncEventBuffer()
    noted: Counter[tuple[str, str]] = Counter()
    delivered: Counter[tuple[str, str]] = Counter()
    for action, arg in steps:
        if action == "note":
            pc_id, kind, path = arg
            buffer.note(pc_id, kind, path, "why" if kind == "error" else None)
            noted[(pc_id, kind)] += 1
            continue
        rows = buffer.take_rows()
        if arg:
            tally(rows, delivered)
        else:
            buffer.give_back(rows)
    tally(buffer.take_rows(), delivered)
    assert buffer.dropped == 0
    assert delivered == noted


# ---------------------------------------------------------------------------------------------
# histogram.Histogram
# ---------------------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_a_value_on_a_bound_counts_there() -> None:
    histogram = Histogram([5, 1, 2])  # unsorted on purpose
    for value in (0.5, 1, 2, 3, 10):
        histogram.observe(value)
    assert histogram.cumulative() == [(1, 2), (2, 3), (5, 4), (math.inf, 5)]
    assert histogram.count == 5 and histogram.sum == pytest.approx(16.5)


@given(
    buckets=st.lists(st.floats(0, 1e3), min_size=1, max_size=8, unique=True),
    values=st.lists(st.floats(-10, 2e3), max_size=40),
)
def test_histogram_matches_counting_by_hand(buckets: list[float], values: list[float]) -> None:
    histogram = Histogram(buckets)
    for value in values:
        histogram.observe(value)
    cumulative = histogram.cumulative()
    assert cumulative[-1] == (math.inf, len(values))
    for bound, n in cumulative[:-1]:
        assert n == sum(1 for v in values if v <= bound)
    counts = [n for _, n in cumulative]
    assert counts == sorted(counts)
    assert histogram.sum == pytest.approx(sum(values))


# ---------------------------------------------------------------------------------------------
# metrics.render, read back as Prometheus reads it
# ---------------------------------------------------------------------------------------------


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_page_parses_and_says_what_the_status_holds() -> None:
    status = AgentStatus(upstream=Upstream.CONNECTED)
    status.pcs["PC01"] = PcStatus("PC01", "PC01", state="running")
    status.pcs["PC 02"] = PcStatus("PC 02", "PC 02", state="error", reason="gone")
    status.files_seen.update({"PC01": 7, "PC 02": 2})
    status.sessions_upserted.update({"PC01": 5})
    status.sessions_synced = {"PC01": 4}
    status.queue_counts = QueueCounts(
        pending=3, pending_bytes=900, dead_letters=2, quarantined=1, files=9
    )
    status.batch_pending = 6
    status.alerts = [Alert("dead_letters", REVIEW, "2 dead letter(s)")]
    for seconds in (0.05, 0.2, 7.0):
        status.upload_seconds.observe(seconds)
    status.batch_records.observe(3)
    status.scan_seconds.labels("PC01").observe(0.002)
    status.pcs["PC01"].scan.waiting = 2
    status.pcs["PC01"].scan.waiting_since = 100.0

    m = samples(metrics.render(status, now=112.5))
    assert m[("gfxsync_files_waiting", (("pc", "PC01"),))] == 2
    assert m[("gfxsync_sync_lag_seconds", (("pc", "PC01"),))] == 12.5
    assert m[("gfxsync_sync_lag_seconds", (("pc", "PC 02"),))] == 0
    assert m[("gfxsync_files_seen_total", (("pc", "PC01"),))] == 7
    assert m[("gfxsync_files_seen_total", (("pc", "PC 02"),))] == 2
    assert m[("gfxsync_sessions_upserted_total", (("pc", "PC01"),))] == 5
    assert m[("gfxsync_sessions_synced", (("pc", "PC01"),))] == 4
    assert m[("gfxsync_sessions_synced", (("pc", "PC 02"),))] == 0  # a watched PC shows a 0
    assert m[("gfxsync_offline_pending", ())] == 3
    assert m[("gfxsync_dead_letters", ())] == 2
    assert m[("gfxsync_quarantined_files", ())] == 1
    assert m[("gfxsync_batch_pending", ())] == 6
    assert m[("gfxsync_upstream_up", ())] == 1
    assert m[("gfxsync_pc_up", (("pc", "PC01"),))] == 1
    assert m[("gfxsync_pc_up", (("pc", "PC 02"),))] == 0
    for name, level in ALERT_NAMES.items():
        want = 1 if name == "dead_letters" else 0
        assert m[("gfxsync_alert", (("level", level), ("name", name)))] == want
    # histograms: cumulative buckets, +Inf equal to the count, the sum
    assert m[("gfxsync_upload_seconds_bucket", (("le", "0.05"),))] == 1  # on the bound
    assert m[("gfxsync_upload_seconds_bucket", (("le", "0.25"),))] == 2
    assert m[("gfxsync_upload_seconds_bucket", (("le", "5.0"),))] == 2
    assert m[("gfxsync_upload_seconds_bucket", (("le", "10.0"),))] == 3
    assert m[("gfxsync_upload_seconds_bucket", (("le", "+Inf"),))] == 3
    assert m[("gfxsync_upload_seconds_count", ())] == 3
    assert m[("gfxsync_upload_seconds_sum", ())] == pytest.approx(7.25)
    assert m[("gfxsync_batch_records_bucket", (("le", "5.0"),))] == 1
    assert m[("gfxsync_scan_seconds_bucket", (("le", "0.005"), ("pc", "PC01")))] == 1
    assert m[("gfxsync_scan_seconds_count", (("pc", "PC01"),))] == 1

    status.upstream = Upstream.OFFLINE
    assert samples(metrics.render(status))[("gfxsync_upstream_up", ())] == 0
