"""Shared set-up for the benchmark and soak scripts: the same real parts as the tests
(a fresh PostgreSQL database with the migration, PostgREST 12.0.2, the gateway stand-in)."""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import infra  # noqa: E402
from tests.support.cluster import start_cluster  # noqa: E402


@contextlib.contextmanager
def real_stack() -> Iterator[tuple[infra.Database, infra.PostgrestServer, infra.Gateway]]:
    """A throwaway PostgreSQL cluster, a database with the migrations, PostgREST, the gateway."""
    cluster = start_cluster()
    infra.use_cluster(cluster)
    try:
        db = infra.create_database()
        server = infra.start_postgrest(db)
        gateway = infra.start_gateway(server.url, server.jwt_secret)
        try:
            yield db, server, gateway
        finally:
            gateway.close()
            server.close()
            infra.drop_database(db.name)
    finally:
        infra.use_cluster(None)
        cluster.stop()


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f}s  min {min(values):.3f}s  "
        f"max {max(values):.3f}s  (n={len(values)})"
    )
