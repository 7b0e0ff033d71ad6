"""Delivery: from `SessionRecord`s to rows the target has stored.

    batching    (pure) what goes into the next upsert and when it is due; de-duplication
    batcher     the stage: linger, size, bytes and flush_interval; spills to the queue
    uploader    one `Delivery` executor that carries out the error policy's decisions
    drainer     probes a missing target and re-sends the offline queue when it is back
    gate        the one upstream gate: one request in flight, one Retry-After for all
    sync_events best-effort activity rows for the target's `sync_events` table

The error policy itself is `trio_gfxsync.policy` (pure): delivery decides nothing on its own.
"""
