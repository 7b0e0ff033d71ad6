-- trio-gfxsync, migration 4: every venue from anywhere (issue 25).
--
-- Apply after the earlier gfx_sync files (`supabase db push --workdir deploy` does, in order;
-- `trio-gfxsync schema` prints every one). Every statement can run again without error.
--
--   gfx_agents          one row per agent, upserted by its heartbeat (GFX_SYNC_VENUE set, every
--                       GFX_SYNC_HEARTBEAT_INTERVAL s); last_seen is the database's clock
--   gfx_fleet           one line per agent: online, stale after 3 of its intervals without a
--                       heartbeat, offline after 6; its worst PC state; PCs claimed by two venues
--   gfx_fleet_check()   records agent_offline / agent_online in sync_events, each transition
--                       once whoever calls it (every agent does after its heartbeat; pg_cron may)
--   gfx_fleet_forget()  removes an agent that is gone for good
--
-- Who reads it: signed-in users whose JWT holds app_metadata.gfx_access `ops` or `live` read
-- gfx_fleet, gfx_agents, sync_events, pc_status and gfx_sessions without raw_json; anon and any
-- other account read nothing of them; raw_json stays with the service role.

-- ---------------------------------------------------------------------------------------------
-- The claim (the same function as in 20261205110000_gfx_hands_delay.sql, which the optional
-- hand tables install; defined here too so that the fleet works without them).
-- ---------------------------------------------------------------------------------------------
create or replace function public.gfx_access()
returns text
language sql
stable
set search_path = ''
as $$
    select nullif(current_setting('request.jwt.claims', true), '')::jsonb
           -> 'app_metadata' ->> 'gfx_access'
$$;

comment on function public.gfx_access() is
    'app_metadata.gfx_access of the caller''s JWT: live, delayed or ops (null: none)';

grant execute on function public.gfx_access() to PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- gfx_agents: what each agent last said about itself.
-- ---------------------------------------------------------------------------------------------
create table if not exists public.gfx_agents (
    -- created once by the agent and kept in a file beside its queue database
    agent_id             text primary key
                         constraint gfx_agents_agent_id_check
                         check (length(agent_id) between 1 and 128),
    venue                text not null
                         constraint gfx_agents_venue_check check (length(venue) between 1 and 200),
    host                 text,
    version              text,
    -- the agent's wall clock when it started (display only: no age is computed from it)
    started_at           timestamptz,
    heartbeat_interval_s double precision not null default 15
                         constraint gfx_agents_interval_check
                         check (heartbeat_interval_s > 0 and heartbeat_interval_s <= 86400),
    -- the database's clock at the last heartbeat (the trigger below; a client value is ignored)
    last_seen            timestamptz not null default now(),
    status               text,
    reasons              jsonb not null default '[]'::jsonb
                         constraint gfx_agents_reasons_check check (jsonb_typeof(reasons) = 'array'),
    reason_codes         jsonb not null default '[]'::jsonb
                         constraint gfx_agents_reason_codes_check
                         check (jsonb_typeof(reason_codes) = 'array'),
    -- {pending, dead_letters, quarantined}
    queue                jsonb not null default '{}'::jsonb
                         constraint gfx_agents_queue_check check (jsonb_typeof(queue) = 'object'),
    alerts               jsonb not null default '[]'::jsonb
                         constraint gfx_agents_alerts_check check (jsonb_typeof(alerts) = 'array'),
    -- [{id, state, reason, sync_lag_s, files_waiting, last_sync, session_key, hand_num,
    --   hand_age_s}]
    pcs                  jsonb not null default '[]'::jsonb
                         constraint gfx_agents_pcs_check check (jsonb_typeof(pcs) = 'array'),
    first_seen           timestamptz not null default now(),
    -- gfx_fleet_check's memory: the state it last recorded (online | offline), and when
    recorded_state       text not null default 'online'
                         constraint gfx_agents_recorded_state_check
                         check (recorded_state in ('online', 'offline')),
    recorded_at          timestamptz
);

comment on table public.gfx_agents is
    'trio-gfxsync agents: one row per agent, upserted by its heartbeat (gfx_fleet reads it)';
comment on column public.gfx_agents.last_seen is
    'the database''s clock at the agent''s last heartbeat (set by a trigger)';

-- A heartbeat (an insert, or an update naming any of the agent's own columns) is stamped with the
-- database's clock: an agent's clock may be wrong, and a row must never look alive because of
-- it. gfx_fleet_check's own update names only recorded_*, so it neither fires this nor moves
-- last_seen; a heartbeat never changes what the check recorded.
create or replace function public.gfx_agents_heartbeat()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.last_seen := now();
    if tg_op = 'UPDATE' then
        new.first_seen := old.first_seen;
        new.recorded_state := old.recorded_state;
        new.recorded_at := old.recorded_at;
    else
        new.first_seen := now();
        new.recorded_state := 'online';
        new.recorded_at := null;
    end if;
    return new;
end;
$$;

create or replace trigger gfx_agents_heartbeat
    before insert or update of agent_id, venue, host, version, started_at, heartbeat_interval_s,
        last_seen, status, reasons, reason_codes, queue, alerts, pcs, first_seen
    on public.gfx_agents
    for each row
    execute function public.gfx_agents_heartbeat();

-- ---------------------------------------------------------------------------------------------
-- sync_events: agent events. gfx_pc_id is '' on them (no PC), agent_id names the agent.
-- ---------------------------------------------------------------------------------------------
alter table public.sync_events add column if not exists agent_id text;

comment on column public.sync_events.agent_id is
    'agent_offline / agent_online: the agent (gfx_pc_id is then empty); null on file events';

alter table public.sync_events drop constraint if exists sync_events_event_type_check;
alter table public.sync_events add constraint sync_events_event_type_check
    check (event_type in ('created', 'modified', 'error', 'agent_offline', 'agent_online'));

-- ---------------------------------------------------------------------------------------------
-- gfx_fleet: one line per agent.
-- state: online; stale after 3 of the agent's own intervals without a heartbeat; offline after
-- 6. Agents offline for 7 days are hidden (gfx_fleet_forget removes one at once).
-- worst_pc_state, in the order starting < running < stale < hung < missing < error (a state
-- this file does not know counts as error): a PC that an online agent of the same venue has
-- running counts as running (two agents of a venue watching the same PCs are an HA pair).
-- pc_conflict: a PC id this agent reports is also reported by an agent of another venue;
-- gfx_sessions has no venue, so the two venues' sessions would mix (conflict_pcs names them).
-- ---------------------------------------------------------------------------------------------
create or replace function public.gfx_fleet_state(last_seen timestamptz, interval_s double precision)
returns text
language sql
stable
set search_path = ''
as $$
    select case
        when now() - gfx_fleet_state.last_seen
             >= make_interval(secs => 6 * gfx_fleet_state.interval_s) then 'offline'
        when now() - gfx_fleet_state.last_seen
             >= make_interval(secs => 3 * gfx_fleet_state.interval_s) then 'stale'
        else 'online'
    end
$$;

create or replace view public.gfx_fleet
with (security_invoker = on)
as
with agents as (
    select a.*,
           public.gfx_fleet_state(a.last_seen, a.heartbeat_interval_s) as state,
           round(extract(epoch from (now() - a.last_seen))::numeric, 1)::double precision
               as seen_age_s
    from public.gfx_agents a
    where now() - a.last_seen
          < make_interval(secs => 6 * a.heartbeat_interval_s) + interval '7 days'
), reports as (
    select g.agent_id, g.venue, g.state as agent_state,
           p.value ->> 'id' as pc_id,
           coalesce(p.value ->> 'state', 'error') as pc_state
    from agents g
    cross join lateral jsonb_array_elements(g.pcs) p
    where jsonb_typeof(p.value) = 'object' and p.value ->> 'id' is not null
), ranked as (
    select r.agent_id,
           case
               when exists (select 1 from reports u
                            where u.venue = r.venue and u.pc_id = r.pc_id
                              and u.agent_state = 'online' and u.pc_state = 'running') then 2
               else coalesce(array_position(
                        array['starting', 'running', 'stale', 'hung', 'missing', 'error'],
                        r.pc_state), 6)
           end as rank,
           case when exists (select 1 from reports o
                             where o.pc_id = r.pc_id and o.venue <> r.venue)
                then r.pc_id end as conflict_pc
    from reports r
), per_agent as (
    select agent_id,
           (array['starting', 'running', 'stale', 'hung', 'missing', 'error'])[max(rank)]
               as worst_pc_state,
           coalesce(jsonb_agg(distinct conflict_pc) filter (where conflict_pc is not null),
                    '[]'::jsonb) as conflict_pcs
    from ranked
    group by agent_id
)
select g.agent_id,
       g.venue,
       g.host,
       g.version,
       g.started_at,
       g.heartbeat_interval_s,
       g.last_seen,
       g.status,
       g.reasons,
       g.reason_codes,
       g.queue,
       g.alerts,
       g.pcs,
       g.first_seen,
       g.state,
       g.seen_age_s,
       p.worst_pc_state,
       coalesce(jsonb_array_length(p.conflict_pcs) > 0, false) as pc_conflict,
       coalesce(p.conflict_pcs, '[]'::jsonb) as conflict_pcs
from agents g
left join per_agent p on p.agent_id = g.agent_id;

comment on view public.gfx_fleet is
    'trio-gfxsync agents: online, stale (3 intervals without a heartbeat), offline (6)';

-- ---------------------------------------------------------------------------------------------
-- gfx_fleet_check(): a dead agent is recorded by the living. Each transition is one UPDATE ...
-- RETURNING on the agent's row: a concurrent caller waits for the row, then re-reads it (READ
-- COMMITTED re-checks the WHERE on the new row) and finds nothing left to record, so every
-- transition gives one sync_events row whoever calls and however many at once.
-- ---------------------------------------------------------------------------------------------
create or replace function public.gfx_fleet_check()
returns table (agent_id text, venue text, event_type text, last_seen timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
    with turned as (
        update public.gfx_agents a
        set recorded_state = case public.gfx_fleet_state(a.last_seen, a.heartbeat_interval_s)
                                 when 'offline' then 'offline' else 'online' end,
            recorded_at = now()
        where a.recorded_state is distinct from
              case public.gfx_fleet_state(a.last_seen, a.heartbeat_interval_s)
                  when 'offline' then 'offline' else 'online' end
        returning a.agent_id, a.venue, a.host, a.recorded_state, a.last_seen
    ), recorded as (
        insert into public.sync_events (gfx_pc_id, event_type, agent_id, record_count,
                                        error_message)
        select '', 'agent_' || t.recorded_state, t.agent_id, 0,
               format('agent %s of venue %s (host %s) %s; last heartbeat %s',
                      t.agent_id, t.venue, coalesce(t.host, '?'),
                      case t.recorded_state when 'offline' then 'went offline'
                                            else 'is back online' end,
                      to_char(t.last_seen at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
        from turned t
        returning sync_events.agent_id, sync_events.event_type
    )
    select t.agent_id, t.venue, r.event_type, t.last_seen
    from turned t
    join recorded r on r.agent_id = t.agent_id
$$;

comment on function public.gfx_fleet_check() is
    'records agent_offline / agent_online in sync_events, once per transition';

-- Removes an agent from gfx_agents (and so from gfx_fleet); its sync_events stay. True when it
-- was there. An agent still running comes back with its next heartbeat.
create or replace function public.gfx_fleet_forget(agent_id text)
returns boolean
language sql
volatile
security definer
set search_path = ''
as $$
    with gone as (
        delete from public.gfx_agents a where a.agent_id = gfx_fleet_forget.agent_id
        returning 1
    )
    select exists (select 1 from gone)
$$;

-- ---------------------------------------------------------------------------------------------
-- The version `trio-gfxsync check` asks for (2: version stamps; 3: this file).
-- ---------------------------------------------------------------------------------------------
create or replace function public.gfx_sync_schema_version()
returns integer
language sql
stable
set search_path = ''
as $$ select 3 $$;

-- ---------------------------------------------------------------------------------------------
-- Access. The claim is read once per statement, as `(select public.gfx_access() in (...))`.
-- gfx_sessions: a policy for the fleet's tiers, and column grants without raw_json (a reader's
-- `select=*` is refused with 42501; pc_status reads only gfx_pc_id and updated_at).
-- ---------------------------------------------------------------------------------------------
alter table public.gfx_agents enable row level security;

drop policy if exists gfx_agents_fleet_read on public.gfx_agents;
create policy gfx_agents_fleet_read on public.gfx_agents
    for select to authenticated
    using ((select public.gfx_access() in ('ops', 'live')));

drop policy if exists sync_events_fleet_read on public.sync_events;
create policy sync_events_fleet_read on public.sync_events
    for select to authenticated
    using ((select public.gfx_access() in ('ops', 'live')));

drop policy if exists gfx_sessions_fleet_read on public.gfx_sessions;
create policy gfx_sessions_fleet_read on public.gfx_sessions
    for select to authenticated
    using ((select public.gfx_access() in ('ops', 'live')));

revoke all on public.gfx_agents, public.gfx_fleet from PUBLIC, anon, authenticated;

grant usage on schema public to authenticated, service_role;
grant select, insert, update, delete on public.gfx_agents to service_role;
grant select on public.gfx_fleet to service_role;
grant select on public.gfx_agents, public.gfx_fleet, public.sync_events, public.pc_status
    to authenticated;
grant select (id, gfx_pc_id, session_id, session_key, file_name, file_path, file_hash, file_size,
              file_mtime, table_type, event_title, software_version, hand_count, player_count,
              session_created_at, sync_source, sync_status, created_at, updated_at,
              version_stamp)
    on public.gfx_sessions to authenticated;

revoke all on function
    public.gfx_agents_heartbeat(),
    public.gfx_fleet_state(timestamptz, double precision),
    public.gfx_fleet_check(),
    public.gfx_fleet_forget(text),
    public.gfx_sync_schema_version()
    from PUBLIC, anon, authenticated;

-- gfx_fleet calls gfx_fleet_state as its reader.
grant execute on function public.gfx_fleet_state(timestamptz, double precision)
    to authenticated, service_role;
grant execute on function public.gfx_fleet_check(), public.gfx_fleet_forget(text),
                          public.gfx_sync_schema_version()
    to service_role;

notify pgrst, 'reload schema';
