-- trio-gfxsync, migration 2: keep-newest follows the files (version stamps).
--
-- Apply after 20261126150000_gfx_sync.sql (`supabase db push --workdir deploy` does, in order;
-- `trio-gfxsync schema` prints both). Every statement can run again without error.
--
-- Why: the first rule compared the incoming row with the stored one (more hands, then a newer
-- mtime). No rule on one stored row can follow the files: a hand voided (the same file, one
-- hand fewer) was never stored, and with copies of a session on two paths the final row
-- depended on arrival order. Now the agent chooses, among each path's latest version, the
-- copy the table must hold (for one path its latest content; across paths the most complete),
-- and sends it with `version_stamp`: its clock when it read the file, which only grows as the
-- NAS changes whichever agent reads it. The database keeps the row with the larger stamp, so
-- arrival order, retries, the offline queue and two agents sending at once do not matter.

alter table public.gfx_sessions add column if not exists version_stamp bigint;

comment on column public.gfx_sessions.version_stamp is
    'the agent''s clock (ns since 1970) when it read the file: the larger stamp is kept';

create or replace function public.gfx_sessions_keep_newest()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if new.version_stamp is null then
        -- a row from an agent older than the stamps: it never replaces a stamped row, and
        -- among unstamped rows the first rule holds (more hands, then a newer mtime)
        if old.version_stamp is not null
           or coalesce(new.hand_count, 0) < coalesce(old.hand_count, 0)
           or (coalesce(new.hand_count, 0) = coalesce(old.hand_count, 0)
               and coalesce(new.file_mtime, '-infinity') < coalesce(old.file_mtime, '-infinity'))
        then
            return null;
        end if;
    elsif old.version_stamp is not null and new.version_stamp < old.version_stamp then
        -- an older read of the NAS (a queued record, a slower agent): the stored row stays.
        -- Returning NULL from a BEFORE UPDATE trigger skips the update, also inside
        -- INSERT ... ON CONFLICT DO UPDATE: the upsert answers 2xx and the agent acknowledges
        -- the older copy as superseded.
        return null;
    end if;

    -- The row's identity and first-seen time belong to the stored row, whatever the payload says.
    new.id := old.id;
    new.created_at := old.created_at;
    new.updated_at := now();
    return new;
end;
$$;

comment on function public.gfx_sessions_keep_newest() is
    'trio-gfxsync keep-newest rule 2: the larger version_stamp wins';

create or replace trigger gfx_sessions_keep_newest
    before update on public.gfx_sessions
    for each row
    execute function public.gfx_sessions_keep_newest();

-- What `trio-gfxsync check` asks, through PostgREST, to tell whether this file was applied.
create or replace function public.gfx_sync_schema_version()
returns integer
language sql
stable
set search_path = ''
as $$ select 2 $$;

revoke all on function public.gfx_sync_schema_version() from public, anon, authenticated;
grant execute on function public.gfx_sync_schema_version() to service_role;

notify pgrst, 'reload schema';
