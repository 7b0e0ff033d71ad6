"""Prometheus metrics (DESIGN 3.6) in a registry of the agent's own.

Histograms are observed as things happen; counters and gauges are read from the agent's status
at scrape time by a collector, so they can never drift from what /health and the dashboard say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..alerts import ALERT_NAMES

if TYPE_CHECKING:
    from ..status import AgentStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.upload_seconds = Histogram(
            "gfxsync_upload_seconds",
            "Duration of upsert requests to PostgREST",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.batch_records = Histogram(
            "gfxsync_batch_records",
            "Records per stored upsert request",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=self.registry,
        )
        self.scan_seconds = Histogram(
            "gfxsync_scan_seconds",
            "Duration of one poll of a PC folder",
            ["pc"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def attach(self, status: AgentStatus) -> None:
        self.registry.register(_StatusCollector(status))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatusCollector(Collector):
    def __init__(self, status: AgentStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status
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
            value=1 if s.upstream == "connected" else 0,
        )
        pcs_up = GaugeMetricFamily(
            "gfxsync_pc_up", "1 when the PC folder is scanned", labels=["pc"]
        )
        for pc_id, pc in sorted(s.pcs.items()):
            pcs_up.add_metric([pc_id], 1 if pc.state == "running" else 0)
        yield pcs_up
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
