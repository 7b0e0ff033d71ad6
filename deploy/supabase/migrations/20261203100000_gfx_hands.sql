-- trio-gfxsync: live hand tables, derived by the database from gfx_sessions.raw_json (issue 11).
--
-- Optional: the agent works without it. Apply it after 20261126150000_gfx_sync.sql, the same
-- ways (`supabase db push --workdir deploy`, the SQL editor, `trio-gfxsync schema --hands`).
-- Every statement can run again without error. docs/hands.md describes the tables and views.
--
-- How it stays right: a trigger on gfx_sessions re-derives a session's hands whenever its row
-- is inserted or its file_hash changes, inside the agent's own upsert. So arrival order,
-- retries, the offline queue and the keep-newest rule (a BEFORE UPDATE trigger that skips an
-- older copy: then no AFTER trigger fires) apply unchanged, and the hand tables always hold
-- what the session row holds. Only raw_json, file_hash, gfx_pc_id and session_id are read.
--
-- Another schema: every lower-case word `public` in this file names the schema of the hand
-- tables, except in `public.gfx_sessions` (the role is spelt PUBLIC). Replacing the others
-- (docs/hands.md, "Installing beside another gfx_hands") installs the same objects elsewhere,
-- e.g. next to another tool's gfx_hands.

-- ---------------------------------------------------------------------------------------------
-- Pre-flight: never alter a table this file did not create.
-- ---------------------------------------------------------------------------------------------
do $$
declare
    v_spec   record;
    v_kind   "char";
    v_actual text;
    v_other  text;
begin
    if to_regclass('public.gfx_sessions') is null then
        raise exception 'gfx_hands: table public.gfx_sessions does not exist'
            using hint = 'Apply 20261126150000_gfx_sync.sql (trio-gfxsync schema) first.';
    end if;
    for v_spec in
        select c from unnest(array['gfx_pc_id', 'session_id', 'file_hash', 'raw_json']) c
    loop
        if not exists (select 1 from pg_catalog.pg_attribute a
                       where a.attrelid = 'public.gfx_sessions'::regclass
                         and a.attname = v_spec.c and a.attnum > 0 and not a.attisdropped) then
            raise exception 'gfx_hands: public.gfx_sessions has no column %', v_spec.c
                using hint = 'Apply 20261126150000_gfx_sync.sql (trio-gfxsync schema) first.';
        end if;
    end loop;

    -- Installed twice, in two schemas, both triggers would write: refuse the second.
    select n.nspname into v_other
    from pg_catalog.pg_trigger t
    join pg_catalog.pg_proc p on p.oid = t.tgfoid
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where t.tgrelid = 'public.gfx_sessions'::regclass and t.tgname = 'gfx_hands_on_insert'
      and n.nspname <> 'public'
    limit 1;
    if v_other is not null then
        raise exception 'gfx_hands: the hand tables are already installed in schema %', v_other
            using errcode = 'duplicate_object',
                  hint = 'Use that installation, or drop its triggers gfx_hands_on_* on '
                         'gfx_sessions first.';
    end if;

    -- Every column of every table below, in order. An existing table must have each of them with
    -- this type (later migrations may add columns); otherwise it is someone else's table.
    for v_spec in
        select s.tbl, s.col, s.typ, s.pos
        from (values
            ('gfx_hands', 1, 'gfx_pc_id', 'text'),
            ('gfx_hands', 2, 'session_id', 'bigint'),
            ('gfx_hands', 3, 'session_key', 'text'),
            ('gfx_hands', 4, 'hand_num', 'integer'),
            ('gfx_hands', 5, 'hand_seq', 'integer'),
            ('gfx_hands', 6, 'hand_hash', 'text'),
            ('gfx_hands', 7, 'game_variant', 'text'),
            ('gfx_hands', 8, 'game_class', 'text'),
            ('gfx_hands', 9, 'bet_structure', 'text'),
            ('gfx_hands', 10, 'start_time', 'timestamp with time zone'),
            ('gfx_hands', 11, 'start_time_text', 'text'),
            ('gfx_hands', 12, 'duration_seconds', 'numeric'),
            ('gfx_hands', 13, 'duration_iso', 'text'),
            ('gfx_hands', 14, 'recording_offset_iso', 'text'),
            ('gfx_hands', 15, 'recording_offset_seconds', 'numeric'),
            ('gfx_hands', 16, 'num_boards', 'integer'),
            ('gfx_hands', 17, 'run_it_num_times', 'integer'),
            ('gfx_hands', 18, 'ante_amt', 'bigint'),
            ('gfx_hands', 19, 'bomb_pot_amt', 'bigint'),
            ('gfx_hands', 20, 'description', 'text'),
            ('gfx_hands', 21, 'blinds', 'jsonb'),
            ('gfx_hands', 22, 'ante_type', 'text'),
            ('gfx_hands', 23, 'small_blind_amt', 'bigint'),
            ('gfx_hands', 24, 'big_blind_amt', 'bigint'),
            ('gfx_hands', 25, 'third_blind_amt', 'bigint'),
            ('gfx_hands', 26, 'blind_level', 'integer'),
            ('gfx_hands', 27, 'button_seat', 'integer'),
            ('gfx_hands', 28, 'small_blind_seat', 'integer'),
            ('gfx_hands', 29, 'big_blind_seat', 'integer'),
            ('gfx_hands', 30, 'third_blind_seat', 'integer'),
            ('gfx_hands', 31, 'stud_limits', 'jsonb'),
            ('gfx_hands', 32, 'pot_size', 'bigint'),
            ('gfx_hands', 33, 'player_count', 'integer'),
            ('gfx_hands', 34, 'showdown_count', 'integer'),
            ('gfx_hands', 35, 'board_cards', 'text[]'),
            ('gfx_hands', 36, 'second_board_cards', 'text[]'),
            ('gfx_hands', 37, 'winner_name', 'text'),
            ('gfx_hands', 38, 'winner_seat', 'integer'),
            ('gfx_hands', 39, 'created_at', 'timestamp with time zone'),
            ('gfx_hands', 40, 'updated_at', 'timestamp with time zone'),
            ('gfx_hand_players', 1, 'gfx_pc_id', 'text'),
            ('gfx_hand_players', 2, 'session_id', 'bigint'),
            ('gfx_hand_players', 3, 'session_key', 'text'),
            ('gfx_hand_players', 4, 'hand_num', 'integer'),
            ('gfx_hand_players', 5, 'hand_seq', 'integer'),
            ('gfx_hand_players', 6, 'seat_num', 'integer'),
            ('gfx_hand_players', 7, 'player_name', 'text'),
            ('gfx_hand_players', 8, 'long_name', 'text'),
            ('gfx_hand_players', 9, 'hole_cards', 'text[]'),
            ('gfx_hand_players', 10, 'has_shown', 'boolean'),
            ('gfx_hand_players', 11, 'start_stack_amt', 'bigint'),
            ('gfx_hand_players', 12, 'end_stack_amt', 'bigint'),
            ('gfx_hand_players', 13, 'stack_change', 'bigint'),
            ('gfx_hand_players', 14, 'cumulative_winnings_amt', 'bigint'),
            ('gfx_hand_players', 15, 'blind_bet_straddle_amt', 'bigint'),
            ('gfx_hand_players', 16, 'sitting_out', 'boolean'),
            ('gfx_hand_players', 17, 'elimination_rank', 'integer'),
            ('gfx_hand_players', 18, 'is_winner', 'boolean'),
            ('gfx_hand_players', 19, 'at_showdown', 'boolean'),
            ('gfx_hand_players', 20, 'vpip_percent', 'numeric'),
            ('gfx_hand_players', 21, 'preflop_raise_percent', 'numeric'),
            ('gfx_hand_players', 22, 'aggression_frequency_percent', 'numeric'),
            ('gfx_hand_players', 23, 'went_to_showdown_percent', 'numeric'),
            ('gfx_hand_players', 24, 'created_at', 'timestamp with time zone'),
            ('gfx_hand_events', 1, 'gfx_pc_id', 'text'),
            ('gfx_hand_events', 2, 'session_id', 'bigint'),
            ('gfx_hand_events', 3, 'session_key', 'text'),
            ('gfx_hand_events', 4, 'hand_num', 'integer'),
            ('gfx_hand_events', 5, 'hand_seq', 'integer'),
            ('gfx_hand_events', 6, 'event_order', 'integer'),
            ('gfx_hand_events', 7, 'event_type', 'text'),
            ('gfx_hand_events', 8, 'event_type_raw', 'text'),
            ('gfx_hand_events', 9, 'player_num', 'integer'),
            ('gfx_hand_events', 10, 'bet_amt', 'bigint'),
            ('gfx_hand_events', 11, 'pot', 'bigint'),
            ('gfx_hand_events', 12, 'board_cards', 'text'),
            ('gfx_hand_events', 13, 'board_num', 'integer'),
            ('gfx_hand_events', 14, 'num_cards_drawn', 'integer'),
            ('gfx_hand_events', 15, 'event_time', 'timestamp with time zone'),
            ('gfx_hand_events', 16, 'event_time_text', 'text'),
            ('gfx_hand_events', 17, 'created_at', 'timestamp with time zone'),
            ('gfx_hand_errors', 1, 'id', 'bigint'),
            ('gfx_hand_errors', 2, 'gfx_pc_id', 'text'),
            ('gfx_hand_errors', 3, 'session_id', 'bigint'),
            ('gfx_hand_errors', 4, 'session_key', 'text'),
            ('gfx_hand_errors', 5, 'hand_index', 'integer'),
            ('gfx_hand_errors', 6, 'hand_num', 'integer'),
            ('gfx_hand_errors', 7, 'hand_seq', 'integer'),
            ('gfx_hand_errors', 8, 'reason', 'text'),
            ('gfx_hand_errors', 9, 'file_hash', 'text'),
            ('gfx_hand_errors', 10, 'created_at', 'timestamp with time zone'),
            ('gfx_hand_sessions', 1, 'gfx_pc_id', 'text'),
            ('gfx_hand_sessions', 2, 'session_id', 'bigint'),
            ('gfx_hand_sessions', 3, 'session_key', 'text'),
            ('gfx_hand_sessions', 4, 'file_hash', 'text'),
            ('gfx_hand_sessions', 5, 'derive_version', 'text'),
            ('gfx_hand_sessions', 6, 'hand_count', 'integer'),
            ('gfx_hand_sessions', 7, 'error_count', 'integer'),
            ('gfx_hand_sessions', 8, 'latest_hand_num', 'integer'),
            ('gfx_hand_sessions', 9, 'latest_hand_seq', 'integer'),
            ('gfx_hand_sessions', 10, 'derived_at', 'timestamp with time zone')
        ) as s(tbl, pos, col, typ)
        order by s.tbl, s.pos
    loop
        select c.relkind into v_kind
        from pg_catalog.pg_class c
        where c.oid = to_regclass('public.' || v_spec.tbl);
        continue when v_kind is null;
        if v_kind not in ('r', 'p') then
            raise exception 'gfx_hands: public.% already exists and is not a table', v_spec.tbl
                using errcode = 'duplicate_table',
                      hint = 'This migration never replaces objects it did not create: install '
                             'the hand tables under another schema (docs/hands.md, "Installing '
                             'beside another gfx_hands").';
        end if;
        select pg_catalog.format_type(a.atttypid, a.atttypmod) into v_actual
        from pg_catalog.pg_attribute a
        where a.attrelid = to_regclass('public.' || v_spec.tbl)
          and a.attname = v_spec.col and a.attnum > 0 and not a.attisdropped;
        if v_actual is distinct from v_spec.typ then
            raise exception 'gfx_hands: table public.% already exists with another shape: %',
                v_spec.tbl,
                case when v_actual is null
                     then format('it has no column %s (expected %s)', v_spec.col, v_spec.typ)
                     else format('column %s is %s, expected %s', v_spec.col, v_actual, v_spec.typ)
                end
                using errcode = 'duplicate_table',
                      hint = 'It is probably another tool''s table of the same name (the '
                             'automation_schema batch normaliser has its own gfx_hands). This '
                             'migration never alters existing tables: install the hand tables '
                             'under another schema (docs/hands.md, "Installing beside another '
                             'gfx_hands").';
        end if;
    end loop;
end;
$$;

do $$
begin
    if not exists (select 1 from pg_catalog.pg_namespace where nspname = 'public') then
        create schema public;
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Tables. Keys: (gfx_pc_id, session_id, hand_num, hand_seq). hand_seq is 1 for the first hand
-- of a file with a given HandNum and 2, 3... for repeats: real exports repeat a HandNum (the
-- samples hold two different hands numbered 43 in one session), and both are kept.
-- session_key is session_id as text, because JavaScript rounds 18-digit numbers.
-- Amounts are bigint (chip counts pass 2^31 at high stakes); percentages numeric (as written).
-- ---------------------------------------------------------------------------------------------
create table if not exists public.gfx_hands (
    gfx_pc_id                text not null,
    session_id               bigint not null,
    session_key              text generated always as (session_id::text) stored,
    hand_num                 integer not null,
    hand_seq                 integer not null default 1,
    -- md5 of the hand's jsonb text: a rewrite of the file re-derives only hands whose JSON changed.
    hand_hash                text not null,
    game_variant             text,
    game_class               text,
    bet_structure            text,
    -- StartDateTimeUTC: PostgreSQL keeps microseconds, start_time_text all 7 digits as written.
    start_time               timestamptz,
    start_time_text          text,
    -- Duration (ISO 8601, e.g. PT35M37.2477537S) as exact seconds, and as written.
    duration_seconds         numeric,
    duration_iso             text,
    recording_offset_iso     text,
    recording_offset_seconds numeric,
    num_boards               integer,
    run_it_num_times         integer,
    ante_amt                 bigint,
    bomb_pot_amt             bigint,
    description              text,
    -- FlopDrawBlinds with the automation_schema keys (big_blind_amt, button_player_num, ...),
    -- and the same values as columns for filters.
    blinds                   jsonb,
    ante_type                text,
    small_blind_amt          bigint,
    big_blind_amt            bigint,
    third_blind_amt          bigint,
    blind_level              integer,
    button_seat              integer,
    small_blind_seat         integer,
    big_blind_seat           integer,
    third_blind_seat         integer,
    stud_limits              jsonb,
    -- The largest Pot of the hand's events: PokerGFX writes the pot before each betting action.
    pot_size                 bigint,
    player_count             integer,
    -- Players who reached the end of the hand with cards (none folded), when at least two did.
    showdown_count           integer,
    -- BOARD CARD events, in order: board 1 (BoardNum 0 or 1), and board 2 when run twice.
    board_cards              text[] not null default '{}',
    second_board_cards       text[] not null default '{}',
    -- The player whose stack grew most in this hand.
    winner_name              text,
    winner_seat              integer,
    created_at               timestamptz not null default now(),
    updated_at               timestamptz not null default now(),
    constraint gfx_hands_pkey primary key (gfx_pc_id, session_id, hand_num, hand_seq)
);

create table if not exists public.gfx_hand_players (
    gfx_pc_id                    text not null,
    session_id                   bigint not null,
    session_key                  text generated always as (session_id::text) stored,
    hand_num                     integer not null,
    hand_seq                     integer not null,
    -- PlayerNum: the seat, as the events' player_num.
    seat_num                     integer not null,
    player_name                  text,
    long_name                    text,
    -- HoleCards ["ah kd"] as {ah,kd}; empty when PokerGFX does not know them.
    hole_cards                   text[] not null default '{}',
    has_shown                    boolean generated always as (cardinality(hole_cards) > 0) stored,
    start_stack_amt              bigint,
    end_stack_amt                bigint,
    stack_change                 bigint generated always as (end_stack_amt - start_stack_amt) stored,
    -- Over the session so far, as PokerGFX counts it.
    cumulative_winnings_amt      bigint,
    blind_bet_straddle_amt       bigint,
    sitting_out                  boolean,
    elimination_rank             integer,
    is_winner                    boolean generated always as
                                     (coalesce(end_stack_amt - start_stack_amt, 0) > 0) stored,
    at_showdown                  boolean not null default false,
    vpip_percent                 numeric,
    preflop_raise_percent        numeric,
    aggression_frequency_percent numeric,
    went_to_showdown_percent     numeric,
    created_at                   timestamptz not null default now(),
    constraint gfx_hand_players_pkey
        primary key (gfx_pc_id, session_id, hand_num, hand_seq, seat_num),
    constraint gfx_hand_players_hand_fkey foreign key (gfx_pc_id, session_id, hand_num, hand_seq)
        references public.gfx_hands on delete cascade
);

create table if not exists public.gfx_hand_events (
    gfx_pc_id       text not null,
    session_id      bigint not null,
    session_key     text generated always as (session_id::text) stored,
    hand_num        integer not null,
    hand_seq        integer not null,
    -- Position in the hand's Events array, from 0.
    event_order     integer not null,
    -- EventType with blanks as underscores ('ALL IN' -> 'ALL_IN'), and as written.
    event_type      text,
    event_type_raw  text,
    -- 0 for board cards.
    player_num      integer,
    bet_amt         bigint,
    pot             bigint,
    board_cards     text,
    board_num       integer,
    num_cards_drawn integer,
    event_time      timestamptz,
    event_time_text text,
    created_at      timestamptz not null default now(),
    constraint gfx_hand_events_pkey
        primary key (gfx_pc_id, session_id, hand_num, hand_seq, event_order),
    constraint gfx_hand_events_hand_fkey foreign key (gfx_pc_id, session_id, hand_num, hand_seq)
        references public.gfx_hands on delete cascade
);

-- A hand the trigger could not derive (the session row is stored all the same). Rewritten with
-- each derivation of its session: the rows always describe the stored file.
create table if not exists public.gfx_hand_errors (
    id          bigint generated always as identity primary key,
    gfx_pc_id   text not null,
    session_id  bigint not null,
    session_key text generated always as (session_id::text) stored,
    -- Position in Hands (from 0); null when the whole session could not be read.
    hand_index  integer,
    hand_num    integer,
    hand_seq    integer,
    reason      text not null,
    file_hash   text,
    created_at  timestamptz not null default now()
);

-- Which version of each session the hand tables hold: `gfx_hands_status()` compares it with
-- gfx_sessions.file_hash, and the views list tables from it.
create table if not exists public.gfx_hand_sessions (
    gfx_pc_id      text not null,
    session_id     bigint not null,
    session_key    text generated always as (session_id::text) stored,
    file_hash      text not null,
    derive_version text not null,
    hand_count     integer not null,
    error_count    integer not null,
    -- The session's latest hand (latest start, then highest number): the views' current hand.
    latest_hand_num integer,
    latest_hand_seq integer,
    derived_at     timestamptz not null default now(),
    constraint gfx_hand_sessions_pkey primary key (gfx_pc_id, session_id)
);

-- No second index on gfx_hands over (gfx_pc_id, session_id): on a table without statistics
-- it costs the same as the primary key to the foreign-key checks of every player and event
-- inserted, and their cached plan then scans the whole session per row (quadratic: 3 s for a
-- 1,000-hand session). The latest hand is found through gfx_hand_sessions instead.
create index if not exists gfx_hand_errors_session_idx
    on public.gfx_hand_errors (gfx_pc_id, session_id);

comment on column public.gfx_hands.session_key is
    'session_id as text: JavaScript rounds 18-digit numbers, so browsers must read this column';
comment on column public.gfx_hands.hand_seq is
    '1 for the first hand of the file with this HandNum, 2.. for repeats (PokerGFX repeats some)';

-- ---------------------------------------------------------------------------------------------
-- Derivation. Small helpers first; they raise with a message naming the field, which the
-- per-hand error capture below stores as the reason.
-- ---------------------------------------------------------------------------------------------

-- The version of the derivation rules: gfx_hands_status() reports sessions derived by another.
create or replace function public.gfx_hands_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261203100000'::text $$;

-- STABLE, not IMMUTABLE: the planner must never fold a call with constant arguments (that would
-- raise while planning, even where the CASE branch is never taken).
create or replace function public.gfx_hands_fail(p_message text)
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
    raise exception using message = p_message, errcode = 'data_exception';
end;
$$;

-- A JSON array, or [] for a missing or null value; anything else is an error.
create or replace function public.gfx_hands_list(p_value jsonb, p_what text)
returns jsonb
language sql
stable
as $$
    select case
        when p_value is null or jsonb_typeof(p_value) = 'null' then '[]'::jsonb
        when jsonb_typeof(p_value) = 'array' then p_value
        else public.gfx_hands_fail(
            format('%s is a JSON %s, not an array', p_what, jsonb_typeof(p_value)))::jsonb
    end
$$;

-- A JSON object, or null for a missing or null value; anything else is an error.
create or replace function public.gfx_hands_object(p_value jsonb, p_what text)
returns jsonb
language sql
stable
as $$
    select case
        when p_value is null or jsonb_typeof(p_value) = 'null' then null
        when jsonb_typeof(p_value) = 'object' then p_value
        else public.gfx_hands_fail(
            format('%s is a JSON %s, not an object', p_what, jsonb_typeof(p_value)))::jsonb
    end
$$;

-- An ISO 8601 date and time; UTC when it has no offset (the fields are UTC by name). PostgreSQL
-- would also take 'now' or 'epoch': those are errors here.
create or replace function public.gfx_hands_time(p_text text, p_what text)
returns timestamptz
language sql
stable
as $$
    select case
        when p_text is null then null
        when p_text ~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?\s*([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$'
        then (case when p_text ~ '([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)\s*$' then p_text
                   else p_text || 'Z' end)::timestamptz
        else public.gfx_hands_fail(
            format('%s is not an ISO 8601 date and time: %s', p_what, p_text))::timestamptz
    end
$$;

-- An ISO 8601 duration as .NET writes a TimeSpan ([-]P[nD][T[nH][nM][n.nS]]) in exact seconds.
create or replace function public.gfx_hands_seconds(p_text text, p_what text)
returns numeric
language plpgsql
stable
as $$
declare
    m text[];
begin
    if p_text is null then
        return null;
    end if;
    m := regexp_match(p_text,
        '^\s*(-)?P(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?\s*$');
    if m is null or (m[2] is null and m[3] is null and m[4] is null and m[5] is null) then
        perform public.gfx_hands_fail(format('%s is not an ISO 8601 duration: %s', p_what, p_text));
    end if;
    return (case when m[1] = '-' then -1 else 1 end)
         * (coalesce(m[2]::numeric, 0) * 86400 + coalesce(m[3]::numeric, 0) * 3600
            + coalesce(m[4]::numeric, 0) * 60 + coalesce(m[5]::numeric, 0));
end;
$$;

-- Write (or rewrite) the given hands of one session, set-based: the hand rows (updated in place,
-- so created_at stays), then their players and events (replaced). Raises on bad data; the
-- caller isolates the bad hand.
create or replace function public.gfx_hands_write(
    p_pc text, p_session bigint, p_nums integer[], p_seqs integer[], p_hashes text[],
    p_hands jsonb[])
returns integer
language plpgsql
-- The planner's guess for this statement (the SRFs' default 100 rows, nested) passes
-- jit_above_cost, and compiling it costs ~1.5 s per call for a few milliseconds of work.
set jit = off
as $$
declare
    v_count integer;
begin
    delete from public.gfx_hand_players t
    using unnest(p_nums, p_seqs) as k(n, s)
    where t.gfx_pc_id = p_pc and t.session_id = p_session
      and t.hand_num = k.n and t.hand_seq = k.s;
    delete from public.gfx_hand_events t
    using unnest(p_nums, p_seqs) as k(n, s)
    where t.gfx_pc_id = p_pc and t.session_id = p_session
      and t.hand_num = k.n and t.hand_seq = k.s;

    with src as (
        select u.n, u.s, u.hash, u.h,
               public.gfx_hands_object(u.h -> 'FlopDrawBlinds', 'FlopDrawBlinds') as b,
               public.gfx_hands_list(u.h -> 'Players', 'Players') as players,
               public.gfx_hands_list(u.h -> 'Events', 'Events') as events
        from unnest(p_nums, p_seqs, p_hashes, p_hands) as u(n, s, hash, h)
    ),
    ev_raw as materialized (
        select src.n, src.s, (x.ord - 1)::integer as event_order,
               case when jsonb_typeof(x.e) = 'object' then x.e
                    else public.gfx_hands_fail(format('Events[%s] is a JSON %s, not an object',
                                                      x.ord - 1, jsonb_typeof(x.e)))::jsonb
               end as e
        from src
        cross join lateral jsonb_array_elements(src.events) with ordinality as x(e, ord)
    ),
    ev as materialized (
        select r.n, r.s, r.event_order,
               upper(regexp_replace(btrim(r.e ->> 'EventType'), '\s+', '_', 'g')) as event_type,
               r.e ->> 'EventType' as event_type_raw,
               (r.e ->> 'PlayerNum')::integer as player_num,
               (r.e ->> 'BetAmt')::bigint as bet_amt,
               (r.e ->> 'Pot')::bigint as pot,
               r.e ->> 'BoardCards' as board_cards,
               (r.e ->> 'BoardNum')::integer as board_num,
               (r.e ->> 'NumCardsDrawn')::integer as num_cards_drawn,
               public.gfx_hands_time(r.e ->> 'DateTimeUTC', 'DateTimeUTC') as event_time,
               r.e ->> 'DateTimeUTC' as event_time_text
        from ev_raw r
    ),
    pl as materialized (
        select src.n, src.s,
               case when jsonb_typeof(x.p) = 'object' then x.p
                    else public.gfx_hands_fail(format('Players[%s] is a JSON %s, not an object',
                                                      x.ord - 1, jsonb_typeof(x.p)))::jsonb
               end as p
        from src
        cross join lateral jsonb_array_elements(src.players) with ordinality as x(p, ord)
    ),
    pt as materialized (
        select pl.n, pl.s,
               (pl.p ->> 'PlayerNum')::integer as seat_num,
               pl.p ->> 'Name' as player_name,
               pl.p ->> 'LongName' as long_name,
               array(
                   select c.card
                   from jsonb_array_elements_text(
                            public.gfx_hands_list(pl.p -> 'HoleCards', 'HoleCards'))
                            with ordinality as a(cards, i)
                   cross join lateral regexp_split_to_table(btrim(a.cards), '\s+')
                            with ordinality as c(card, j)
                   where c.card <> ''
                   order by a.i, c.j
               ) as hole_cards,
               (pl.p ->> 'StartStackAmt')::bigint as start_stack_amt,
               (pl.p ->> 'EndStackAmt')::bigint as end_stack_amt,
               (pl.p ->> 'CumulativeWinningsAmt')::bigint as cumulative_winnings_amt,
               (pl.p ->> 'BlindBetStraddleAmt')::bigint as blind_bet_straddle_amt,
               (pl.p ->> 'SittingOut')::boolean as sitting_out,
               (pl.p ->> 'EliminationRank')::integer as elimination_rank,
               (pl.p ->> 'VPIPPercent')::numeric as vpip_percent,
               (pl.p ->> 'PreFlopRaisePercent')::numeric as preflop_raise_percent,
               (pl.p ->> 'AggressionFrequencyPercent')::numeric as aggression_frequency_percent,
               (pl.p ->> 'WentToShowDownPercent')::numeric as went_to_showdown_percent
        from pl
    ),
    folded as (
        select distinct ev.n, ev.s, ev.player_num from ev where ev.event_type = 'FOLD'
    ),
    contest as materialized (
        select pt.*,
               (not coalesce(pt.sitting_out, false) and cardinality(pt.hole_cards) > 0
                and f.player_num is null) as contending
        from pt
        left join folded f on f.n = pt.n and f.s = pt.s and f.player_num = pt.seat_num
    ),
    hs as (
        select c.n, c.s, count(*) filter (where c.contending) as contenders
        from contest c
        group by c.n, c.s
    ),
    win as (
        select distinct on (c.n, c.s) c.n, c.s, c.player_name as winner_name,
               c.seat_num as winner_seat
        from contest c
        where c.end_stack_amt - c.start_stack_amt > 0
        order by c.n, c.s, c.end_stack_amt - c.start_stack_amt desc, c.seat_num
    ),
    board as (
        select ev.n, ev.s,
               array_agg(c.card order by ev.event_order, c.j)
                   filter (where coalesce(ev.board_num, 0) <= 1) as board1,
               array_agg(c.card order by ev.event_order, c.j)
                   filter (where ev.board_num = 2) as board2
        from ev
        cross join lateral regexp_split_to_table(btrim(ev.board_cards), '\s+')
                 with ordinality as c(card, j)
        where ev.event_type = 'BOARD_CARD' and c.card <> ''
        group by ev.n, ev.s
    ),
    pots as (
        select ev.n, ev.s, max(ev.pot) as pot_size from ev group by ev.n, ev.s
    ),
    ins_hands as (
        insert into public.gfx_hands as t (
            gfx_pc_id, session_id, hand_num, hand_seq, hand_hash,
            game_variant, game_class, bet_structure, start_time, start_time_text,
            duration_seconds, duration_iso, recording_offset_iso, recording_offset_seconds,
            num_boards, run_it_num_times, ante_amt, bomb_pot_amt, description,
            blinds, ante_type, small_blind_amt, big_blind_amt, third_blind_amt, blind_level,
            button_seat, small_blind_seat, big_blind_seat, third_blind_seat, stud_limits,
            pot_size, player_count, showdown_count, board_cards, second_board_cards,
            winner_name, winner_seat)
        select p_pc, p_session, src.n, src.s, src.hash,
               src.h ->> 'GameVariant', src.h ->> 'GameClass', src.h ->> 'BetStructure',
               public.gfx_hands_time(src.h ->> 'StartDateTimeUTC', 'StartDateTimeUTC'),
               src.h ->> 'StartDateTimeUTC',
               public.gfx_hands_seconds(src.h ->> 'Duration', 'Duration'),
               src.h ->> 'Duration',
               src.h ->> 'RecordingOffsetStart',
               public.gfx_hands_seconds(src.h ->> 'RecordingOffsetStart', 'RecordingOffsetStart'),
               (src.h ->> 'NumBoards')::integer,
               (src.h ->> 'RunItNumTimes')::integer,
               (src.h ->> 'AnteAmt')::bigint,
               (src.h ->> 'BombPotAmt')::bigint,
               src.h ->> 'Description',
               case when src.b is not null then jsonb_build_object(
                   'ante_type', src.b -> 'AnteType',
                   'big_blind_amt', src.b -> 'BigBlindAmt',
                   'big_blind_player_num', src.b -> 'BigBlindPlayerNum',
                   'small_blind_amt', src.b -> 'SmallBlindAmt',
                   'small_blind_player_num', src.b -> 'SmallBlindPlayerNum',
                   'button_player_num', src.b -> 'ButtonPlayerNum',
                   'third_blind_amt', src.b -> 'ThirdBlindAmt',
                   'third_blind_player_num', src.b -> 'ThirdBlindPlayerNum',
                   'blind_level', src.b -> 'BlindLevel') end,
               src.b ->> 'AnteType',
               (src.b ->> 'SmallBlindAmt')::bigint,
               (src.b ->> 'BigBlindAmt')::bigint,
               (src.b ->> 'ThirdBlindAmt')::bigint,
               (src.b ->> 'BlindLevel')::integer,
               (src.b ->> 'ButtonPlayerNum')::integer,
               (src.b ->> 'SmallBlindPlayerNum')::integer,
               (src.b ->> 'BigBlindPlayerNum')::integer,
               (src.b ->> 'ThirdBlindPlayerNum')::integer,
               public.gfx_hands_object(src.h -> 'StudLimits', 'StudLimits'),
               coalesce(pots.pot_size, 0),
               jsonb_array_length(src.players),
               case when coalesce(hs.contenders, 0) >= 2 then hs.contenders::integer else 0 end,
               coalesce(board.board1, '{}'),
               coalesce(board.board2, '{}'),
               win.winner_name,
               win.winner_seat
        from src
        left join hs using (n, s)
        left join win using (n, s)
        left join board using (n, s)
        left join pots using (n, s)
        on conflict (gfx_pc_id, session_id, hand_num, hand_seq) do update set
            hand_hash = excluded.hand_hash,
            game_variant = excluded.game_variant,
            game_class = excluded.game_class,
            bet_structure = excluded.bet_structure,
            start_time = excluded.start_time,
            start_time_text = excluded.start_time_text,
            duration_seconds = excluded.duration_seconds,
            duration_iso = excluded.duration_iso,
            recording_offset_iso = excluded.recording_offset_iso,
            recording_offset_seconds = excluded.recording_offset_seconds,
            num_boards = excluded.num_boards,
            run_it_num_times = excluded.run_it_num_times,
            ante_amt = excluded.ante_amt,
            bomb_pot_amt = excluded.bomb_pot_amt,
            description = excluded.description,
            blinds = excluded.blinds,
            ante_type = excluded.ante_type,
            small_blind_amt = excluded.small_blind_amt,
            big_blind_amt = excluded.big_blind_amt,
            third_blind_amt = excluded.third_blind_amt,
            blind_level = excluded.blind_level,
            button_seat = excluded.button_seat,
            small_blind_seat = excluded.small_blind_seat,
            big_blind_seat = excluded.big_blind_seat,
            third_blind_seat = excluded.third_blind_seat,
            stud_limits = excluded.stud_limits,
            pot_size = excluded.pot_size,
            player_count = excluded.player_count,
            showdown_count = excluded.showdown_count,
            board_cards = excluded.board_cards,
            second_board_cards = excluded.second_board_cards,
            winner_name = excluded.winner_name,
            winner_seat = excluded.winner_seat,
            updated_at = now()
        returning 1
    ),
    ins_players as (
        insert into public.gfx_hand_players (
            gfx_pc_id, session_id, hand_num, hand_seq, seat_num, player_name, long_name,
            hole_cards, start_stack_amt, end_stack_amt, cumulative_winnings_amt,
            blind_bet_straddle_amt, sitting_out, elimination_rank, at_showdown, vpip_percent,
            preflop_raise_percent, aggression_frequency_percent, went_to_showdown_percent)
        select p_pc, p_session, c.n, c.s, c.seat_num, c.player_name, c.long_name,
               c.hole_cards, c.start_stack_amt, c.end_stack_amt, c.cumulative_winnings_amt,
               c.blind_bet_straddle_amt, c.sitting_out, c.elimination_rank,
               c.contending and hs.contenders >= 2, c.vpip_percent,
               c.preflop_raise_percent, c.aggression_frequency_percent,
               c.went_to_showdown_percent
        from contest c
        join hs using (n, s)
        returning 1
    ),
    ins_events as (
        insert into public.gfx_hand_events (
            gfx_pc_id, session_id, hand_num, hand_seq, event_order, event_type, event_type_raw,
            player_num, bet_amt, pot, board_cards, board_num, num_cards_drawn, event_time,
            event_time_text)
        select p_pc, p_session, ev.n, ev.s, ev.event_order, ev.event_type, ev.event_type_raw,
               ev.player_num, ev.bet_amt, ev.pot, ev.board_cards, ev.board_num,
               ev.num_cards_drawn, ev.event_time, ev.event_time_text
        from ev
        returning 1
    )
    -- data-modifying CTEs run to completion whether read or not
    select count(*)::integer into v_count from ins_hands;
    return v_count;
end;
$$;

-- The first field of a hand that the derivation cannot read, as "Players[2].EndStackAmt: ...":
-- asked only after a hand failed, to give its error row a reason a person can act on.
create or replace function public.gfx_hands_diagnose(p_hand jsonb)
returns text
language plpgsql
stable
as $$
declare
    v_key   text;
    v_kind  text;
    v_item  jsonb;
    v_index integer;
    v_seats integer[] := '{}';
    v_seat  integer;
    v_hand_fields constant text[] := array[
        'StartDateTimeUTC:time', 'Duration:duration', 'RecordingOffsetStart:duration',
        'NumBoards:integer', 'RunItNumTimes:integer', 'AnteAmt:bigint', 'BombPotAmt:bigint',
        'FlopDrawBlinds:object', 'StudLimits:object', 'Players:array', 'Events:array'];
    v_blind_fields constant text[] := array[
        'BigBlindAmt:bigint', 'SmallBlindAmt:bigint', 'ThirdBlindAmt:bigint',
        'BlindLevel:integer', 'ButtonPlayerNum:integer', 'SmallBlindPlayerNum:integer',
        'BigBlindPlayerNum:integer', 'ThirdBlindPlayerNum:integer'];
    v_player_fields constant text[] := array[
        'PlayerNum:integer', 'HoleCards:array', 'StartStackAmt:bigint', 'EndStackAmt:bigint',
        'CumulativeWinningsAmt:bigint', 'BlindBetStraddleAmt:bigint', 'SittingOut:boolean',
        'EliminationRank:integer', 'VPIPPercent:numeric', 'PreFlopRaisePercent:numeric',
        'AggressionFrequencyPercent:numeric', 'WentToShowDownPercent:numeric'];
    v_event_fields constant text[] := array[
        'PlayerNum:integer', 'BetAmt:bigint', 'Pot:bigint', 'BoardNum:integer',
        'NumCardsDrawn:integer', 'DateTimeUTC:time'];
    v_field text;
    v_reason text;
begin
    foreach v_field in array v_hand_fields loop
        v_key := split_part(v_field, ':', 1);
        v_reason := public.gfx_hands_check(p_hand -> v_key, split_part(v_field, ':', 2), v_key);
        if v_reason is not null then
            return v_reason;
        end if;
    end loop;
    if jsonb_typeof(p_hand -> 'FlopDrawBlinds') = 'object' then
        foreach v_field in array v_blind_fields loop
            v_key := split_part(v_field, ':', 1);
            v_reason := public.gfx_hands_check(p_hand -> 'FlopDrawBlinds' -> v_key,
                                               split_part(v_field, ':', 2),
                                               'FlopDrawBlinds.' || v_key);
            if v_reason is not null then
                return v_reason;
            end if;
        end loop;
    end if;
    if jsonb_typeof(p_hand -> 'Players') = 'array' then
        for v_item, v_index in
            select x.p, (x.ord - 1)::integer
            from jsonb_array_elements(p_hand -> 'Players') with ordinality as x(p, ord)
        loop
            if jsonb_typeof(v_item) <> 'object' then
                return format('Players[%s] is a JSON %s, not an object',
                              v_index, jsonb_typeof(v_item));
            end if;
            if v_item -> 'PlayerNum' is null or jsonb_typeof(v_item -> 'PlayerNum') = 'null' then
                return format('Players[%s].PlayerNum is missing', v_index);
            end if;
            foreach v_field in array v_player_fields loop
                v_key := split_part(v_field, ':', 1);
                v_reason := public.gfx_hands_check(v_item -> v_key, split_part(v_field, ':', 2),
                                                   format('Players[%s].%s', v_index, v_key));
                if v_reason is not null then
                    return v_reason;
                end if;
            end loop;
            v_seat := (v_item ->> 'PlayerNum')::integer;
            if v_seat = any (v_seats) then
                return format('Players[%s].PlayerNum %s appears twice in the hand',
                              v_index, v_seat);
            end if;
            v_seats := v_seats || v_seat;
        end loop;
    end if;
    if jsonb_typeof(p_hand -> 'Events') = 'array' then
        for v_item, v_index in
            select x.e, (x.ord - 1)::integer
            from jsonb_array_elements(p_hand -> 'Events') with ordinality as x(e, ord)
        loop
            if jsonb_typeof(v_item) <> 'object' then
                return format('Events[%s] is a JSON %s, not an object',
                              v_index, jsonb_typeof(v_item));
            end if;
            foreach v_field in array v_event_fields loop
                v_key := split_part(v_field, ':', 1);
                v_reason := public.gfx_hands_check(v_item -> v_key, split_part(v_field, ':', 2),
                                                   format('Events[%s].%s', v_index, v_key));
                if v_reason is not null then
                    return v_reason;
                end if;
            end loop;
        end loop;
    end if;
    return null;
end;
$$;

-- Does `p_value` convert as the derivation converts it? null if so, else "<what>: <why>".
create or replace function public.gfx_hands_check(p_value jsonb, p_kind text, p_what text)
returns text
language plpgsql
stable
as $$
declare
    v_text text := p_value #>> '{}';
begin
    case p_kind
        when 'integer' then perform v_text::integer;
        when 'bigint' then perform v_text::bigint;
        when 'numeric' then perform v_text::numeric;
        when 'boolean' then perform v_text::boolean;
        when 'time' then perform public.gfx_hands_time(v_text, p_what);
        when 'duration' then perform public.gfx_hands_seconds(v_text, p_what);
        when 'array' then perform public.gfx_hands_list(p_value, p_what);
        when 'object' then perform public.gfx_hands_object(p_value, p_what);
    end case;
    return null;
exception when others then
    -- the helpers' own messages already start with the field
    if sqlerrm like p_what || ' %' then
        return sqlerrm;
    end if;
    return p_what || ': ' || sqlerrm;
end;
$$;

-- The plan for one session's rows: record the hands that have no usable HandNum (and a Hands
-- that is not an array), delete hands no longer in the file (voided, or now unreadable), and
-- return the hands to (re)write: new ones and those whose JSON changed (all with p_force).
create or replace function public.gfx_hands_plan(
    p_pc text, p_session bigint, p_raw jsonb, p_file_hash text, p_force boolean,
    out o_idx integer[], out o_nums integer[], out o_seqs integer[], out o_hashes text[],
    out o_hands jsonb[])
language plpgsql
as $$
declare
    v_hands jsonb := p_raw -> 'Hands';
    v_force boolean := coalesce(p_force, false);
    a_idx   integer[];
    a_num   integer[];
    a_seq   integer[];
    a_hash  text[];
    a_hand  jsonb[];
    a_bad   text[];
begin
    delete from public.gfx_hand_errors where gfx_pc_id = p_pc and session_id = p_session;

    if v_hands is null or jsonb_typeof(v_hands) = 'null' then
        v_hands := '[]';
    elsif jsonb_typeof(v_hands) <> 'array' then
        insert into public.gfx_hand_errors (gfx_pc_id, session_id, reason, file_hash)
        values (p_pc, p_session, format('Hands is a JSON %s, not an array', jsonb_typeof(v_hands)),
                p_file_hash);
        v_hands := '[]';
    end if;

    -- Derived by other rules (an older version of this file): rewrite every hand.
    v_force := v_force or exists (
        select 1 from public.gfx_hand_sessions d
        where d.gfx_pc_id = p_pc and d.session_id = p_session
          and d.derive_version <> public.gfx_hands_version());

    -- Each hand's key and hash, in file order; a hand without a usable HandNum gets a reason.
    select array_agg(k.idx order by k.idx),
           array_agg(k.num order by k.idx),
           array_agg(k.seq order by k.idx),
           array_agg(md5(k.hand::text) order by k.idx),
           array_agg(k.hand order by k.idx),
           array_agg(case
               when jsonb_typeof(k.hand) <> 'object'
                   then format('hand is a JSON %s, not an object', jsonb_typeof(k.hand))
               when k.num is null and (k.hand -> 'HandNum' is null
                                       or jsonb_typeof(k.hand -> 'HandNum') = 'null')
                   then 'HandNum is missing'
               when k.num is null
                   then format('HandNum is not an integer: %s', k.hand -> 'HandNum')
           end order by k.idx)
    into a_idx, a_num, a_seq, a_hash, a_hand, a_bad
    from (
        select n.idx, n.hand, n.num,
               case when n.num is not null
                    then row_number() over (partition by n.num order by n.idx)::integer
               end as seq
        from (
            select (x.ord - 1)::integer as idx, x.hand,
                   case when jsonb_typeof(x.hand) = 'object'
                             and jsonb_typeof(x.hand -> 'HandNum') in ('number', 'string')
                             and (x.hand ->> 'HandNum') ~ '^\s*-?[0-9]{1,9}\s*$'
                        then (x.hand ->> 'HandNum')::integer
                   end as num
            from jsonb_array_elements(v_hands) with ordinality as x(hand, ord)
        ) n
    ) k;

    insert into public.gfx_hand_errors (gfx_pc_id, session_id, hand_index, reason, file_hash)
    select p_pc, p_session, u.idx, u.bad, p_file_hash
    from unnest(a_idx, a_bad) as u(idx, bad)
    where u.bad is not null;

    delete from public.gfx_hands g
    where g.gfx_pc_id = p_pc and g.session_id = p_session
      and not exists (select 1 from unnest(a_num, a_seq) as u(n, s)
                      where u.n = g.hand_num and u.s = g.hand_seq);

    select array_agg(u.idx order by u.idx), array_agg(u.n order by u.idx),
           array_agg(u.s order by u.idx), array_agg(u.hash order by u.idx),
           array_agg(u.hand order by u.idx)
    into o_idx, o_nums, o_seqs, o_hashes, o_hands
    from unnest(a_idx, a_num, a_seq, a_hash, a_hand) as u(idx, n, s, hash, hand)
    where u.n is not null
      and (v_force or not exists (
            select 1 from public.gfx_hands g
            where g.gfx_pc_id = p_pc and g.session_id = p_session
              and g.hand_num = u.n and g.hand_seq = u.s and g.hand_hash = u.hash));
end;
$$;

-- Bring one session's hand tables in line with its raw_json, and note the file_hash derived.
-- Never raises on data. The usual case costs one subtransaction: plan and write every changed
-- hand at once. Only when that fails does it start again, hand by hand, each in its own
-- subtransaction, so that a bad hand becomes an error row and the others are still written.
create or replace function public.gfx_hands_derive(
    p_pc text, p_session bigint, p_raw jsonb, p_file_hash text, p_force boolean,
    out o_hands integer, out o_written integer, out o_errors integer)
language plpgsql
set jit = off
as $$
declare
    v_plan       record;
    v_done       boolean := false;
    v_latest_num integer;
    v_latest_seq integer;
    v_message text;
    v_state   text;
    v_reason  text;
begin
    o_written := 0;
    begin
        select * into v_plan from public.gfx_hands_plan(p_pc, p_session, p_raw, p_file_hash,
                                                        p_force);
        if v_plan.o_nums is not null then
            o_written := public.gfx_hands_write(p_pc, p_session, v_plan.o_nums, v_plan.o_seqs,
                                                v_plan.o_hashes, v_plan.o_hands);
        end if;
        v_done := true;
    exception when others then
        v_done := false;  -- rolled back to the start of this block: try hand by hand
    end;

    if not v_done then
        begin
            o_written := 0;
            select * into v_plan from public.gfx_hands_plan(p_pc, p_session, p_raw,
                                                            p_file_hash, p_force);
            for i in 1 .. coalesce(cardinality(v_plan.o_nums), 0) loop
                begin
                    o_written := o_written + public.gfx_hands_write(
                        p_pc, p_session, v_plan.o_nums[i:i], v_plan.o_seqs[i:i],
                        v_plan.o_hashes[i:i], v_plan.o_hands[i:i]);
                exception when others then
                    get stacked diagnostics v_message = message_text,
                                            v_state = returned_sqlstate;
                    v_reason := coalesce(public.gfx_hands_diagnose(v_plan.o_hands[i]),
                                         format('%s (SQLSTATE %s)', v_message, v_state));
                    -- The stored row (an older version of this hand) would now disagree.
                    delete from public.gfx_hands g
                    where g.gfx_pc_id = p_pc and g.session_id = p_session
                      and g.hand_num = v_plan.o_nums[i] and g.hand_seq = v_plan.o_seqs[i];
                    insert into public.gfx_hand_errors (
                        gfx_pc_id, session_id, hand_index, hand_num, hand_seq, reason, file_hash)
                    values (p_pc, p_session, v_plan.o_idx[i], v_plan.o_nums[i],
                            v_plan.o_seqs[i], v_reason, p_file_hash);
                end;
            end loop;
        exception when others then
            -- Not a hand's data but the session's: keep nothing that could disagree, say why.
            get stacked diagnostics v_message = message_text, v_state = returned_sqlstate;
            delete from public.gfx_hands where gfx_pc_id = p_pc and session_id = p_session;
            delete from public.gfx_hand_errors where gfx_pc_id = p_pc and session_id = p_session;
            insert into public.gfx_hand_errors (gfx_pc_id, session_id, reason, file_hash)
            values (p_pc, p_session,
                    format('session could not be derived: %s (SQLSTATE %s)', v_message, v_state),
                    p_file_hash);
            o_written := 0;
        end;
    end if;

    select count(*)::integer into o_hands
    from public.gfx_hands where gfx_pc_id = p_pc and session_id = p_session;
    select count(*)::integer into o_errors
    from public.gfx_hand_errors where gfx_pc_id = p_pc and session_id = p_session;
    select g.hand_num, g.hand_seq into v_latest_num, v_latest_seq
    from public.gfx_hands g
    where g.gfx_pc_id = p_pc and g.session_id = p_session
    order by g.start_time desc nulls last, g.hand_num desc, g.hand_seq desc
    limit 1;

    insert into public.gfx_hand_sessions as d (
        gfx_pc_id, session_id, file_hash, derive_version, hand_count, error_count,
        latest_hand_num, latest_hand_seq, derived_at)
    values (p_pc, p_session, p_file_hash, public.gfx_hands_version(), o_hands, o_errors,
            v_latest_num, v_latest_seq, now())
    on conflict (gfx_pc_id, session_id) do update set
        file_hash = excluded.file_hash,
        derive_version = excluded.derive_version,
        hand_count = excluded.hand_count,
        error_count = excluded.error_count,
        latest_hand_num = excluded.latest_hand_num,
        latest_hand_seq = excluded.latest_hand_seq,
        derived_at = excluded.derived_at;
end;
$$;

-- Everything derived from one session.
create or replace function public.gfx_hands_forget(p_pc text, p_session bigint)
returns void
language sql
as $$
    delete from public.gfx_hands where gfx_pc_id = p_pc and session_id = p_session;
    delete from public.gfx_hand_errors where gfx_pc_id = p_pc and session_id = p_session;
    delete from public.gfx_hand_sessions where gfx_pc_id = p_pc and session_id = p_session;
$$;

-- ---------------------------------------------------------------------------------------------
-- Triggers on gfx_sessions. SECURITY DEFINER: they run as this file's owner, because the agent's
-- role (service_role) may only read the hand tables. search_path '' and qualified names keep
-- that safe.
-- ---------------------------------------------------------------------------------------------
create or replace function public.gfx_hands_sync_session()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op in ('DELETE', 'UPDATE')
       and (tg_op = 'DELETE' or old.gfx_pc_id is distinct from new.gfx_pc_id
            or old.session_id is distinct from new.session_id) then
        perform public.gfx_hands_forget(old.gfx_pc_id, old.session_id);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform public.gfx_hands_derive(new.gfx_pc_id, new.session_id, new.raw_json,
                                        new.file_hash, false);
    end if;
    return null;
end;
$$;

create or replace function public.gfx_hands_sync_truncate()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    truncate public.gfx_hand_events, public.gfx_hand_players, public.gfx_hands,
             public.gfx_hand_errors, public.gfx_hand_sessions;
    return null;
end;
$$;

-- Only when the file changed: an upsert of the same file (a retry, a replay) costs nothing, and
-- an older copy skipped by the keep-newest BEFORE trigger never reaches these.
create or replace trigger gfx_hands_on_insert
    after insert on public.gfx_sessions
    for each row
    execute function public.gfx_hands_sync_session();

create or replace trigger gfx_hands_on_update
    after update on public.gfx_sessions
    for each row
    when (old.file_hash is distinct from new.file_hash
          or old.gfx_pc_id is distinct from new.gfx_pc_id
          or old.session_id is distinct from new.session_id)
    execute function public.gfx_hands_sync_session();

create or replace trigger gfx_hands_on_delete
    after delete on public.gfx_sessions
    for each row
    execute function public.gfx_hands_sync_session();

create or replace trigger gfx_hands_on_truncate
    after truncate on public.gfx_sessions
    for each statement
    execute function public.gfx_hands_sync_truncate();

-- ---------------------------------------------------------------------------------------------
-- Backfill and status, for `trio-gfxsync hands rebuild` and `check` (PostgREST RPC).
-- ---------------------------------------------------------------------------------------------

-- Re-derive the hand tables from gfx_sessions, in chunks of `max_sessions` sessions ordered by
-- (gfx_pc_id, session_id) after the cursor (after_pc, after_session). Returns
-- {"sessions", "hands", "written", "errors", "busy", "orphans_removed", "next_pc",
--  "next_session", "next_session_key"}; next_* are null once done. Sessions the agent is
-- writing at that moment are skipped (counted as busy): their own trigger derives them, and the
-- agent never waits for a rebuild. Orphaned hand rows in the chunk's range are removed.
create or replace function public.gfx_hands_rebuild(
    pc text default null,
    after_pc text default null,
    after_session bigint default null,
    max_sessions integer default 20,
    force boolean default false)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_min      constant bigint := '-9223372036854775808';
    v_limit    integer := least(greatest(coalesce(gfx_hands_rebuild.max_sessions, 20), 1), 1000);
    v_row      record;
    v_result   record;
    v_sessions integer := 0;
    v_hands    bigint := 0;
    v_written  bigint := 0;
    v_errors   bigint := 0;
    v_in_range integer;
    v_orphans  integer := 0;
    v_last_pc  text;
    v_last     bigint;
    v_done     boolean;
    -- The cursor as one row value, so that it is an index condition in any plan: '' sorts
    -- before every PC id, and no session id is that small.
    v_from_pc  text := coalesce(gfx_hands_rebuild.after_pc, '');
    v_from     bigint := case when gfx_hands_rebuild.after_pc is null then v_min
                              else coalesce(gfx_hands_rebuild.after_session, v_min) end;
begin
    for v_row in
        select s.gfx_pc_id, s.session_id, s.raw_json, s.file_hash
        from public.gfx_sessions s
        where (gfx_hands_rebuild.pc is null or s.gfx_pc_id = gfx_hands_rebuild.pc)
          and (s.gfx_pc_id, s.session_id) > (v_from_pc, v_from)
        order by s.gfx_pc_id, s.session_id
        limit v_limit
        for no key update skip locked
    loop
        select * into v_result
        from public.gfx_hands_derive(v_row.gfx_pc_id, v_row.session_id, v_row.raw_json,
                                     v_row.file_hash, coalesce(gfx_hands_rebuild.force, false));
        v_sessions := v_sessions + 1;
        v_hands := v_hands + v_result.o_hands;
        v_written := v_written + v_result.o_written;
        v_errors := v_errors + v_result.o_errors;
        v_last_pc := v_row.gfx_pc_id;
        v_last := v_row.session_id;
    end loop;
    v_done := v_sessions < v_limit;

    -- The range this chunk covered: (after, last] or, once done, (after, end).
    select count(*)::integer into v_in_range
    from public.gfx_sessions s
    where (gfx_hands_rebuild.pc is null or s.gfx_pc_id = gfx_hands_rebuild.pc)
      and (s.gfx_pc_id, s.session_id) > (v_from_pc, v_from)
      and (v_done or (s.gfx_pc_id, s.session_id) <= (v_last_pc, v_last));

    -- Rows of sessions that are gone (deleted while the triggers were off, say) go too.
    for v_row in
        select d.gfx_pc_id, d.session_id
        from (select h.gfx_pc_id, h.session_id from public.gfx_hand_sessions h
              union
              select h.gfx_pc_id, h.session_id from public.gfx_hands h
              union
              select h.gfx_pc_id, h.session_id from public.gfx_hand_errors h) d
        where (gfx_hands_rebuild.pc is null or d.gfx_pc_id = gfx_hands_rebuild.pc)
          and (d.gfx_pc_id, d.session_id) > (v_from_pc, v_from)
          and (v_done or (d.gfx_pc_id, d.session_id) <= (v_last_pc, v_last))
          and not exists (select 1 from public.gfx_sessions s
                          where s.gfx_pc_id = d.gfx_pc_id and s.session_id = d.session_id)
    loop
        perform public.gfx_hands_forget(v_row.gfx_pc_id, v_row.session_id);
        v_orphans := v_orphans + 1;
    end loop;

    return jsonb_build_object(
        'sessions', v_sessions,
        'hands', v_hands,
        'written', v_written,
        'errors', v_errors,
        'busy', greatest(v_in_range - v_sessions, 0),
        'orphans_removed', v_orphans,
        'next_pc', case when v_done then null else v_last_pc end,
        'next_session', case when v_done then null else v_last end,
        'next_session_key', case when v_done then null else v_last::text end);
end;
$$;

-- What `trio-gfxsync check` reports: the installed version, and whether the hand tables hold
-- what gfx_sessions holds (missing: never derived, e.g. stored before this migration; stale:
-- derived from another file_hash or by other rules; inconsistent: rows removed behind the
-- trigger's back; orphaned: rows of a session that is gone). Any of them: run a rebuild.
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
        'hand_errors', (select coalesce(sum(n), 0) from e))
$$;

-- ---------------------------------------------------------------------------------------------
-- Views for the graphics desk. A "table" is a GFX PC (gfx_pc_id). security_invoker: the caller's
-- privileges and RLS apply to the tables beneath, as for pc_status.
-- ---------------------------------------------------------------------------------------------

-- The current (latest) hand of each table, its players as a JSON array ordered by seat.
create or replace view public.gfx_current_hand
with (security_invoker = on)
as
select t.gfx_pc_id,
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
from (
    -- each table's newest session that has hands, and that session's latest hand
    select distinct on (d.gfx_pc_id) d.gfx_pc_id, d.session_id, d.latest_hand_num,
           d.latest_hand_seq
    from public.gfx_hand_sessions d
    where d.latest_hand_num is not null
    order by d.gfx_pc_id, d.session_id desc
) t
join public.gfx_hands h
  on h.gfx_pc_id = t.gfx_pc_id and h.session_id = t.session_id
 and h.hand_num = t.latest_hand_num and h.hand_seq = t.latest_hand_seq;

-- Chip counts now: each player with chips after the latest hand of each table, biggest first.
create or replace view public.gfx_chip_counts
with (security_invoker = on)
as
select t.gfx_pc_id,
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
       rank() over (partition by t.gfx_pc_id order by p.end_stack_amt desc) as chip_rank,
       h.big_blind_amt,
       round(p.end_stack_amt::numeric / nullif(h.big_blind_amt, 0), 1) as big_blinds,
       p.sitting_out,
       p.elimination_rank
from (
    select distinct on (d.gfx_pc_id) d.gfx_pc_id, d.session_id, d.latest_hand_num,
           d.latest_hand_seq
    from public.gfx_hand_sessions d
    where d.latest_hand_num is not null
    order by d.gfx_pc_id, d.session_id desc
) t
join public.gfx_hands h
  on h.gfx_pc_id = t.gfx_pc_id and h.session_id = t.session_id
 and h.hand_num = t.latest_hand_num and h.hand_seq = t.latest_hand_seq
join public.gfx_hand_players p
  on p.gfx_pc_id = h.gfx_pc_id and p.session_id = h.session_id
 and p.hand_num = h.hand_num and p.hand_seq = h.hand_seq
where p.end_stack_amt > 0;

-- Showdowns among the last `n` hands of each table (hands_ago 0 = the current hand), with the
-- players who showed down. GET /rpc/gfx_recent_showdowns?n=10 (filters apply to its columns).
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
    from (select distinct d.gfx_pc_id from public.gfx_hand_sessions d) t
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
-- Realtime: the hand tables join the publication (Supabase only; nothing on a plain PostgreSQL).
-- ---------------------------------------------------------------------------------------------
do $$
declare
    v_table text;
begin
    if exists (select 1 from pg_catalog.pg_publication
               where pubname = 'supabase_realtime' and not puballtables) then
        foreach v_table in array array['gfx_hands', 'gfx_hand_players', 'gfx_hand_events'] loop
            if not exists (select 1 from pg_catalog.pg_publication_tables
                           where pubname = 'supabase_realtime'
                             and schemaname = 'public' and tablename = v_table) then
                execute format('alter publication supabase_realtime add table %I.%I',
                               'public', v_table);
            end if;
        end loop;
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Access. Dashboards and graphics clients (authenticated) read through RLS policies; anon reads
-- nothing. Nobody but the owner writes: the triggers and gfx_hands_rebuild (SECURITY DEFINER).
-- Supabase's default privileges grant anon and authenticated everything on new objects, hence
-- the REVOKEs; internal functions are revoked from PUBLIC too (PostgREST would expose them).
-- ---------------------------------------------------------------------------------------------
alter table public.gfx_hands enable row level security;
alter table public.gfx_hand_players enable row level security;
alter table public.gfx_hand_events enable row level security;
alter table public.gfx_hand_errors enable row level security;
alter table public.gfx_hand_sessions enable row level security;

drop policy if exists gfx_hands_read on public.gfx_hands;
create policy gfx_hands_read on public.gfx_hands for select to authenticated using (true);
drop policy if exists gfx_hand_players_read on public.gfx_hand_players;
create policy gfx_hand_players_read on public.gfx_hand_players
    for select to authenticated using (true);
drop policy if exists gfx_hand_events_read on public.gfx_hand_events;
create policy gfx_hand_events_read on public.gfx_hand_events
    for select to authenticated using (true);
drop policy if exists gfx_hand_errors_read on public.gfx_hand_errors;
create policy gfx_hand_errors_read on public.gfx_hand_errors
    for select to authenticated using (true);
drop policy if exists gfx_hand_sessions_read on public.gfx_hand_sessions;
create policy gfx_hand_sessions_read on public.gfx_hand_sessions
    for select to authenticated using (true);

revoke all on public.gfx_hands, public.gfx_hand_players, public.gfx_hand_events,
              public.gfx_hand_errors, public.gfx_hand_sessions,
              public.gfx_current_hand, public.gfx_chip_counts
    from PUBLIC, anon, authenticated, service_role;

grant usage on schema public to authenticated, service_role;
grant select on public.gfx_hands, public.gfx_hand_players, public.gfx_hand_events,
                public.gfx_hand_errors, public.gfx_hand_sessions,
                public.gfx_current_hand, public.gfx_chip_counts
    to authenticated, service_role;

revoke all on function
    public.gfx_hands_version(),
    public.gfx_hands_fail(text),
    public.gfx_hands_list(jsonb, text),
    public.gfx_hands_object(jsonb, text),
    public.gfx_hands_time(text, text),
    public.gfx_hands_seconds(text, text),
    public.gfx_hands_write(text, bigint, integer[], integer[], text[], jsonb[]),
    public.gfx_hands_diagnose(jsonb),
    public.gfx_hands_check(jsonb, text, text),
    public.gfx_hands_plan(text, bigint, jsonb, text, boolean),
    public.gfx_hands_derive(text, bigint, jsonb, text, boolean),
    public.gfx_hands_forget(text, bigint),
    public.gfx_hands_sync_session(),
    public.gfx_hands_sync_truncate(),
    public.gfx_hands_rebuild(text, text, bigint, integer, boolean),
    public.gfx_hands_status(),
    public.gfx_recent_showdowns(integer)
    from PUBLIC, anon, authenticated, service_role;

-- gfx_hands_status runs as its caller, and calls gfx_hands_version.
grant execute on function public.gfx_recent_showdowns(integer) to authenticated, service_role;
grant execute on function public.gfx_hands_status() to service_role;
grant execute on function public.gfx_hands_version() to service_role;
grant execute on function public.gfx_hands_rebuild(text, text, bigint, integer, boolean)
    to service_role;

-- PostgREST caches the schema: reload it so that the new tables, views and functions answer.
notify pgrst, 'reload schema';
