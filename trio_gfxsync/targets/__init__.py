"""Targets: where stored rows end up, behind one small `Target` protocol (`targets.base`).

    base       the protocol the uploader, drainer and sync_events reporter talk to
    postgrest  Supabase's PostgREST over one httpx.AsyncClient

A target raises `UpstreamError` carrying the policy's `Verdict` for every failure; what to do
about it is decided in `trio_gfxsync.policy`, never here.
"""
