-- trio-gfxsync: hole cards behind the broadcast's security delay; Realtime by Broadcast from the
-- database (issue 24). Upgrades the hand tables of 20261203100000_gfx_hands.sql: apply that one
-- first (`trio-gfxsync schema --hands` prints both, in order). Every statement can run again
-- without error. docs/hands.md, "Access tiers" and "Realtime", says how to use it.
--
-- Who reads what. Readers hold `app_metadata.gfx_access` in their JWT (Supabase Auth lets only
-- the service role or the Auth admin API write app_metadata; user_metadata never counts):
--   live     every hand table, view and function, at once (graphics desk, director)
--   delayed  gfx_hands, gfx_hand_players, gfx_hand_events and the views and gfx_recent_showdowns,
--            only hands stored at least gfx_security_delay(pc) ago; never gfx_hand_sessions or
--            gfx_hand_errors (they tell when a hand just ended)
--   ops      nothing of the hands (the fleet's tier); anyone else, anon included: nothing
-- The service role keeps everything (BYPASSRLS).
--
-- The delay is data: each hand's first_stored_at (the database's clock when the derivation first
-- stored it) lives in gfx_hand_releases, which the derivation never deletes from: only the
-- removal of the session does. A re-derivation, a rebuild or a voided-then-restored hand keeps
-- its first_stored_at, so its delay neither restarts nor is skipped.
--
-- Realtime goes out as Broadcast from the database (realtime.send, guarded: nothing is sent and
-- nothing fails on a PostgreSQL without Supabase's realtime schema) on private topics:
--   gfx:live:<gfx_pc_id>     events `hand` and `hand_voided`, when the derivation stores them
--   gfx:delayed:<gfx_pc_id>  the same, once a hand's delay has passed: gfx_release_hands(),
--                            every minute from pg_cron, announces each hand once (released_at)
-- The hand tables leave the supabase_realtime publication (Postgres Changes sends whole rows to
-- every subscriber the RLS lets through, and re-checks RLS per subscriber per change).
--
-- Another schema: as in 20261203100000_gfx_hands.sql, every lower-case word `public` names the
-- hand tables' schema, except in `public.gfx_sessions` and `public.gfx_access`, which stay in
-- public (the access claim is the project's, shared with the fleet's objects).

-- ---------------------------------------------------------------------------------------------
-- Pre-flight: the hand tables of 20261203100000_gfx_hands.sql are here.
-- ---------------------------------------------------------------------------------------------
do $$
begin
    if to_regclass('public.gfx_hands') is null
       or to_regprocedure('public.gfx_hands_derive(text,bigint,jsonb,text,boolean)') is null then
        raise exception 'gfx_hands_delay: the hand tables are not installed in schema public'
            using hint = 'Apply 20261203100000_gfx_hands.sql first (`trio-gfxsync schema '
                         '--hands` prints it, followed by this file).';
    end if;
    if to_regclass('public.gfx_hand_releases') is not null
       and not exists (select 1 from pg_catalog.pg_attribute a
                       where a.attrelid = to_regclass('public.gfx_hand_releases')
                         and a.attname = 'first_stored_at' and not a.attisdropped) then
        raise exception 'gfx_hands_delay: public.gfx_hand_releases exists and is not ours'
            using errcode = 'duplicate_table';
    end if;
    if to_regclass('public.gfx_security_delays') is not null
       and not exists (select 1 from pg_catalog.pg_attribute a
                       where a.attrelid = to_regclass('public.gfx_security_delays')
                         and a.attname = 'delay' and not a.attisdropped) then
        raise exception 'gfx_hands_delay: public.gfx_security_delays exists and is not ours'
            using errcode = 'duplicate_table';
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- The claim. What auth.jwt() reads, without Supabase's auth schema: PostgREST and Realtime both
-- set request.jwt.claims to the caller's JWT claims. Policies call it inside a scalar subquery,
-- `(select public.gfx_access() ...)`, so that it runs once per statement, not once per row.
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

-- ---------------------------------------------------------------------------------------------
-- The security delay: a default row keyed '*', and one row per PC that differs.
-- ---------------------------------------------------------------------------------------------
create table if not exists public.gfx_security_delays (
    gfx_pc_id  text primary key,
    delay      interval not null
               constraint gfx_security_delays_delay_check check (delay >= interval '0'),
    updated_at timestamptz not null default now()
);

insert into public.gfx_security_delays (gfx_pc_id, delay)
values ('*', interval '30 minutes')
on conflict (gfx_pc_id) do nothing;

-- The delay in force for one PC (null or '*': the default). SECURITY DEFINER: the policies of
-- the hand tables call it as the reader, who may not read gfx_security_delays.
create or replace function public.gfx_security_delay(pc text)
returns interval
language sql
stable
security definer
set search_path = ''
as $$
    select coalesce(
        (select d.delay from public.gfx_security_delays d
         where d.gfx_pc_id = gfx_security_delay.pc),
        (select d.delay from public.gfx_security_delays d where d.gfx_pc_id = '*'),
        interval '30 minutes')
$$;

-- The longest delay in force anywhere: a hand stored before now() minus this is past its delay
-- on every table, which lets the policies skip the per-PC look-up for all but the newest hands.
create or replace function public.gfx_security_delay_max()
returns interval
language sql
stable
security definer
set search_path = ''
as $$
    select max(x.delay)
    from (select d.delay from public.gfx_security_delays d
          union all
          select interval '30 minutes'
          where not exists (select 1 from public.gfx_security_delays d
                            where d.gfx_pc_id = '*')) x
$$;

-- Set the delay of one PC, or with pc null the default of every table. Negative is refused,
-- zero allowed; a null delay for a PC removes its own (it follows the default again). Returns
-- the delay now in force there.
create or replace function public.gfx_set_security_delay(delay interval, pc text default null)
returns interval
language plpgsql
security definer
set search_path = ''
as $$
begin
    if gfx_set_security_delay.delay is null then
        if gfx_set_security_delay.pc is null or gfx_set_security_delay.pc = '*' then
            raise exception 'gfx_set_security_delay: the default delay cannot be null'
                using errcode = 'null_value_not_allowed';
        end if;
        delete from public.gfx_security_delays d where d.gfx_pc_id = gfx_set_security_delay.pc;
    elsif gfx_set_security_delay.delay < interval '0' then
        raise exception 'gfx_set_security_delay: a delay cannot be negative: %',
            gfx_set_security_delay.delay
            using errcode = 'invalid_parameter_value';
    else
        insert into public.gfx_security_delays as d (gfx_pc_id, delay, updated_at)
        values (coalesce(gfx_set_security_delay.pc, '*'), gfx_set_security_delay.delay, now())
        on conflict (gfx_pc_id) do update set delay = excluded.delay, updated_at = now();
    end if;
    return public.gfx_security_delay(coalesce(gfx_set_security_delay.pc, '*'));
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- When each hand was first stored, and when it was announced on its delayed topic. Rows go only
-- with their session (gfx_hands_forget, the truncate trigger), never with the hand: a voided
-- hand keeps its row, so that its delay goes on if it comes back.
-- released_at: null while the hand waits for gfx_release_hands(); otherwise when it went out on
-- gfx:delayed:<pc>, or when it was stored without any announcement (a rebuild, a first
-- backfill, the upgrade to this file).
-- ---------------------------------------------------------------------------------------------
create table if not exists public.gfx_hand_releases (
    gfx_pc_id       text not null,
    session_id      bigint not null,
    hand_num        integer not null,
    hand_seq        integer not null,
    first_stored_at timestamptz not null default now(),
    released_at     timestamptz,
    constraint gfx_hand_releases_pkey primary key (gfx_pc_id, session_id, hand_num, hand_seq)
);

create index if not exists gfx_hand_releases_waiting_idx
    on public.gfx_hand_releases (first_stored_at) where released_at is null;

-- A copy on the hand row, so that the policies read it without a join (gfx_hand_releases stays
-- closed to readers: it would tell when the newest hands were stored).
alter table public.gfx_hands add column if not exists first_stored_at timestamptz;

-- The upgrade: hands stored before this file count from their created_at. Those whose delay has
-- already passed are not announced again; the others wait for gfx_release_hands().
insert into public.gfx_hand_releases as r (
    gfx_pc_id, session_id, hand_num, hand_seq, first_stored_at, released_at)
select h.gfx_pc_id, h.session_id, h.hand_num, h.hand_seq, h.created_at,
       case when h.created_at <= now() - public.gfx_security_delay(h.gfx_pc_id) then now() end
from public.gfx_hands h
on conflict (gfx_pc_id, session_id, hand_num, hand_seq) do nothing;

update public.gfx_hands h
set first_stored_at = r.first_stored_at
from public.gfx_hand_releases r
where r.gfx_pc_id = h.gfx_pc_id and r.session_id = h.session_id
  and r.hand_num = h.hand_num and r.hand_seq = h.hand_seq
  and h.first_stored_at is distinct from r.first_stored_at;

alter table public.gfx_hands
    alter column first_stored_at set default now(),
    alter column first_stored_at set not null;

comment on column public.gfx_hands.first_stored_at is
    'when the database first stored this hand (kept in gfx_hand_releases): the security delay '
    'counts from here';

-- Every hand the derivation inserts (new, or back after a void or a rebuild) gets its
-- first_stored_at from gfx_hand_releases, or starts its row there. Stored silently: the
-- derivation trigger clears released_at of the hands it announces (gfx_hands_announce), so that
-- a rebuild or a backfill never fills the delayed topics.
create or replace function public.gfx_hands_note_stored()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    insert into public.gfx_hand_releases as r (
        gfx_pc_id, session_id, hand_num, hand_seq, first_stored_at, released_at)
    select n.gfx_pc_id, n.session_id, n.hand_num, n.hand_seq, n.first_stored_at,
           n.first_stored_at
    from stored_hands n
    on conflict (gfx_pc_id, session_id, hand_num, hand_seq) do nothing;

    update public.gfx_hands h
    set first_stored_at = r.first_stored_at
    from stored_hands n
    join public.gfx_hand_releases r
      on r.gfx_pc_id = n.gfx_pc_id and r.session_id = n.session_id
     and r.hand_num = n.hand_num and r.hand_seq = n.hand_seq
    where h.gfx_pc_id = n.gfx_pc_id and h.session_id = n.session_id
      and h.hand_num = n.hand_num and h.hand_seq = n.hand_seq
      and h.first_stored_at is distinct from r.first_stored_at;
    return null;
end;
$$;

create or replace trigger gfx_hands_first_stored
    after insert on public.gfx_hands
    referencing new table as stored_hands
    for each statement
    execute function public.gfx_hands_note_stored();

-- Everything derived from one session, its delays included (the session is gone).
create or replace function public.gfx_hands_forget(p_pc text, p_session bigint)
returns void
language sql
as $$
    delete from public.gfx_hands where gfx_pc_id = p_pc and session_id = p_session;
    delete from public.gfx_hand_errors where gfx_pc_id = p_pc and session_id = p_session;
    delete from public.gfx_hand_sessions where gfx_pc_id = p_pc and session_id = p_session;
    delete from public.gfx_hand_releases where gfx_pc_id = p_pc and session_id = p_session;
$$;

create or replace function public.gfx_hands_sync_truncate()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    truncate public.gfx_hand_events, public.gfx_hand_players, public.gfx_hands,
             public.gfx_hand_errors, public.gfx_hand_sessions, public.gfx_hand_releases;
    return null;
end;
$$;

-- The version of the derivation rules. The rules did not change in this file (only where a
-- hand's first_stored_at is kept), so sessions derived under 20261203100000 stay current.
create or replace function public.gfx_hands_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261205110000'::text $$;

update public.gfx_hand_sessions
set derive_version = public.gfx_hands_version()
where derive_version = '20261203100000';

-- ---------------------------------------------------------------------------------------------
-- Broadcast from the database.
-- ---------------------------------------------------------------------------------------------

-- One hand as the Broadcast payload: ids as strings (session_key), the board, the pot, the
-- winner, and each player's seat, name, stacks and hole cards.
create or replace function public.gfx_hands_payload(
    p_pc text, p_session bigint, p_num integer, p_seq integer)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select jsonb_build_object(
        'gfx_pc_id', h.gfx_pc_id,
        'session_key', h.session_key,
        'hand_num', h.hand_num,
        'hand_seq', h.hand_seq,
        'start_time', h.start_time,
        'pot_size', h.pot_size,
        'board_cards', to_jsonb(h.board_cards),
        'second_board_cards', to_jsonb(h.second_board_cards),
        'winner_name', h.winner_name,
        'winner_seat', h.winner_seat,
        'players', coalesce((
            select jsonb_agg(jsonb_build_object(
                       'seat_num', p.seat_num,
                       'player_name', p.player_name,
                       'start_stack_amt', p.start_stack_amt,
                       'end_stack_amt', p.end_stack_amt,
                       'stack_change', p.stack_change,
                       'hole_cards', to_jsonb(p.hole_cards),
                       'is_winner', p.is_winner,
                       'at_showdown', p.at_showdown)
                   order by p.seat_num)
            from public.gfx_hand_players p
            where p.gfx_pc_id = h.gfx_pc_id and p.session_id = h.session_id
              and p.hand_num = h.hand_num and p.hand_seq = h.hand_seq), '[]'::jsonb))
    from public.gfx_hands h
    where h.gfx_pc_id = p_pc and h.session_id = p_session
      and h.hand_num = p_num and h.hand_seq = p_seq
$$;

-- realtime.send(payload, event, topic, private => true) where Supabase's realtime schema exists.
-- Never raises: a Broadcast that cannot go out must not cost the session its upsert.
create or replace function public.gfx_hands_send(p_topic text, p_event text, p_payload jsonb)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
    if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
        return false;
    end if;
    perform realtime.send(p_payload, p_event, p_topic, true);
    return true;
exception when others then
    raise warning 'gfx_hands: Broadcast % on % not sent: %', p_event, p_topic, sqlerrm;
    return false;
end;
$$;

-- After a derivation of one session: announce the hands it added or changed (`hand`) and the
-- hands it removed (`hand_voided`) on gfx:live:<pc>, and on gfx:delayed:<pc> those whose delay
-- has passed. p_before: {"<hand_num>:<hand_seq>": hand_hash} before the derivation.
--
-- A table (PC) whose hands the database held before this transaction is syncing live: every
-- change is announced. A table seen for the first time is a backfill (the agent's first upload
-- of a NAS), announced only when it starts with a single hand (a new table's first hand).
create or replace function public.gfx_hands_announce(p_pc text, p_session bigint, p_before jsonb)
returns integer
language plpgsql
set search_path = ''
as $$
declare
    v_delay   interval := public.gfx_security_delay(p_pc);
    v_live    text := 'gfx:live:' || p_pc;
    v_delayed text := 'gfx:delayed:' || p_pc;
    v_row     record;
    v_payload jsonb;
    v_count   integer := 0;
begin
    if not exists (select 1 from public.gfx_hand_releases r
                   where r.gfx_pc_id = p_pc and r.first_stored_at < now())
       and (select count(*) from public.gfx_hands h
            where h.gfx_pc_id = p_pc and h.session_id = p_session) > 1 then
        return 0;
    end if;

    for v_row in
        select (split_part(b.key, ':', 1))::integer as n, (split_part(b.key, ':', 2))::integer as s,
               r.first_stored_at
        from jsonb_each_text(p_before) b
        left join public.gfx_hand_releases r
          on r.gfx_pc_id = p_pc and r.session_id = p_session
         and r.hand_num = (split_part(b.key, ':', 1))::integer
         and r.hand_seq = (split_part(b.key, ':', 2))::integer
        where not exists (select 1 from public.gfx_hands h
                          where h.gfx_pc_id = p_pc and h.session_id = p_session
                            and h.hand_num = (split_part(b.key, ':', 1))::integer
                            and h.hand_seq = (split_part(b.key, ':', 2))::integer)
        order by 1, 2
    loop
        v_payload := jsonb_build_object('gfx_pc_id', p_pc, 'session_key', p_session::text,
                                        'hand_num', v_row.n, 'hand_seq', v_row.s);
        perform public.gfx_hands_send(v_live, 'hand_voided', v_payload);
        if v_row.first_stored_at <= now() - v_delay then
            perform public.gfx_hands_send(v_delayed, 'hand_voided', v_payload);
        end if;
        v_count := v_count + 1;
    end loop;

    for v_row in
        select h.hand_num, h.hand_seq, h.first_stored_at
        from public.gfx_hands h
        where h.gfx_pc_id = p_pc and h.session_id = p_session
          and (p_before ->> (h.hand_num || ':' || h.hand_seq)) is distinct from h.hand_hash
        order by h.start_time nulls first, h.hand_num, h.hand_seq
    loop
        v_payload := public.gfx_hands_payload(p_pc, p_session, v_row.hand_num, v_row.hand_seq);
        perform public.gfx_hands_send(v_live, 'hand', v_payload);
        if v_row.first_stored_at <= now() - v_delay then
            -- the delayed tier sees this hand already: its news goes out there at once
            perform public.gfx_hands_send(v_delayed, 'hand', v_payload);
            update public.gfx_hand_releases r set released_at = now()
            where r.gfx_pc_id = p_pc and r.session_id = p_session
              and r.hand_num = v_row.hand_num and r.hand_seq = v_row.hand_seq
              and r.released_at is null;
        elsif v_row.first_stored_at = now() then
            -- first stored by this transaction: gfx_release_hands() announces it when due
            update public.gfx_hand_releases r set released_at = null
            where r.gfx_pc_id = p_pc and r.session_id = p_session
              and r.hand_num = v_row.hand_num and r.hand_seq = v_row.hand_seq;
        end if;
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
$$;

-- The trigger on gfx_sessions, as in 20261203100000_gfx_hands.sql, plus the announcements. Only
-- the newest session of a PC is live (PokerGFX writes one session at a time): an older one
-- (archives arriving in a backfill, an early copy) is derived without a message.
create or replace function public.gfx_hands_sync_session()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_newest boolean;
    v_before jsonb;
begin
    if tg_op in ('DELETE', 'UPDATE')
       and (tg_op = 'DELETE' or old.gfx_pc_id is distinct from new.gfx_pc_id
            or old.session_id is distinct from new.session_id) then
        perform public.gfx_hands_forget(old.gfx_pc_id, old.session_id);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        v_newest := not exists (select 1 from public.gfx_sessions s
                                where s.gfx_pc_id = new.gfx_pc_id
                                  and s.session_id > new.session_id);
        if v_newest then
            select coalesce(jsonb_object_agg(h.hand_num || ':' || h.hand_seq, h.hand_hash), '{}')
            into v_before
            from public.gfx_hands h
            where h.gfx_pc_id = new.gfx_pc_id and h.session_id = new.session_id;
        end if;
        perform public.gfx_hands_derive(new.gfx_pc_id, new.session_id, new.raw_json,
                                        new.file_hash, false);
        if v_newest then
            perform public.gfx_hands_announce(new.gfx_pc_id, new.session_id, v_before);
        end if;
    end if;
    return null;
end;
$$;

-- The hands (still stored) that wait for their announcement on the delayed topic, with the time
-- their delay passes; the delay is looked up once per PC, not once per hand.
create or replace function public.gfx_hands_waiting()
returns table (gfx_pc_id text, session_id bigint, hand_num integer, hand_seq integer,
               first_stored_at timestamptz, due_at timestamptz)
language sql
stable
set search_path = ''
as $$
    select r.gfx_pc_id, r.session_id, r.hand_num, r.hand_seq, r.first_stored_at,
           r.first_stored_at + d.delay
    from (select w.gfx_pc_id, public.gfx_security_delay(w.gfx_pc_id) as delay
          from (select distinct x.gfx_pc_id from public.gfx_hand_releases x
                where x.released_at is null) w) d
    join public.gfx_hand_releases r on r.gfx_pc_id = d.gfx_pc_id
    where r.released_at is null
      and exists (select 1 from public.gfx_hands h
                  where h.gfx_pc_id = r.gfx_pc_id and h.session_id = r.session_id
                    and h.hand_num = r.hand_num and h.hand_seq = r.hand_seq)
$$;

-- Announce on gfx:delayed:<pc> every hand whose delay has passed and that waits for it; each
-- once. Schedule it every minute with pg_cron (docs/hands.md); without it the delayed tier still
-- reads every released hand through the tables and views, but gets no Broadcast. Returns how
-- many hands went out.
create or replace function public.gfx_release_hands()
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_row   record;
    v_count integer := 0;
begin
    for v_row in
        select r.gfx_pc_id, r.session_id, r.hand_num, r.hand_seq
        from public.gfx_hands_waiting() w
        join public.gfx_hand_releases r
          on r.gfx_pc_id = w.gfx_pc_id and r.session_id = w.session_id
         and r.hand_num = w.hand_num and r.hand_seq = w.hand_seq
        where w.due_at <= now() and r.released_at is null
        order by r.first_stored_at, r.gfx_pc_id, r.session_id, r.hand_num, r.hand_seq
        for update of r skip locked
    loop
        perform public.gfx_hands_send(
            'gfx:delayed:' || v_row.gfx_pc_id, 'hand',
            public.gfx_hands_payload(v_row.gfx_pc_id, v_row.session_id, v_row.hand_num,
                                     v_row.hand_seq));
        update public.gfx_hand_releases r set released_at = now()
        where r.gfx_pc_id = v_row.gfx_pc_id and r.session_id = v_row.session_id
          and r.hand_num = v_row.hand_num and r.hand_seq = v_row.hand_seq;
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
$$;

-- What `trio-gfxsync check` reports of the delay: the default and per-PC delays (seconds), and
-- whether pg_cron runs gfx_release_hands() (null where pg_cron is absent). SECURITY DEFINER:
-- cron.job is not readable by the service role. `waiting`: hands not yet announced on their
-- delayed topic; `overdue`: those of them due for more than 5 minutes (the release is not
-- running).
create or replace function public.gfx_hands_release_status()
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    v_scheduled boolean;
    v_schedule  text;
    v_waiting   bigint;
    v_overdue   bigint;
begin
    select count(*), count(*) filter (where w.due_at <= now() - interval '5 minutes')
    into v_waiting, v_overdue
    from public.gfx_hands_waiting() w;
    if to_regclass('cron.job') is not null then
        execute $q$
            select coalesce(bool_or(j.active), false), min(j.schedule) filter (where j.active)
            from cron.job j
            where position('gfx_release_hands' in j.command) > 0
              and j.database = current_database()
        $q$ into v_scheduled, v_schedule;
    end if;
    return jsonb_build_object(
        'delay_seconds', extract(epoch from public.gfx_security_delay('*')),
        'delays', (select coalesce(jsonb_object_agg(d.gfx_pc_id, extract(epoch from d.delay)
                                                    order by d.gfx_pc_id), '{}'::jsonb)
                   from public.gfx_security_delays d where d.gfx_pc_id <> '*'),
        'release_scheduled', v_scheduled,
        'release_schedule', v_schedule,
        'waiting', v_waiting,
        'overdue', v_overdue);
end;
$$;

-- gfx_hands_status of 20261203100000_gfx_hands.sql, with the release status.
create or replace function public.gfx_hands_status()
returns jsonb
language sql
stable
set search_path = ''
as $$
    with s as (
        select gfx_pc_id, session_id, file_hash from public.gfx_sessions
    ), d as (
        select gfx_pc_id, session_id, file_hash, derive_version, hand_count, error_count
        from public.gfx_hand_sessions
    ), h as (
        select gfx_pc_id, session_id, count(*) as n from public.gfx_hands group by 1, 2
    ), e as (
        select gfx_pc_id, session_id, count(*) as n from public.gfx_hand_errors group by 1, 2
    )
    select jsonb_build_object(
        'version', public.gfx_hands_version(),
        'schema', 'public',
        'sessions', (select count(*) from s),
        'derived', (select count(*) from s join d using (gfx_pc_id, session_id)
                    where d.file_hash = s.file_hash
                      and d.derive_version = public.gfx_hands_version()),
        'missing', (select count(*) from s left join d using (gfx_pc_id, session_id)
                    where d.session_id is null),
        'stale', (select count(*) from s join d using (gfx_pc_id, session_id)
                  where d.file_hash <> s.file_hash
                     or d.derive_version <> public.gfx_hands_version()),
        'inconsistent', (select count(*) from d
                         left join h using (gfx_pc_id, session_id)
                         left join e using (gfx_pc_id, session_id)
                         where d.hand_count <> coalesce(h.n, 0)
                            or d.error_count <> coalesce(e.n, 0)),
        'orphaned', (select count(*)
                     from (select gfx_pc_id, session_id from d
                           union select gfx_pc_id, session_id from h
                           union select gfx_pc_id, session_id from e) k
                     where not exists (select 1 from s
                                       where s.gfx_pc_id = k.gfx_pc_id
                                         and s.session_id = k.session_id)),
        'hands', (select coalesce(sum(n), 0) from h),
        'hand_errors', (select coalesce(sum(n), 0) from e),
        'release', public.gfx_hands_release_status())
$$;

-- ---------------------------------------------------------------------------------------------
-- Views for the graphics desk: the latest hand each reader may see, from gfx_hands itself (the
-- delayed tier cannot read gfx_hand_sessions). security_invoker, so the policies below apply.
-- ---------------------------------------------------------------------------------------------

-- The tables (PCs) with a hand the caller may read, under the policies: one index probe each
-- (a loose index scan over gfx_hands' primary key). jit off: the planner's guess for a scan
-- under the policies can pass jit_above_cost, and compiling costs far more than the read.
create or replace function public.gfx_hands_tables()
returns setof text
language sql
stable
set search_path = ''
set jit = off
as $$
    with recursive t (gfx_pc_id) as (
        (select h.gfx_pc_id from public.gfx_hands h order by h.gfx_pc_id limit 1)
        union all
        select (select h.gfx_pc_id from public.gfx_hands h
                where h.gfx_pc_id > t.gfx_pc_id order by h.gfx_pc_id limit 1)
        from t
        where t.gfx_pc_id is not null
    )
    select t.gfx_pc_id from t where t.gfx_pc_id is not null
$$;

-- Each table's latest hand the caller may read: its newest session with such a hand, and that
-- session's latest (latest start, then highest number), as the derivation's latest_hand_*.
-- Two steps, each an index probe: the planner would otherwise sort every hand of the table.
create or replace function public.gfx_hands_latest()
returns setof public.gfx_hands
language sql
stable
set search_path = ''
set jit = off
as $$
    select h.*
    from public.gfx_hands_tables() as t (gfx_pc_id)
    cross join lateral (
        select x.session_id
        from public.gfx_hands x
        where x.gfx_pc_id = t.gfx_pc_id
        order by x.session_id desc
        limit 1
    ) s
    cross join lateral (
        select x.*
        from public.gfx_hands x
        where x.gfx_pc_id = t.gfx_pc_id and x.session_id = s.session_id
        order by x.start_time desc nulls last, x.hand_num desc, x.hand_seq desc
        limit 1
    ) h
$$;

create or replace view public.gfx_current_hand
with (security_invoker = on)
as
select h.gfx_pc_id,
       h.session_key,
       h.session_id,
       h.hand_num,
       h.hand_seq,
       h.start_time,
       h.start_time_text,
       h.duration_seconds,
       h.game_variant,
       h.game_class,
       h.bet_structure,
       h.ante_amt,
       h.small_blind_amt,
       h.big_blind_amt,
       h.button_seat,
       h.board_cards,
       h.second_board_cards,
       h.pot_size,
       h.player_count,
       h.showdown_count,
       h.winner_name,
       h.winner_seat,
       h.updated_at,
       coalesce((
           select jsonb_agg(jsonb_build_object(
                      'seat_num', p.seat_num,
                      'player_name', p.player_name,
                      'long_name', p.long_name,
                      'hole_cards', to_jsonb(p.hole_cards),
                      'start_stack_amt', p.start_stack_amt,
                      'end_stack_amt', p.end_stack_amt,
                      'stack_change', p.stack_change,
                      'is_winner', p.is_winner,
                      'at_showdown', p.at_showdown,
                      'sitting_out', p.sitting_out,
                      'elimination_rank', p.elimination_rank,
                      'vpip_percent', p.vpip_percent,
                      'preflop_raise_percent', p.preflop_raise_percent,
                      'aggression_frequency_percent', p.aggression_frequency_percent,
                      'went_to_showdown_percent', p.went_to_showdown_percent)
                  order by p.seat_num)
           from public.gfx_hand_players p
           where p.gfx_pc_id = h.gfx_pc_id and p.session_id = h.session_id
             and p.hand_num = h.hand_num and p.hand_seq = h.hand_seq), '[]'::jsonb) as players
from public.gfx_hands_latest() h;

create or replace view public.gfx_chip_counts
with (security_invoker = on)
as
select h.gfx_pc_id,
       h.session_key,
       h.session_id,
       h.hand_num,
       h.hand_seq,
       h.start_time as hand_start_time,
       p.seat_num,
       p.player_name,
       p.long_name,
       p.end_stack_amt,
       p.stack_change,
       rank() over (partition by h.gfx_pc_id order by p.end_stack_amt desc) as chip_rank,
       h.big_blind_amt,
       round(p.end_stack_amt::numeric / nullif(h.big_blind_amt, 0), 1) as big_blinds,
       p.sitting_out,
       p.elimination_rank
from public.gfx_hands_latest() h
join public.gfx_hand_players p
  on p.gfx_pc_id = h.gfx_pc_id and p.session_id = h.session_id
 and p.hand_num = h.hand_num and p.hand_seq = h.hand_seq
where p.end_stack_amt > 0;

create or replace function public.gfx_recent_showdowns(n integer default 10)
returns table (
    gfx_pc_id          text,
    session_key        text,
    session_id         bigint,
    hand_num           integer,
    hand_seq           integer,
    hands_ago          integer,
    start_time         timestamptz,
    board_cards        text[],
    second_board_cards text[],
    pot_size           bigint,
    showdown_count     integer,
    winner_name        text,
    winner_seat        integer,
    players            jsonb)
language sql
stable
set search_path = ''
set jit = off
as $$
    select t.gfx_pc_id, h.session_key, h.session_id, h.hand_num, h.hand_seq, h.hands_ago,
           h.start_time, h.board_cards, h.second_board_cards, h.pot_size, h.showdown_count,
           h.winner_name, h.winner_seat,
           coalesce((
               select jsonb_agg(jsonb_build_object(
                          'seat_num', p.seat_num,
                          'player_name', p.player_name,
                          'long_name', p.long_name,
                          'hole_cards', to_jsonb(p.hole_cards),
                          'start_stack_amt', p.start_stack_amt,
                          'end_stack_amt', p.end_stack_amt,
                          'stack_change', p.stack_change,
                          'is_winner', p.is_winner)
                      order by p.seat_num)
               from public.gfx_hand_players p
               where p.gfx_pc_id = h.gfx_pc_id and p.session_id = h.session_id
                 and p.hand_num = h.hand_num and p.hand_seq = h.hand_seq
                 and p.at_showdown), '[]'::jsonb)
    from public.gfx_hands_tables() as t (gfx_pc_id)
    cross join lateral (
        select x.gfx_pc_id, x.session_key, x.session_id, x.hand_num, x.hand_seq, x.start_time,
               x.board_cards, x.second_board_cards, x.pot_size, x.showdown_count,
               x.winner_name, x.winner_seat,
               (row_number() over (order by x.session_id desc, x.start_time desc nulls last,
                                            x.hand_num desc, x.hand_seq desc) - 1)::integer
                   as hands_ago
        from public.gfx_hands x
        where x.gfx_pc_id = t.gfx_pc_id
        order by x.session_id desc, x.start_time desc nulls last, x.hand_num desc,
                 x.hand_seq desc
        limit greatest(least(coalesce(gfx_recent_showdowns.n, 10), 1000), 0)
    ) h
    where h.showdown_count >= 2
    order by t.gfx_pc_id, h.hands_ago
$$;

-- ---------------------------------------------------------------------------------------------
-- Realtime: the hand tables leave the publication (Broadcast replaces Postgres Changes).
-- ---------------------------------------------------------------------------------------------
do $$
declare
    v_table text;
begin
    foreach v_table in array array['gfx_hands', 'gfx_hand_players', 'gfx_hand_events'] loop
        if exists (select 1 from pg_catalog.pg_publication_tables
                   where pubname = 'supabase_realtime'
                     and schemaname = 'public' and tablename = v_table) then
            execute format('alter publication supabase_realtime drop table %I.%I',
                           'public', v_table);
        end if;
    end loop;
end;
$$;

-- Who may join which topic: SELECT policies on realtime.messages, which Realtime checks when a
-- client joins a private channel. Topics are compared with starts_with, never LIKE (a PC id may
-- hold % or _). No INSERT policy: no client may broadcast on these topics (a forged hand on the
-- graphics desk); the derivation sends as the owner of this file.
do $$
begin
    if to_regclass('realtime.messages') is not null then
        execute 'drop policy if exists gfx_hands_live_receive on realtime.messages';
        execute $p$
            create policy gfx_hands_live_receive on realtime.messages
                for select to authenticated
                using (extension = 'broadcast'
                       and (select public.gfx_access()) = 'live'
                       and (starts_with(topic, 'gfx:live:') or starts_with(topic, 'gfx:delayed:')))
        $p$;
        execute 'drop policy if exists gfx_hands_delayed_receive on realtime.messages';
        execute $p$
            create policy gfx_hands_delayed_receive on realtime.messages
                for select to authenticated
                using (extension = 'broadcast'
                       and (select public.gfx_access()) = 'delayed'
                       and starts_with(topic, 'gfx:delayed:'))
        $p$;
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Access to the hand objects. Each table has a permissive policy (the tiers that may read it at
-- all), under the names 20261203100000_gfx_hands.sql used for `using (true)`, and a restrictive
-- one with the whole rule: should that older file be applied again, its `using (true)` still
-- lets nobody past the restrictive policy.
-- The claim is read once per statement, as `(select public.gfx_access() = 'live')`: a boolean
-- the planner counts as true for half the rows. Written `(select public.gfx_access()) = 'live'`
-- it counts it as true for 0.5 % of them, and then sorts every hand of a table rather than read
-- the newest through the index.
-- ---------------------------------------------------------------------------------------------
alter table public.gfx_security_delays enable row level security;
alter table public.gfx_hand_releases enable row level security;

drop policy if exists gfx_hands_read on public.gfx_hands;
create policy gfx_hands_read on public.gfx_hands
    for select to authenticated
    using ((select public.gfx_access() in ('live', 'delayed')));
drop policy if exists gfx_hands_tier on public.gfx_hands;
create policy gfx_hands_tier on public.gfx_hands
    as restrictive for select to PUBLIC
    using ((select public.gfx_access() = 'live')
           or ((select public.gfx_access() = 'delayed')
               and (first_stored_at <= (select now() - public.gfx_security_delay_max())
                    or first_stored_at <= now() - public.gfx_security_delay(gfx_pc_id))));

-- A player or an event is readable when its hand is (the policies of gfx_hands apply inside).
drop policy if exists gfx_hand_players_read on public.gfx_hand_players;
create policy gfx_hand_players_read on public.gfx_hand_players
    for select to authenticated
    using ((select public.gfx_access() in ('live', 'delayed')));
drop policy if exists gfx_hand_players_tier on public.gfx_hand_players;
create policy gfx_hand_players_tier on public.gfx_hand_players
    as restrictive for select to PUBLIC
    using ((select public.gfx_access() = 'live')
           or ((select public.gfx_access() = 'delayed')
               and exists (select 1 from public.gfx_hands h
                           where h.gfx_pc_id = gfx_hand_players.gfx_pc_id
                             and h.session_id = gfx_hand_players.session_id
                             and h.hand_num = gfx_hand_players.hand_num
                             and h.hand_seq = gfx_hand_players.hand_seq)));

drop policy if exists gfx_hand_events_read on public.gfx_hand_events;
create policy gfx_hand_events_read on public.gfx_hand_events
    for select to authenticated
    using ((select public.gfx_access() in ('live', 'delayed')));
drop policy if exists gfx_hand_events_tier on public.gfx_hand_events;
create policy gfx_hand_events_tier on public.gfx_hand_events
    as restrictive for select to PUBLIC
    using ((select public.gfx_access() = 'live')
           or ((select public.gfx_access() = 'delayed')
               and exists (select 1 from public.gfx_hands h
                           where h.gfx_pc_id = gfx_hand_events.gfx_pc_id
                             and h.session_id = gfx_hand_events.session_id
                             and h.hand_num = gfx_hand_events.hand_num
                             and h.hand_seq = gfx_hand_events.hand_seq)));

-- When a hand just ended, and which failed: the live tier only.
drop policy if exists gfx_hand_errors_read on public.gfx_hand_errors;
create policy gfx_hand_errors_read on public.gfx_hand_errors
    for select to authenticated
    using ((select public.gfx_access() = 'live'));
drop policy if exists gfx_hand_errors_tier on public.gfx_hand_errors;
create policy gfx_hand_errors_tier on public.gfx_hand_errors
    as restrictive for select to PUBLIC
    using ((select public.gfx_access() = 'live'));

drop policy if exists gfx_hand_sessions_read on public.gfx_hand_sessions;
create policy gfx_hand_sessions_read on public.gfx_hand_sessions
    for select to authenticated
    using ((select public.gfx_access() = 'live'));
drop policy if exists gfx_hand_sessions_tier on public.gfx_hand_sessions;
create policy gfx_hand_sessions_tier on public.gfx_hand_sessions
    as restrictive for select to PUBLIC
    using ((select public.gfx_access() = 'live'));

revoke all on public.gfx_hands, public.gfx_hand_players, public.gfx_hand_events,
              public.gfx_hand_errors, public.gfx_hand_sessions,
              public.gfx_current_hand, public.gfx_chip_counts,
              public.gfx_security_delays, public.gfx_hand_releases
    from PUBLIC, anon, authenticated, service_role;

grant usage on schema public to authenticated, service_role;
grant select on public.gfx_hands, public.gfx_hand_players, public.gfx_hand_events,
                public.gfx_hand_errors, public.gfx_hand_sessions,
                public.gfx_current_hand, public.gfx_chip_counts
    to authenticated, service_role;
grant select on public.gfx_security_delays, public.gfx_hand_releases to service_role;

revoke all on function
    public.gfx_security_delay(text),
    public.gfx_security_delay_max(),
    public.gfx_set_security_delay(interval, text),
    public.gfx_hands_note_stored(),
    public.gfx_hands_forget(text, bigint),
    public.gfx_hands_sync_truncate(),
    public.gfx_hands_version(),
    public.gfx_hands_payload(text, bigint, integer, integer),
    public.gfx_hands_send(text, text, jsonb),
    public.gfx_hands_announce(text, bigint, jsonb),
    public.gfx_hands_waiting(),
    public.gfx_hands_sync_session(),
    public.gfx_release_hands(),
    public.gfx_hands_release_status(),
    public.gfx_hands_status(),
    public.gfx_hands_tables(),
    public.gfx_hands_latest(),
    public.gfx_recent_showdowns(integer)
    from PUBLIC, anon, authenticated, service_role;

-- Readers' policies and views call gfx_access, gfx_security_delay(_max), gfx_hands_tables and
-- gfx_hands_latest as the reader; the rest is for the agent's key (service_role) and pg_cron (the owner).
grant execute on function public.gfx_access() to PUBLIC;
grant execute on function public.gfx_security_delay(text), public.gfx_security_delay_max()
    to authenticated, service_role;
grant execute on function public.gfx_hands_tables() to authenticated, service_role;
grant execute on function public.gfx_hands_latest() to authenticated, service_role;
grant execute on function public.gfx_recent_showdowns(integer) to authenticated, service_role;
grant execute on function public.gfx_set_security_delay(interval, text) to service_role;
grant execute on function public.gfx_release_hands() to service_role;
grant execute on function public.gfx_hands_release_status() to service_role;
grant execute on function public.gfx_hands_status() to service_role;
grant execute on function public.gfx_hands_version() to service_role;

notify pgrst, 'reload schema';
