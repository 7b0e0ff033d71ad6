"""Observe: what the agent knows about itself, for /health, /metrics and the dashboard.

    status      `AgentStatus`: plain in-memory data the stages write (one trio thread)
    upstream    the upstream states, one StrEnum
    health      (pure) the status in one word with its reasons, and the HTTP code
    alerts      (pure) the monitoring table's thresholds -> active alerts
    activity    (pure) recent events and sessions per minute
    histogram   (pure) bucketed durations and sizes, rendered by `metrics`
    metrics     the Prometheus text of /metrics, built from the status at scrape time
    monitor     refreshes store figures, disk and memory, alerts; logs health changes
    sync_event_buffer (pure) rows for the target's sync_events table
    fleet_report (pure) what a heartbeat tells the fleet (a row of gfx_agents)
    heartbeat   upserts that row every GFX_SYNC_HEARTBEAT_INTERVAL, when the gate is idle

Nothing here imports the web side: `web/` reads `AgentStatus`, never the other way.
"""
