"""Settings (DESIGN 3.2): defaults, bounds, secrets never echoed, URL and path rules, `.env`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trio_gfxsync.errors import ConfigError
from trio_gfxsync.settings import Settings, load_settings, require_target

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "sb_secret_Zq8w3NvT0pLkY2xR5uHc9dJ_4mVb7sGa"
MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Only the two required variables, and a cwd without a stray `.env`."""
    for name in list(os.environ):
        if name.upper().startswith("GFX_SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GFX_SYNC_SUPABASE_URL", URL)
    monkeypatch.setenv("GFX_SYNC_SUPABASE_SECRET_KEY", KEY)
    return tmp_path


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigError:
    for name, value in env.items():
        monkeypatch.setenv(f"GFX_SYNC_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value


def test_defaults_match_the_design() -> None:
    s = load_settings()
    assert s.nas_base_path == Path("/app/data")
    assert s.registry_path == Path("config/pc_registry.json")
    assert s.registry_file == Path("/app/data/config/pc_registry.json")
    assert s.error_folder == Path("_error")
    assert s.error_dir == Path("/app/queue/_error")
    assert s.supabase_url == URL
    assert s.supabase_secret_key.get_secret_value() == KEY
    assert s.poll_interval == 2.0
    assert s.batch_size == 500
    assert s.flush_interval == 5.0
    assert s.queue_db_path == Path("/app/queue/pending.db")
    assert s.queue_process_interval == 60
    assert s.max_retries == 5
    assert s.max_queue_size == 10_000
    assert s.rate_limit_max_retries == 5
    assert s.rate_limit_base_delay == 1.0
    assert s.health_port == 8080
    assert s.health_host == "0.0.0.0"
    assert s.rest_path == "/rest/v1"
    assert s.file_pattern == "*.json"
    assert s.linger == 0.25
    assert s.max_file_bytes == 50 * MiB
    assert s.max_batch_bytes == 4 * MiB
    assert s.max_queue_bytes == 2 * GiB
    assert s.request_timeout == 30
    assert s.shutdown_timeout == 5
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    assert s.dashboard_token is None
    assert s.upsert_url == f"{URL}/rest/v1/gfx_sessions"
    assert s.rest_url == f"{URL}/rest/v1"


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_BATCH_SIZE", "25")
    monkeypatch.setenv("GFX_SYNC_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("GFX_SYNC_LOG_LEVEL", "debug")
    monkeypatch.setenv("GFX_SYNC_DASHBOARD_TOKEN", "venue-token-123")
    s = load_settings()
    assert (s.batch_size, s.poll_interval, s.log_level) == (25, 0.5, "DEBUG")
    assert s.dashboard_token is not None
    assert s.dashboard_token.get_secret_value() == "venue-token-123"


@pytest.mark.parametrize("required", ["GFX_SYNC_SUPABASE_URL", "GFX_SYNC_SUPABASE_SECRET_KEY"])
def test_required_variables(monkeypatch: pytest.MonkeyPatch, required: str) -> None:
    # the Supabase pair is optional to load (the local commands need neither) but one without
    # the other is named when a command needs the PostgREST target
    monkeypatch.delenv(required)
    settings = load_settings()
    with pytest.raises(ConfigError) as info:
        require_target(settings)
    assert info.value.problems == [f"{required}: is required but not set"]


def test_no_target_at_all_says_how_to_set_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GFX_SYNC_SUPABASE_URL")
    monkeypatch.delenv("GFX_SYNC_SUPABASE_SECRET_KEY")
    with pytest.raises(ConfigError) as info:
        require_target(load_settings())
    (problem,) = info.value.problems
    for needle in (
        "GFX_SYNC_SUPABASE_URL",
        "GFX_SYNC_TARGET=sqlite",
        "deploy/.env.example",
        ".env",
    ):
        assert needle in problem


def test_sqlite_target_needs_no_supabase(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GFX_SYNC_SUPABASE_URL")
    monkeypatch.delenv("GFX_SYNC_SUPABASE_SECRET_KEY")
    monkeypatch.setenv("GFX_SYNC_TARGET", "sqlite")
    monkeypatch.setenv("GFX_SYNC_QUEUE_DB_PATH", str(tmp_path / "pending.db"))
    settings = load_settings()
    require_target(settings)
    assert settings.sqlite_target_file == tmp_path / "target.db"


def test_the_queue_database_is_refused_as_the_sqlite_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GFX_SYNC_QUEUE_DB_PATH", str(tmp_path / "pending.db"))
    error = config_error(
        monkeypatch, TARGET="sqlite", SQLITE_TARGET_PATH=str(tmp_path / "pending.db")
    )
    assert any(p.startswith("GFX_SYNC_SQLITE_TARGET_PATH:") for p in error.problems)


BAD_NUMBERS = [
    ("POLL_INTERVAL", ["0", "-1", "3601", "abc", "nan", "inf"]),
    ("BATCH_SIZE", ["0", "-5", "10001", "1.5", "many"]),
    ("FLUSH_INTERVAL", ["0", "-0.1", "3601"]),
    ("QUEUE_PROCESS_INTERVAL", ["0", "86401"]),
    ("MAX_RETRIES", ["-1", "1001", "x"]),
    ("MAX_QUEUE_SIZE", ["0", "-1", "inf"]),
    ("RATE_LIMIT_MAX_RETRIES", ["-1", "1001"]),
    ("RATE_LIMIT_BASE_DELAY", ["0", "601"]),
    ("HEALTH_PORT", ["-1", "65536", "http"]),
    ("LINGER", ["-0.01", "61", "nan"]),
    ("MAX_FILE_BYTES", ["1023", "0", "1e3"]),
    ("MAX_BATCH_BYTES", ["1023", "-1"]),
    ("MAX_QUEUE_BYTES", [str(MiB - 1), "0"]),
    ("REQUEST_TIMEOUT", ["0", "601"]),
    ("SHUTDOWN_TIMEOUT", ["0", "301"]),
]


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in BAD_NUMBERS for value in values],
)
def test_numeric_bounds_reject_bad_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    error = config_error(monkeypatch, **{name: value})
    assert error.problems, "a ConfigError must name at least one problem"
    assert any(p.startswith(f"GFX_SYNC_{name}:") for p in error.problems), error.problems
    assert KEY not in str(error)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL", "3600"),
        ("BATCH_SIZE", "1"),
        ("BATCH_SIZE", "10000"),
        ("MAX_RETRIES", "0"),
        ("HEALTH_PORT", "0"),
        ("HEALTH_PORT", "65535"),
        ("LINGER", "0"),
        ("MAX_FILE_BYTES", "1024"),
        ("MAX_QUEUE_BYTES", str(MiB)),
    ],
)
def test_numeric_bounds_accept_edge_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"GFX_SYNC_{name}", value)
    assert float(getattr(load_settings(), name.lower())) == float(value)


def test_linger_above_flush_interval_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, LINGER="10", FLUSH_INTERVAL="5")
    assert any("GFX_SYNC_LINGER" in p for p in error.problems), error.problems


def test_every_bad_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, BATCH_SIZE="0", HEALTH_PORT="99999", LOG_FORMAT="xml")
    named = {p.split(":", 1)[0] for p in error.problems}
    assert {"GFX_SYNC_BATCH_SIZE", "GFX_SYNC_HEALTH_PORT", "GFX_SYNC_LOG_FORMAT"} <= named


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "bad_key",
    [
        "sb_secret_has a space inside_9f8e7d",
        "sb_secret_has\ttab_9f8e7d6c5b4a",
        "sb_secret_bell\x07_9f8e7d6c5b4a",
    ],
)
def test_bad_key_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, bad_key: str
) -> None:
    error = config_error(
        monkeypatch, SUPABASE_SECRET_KEY=bad_key, BATCH_SIZE="0", SUPABASE_URL="ftp://x"
    )
    text = str(error) + "\n".join(error.problems) + repr(error)
    assert any(p.startswith("GFX_SYNC_SUPABASE_SECRET_KEY:") for p in error.problems)
    for fragment in (bad_key, bad_key[:16], "9f8e7d"):
        assert fragment not in text


@pytest.mark.parametrize("name", ["SUPABASE_SECRET_KEY", "SUPABASE_URL"])
def test_an_empty_supabase_value_is_not_set(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # `GFX_SYNC_SUPABASE_SECRET_KEY=` as .env.example ships it: named as not set, never sent
    monkeypatch.setenv(f"GFX_SYNC_{name}", "   ")
    with pytest.raises(ConfigError) as info:
        require_target(load_settings())
    assert info.value.problems == [f"GFX_SYNC_{name}: is required but not set"]


def test_key_never_in_repr_or_str_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_DASHBOARD_TOKEN", "dashboard-token-xyz789")
    s = load_settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert KEY not in text
        assert "dashboard-token-xyz789" not in text


def test_key_other_errors_do_not_echo_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, POLL_INTERVAL="0")
    assert KEY not in str(error) and KEY not in repr(error)


# --------------------------------------------------------------------------- URL and paths


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2secret@abc.supabase.co",
        "https://service:hunter2secret@abc.supabase.co/",
        "https://abc.supabase.co/?apikey=hunter2secret",
        "https://abc.supabase.co/#hunter2secret",
        "ftp://abc.supabase.co",
        "abc.supabase.co",
        "https://",
    ],
)
def test_bad_urls_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    error = config_error(monkeypatch, SUPABASE_URL=url)
    assert any(p.startswith("GFX_SYNC_SUPABASE_URL:") for p in error.problems), error.problems
    assert "hunter2secret" not in str(error)


def test_url_trailing_slash_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_SUPABASE_URL", "http://127.0.0.1:3000/ ")
    s = load_settings()
    assert s.supabase_url == "http://127.0.0.1:3000"
    assert s.upsert_url == "http://127.0.0.1:3000/rest/v1/gfx_sessions"


def test_empty_rest_path_for_a_bare_postgrest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_SUPABASE_URL", "http://127.0.0.1:3000")
    monkeypatch.setenv("GFX_SYNC_REST_PATH", "")
    s = load_settings()
    assert s.rest_path == ""
    assert s.upsert_url == "http://127.0.0.1:3000/gfx_sessions"


@pytest.mark.parametrize("rest_path", ["rest/v1", "/rest v1", "/rest/?x=1", "https://x/rest"])
def test_bad_rest_path_is_refused(monkeypatch: pytest.MonkeyPatch, rest_path: str) -> None:
    error = config_error(monkeypatch, REST_PATH=rest_path)
    assert any(p.startswith("GFX_SYNC_REST_PATH:") for p in error.problems)


def test_rest_path_trailing_slash_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_REST_PATH", "/rest/v1/")
    assert load_settings().upsert_url == f"{URL}/rest/v1/gfx_sessions"


def test_relative_error_folder_resolves_beside_the_queue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GFX_SYNC_QUEUE_DB_PATH", str(tmp_path / "queue" / "pending.db"))
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", "quarantine/bad")
    assert load_settings().error_dir == tmp_path / "queue" / "quarantine" / "bad"


def test_relative_queue_path_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GFX_SYNC_QUEUE_DB_PATH", "state/pending.db")
    s = load_settings()
    assert s.queue_db_path == tmp_path / "state" / "pending.db"
    assert s.error_dir == tmp_path / "state" / "_error"


def test_absolute_error_folder_stays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", str(tmp_path / "errors"))
    assert load_settings().error_dir == tmp_path / "errors"


@pytest.mark.parametrize(
    "registry_path", ["../pc_registry.json", "config/../../etc/x.json", "/etc/pc_registry.json"]
)
def test_registry_path_outside_the_base_is_refused(
    monkeypatch: pytest.MonkeyPatch, registry_path: str
) -> None:
    error = config_error(monkeypatch, REGISTRY_PATH=registry_path)
    assert any(p.startswith("GFX_SYNC_REGISTRY_PATH:") for p in error.problems)


def test_registry_path_inside_the_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GFX_SYNC_NAS_BASE_PATH", str(tmp_path / "nas"))
    monkeypatch.setenv("GFX_SYNC_REGISTRY_PATH", "cfg/pcs.json")
    assert load_settings().registry_file == tmp_path / "nas" / "cfg" / "pcs.json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FILE_PATTERN", "a/*.json"),
        ("FILE_PATTERN", ""),
        ("HEALTH_HOST", " "),
        ("LOG_LEVEL", "chatty"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_other_values_are_validated(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    error = config_error(monkeypatch, **{name: value})
    assert any(p.startswith(f"GFX_SYNC_{name}:") for p in error.problems), error.problems


# --------------------------------------------------------------------------- .env


def test_dotenv_in_the_cwd_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GFX_SYNC_SUPABASE_URL")
    monkeypatch.delenv("GFX_SYNC_SUPABASE_SECRET_KEY")
    (tmp_path / ".env").write_text(
        "GFX_SYNC_SUPABASE_URL=http://127.0.0.1:54321\n"
        f"GFX_SYNC_SUPABASE_SECRET_KEY={KEY}\n"
        "GFX_SYNC_BATCH_SIZE=42\n"
        "UNRELATED_VARIABLE=1\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert s.supabase_url == "http://127.0.0.1:54321"
    assert s.supabase_secret_key.get_secret_value() == KEY
    assert s.batch_size == 42


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GFX_SYNC_BATCH_SIZE=42\n", encoding="utf-8")
    monkeypatch.setenv("GFX_SYNC_BATCH_SIZE", "7")
    assert load_settings().batch_size == 7


def test_keyword_overrides_are_validated_too() -> None:
    assert isinstance(load_settings(batch_size=3), Settings)
    assert load_settings(batch_size=3).batch_size == 3
    with pytest.raises(ConfigError) as info:
        load_settings(batch_size=0)
    assert info.value.problems[0].startswith("GFX_SYNC_BATCH_SIZE:")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:3000", True),
        ("http://localhost:54321", True),
        ("http://[::1]:3000", True),
        ("http://192.168.1.20:8000", False),
        ("http://supabase.venue.lan", False),
        ("https://abc.supabase.co", True),
    ],
)
def test_http_is_refused_unless_loopback_or_allowed(
    monkeypatch: pytest.MonkeyPatch, url: str, allowed: bool
) -> None:
    monkeypatch.setenv("GFX_SYNC_SUPABASE_URL", url)
    if allowed:
        assert load_settings().supabase_url == url
        return
    error = config_error(monkeypatch, SUPABASE_URL=url)
    assert any(p.startswith("GFX_SYNC_SUPABASE_URL:") and "in clear" in p for p in error.problems)
    monkeypatch.setenv("GFX_SYNC_ALLOW_HTTP", "true")
    assert load_settings().supabase_url == url
