"""Fixtures around the real parts in `tests/infra.py`.

PostgreSQL, PostgREST and the gateway are synchronous and session-scoped: pytest-trio's async
fixtures are function-scoped only, and starting PostgREST per test would cost seconds each.
A missing PostgreSQL or PostgREST fails the test with the command that fixes it; it never skips,
because a skipped integration test looks like a passing one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.cluster import Cluster, ClusterError, start_cluster
from tests.support.installed import installed_agent

# Chromium fixtures (`browser`, `page`) for the dashboard tests
pytest_plugins = ["tests.support.browser"]


def _fail_on_infra_error(exc: infra.InfraError) -> None:
    pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def pg_cluster() -> Iterator[Cluster]:
    """The session's own PostgreSQL: initdb in a temporary folder, a unix socket, a free port."""
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    infra.use_cluster(cluster)
    try:
        yield cluster
    finally:
        infra.use_cluster(None)
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_db(pg_cluster: Cluster) -> Iterator[infra.Database]:
    """A fresh database (`.name`, `.dsn` as superuser) with the migrations applied."""
    try:
        db = infra.create_database()
    except infra.InfraError as exc:
        _fail_on_infra_error(exc)
    try:
        yield db
    finally:
        infra.drop_database(db.name)


@pytest.fixture(scope="session")
def postgrest(postgres_db: infra.Database) -> Iterator[infra.PostgrestServer]:
    """The real PostgREST 12.0.2 (`.url`, `.jwt_secret`, `.service_role_jwt()`, `.anon_jwt()`)."""
    try:
        server = infra.start_postgrest(postgres_db)
    except infra.InfraError as exc:
        _fail_on_infra_error(exc)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def gateway(postgrest: infra.PostgrestServer) -> Iterator[infra.Gateway]:
    """Supabase's gateway stand-in (`.url` without /rest/v1, `.key`, `.count()`, `.fault`, ...).

    Shared by the session: tests that inject faults or count requests call `gateway.reset()`
    first (the `fresh_gateway` fixture does), or start their own with `infra.start_gateway`.
    """
    gw = infra.start_gateway(postgrest.url, postgrest.jwt_secret)
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def fresh_gateway(gateway: infra.Gateway) -> Iterator[infra.Gateway]:
    """The session's gateway with no faults and zero counts, restored after the test."""
    gateway.reset()
    yield gateway
    gateway.reset()


@pytest.fixture
def clean_db(postgres_db: infra.Database) -> infra.Database:
    """The session's database with gfx_sessions and sync_events emptied."""
    infra.truncate_tables(postgres_db.dsn)
    return postgres_db


@pytest.fixture(scope="session")
def installed_venv() -> Iterator[Path]:
    """The agent built and installed as the image does it, in a virtualenv every user can run
    (`bin/trio-gfxsync`): what runs as the image's uid 1000, wherever this checkout is."""
    with installed_agent() as venv:
        yield venv


@pytest.fixture
def samples_dir() -> Path:
    """Real PokerGFX exports (read-only: copy them into a temporary NAS tree)."""
    return _samples()


@pytest.fixture(scope="module")
def samples_dir_module() -> Path:
    """The same, for module-scoped fixtures."""
    return _samples()


def _samples() -> Path:
    if not infra.SAMPLES_DIR.is_dir():
        reason = (
            "../shared/samples/pokergfx not found: real PokerGFX exports are needed for this test"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(reason)
    return infra.SAMPLES_DIR
