"""The image's commands outside Docker (no engine here): build the wheels as the Dockerfile's
builder stage does, install them offline into a fresh virtualenv as its runtime stage does, then
run the ENTRYPOINT + CMD (`trio-gfxsync run`) as an unprivileged user with a fresh queue folder
owned by it, and the HEALTHCHECK command (`trio-gfxsync healthcheck`) against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.installed import APP_UID
from tests.support.installed import as_image_user as as_app_user
from tests.support.tree import build_nas
from tests.support.waits import wait_until_equal

pytestmark = pytest.mark.e2e


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def test_image_entrypoint_and_healthcheck_work_from_a_fresh_install(
    installed_venv: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    app = Path(tempfile.mkdtemp(prefix="gfxsync-app-"))
    try:
        app.chmod(0o755)
        nas = app / "data"
        build_nas(nas, pcs=2, sessions_per_pc=5, seed=3)
        for folder in [nas, *nas.rglob("*")]:
            folder.chmod(0o755 if folder.is_dir() else 0o444)  # the read-only mount
        queue = app / "queue"
        queue.mkdir()
        if os.geteuid() == 0:
            os.chown(queue, APP_UID, APP_UID)  # the image's chown of /app/queue
        port = infra.free_port()
        env = agent_env(nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key)
        env.update(
            {
                "GFX_SYNC_HEALTH_HOST": "0.0.0.0",
                "GFX_SYNC_HEALTH_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
                "PATH": f"{installed_venv / 'bin'}:{os.environ['PATH']}",
            }
        )
        env.pop("PYTHONPATH", None)
        bin_ = installed_venv / "bin" / "trio-gfxsync"

        schema = run([str(bin_), "schema"], env=env, cwd=app)
        assert "create table if not exists public.gfx_sessions" in schema.stdout.lower()

        log_path = app / "agent.log"
        with running_agent(env, log_path, command=tuple(as_app_user([str(bin_)]))) as agent:
            wait_until_equal(nas, clean_db.dsn, timeout=60)
            health = subprocess.run(
                as_app_user([str(bin_), "healthcheck"]),
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert health.returncode == 0, health.stdout + health.stderr
            assert health.stdout.startswith("healthy")
            page = httpx.get(f"http://127.0.0.1:{port}/")
            assert page.status_code == 200 and "dashboard.js" in page.text
            assert httpx.get(f"http://127.0.0.1:{port}/static/dashboard.js").status_code == 200
            assert (queue / "pending.db").stat().st_uid == (
                APP_UID if os.geteuid() == 0 else os.geteuid()
            )
            assert agent.running
        # leaving the block: SIGTERM, exit 0 within 15 s (asserted by running_agent)
        down = subprocess.run(
            [str(bin_), "healthcheck"], env=env, capture_output=True, text=True, timeout=30
        )
        assert down.returncode == 1  # nothing listens: unhealthy, never Docker's reserved 2
    finally:
        shutil.rmtree(app, ignore_errors=True)
