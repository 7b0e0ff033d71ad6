"""The one Settings class: every tunable of the agent, read from GFX_SYNC_* variables or `.env`.

Validation happens once, at start. A bad value becomes a `ConfigError` whose lines read
`GFX_SYNC_<NAME>: <what is wrong>`; the value itself is never echoed (it may be a key).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

ENV_PREFIX = "GFX_SYNC_"
MiB = 1024 * 1024
GiB = 1024 * MiB


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # -- from the spec --
    nas_base_path: Path = Path("/app/data")
    registry_path: Path = Path("config/pc_registry.json")
    error_folder: Path = Path("_error")
    # Supabase (PostgREST): required unless GFX_SYNC_TARGET=sqlite; see require_target()
    supabase_url: str | None = None
    supabase_secret_key: SecretStr | None = None
    # the project's publishable key (sb_publishable_... or the legacy anon JWT): not a secret,
    # the fleet page at /fleet sends it with the user's sign-in; unset: the page asks for it
    supabase_publishable_key: str | None = None
    poll_interval: float = Field(2.0, gt=0, le=3600)
    batch_size: int = Field(500, ge=1, le=10_000)
    flush_interval: float = Field(5.0, gt=0, le=3600)
    queue_db_path: Path = Path("/app/queue/pending.db")
    queue_process_interval: float = Field(60.0, gt=0, le=86_400)
    max_retries: int = Field(5, ge=0, le=1000)
    max_queue_size: int = Field(10_000, ge=1)
    rate_limit_max_retries: int = Field(5, ge=0, le=1000)
    rate_limit_base_delay: float = Field(1.0, gt=0, le=600)
    # a Retry-After is honoured up to this many seconds (a 429 asking for a day must not stop
    # every request for a day)
    max_retry_after: float = Field(60.0, gt=0, le=3600)
    # an idle agent asks upstream this often (seconds), so an outage shows before it matters
    upstream_probe_interval: float = Field(30.0, gt=0, le=3600)
    # the table is compared with the NAS's acknowledged winners this often (seconds; 0: never),
    # and what it lacks is sent again: a row deleted by hand or a restore heals by itself
    reconcile_interval: float = Field(3600.0, ge=0, le=7 * 86_400)
    # sync_events rows older than this many days are deleted, once a day (0: kept for ever)
    sync_events_retention_days: float = Field(30.0, ge=0, le=36_500)
    # the venue this agent serves, as the fleet (gfx_fleet) shows it; heartbeats are off while
    # it is unset (in Docker the host name is the container id, new at every deploy)
    venue: str | None = None
    # seconds between heartbeats into gfx_agents (stale after 3 missed, offline after 6)
    heartbeat_interval: float = Field(15.0, ge=1, le=3600)
    health_port: int = Field(8080, ge=0, le=65_535)
    # -- added by the design --
    health_host: str = "0.0.0.0"
    rest_path: str = "/rest/v1"
    file_pattern: str = "*.json"
    # the hot files (seen changing, the newest of each PC) are stat'ed this often (at most every
    # poll); the rest of the tree once per full_sweep_interval, a slice every poll (a sweep
    # shorter than a poll stats everything every poll)
    hot_poll_interval: float = Field(0.5, gt=0, le=3600)
    full_sweep_interval: float = Field(600.0, gt=0, le=86_400)
    linger: float = Field(0.25, ge=0, le=60)
    max_file_bytes: int = Field(50 * MiB, ge=1024)
    max_batch_bytes: int = Field(4 * MiB, ge=1024)
    max_queue_bytes: int = Field(2 * GiB, ge=MiB)
    request_timeout: float = Field(30.0, gt=0, le=600)
    # seconds a NAS read (a file, the registry, a reconcile read) may take before its PC is
    # shown hung and the reader moves on (a stale SMB mount never answers nor fails)
    nas_read_timeout: float = Field(30.0, gt=0, le=3600)
    shutdown_timeout: float = Field(5.0, gt=0, le=300)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    dashboard_token: SecretStr | None = None
    # live dashboards (SSE streams) one client address may hold open, of the 16 in all: one
    # flaky laptop cannot take them all; behind a reverse proxy every client is the proxy
    dashboard_streams_per_client: int = Field(4, ge=1, le=16)
    # webhooks (comma-separated) told of health changes and alerts; secrets: logs name the host
    notify_url: SecretStr | None = None
    # where rows go: Supabase's PostgREST, or an embedded SQLite file (never chosen silently:
    # unset means PostgREST, which then needs the two Supabase settings)
    target: Literal["postgrest", "sqlite"] | None = None
    # http:// sends the key in clear: allowed for a loopback host, otherwise only when asked
    allow_http: bool = False
    sqlite_target_path: Path | None = None  # default: target.db beside the queue database
    # -- alert thresholds (DESIGN 3.5, the spec's monitoring table) --
    alert_disk_percent: float = Field(80.0, gt=0, le=100)
    alert_memory_mb: float = Field(512.0, gt=0)
    alert_batch_pending: int = Field(500, ge=1)
    alert_offline_pending: int = Field(5000, ge=1)
    alert_retried_records: int = Field(10, ge=1)
    alert_retry_attempts: int = Field(5, ge=1)
    alert_upload_failures: int = Field(5, ge=1)
    alert_dead_letters: int = Field(1, ge=1)
    alert_clock_skew_seconds: float = Field(60.0, gt=0)
    # minutes without a hand from a PC that wrote one in the last two hours (0: off)
    alert_silent_minutes: float = Field(0.0, ge=0, le=24 * 60)

    @field_validator("dashboard_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # `GFX_SYNC_DASHBOARD_TOKEN=` in a .env means "no token", not "the empty token"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("venue", mode="before")
    @classmethod
    def _check_venue(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if len(value) > 200 or not value.isprintable():
            raise ValueError("must be 1-200 printable characters")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "supabase_url",
        "supabase_secret_key",
        "supabase_publishable_key",
        "notify_url",
        "target",
        "sqlite_target_path",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `GFX_SYNC_SUPABASE_URL=` as .env.example ships it means "not set"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("supabase_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            # credentials in a URL end up in logs and exception text
            raise ValueError("must not carry credentials; use GFX_SYNC_SUPABASE_SECRET_KEY")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return value.rstrip("/")

    @field_validator("supabase_secret_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not key:
            raise ValueError("must not be empty")
        if any(c.isspace() for c in key) or not key.isprintable() or not key.isascii():
            # it travels in an HTTP header: ASCII only
            raise ValueError("must be printable ASCII without spaces")
        return SecretStr(key)

    @field_validator("supabase_publishable_key")
    @classmethod
    def _check_publishable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip()
        if any(c.isspace() for c in key) or not key.isprintable() or not key.isascii():
            raise ValueError("must be printable ASCII without spaces")
        if key.startswith("sb_secret_"):
            raise ValueError("is a secret key: use the publishable one (sb_publishable_...)")
        return key

    @field_validator("notify_url")
    @classmethod
    def _check_notify(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        urls = [u.strip() for u in value.get_secret_value().split(",") if u.strip()]
        if not urls:
            return None
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # never quoting the URL: its path is the webhook's credential
                raise ValueError("every URL must start with http:// or https:// and name a host")
        return SecretStr(",".join(urls))

    @field_validator("rest_path")
    @classmethod
    def _check_rest_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("must be empty or a path such as /rest/v1")
        return value

    @field_validator("registry_path")
    @classmethod
    def _check_registry_path(cls, value: Path) -> Path:
        if value.is_absolute() or ".." in PurePosixPath(value).parts:
            raise ValueError("must be a relative path inside GFX_SYNC_NAS_BASE_PATH (no '..')")
        return value

    @field_validator("file_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("must be a file name pattern such as *.json (no '/')")
        return value

    @field_validator("health_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("nas_base_path", "queue_db_path", "sqlite_target_path")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.linger > self.flush_interval:
            raise ValueError("GFX_SYNC_LINGER must not exceed GFX_SYNC_FLUSH_INTERVAL")
        if self.supabase_url and not self.allow_http and _clear_text(self.supabase_url):
            raise ValueError(
                "GFX_SYNC_SUPABASE_URL: http:// to a host that is not this machine sends the key "
                "in clear; use https://, or set GFX_SYNC_ALLOW_HTTP=true on a network you trust"
            )
        if self.sqlite_target_file.resolve() == self.queue_db_path.resolve():
            raise ValueError(
                "GFX_SYNC_SQLITE_TARGET_PATH: must not be the queue database "
                "(GFX_SYNC_QUEUE_DB_PATH)"
            )
        if (problem := self._error_folder_problem()) is not None:
            raise ValueError(f"{ENV_PREFIX}ERROR_FOLDER: {problem}")

        return self

    def _error_folder_problem(self) -> str | None:
        """The error folder holds copies the agent makes and prunes: it must hold nothing else
        the agent needs, nor lie on the NAS (read-only, and the scanners would read the copies).
        A sub-folder of the queue's folder (the default, `_error`) is the place."""
        errors = self.error_dir.resolve()
        folders = [("the queue database's folder (GFX_SYNC_QUEUE_DB_PATH)", self.queue_db_path)]
        if self.target_kind == "sqlite":
            folders.append(
                (
                    "the SQLite target's folder (GFX_SYNC_SQLITE_TARGET_PATH)",
                    self.sqlite_target_file,
                )
            )
        for what, file in folders:
            if file.parent.resolve().is_relative_to(errors):
                return f"must not be {what} or a folder above it; use a sub-folder such as _error"
        nas = self.nas_base_path.resolve()
        if nas.is_relative_to(errors) or errors.is_relative_to(nas):
            return (
                "must not be inside the NAS folder (GFX_SYNC_NAS_BASE_PATH), be it or hold it; "
                "use a sub-folder of the queue's folder such as _error"
            )
        return None

    # -- derived values --
    @property
    def target_kind(self) -> Literal["postgrest", "sqlite"]:
        return self.target or "postgrest"

    @property
    def sqlite_target_file(self) -> Path:
        return self.sqlite_target_path or self.queue_db_path.parent / "target.db"

    @property
    def secret_key(self) -> str:
        """The Supabase key (only for the PostgREST target; require_target() checked it)."""
        if self.supabase_secret_key is None:
            raise ConfigError(["GFX_SYNC_SUPABASE_SECRET_KEY: is required but not set"])
        return self.supabase_secret_key.get_secret_value()

    @property
    def registry_file(self) -> Path:
        return self.nas_base_path / self.registry_path

    @property
    def error_dir(self) -> Path:
        """Relative error folders live beside the queue: the NAS is mounted read-only."""
        if self.error_folder.is_absolute():
            return self.error_folder
        return self.queue_db_path.parent / self.error_folder

    @property
    def rest_url(self) -> str:
        return f"{self.supabase_url or ''}{self.rest_path}"

    @property
    def upsert_url(self) -> str:
        return f"{self.rest_url}/gfx_sessions"


def _clear_text(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere


NO_TARGET = (
    "no target configured: set GFX_SYNC_SUPABASE_URL and GFX_SYNC_SUPABASE_SECRET_KEY "
    "(Supabase), or GFX_SYNC_TARGET=sqlite (a local SQLite file, no Supabase account needed). "
    "deploy/.env.example lists every setting: copy it to .env in the folder you start the agent "
    "from (deploy/.env for docker compose) and fill it in; `scripts/run` with no configuration "
    "starts the demo instead."
)


def require_target(settings: Settings) -> None:
    """What `run`, `check` and `scan` need and the local commands do not: a place for rows."""
    if settings.target_kind == "sqlite":
        return
    missing = [
        f"{ENV_PREFIX}{name.upper()}: is required but not set"
        for name in ("supabase_url", "supabase_secret_key")
        if getattr(settings, name) is None
    ]
    if len(missing) == 2 and settings.target is None:
        raise ConfigError([NO_TARGET])
    if missing:
        raise ConfigError(missing)


def _describe(error: ErrorDetails) -> str:
    loc = [part for part in error["loc"] if isinstance(part, str)]
    msg = error["msg"] or "invalid value"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if error["type"] == "missing":
        msg = "is required but not set"
    if not loc:
        # model-level checks name their variables in the message already
        return msg
    return f"{ENV_PREFIX}{loc[0].upper()}: {msg}"


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment; raise ConfigError naming each bad variable."""
    try:
        # pydantic validates and converts each value: the overrides' static types do not matter
        return Settings(**overrides)  # type: ignore[arg-type]  # object, validated at run time
    except ValidationError as exc:
        # include_input=False: the rejected value may be a secret
        problems = [_describe(e) for e in exc.errors(include_input=False, include_url=False)]
        raise ConfigError(problems) from None


def check_folders(settings: Settings) -> None:
    """Before the agent starts: the NAS folder exists and the queue folder can be written.

    Outside Docker the defaults point at /app/...: say so instead of creating /app on the host
    (the queue folder itself is created when its parent exists) or blaming the registry."""
    problems = []
    base = settings.nas_base_path
    if not base.is_dir():
        problems.append(
            f"{ENV_PREFIX}NAS_BASE_PATH: NAS folder {base} is missing"
            + (
                " (outside Docker, set it to the folder with one sub-folder per GFX PC)"
                if str(base) == "/app/data"
                else ""
            )
        )
    queue = settings.queue_db_path.parent
    if not queue.is_dir():
        if queue.parent.is_dir():
            try:
                queue.mkdir()
            except OSError as exc:
                problems.append(f"{ENV_PREFIX}QUEUE_DB_PATH: cannot create {queue}: {exc.strerror}")
        else:
            problems.append(
                f"{ENV_PREFIX}QUEUE_DB_PATH: folder {queue.parent} is missing"
                + (
                    " (outside Docker, set it to a writable folder, e.g. ./queue/pending.db)"
                    if str(queue).startswith("/app/")
                    else ""
                )
            )
    if queue.is_dir() and not os.access(queue, os.W_OK | os.X_OK):
        problems.append(f"{ENV_PREFIX}QUEUE_DB_PATH: folder {queue} is not writable")
    if problems:
        raise ConfigError(problems)
