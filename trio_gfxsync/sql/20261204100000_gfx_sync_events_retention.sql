-- trio-gfxsync, migration 3: sync_events keeps a bounded history.
--
-- Apply after 20261202100000_gfx_sync_keep_newest.sql (`supabase db push --workdir deploy`
-- does, in order; `trio-gfxsync schema` prints every one). Every statement can run again.
--
-- Why: sync_events grows by a row per change, for ever (a season of live tables is millions
-- of rows). The agent deletes rows older than GFX_SYNC_SYNC_EVENTS_RETENTION_DAYS (30) once a
-- day, a few hundred at a time, so a delete never holds a long lock. Without this grant the
-- agent only logs that it could not (it never pauses uploads for it).

grant delete on public.sync_events to service_role;

-- The delete finds its rows by age across every PC.
create index if not exists sync_events_created_idx on public.sync_events (created_at);
