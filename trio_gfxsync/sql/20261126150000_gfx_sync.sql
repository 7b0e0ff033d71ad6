-- trio-gfxsync: tables the agent writes through PostgREST (Supabase).
--
-- Applied as is by `supabase db push --workdir deploy`, pasted into Supabase's SQL editor
-- (`trio-gfxsync schema` prints it), and applied by the tests to a plain PostgreSQL 15 on which
-- Supabase's roles (anon, authenticated, service_role, authenticator) were created first.
-- Every statement can run again without error, so re-applying the file is harmless.

-- ---------------------------------------------------------------------------------------------
-- gfx_sessions: one row per (GFX PC, PokerGFX session), holding the newest version of its file.
-- ---------------------------------------------------------------------------------------------
create table if not exists public.gfx_sessions (
    id                 uuid primary key default gen_random_uuid(),
    -- The PC's id from the registry (its folder name): the same file in two PC folders is two
    -- PCs' data, hence two rows.
    gfx_pc_id          text not null,
    -- PokerGFX's `ID`: .NET ticks, 18 digits, above 2^53 and far above a 32-bit integer.
    session_id         bigint not null,
    -- The same id as text, because JavaScript's JSON.parse rounds 18-digit numbers: a dashboard
    -- or Supabase client in a browser must read session_key, never session_id.
    session_key        text generated always as (session_id::text) stored,
    file_name          text not null,
    -- Relative to the PC's folder.
    file_path          text,
    -- sha256 (hex) of the bytes the agent read and parsed.
    file_hash          text not null,
    file_size          bigint,
    file_mtime         timestamptz,
    raw_json           jsonb not null,
    table_type         text,
    event_title        text,
    software_version   text,
    hand_count         integer default 0,
    -- Distinct non-empty player names over all hands.
    player_count       integer,
    -- PokerGFX writes 7 fractional digits; PostgreSQL keeps microseconds. The exact text stays
    -- in raw_json.
    session_created_at timestamptz,
    sync_source        text default 'nas_central',
    sync_status        text default 'synced',
    created_at         timestamptz default now(),
    updated_at         timestamptz default now(),
    -- The upsert's conflict key: the agent sends ?on_conflict=gfx_pc_id,session_id.
    constraint gfx_sessions_pc_session_key unique (gfx_pc_id, session_id)
);

comment on column public.gfx_sessions.session_key is
    'session_id as text: JavaScript rounds 18-digit numbers, so browsers must read this column';

-- Keep-newest rule. PokerGFX rewrites a session's file after every hand, and the agent may read an
-- early copy after a later one (backfill order, two copies on the NAS, a retry from the offline
-- queue). Deciding in the database makes arrival order irrelevant: an incoming row that is older
-- than the stored one (fewer hands; on equal hands, an older file mtime) is skipped.
-- Returning NULL from a BEFORE UPDATE row trigger skips that row's update, which is also what
-- happens inside INSERT ... ON CONFLICT DO UPDATE (PostgREST's upsert): the statement succeeds
-- and the stored row stays untouched, so the agent sees a 2xx and acknowledges the older copy
-- as superseded.
create or replace function public.gfx_sessions_keep_newest()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    -- A missing hand count counts as none, and a missing mtime as older than any known one,
    -- so a row that knows less never replaces one that knows more.
    if coalesce(new.hand_count, 0) < coalesce(old.hand_count, 0)
       or (coalesce(new.hand_count, 0) = coalesce(old.hand_count, 0)
           and coalesce(new.file_mtime, '-infinity') < coalesce(old.file_mtime, '-infinity'))
    then
        return null;
    end if;

    -- The row's identity and first-seen time belong to the stored row, whatever the payload says.
    new.id := old.id;
    new.created_at := old.created_at;
    new.updated_at := now();
    return new;
end;
$$;

create or replace trigger gfx_sessions_keep_newest
    before update on public.gfx_sessions
    for each row
    execute function public.gfx_sessions_keep_newest();

-- ---------------------------------------------------------------------------------------------
-- sync_events: a short activity log for dashboards (Supabase Realtime can stream it).
-- ---------------------------------------------------------------------------------------------
create table if not exists public.sync_events (
    id            bigserial primary key,
    gfx_pc_id     text not null,
    event_type    text not null check (event_type in ('created', 'modified', 'error')),
    file_path     text,
    record_count  integer default 1,
    error_message text,
    created_at    timestamptz default now()
);

-- Per-PC history, newest first, and pc_status's error count.
create index if not exists sync_events_pc_created_idx
    on public.sync_events (gfx_pc_id, created_at);

-- The publication exists on Supabase only; on a plain PostgreSQL this block does nothing.
-- Adding a table twice is an error, and a FOR ALL TABLES publication already holds it.
do $$
begin
    if exists (select 1 from pg_catalog.pg_publication
               where pubname = 'supabase_realtime' and not puballtables)
       and not exists (select 1 from pg_catalog.pg_publication_tables
                       where pubname = 'supabase_realtime'
                         and schemaname = 'public' and tablename = 'sync_events')
    then
        alter publication supabase_realtime add table public.sync_events;
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- pc_status: one line per PC for operators.
-- security_invoker makes the view check the caller's privileges and RLS on the tables beneath;
-- without it a view runs as its owner (postgres) and would bypass RLS for anyone allowed to
-- read the view.
-- ---------------------------------------------------------------------------------------------
create or replace view public.pc_status
with (security_invoker = on)
as
with sessions as (
    select gfx_pc_id, count(*) as total_files, max(updated_at) as last_sync
    from public.gfx_sessions
    group by gfx_pc_id
), errors as (
    select gfx_pc_id, count(*) as error_count
    from public.sync_events
    where event_type = 'error'
    group by gfx_pc_id
)
-- A PC that has only reported errors (nothing synced yet) still gets a line.
select coalesce(s.gfx_pc_id, e.gfx_pc_id) as gfx_pc_id,
       coalesce(s.total_files, 0)         as total_files,
       s.last_sync                        as last_sync,
       coalesce(e.error_count, 0)         as error_count
from sessions s
full outer join errors e on e.gfx_pc_id = s.gfx_pc_id;

-- ---------------------------------------------------------------------------------------------
-- Access. RLS is on with no policies: only roles that bypass RLS (service_role, which the agent's
-- secret key maps to) see rows. Supabase's default privileges grant anon and authenticated
-- everything on new tables; revoking makes a browser key's read fail loudly (42501) instead of
-- returning an empty list, and keeps raw_json private even if a policy is added by mistake.
-- The GRANTs to service_role are explicit because a missing one answers 401/403 with code 42501,
-- which looks exactly like a rejected key.
-- ---------------------------------------------------------------------------------------------
alter table public.gfx_sessions enable row level security;
alter table public.sync_events enable row level security;

revoke all on public.gfx_sessions, public.sync_events, public.pc_status from anon, authenticated;
revoke all on sequence public.sync_events_id_seq from anon, authenticated;

grant usage on schema public to service_role;
grant select, insert, update, delete on public.gfx_sessions to service_role;
grant select, insert on public.sync_events to service_role;
grant usage, select on sequence public.sync_events_id_seq to service_role;
grant select on public.pc_status to service_role;

-- PostgREST caches the schema: tell it to reload, or it answers PGRST204/PGRST205 for the new
-- table and columns until it restarts.
notify pgrst, 'reload schema';
