"""One vocabulary: a PC's states in order of severity, and /health's reason codes.

Pure: the states and codes are functions of their inputs; every code `assess` can give is
one of docs/troubleshooting.md's table, and each reason has exactly one code beside it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from trio_gfxsync.observe import metrics
from trio_gfxsync.observe.alerts import ALERT_NAMES, CRITICAL, REVIEW, WARN, Alert
from trio_gfxsync.observe.health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    HealthInputs,
    NothingWatched,
    PcHealth,
    assess,
)
from trio_gfxsync.observe.pc_state import (
    ERROR,
    HUNG,
    MISSING,
    PC_STATES,
    RUNNING,
    STALE,
    STARTING,
    is_up,
    pc_state,
    worst,
)
from trio_gfxsync.observe.status import AgentStatus, PcStatus, ScanStats
from trio_gfxsync.observe.upstream import Upstream
from trio_gfxsync.settings import Settings
from trio_gfxsync.web.documents import health_document, status_document

ROOT = Path(__file__).resolve().parents[1]

FLOWING = HealthInputs(
    upstream=Upstream.CONNECTED,
    upstream_reason=None,
    pending=0,
    store_problem=None,
    failure=None,
    registry_error=None,
    pcs=(PcHealth("PC01", RUNNING, None),),
    alerts=(),
)


def test_the_states_in_order_of_severity() -> None:
    assert PC_STATES == ("starting", "running", "stale", "hung", "missing", "error")
    assert worst([RUNNING, MISSING, STALE]) == MISSING
    assert worst([ERROR, MISSING]) == ERROR
    assert worst([]) is None
    assert [s for s in PC_STATES if is_up(s)] == [RUNNING]


def test_the_scanners_words_and_the_clock_make_one_state() -> None:
    assert pc_state("starting") == STARTING
    assert pc_state("running") == RUNNING
    assert pc_state("running", stale=True) == STALE
    assert pc_state("running", stale=True, hung=True) == HUNG
    assert pc_state("starting", hung=True) == HUNG
    assert pc_state("error") == ERROR
    assert pc_state("error", missing=True) == MISSING
    assert pc_state("starting", stale=True) == STARTING  # never scanned: not overdue


def test_a_pc_status_shows_missing_stale_and_hung() -> None:
    scanned = ScanStats(last_scan_at=100.0)
    assert PcStatus("A", "A", state="running", scan=scanned).shown(2.0, 105.0) == RUNNING
    assert PcStatus("A", "A", state="running", scan=scanned).shown(2.0, 200.0) == STALE
    hung = PcStatus("A", "A", state="running", scan=scanned, read_hung="read of x hung")
    assert hung.shown(2.0, 105.0) == HUNG
    assert PcStatus("A", "A", state="error", missing=True).shown(2.0, 0.0) == MISSING


# one reason, one code: each row of the doc's table
CODED = {
    "core_failed": replace(FLOWING, failure="batcher: boom"),
    "upstream_rejected": replace(FLOWING, upstream=Upstream.REJECTED, upstream_reason="401"),
    "schema_mismatch": replace(FLOWING, upstream=Upstream.SCHEMA_MISMATCH),
    "upstream_request_rejected": replace(FLOWING, upstream=Upstream.REQUEST_REJECTED),
    "upstream_unreachable": replace(FLOWING, upstream=Upstream.OFFLINE, pending=3),
    "upstream_rate_limited": replace(FLOWING, upstream=Upstream.RATE_LIMITED),
    "offline_queue_waiting": replace(FLOWING, pending=3, queued_for=60.0, missing_after=9.0),
    "offline_queue_full": replace(FLOWING, queue_full=True),
    "disk_full": replace(FLOWING, store_problem="queue database not writable: SQLITE_FULL"),
    "queue_db_locked": replace(
        FLOWING, store_problem="queue database locked: x", store_problem_code="queue_db_locked"
    ),
    "registry_invalid": replace(FLOWING, registry_error="not valid JSON"),
    "registry_missing": replace(FLOWING, registry_missing="registry gone, last good one kept"),
    "shutting_down": replace(FLOWING, shutting_down=True),
    "pc_error:PC01": replace(FLOWING, pcs=(PcHealth("PC01", ERROR, "Permission denied"),)),
    "pc_missing:PC01": replace(FLOWING, pcs=(PcHealth("PC01", MISSING, "not found"),)),
    "pc_stale:PC01": replace(FLOWING, pcs=(PcHealth("PC01", STALE, None, stale_for=30.0),)),
    "pc_hung:PC01": replace(FLOWING, pcs=(PcHealth("PC01", HUNG, None, read_hung="a read"),)),
    "pc_unreadable:PC01": replace(
        FLOWING, pcs=(PcHealth("PC01", RUNNING, None, unreadable=("day1",)),)
    ),
    "sync_lag:PC01": replace(
        FLOWING,
        missing_after=9.0,
        pcs=(PcHealth("PC01", RUNNING, None, waiting=2, sync_lag=60.0),),
    ),
    "offline_queue_critical": replace(
        FLOWING, alerts=(Alert("offline_pending", CRITICAL, "5000 pending"),)
    ),
    "alert:watch_path_missing": replace(
        FLOWING, alerts=(Alert("watch_path_missing", WARN, "PC01"),)
    ),
    "no_pc_watched": replace(
        FLOWING, pcs=(), nothing_watched=NothingWatched("/app/data", base_empty=True)
    ),
}


def test_each_reason_has_its_one_stable_code() -> None:
    for code, inputs in CODED.items():
        health = assess(inputs)
        assert health.reason_codes == (code,), code
        assert len(health.reasons) == 1, code


def test_nothing_watched_is_unhealthy_on_an_empty_base_and_degraded_with_folders() -> None:
    empty = assess(CODED["no_pc_watched"])
    assert empty.status == UNHEALTHY and empty.http_code == 503
    assert "/app/data" in empty.reasons[0]
    nothing = NothingWatched("/app/data", base_empty=False, detail="3 folder(s), no PC enabled")
    some = assess(replace(FLOWING, pcs=(), nothing_watched=nothing))
    assert (some.status, some.reason_codes) == (DEGRADED, ("no_pc_watched",))
    assert "3 folder(s), no PC enabled" in some.reasons[0]
    # a PC listed (even a missing one) is not "nothing watched": its own code says what is wrong
    listed = assess(replace(CODED["pc_missing:PC01"], nothing_watched=nothing))
    assert listed.reason_codes == ("pc_missing:PC01",)


def _documented_codes() -> set[str]:
    """The codes in the first column of docs/troubleshooting.md's table (`<id>` and `<name>`
    kept as they are spelled there)."""
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    return {code for row in rows for code in re.findall(r"`([a-z_]+(?::<[a-z]+>)?)`", row)}


def _as_documented(code: str) -> str:
    prefix, sep, _rest = code.partition(":")
    if not sep:
        return code
    return f"{prefix}:<name>" if prefix == "alert" else f"{prefix}:<id>"


def test_every_code_is_in_the_troubleshooting_table() -> None:
    documented = _documented_codes()
    assert "no_pc_watched" in documented  # the parse found the table
    for code in CODED:
        assert _as_documented(code) in documented, code


pc_health = st.builds(
    PcHealth,
    id=st.sampled_from(["PC01", "PC 02", "table-GG"]),
    state=st.sampled_from(PC_STATES),
    reason=st.none() | st.text(max_size=10),
    stale_for=st.none() | st.floats(0, 1e6),
    unreadable=st.lists(st.text(min_size=1, max_size=5), max_size=2).map(tuple),
    waiting=st.integers(0, 5),
    sync_lag=st.floats(0, 1e3),
    read_hung=st.none() | st.text(min_size=1, max_size=10),
)
health_inputs = st.builds(
    HealthInputs,
    upstream=st.sampled_from(list(Upstream)),
    upstream_reason=st.none() | st.text(max_size=10),
    pending=st.integers(0, 10),
    store_problem=st.none() | st.text(min_size=1, max_size=10),
    failure=st.none() | st.text(min_size=1, max_size=10),
    registry_error=st.none() | st.text(min_size=1, max_size=10),
    pcs=st.lists(pc_health, max_size=3, unique_by=lambda p: p.id).map(tuple),
    alerts=st.lists(
        st.builds(
            Alert,
            name=st.sampled_from(sorted(ALERT_NAMES)),
            level=st.sampled_from([WARN, REVIEW, CRITICAL]),
            message=st.text(max_size=10),
        ),
        max_size=3,
        unique_by=lambda a: a.name,
    ).map(tuple),
    shutting_down=st.booleans(),
    queue_full=st.booleans(),
    queued_for=st.none() | st.floats(0, 1e3),
    missing_after=st.floats(1, 100),
    registry_missing=st.none() | st.text(min_size=1, max_size=10),
    nothing_watched=st.none()
    | st.builds(NothingWatched, where=st.just("/app/data"), base_empty=st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(health_inputs)
def test_codes_pair_with_reasons_and_are_documented(h: HealthInputs) -> None:
    health = assess(h)
    assert len(health.reason_codes) == len(health.reasons)
    assert len(set(health.reason_codes)) == len(health.reason_codes)  # one per reason
    documented = _documented_codes()
    assert all(_as_documented(code) in documented for code in health.reason_codes)
    assert (health.status == HEALTHY) == (health.reason_codes == ())


def test_status_metrics_and_health_speak_the_same_words() -> None:
    status = AgentStatus(poll_interval=2.0, upstream=Upstream.CONNECTED)
    status.pcs["PC01"] = PcStatus("PC01", "PC01", state="running", scan=ScanStats(last_scan_at=0))
    status.pcs["PC02"] = PcStatus("PC02", "PC02", state="error", missing=True, reason="gone")
    status.pcs["PC03"] = PcStatus("PC03", "PC03", state="running", scan=ScanStats(last_scan_at=0))
    status.pcs["PC03"].read_hung = "a read of x.json hung"
    status.pcs["PC04"] = PcStatus("PC04", "PC04", state="running", scan=ScanStats(last_scan_at=0))
    now = 1.0
    status.pcs["PC04"].scan.last_scan_at = now - 100
    want = {"PC01": RUNNING, "PC02": MISSING, "PC03": HUNG, "PC04": STALE}

    document = status_document(status, _settings(), now)
    assert {pc["id"]: pc["state"] for pc in document["pcs"]} == want
    health, code = health_document(status, now)
    assert code == 200 and health["status"] == DEGRADED
    assert health["watched_pcs"] == ["PC01", "PC02", "PC03", "PC04"]
    assert health["reason_codes"] == ["pc_missing:PC02", "pc_hung:PC03", "pc_stale:PC04"]
    assert document["reason_codes"] == health["reason_codes"]

    families = {
        f.name: f for f in text_string_to_metric_families(metrics.render(status, now).decode())
    }
    up = {s.labels["pc"]: s.value for s in families["gfxsync_pc_up"].samples}
    assert up == {"PC01": 1, "PC02": 0, "PC03": 0, "PC04": 0}
    states = {
        s.labels["pc"]: s.labels["state"]
        for s in families["gfxsync_pc_state"].samples
        if s.value == 1
    }
    assert states == want
    assert len(families["gfxsync_pc_state"].samples) == 4 * len(PC_STATES)


def _settings() -> Settings:
    return Settings(supabase_url="http://127.0.0.1:9", supabase_secret_key="k" * 40, _env_file=None)
