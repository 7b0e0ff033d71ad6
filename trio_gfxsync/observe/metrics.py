"""Prometheus text for /metrics (DESIGN 3.6), built from the agent's status at scrape time.

Counters and gauges are read from `AgentStatus` when scraped, so they can never drift from what
/health and the dashboard say; histograms are the status's own (`observe.histogram`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .alerts import ALERT_NAMES
from .histogram import Histogram
from .pc_state import PC_STATES, is_up
from .status import AgentStatus
from .upstream import Upstream

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(
    family: HistogramMetricFamily, histogram: Histogram, labels: list[str] | None = None
) -> None:
    buckets = [
        ("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in histogram.cumulative()
    ]
    family.add_metric(labels or [], buckets, histogram.sum)


def status_families(s: AgentStatus, now: float | None = None) -> Iterator[Metric]:
    """`now`: the trio clock, for the sync lag (0 without one)."""
    seen = CounterMetricFamily("gfxsync_files_seen", "File versions read", labels=["pc"])
    for pc, n in sorted(s.files_seen.items()):
        seen.add_metric([pc], n)
    yield seen
    upserted = CounterMetricFamily(
        "gfxsync_sessions_upserted", "Records in stored upsert requests", labels=["pc"]
    )
    for pc, n in sorted(s.sessions_upserted.items()):
        upserted.add_metric([pc], n)
    yield upserted
    synced = GaugeMetricFamily(
        "gfxsync_sessions_synced",
        "Sessions whose acknowledged version is stored (not waiting in the queue)",
        labels=["pc"],
    )
    for pc in sorted(set(s.pcs) | set(s.sessions_synced)):
        synced.add_metric([pc], s.sessions_synced.get(pc, 0))
    yield synced
    upload = HistogramMetricFamily("gfxsync_upload_seconds", "Duration of upsert requests")
    _histogram(upload, s.upload_seconds)
    yield upload
    batch = HistogramMetricFamily("gfxsync_batch_records", "Records per stored upsert request")
    _histogram(batch, s.batch_records)
    yield batch
    scan = HistogramMetricFamily(
        "gfxsync_scan_seconds", "Duration of one poll of a PC folder", labels=["pc"]
    )
    for pc, histogram in sorted(s.scan_seconds.by_label.items()):
        _histogram(scan, histogram, [pc])
    yield scan
    counts = s.queue_counts
    yield GaugeMetricFamily(
        "gfxsync_offline_pending", "Sessions in the offline queue", value=counts.pending
    )
    yield GaugeMetricFamily(
        "gfxsync_dead_letters", "Records dead-lettered", value=counts.dead_letters
    )
    yield GaugeMetricFamily(
        "gfxsync_quarantined_files", "Files quarantined", value=counts.quarantined
    )
    yield GaugeMetricFamily(
        "gfxsync_batch_pending", "Records waiting in the batcher", value=s.batch_pending
    )
    yield GaugeMetricFamily(
        "gfxsync_upstream_up",
        "1 when Supabase accepts uploads",
        value=1 if s.upstream == Upstream.CONNECTED else 0,
    )
    pcs_up = GaugeMetricFamily(
        "gfxsync_pc_up", "1 while the PC folder is scanned (state running)", labels=["pc"]
    )
    pcs_state = GaugeMetricFamily(
        "gfxsync_pc_state",
        f"1 for the PC's state ({' < '.join(PC_STATES)}), 0 for the others",
        labels=["pc", "state"],
    )
    for pc_id in sorted(s.pcs):
        # without a clock (a scrape outside trio) a scan cannot be told stale
        state = s.pc_state(pc_id, now if now is not None else -math.inf)
        pcs_up.add_metric([pc_id], 1 if is_up(state) else 0)
        for word in PC_STATES:
            pcs_state.add_metric([pc_id, word], 1 if word == state else 0)
    yield pcs_up
    yield pcs_state
    waiting = GaugeMetricFamily(
        "gfxsync_files_waiting", "Changes seen and not acknowledged yet", labels=["pc"]
    )
    lag = GaugeMetricFamily(
        "gfxsync_sync_lag_seconds",
        "Age of the oldest change not acknowledged yet (0 when caught up)",
        labels=["pc"],
    )
    for pc_id, pc_status in sorted(s.pcs.items()):
        waiting.add_metric([pc_id], pc_status.scan.waiting)
        lag.add_metric([pc_id], 0.0 if now is None else pc_status.scan.sync_lag(now))
    yield waiting
    yield lag
    alerts = GaugeMetricFamily(
        "gfxsync_alert", "1 while the alert is active", labels=["name", "level"]
    )
    active = {a.name for a in s.alerts}
    for name, level in sorted(ALERT_NAMES.items()):
        alerts.add_metric([name, level], 1 if name in active else 0)
    yield alerts
    yield GaugeMetricFamily(
        "gfxsync_uptime_seconds", "Seconds since the agent started", value=s.uptime()
    )


class _StatusCollector(Collector):
    def __init__(self, status: AgentStatus, now: float | None) -> None:
        self.status = status
        self.now = now

    def collect(self) -> Iterator[Metric]:
        return status_families(self.status, self.now)


def render(status: AgentStatus, now: float | None = None) -> bytes:
    """The whole /metrics page (a registry of our own: no process or GC series of the host).
    `now`: the trio clock."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status, now))
    return generate_latest(registry)
