"""The image's commands outside Docker (no engine here): build the wheels as the Dockerfile's
builder stage does, install them offline into a fresh virtualenv as its runtime stage does, then
run the ENTRYPOINT + CMD (`trio-gfxsync run`) as an unprivileged user with a fresh queue folder
owned by it, and the HEALTHCHECK command (`trio-gfxsync healthcheck`) against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas
from tests.support.waits import wait_until_equal

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
APP_UID = 1000  # the Dockerfile's default APP_UID/APP_GID


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def as_app_user(cmd: list[str]) -> list[str]:
    """Run as uid/gid 1000 like the image's USER line, where this machine lets us."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        return [setpriv, f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups", *cmd]
    return cmd


@pytest.fixture(scope="module")
def image_venv() -> Path:
    root = Path(tempfile.mkdtemp(prefix="gfxsync-image-"))
    root.chmod(0o755)
    wheels = root / "wheels"
    # builder stage: RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .
    constraints = str(REPO / "constraints.txt")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
    run([*pip_wheel, "--constraint", constraints, str(REPO)])
    # runtime stage: pip install --no-index --find-links=/tmp/wheels /tmp/wheels/trio_gfxsync-*.whl
    target = root / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    (wheel,) = wheels.glob("trio_gfxsync-*.whl")
    run(
        [
            str(target / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-cache-dir",
            "--no-index",
            f"--find-links={wheels}",
            str(wheel),
        ]
    )
    yield target
    shutil.rmtree(root, ignore_errors=True)


def test_image_entrypoint_and_healthcheck_work_from_a_fresh_install(
    image_venv: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
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
                "PATH": f"{image_venv / 'bin'}:{os.environ['PATH']}",
            }
        )
        env.pop("PYTHONPATH", None)
        bin_ = image_venv / "bin" / "trio-gfxsync"

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
        # leaving the block: SIGTERM, exit 0 within 10 s (asserted by running_agent)
        down = subprocess.run(
            [str(bin_), "healthcheck"], env=env, capture_output=True, text=True, timeout=30
        )
        assert down.returncode == 1  # nothing listens: unhealthy, never Docker's reserved 2
    finally:
        shutil.rmtree(app, ignore_errors=True)
