"""Stand-ins for what Supabase puts in every project's database and cannot run here: the
`realtime` schema of Supabase Realtime (Broadcast from the database) and pg_cron's `cron.job`,
and a JWT minted the way Supabase Auth mints a user's.

Realtime's own migrations (github.com/supabase/realtime, lib/realtime/tenants/repo/migrations)
define what is copied here, in their latest shape:

- `realtime.messages(topic, extension, payload, event, private, updated_at, inserted_at, id)`,
  partitioned by day on inserted_at (the service creates the partitions from yesterday to three
  days ahead), owned by `supabase_realtime_admin`, with RLS enabled and SELECT, INSERT and
  UPDATE granted to anon, authenticated and service_role: who may read or write a topic is
  decided by the project's policies alone.
- `realtime.topic()`: `current_setting('realtime.topic', true)`.
- `realtime.send(payload, event, topic, private)`: adds an id to the payload, sets
  realtime.topic, inserts a broadcast row as its caller, and turns any error into a warning.

How Realtime authorises a client joining a private channel (lib/realtime/tenants/
authorization.ex) is `join_rights`: in a transaction, as the table's owner, insert one probe row
per extension with the channel's topic; then set the role, `realtime.topic` and
`request.jwt.claims` from the client's JWT, select the probes back, and roll back. A probe the
policies let through is a right to read that extension. Sending is checked by inserting as the
client (`may_send`): a refusal for lack of privilege means no right to write.

pg_cron (`install_pg_cron`): `cron.job` with its columns and its row policy (a role sees its own
jobs), the schema closed to the API roles as on Supabase, and `cron.schedule(name, schedule,
command)`, which upserts a job by name as pg_cron's does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.support import infra

REALTIME_ADMIN = "supabase_realtime_admin"
_ROLE_LOCK_KEY = 0x6766_7872  # "gfxr": shared by concurrent test sessions (roles are per cluster)

REALTIME_SCHEMA_SQL = """
create schema if not exists realtime;
grant usage on schema realtime
    to postgres, anon, authenticated, service_role, supabase_realtime_admin;

create table if not exists realtime.messages (
    topic       text not null,
    extension   text not null,
    payload     jsonb,
    event       text,
    private     boolean default false,
    updated_at  timestamp without time zone not null default now(),
    inserted_at timestamp without time zone not null default now(),
    id          uuid not null default gen_random_uuid(),
    constraint messages_pkey primary key (id, inserted_at)
) partition by range (inserted_at);

alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;
alter table realtime.messages owner to supabase_realtime_admin;

create or replace function realtime.topic() returns text as $$
select nullif(current_setting('realtime.topic', true), '')::text;
$$ language sql stable;

create or replace function realtime.send(
    payload jsonb, event text, topic text, private boolean default true)
returns void as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('SET LOCAL realtime.topic TO %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$ language plpgsql;
"""

PG_CRON_SQL = """
create schema if not exists cron;
create table if not exists cron.job (
    jobid    bigserial primary key,
    schedule text not null,
    command  text not null,
    nodename text not null default 'localhost',
    nodeport integer not null default 5432,
    database text not null default current_database(),
    username text not null default current_user,
    active   boolean not null default true,
    jobname  text,
    constraint jobname_username_uniq unique (jobname, username)
);
alter table cron.job enable row level security;
drop policy if exists cron_job_policy on cron.job;
create policy cron_job_policy on cron.job using (username = current_user);
grant select on cron.job to PUBLIC;
-- Supabase grants the cron schema to postgres only: the API roles cannot even name cron.job.
revoke all on schema cron from PUBLIC, anon, authenticated, service_role;

create or replace function cron.schedule(job_name text, schedule text, command text)
returns bigint language sql as $$
    insert into cron.job (jobname, schedule, command) values (job_name, schedule, command)
    on conflict (jobname, username) do update
        set schedule = excluded.schedule, command = excluded.command, active = true
    returning jobid
$$;
"""


def _ensure_admin_role(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        conn.execute(
            f"""do $$ begin
                    if not exists (select 1 from pg_roles where rolname = '{REALTIME_ADMIN}') then
                        create role {REALTIME_ADMIN} nologin noinherit;
                    end if;
                end $$"""
        )


def install_realtime(dsn: str) -> None:
    """Supabase Realtime's objects, and the day partitions its service keeps ready."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ensure_admin_role(conn)
        conn.execute(REALTIME_SCHEMA_SQL)  # type: ignore[arg-type]  # a constant
        today = datetime.now(UTC).date()
        for offset in range(-1, 4):
            day = today + timedelta(days=offset)
            name = f"messages_{day.isoformat().replace('-', '_')}"
            conn.execute(
                f"create table if not exists realtime.{name} partition of realtime.messages "  # type: ignore[arg-type]
                f"for values from ('{day}') to ('{day + timedelta(days=1)}')"
            )
            conn.execute(f"alter table realtime.{name} owner to {REALTIME_ADMIN}")  # type: ignore[arg-type]


def install_pg_cron(dsn: str) -> None:
    infra.query(dsn, PG_CRON_SQL)


def _set_client(conn: psycopg.Connection[Any], topic: str, claims: Mapping[str, Any]) -> None:
    """What Realtime's set_conn_config does before it checks the policies."""
    conn.execute(
        "select set_config('role', %s, true), set_config('realtime.topic', %s, true), "
        "set_config('request.jwt.claims', %s, true), "
        "set_config('request.jwt.claim.sub', %s, true), "
        "set_config('request.jwt.claim.role', %s, true), "
        "set_config('request.headers', '{}', true)",
        (
            claims.get("role", "anon"),
            topic,
            json.dumps(claims),
            claims.get("sub", ""),
            claims.get("role", "anon"),
        ),
    )


def join_rights(dsn: str, topic: str, claims: Mapping[str, Any]) -> dict[str, bool]:
    """{extension: may read} for a client joining private channel `topic`, checked as Realtime
    checks it (probe rows, the client's role and claims, select, roll back)."""
    probes = {"broadcast": str(uuid.uuid4()), "presence": str(uuid.uuid4())}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.execute(f"set role {REALTIME_ADMIN}")  # type: ignore[arg-type]  # a constant
        for extension, probe in probes.items():
            conn.execute(
                "insert into realtime.messages (id, topic, extension) values (%s, %s, %s)",
                (probe, topic, extension),
            )
        conn.execute("reset role")
        _set_client(conn, topic, claims)
        seen = {
            str(r["id"])
            for r in conn.execute(
                "select id from realtime.messages where id = any(%s::uuid[])",
                (list(probes.values()),),
            ).fetchall()
        }
        conn.rollback()
    return {extension: probe in seen for extension, probe in probes.items()}


def may_send(dsn: str, topic: str, claims: Mapping[str, Any]) -> bool:
    """May this client broadcast on `topic`? Realtime's write check: insert as the client."""
    with psycopg.connect(dsn) as conn:
        _set_client(conn, topic, claims)
        try:
            conn.execute(
                "insert into realtime.messages (topic, extension, event, payload) "
                "values (%s, 'broadcast', 'hand', '{}')",
                (topic,),
            )
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


def readable_broadcasts(dsn: str, topic: str, claims: Mapping[str, Any]) -> int:
    """How many of `topic`'s broadcast rows this client's policies let it read (what a replay
    of the private channel would give it)."""
    with psycopg.connect(dsn) as conn:
        _set_client(conn, topic, claims)
        row = conn.execute(
            "select count(*) from realtime.messages where topic = %s and extension = 'broadcast'",
            (topic,),
        ).fetchone()
        conn.rollback()
    assert row is not None
    return int(row[0])


def broadcasts(dsn: str, topic_prefix: str = "gfx:") -> list[dict[str, Any]]:
    """Every broadcast row sent on topics starting with `topic_prefix`, oldest first."""
    return infra.query(
        dsn,
        "select topic, event, payload, private from realtime.messages "
        "where extension = 'broadcast' and starts_with(topic, %s) "
        "order by inserted_at, (payload ->> 'hand_num')::integer, topic",
        (topic_prefix,),
    )


def clear_broadcasts(dsn: str) -> None:
    infra.query(dsn, "truncate realtime.messages")


# ---------------------------------------------------------------------------------------------
# Users' JWTs, as Supabase Auth mints them
# ---------------------------------------------------------------------------------------------


def user_claims(
    *,
    app_metadata: Mapping[str, Any] | None = None,
    user_metadata: Mapping[str, Any] | None = None,
    anonymous: bool = False,
    email: str = "desk@example.org",
) -> dict[str, Any]:
    """The claims of a signed-in user's access token (Supabase Auth, GoTrue v2)."""
    now = int(datetime.now(UTC).timestamp())
    return {
        "aud": "authenticated",
        "exp": infra.FAR_FUTURE_EXP,
        "iat": now,
        "iss": "https://project-ref.supabase.co/auth/v1",
        "sub": str(uuid.uuid4()),
        "email": "" if anonymous else email,
        "phone": "",
        "app_metadata": {
            **({} if anonymous else {"provider": "email", "providers": ["email"]}),
            **(app_metadata or {}),
        },
        "user_metadata": dict(user_metadata or {}),
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "anonymous" if anonymous else "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": anonymous,
    }


def anon_claims() -> dict[str, Any]:
    """The publishable (anon) key's claims: no user at all."""
    return {"iss": "supabase", "ref": "project-ref", "role": "anon", "exp": infra.FAR_FUTURE_EXP}
