"""A newcomer's first steps, as README's set-up gives them: `scripts/run` on a fresh clone
with nothing configured starts the demo; `scripts/stack` gives an integrator a real local
PostgREST that an agent syncs the real exports into. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.agent import agent_env, running_agent
from tests.support.truth import copy_samples
from tests.support.waits import read_until, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def newcomer_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GFX_SYNC_")}


@pytest.mark.skipif((ROOT / ".env").exists(), reason="a .env in the checkout configures `run`")
def test_scripts_run_with_nothing_configured_starts_the_demo(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(ROOT / "scripts/run"), "--dir", str(tmp_path / "demo"), "--port", "0"],
        env=newcomer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(proc, r"demo: dashboard http://127\.0\.0\.1:\d+/", 120)
        target = tmp_path / "demo" / "queue" / "target.db"
        wait_for(target.exists, 30, "the demo's embedded target")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_scripts_stack_is_a_real_postgrest_an_agent_syncs_into(
    samples_dir: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "stack.env"
    stack = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stack", "--env-file", str(env_file)],
        cwd=ROOT,
        env=newcomer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        dsn = read_until(stack, r"stack: psql '([^']+)'", 90).group(1)
        lines = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        nas = copy_samples(samples_dir, tmp_path / "nas")
        env = agent_env(
            nas=nas,
            queue=tmp_path / "queue",
            gateway_url=lines["GFX_SYNC_SUPABASE_URL"],
            key=lines["GFX_SYNC_SUPABASE_SECRET_KEY"],
            rest_path=lines["GFX_SYNC_REST_PATH"],
        )
        with running_agent(env, tmp_path / "agent.log"):
            took = wait_until_equal(nas, dsn, timeout=60)
        print(f"scripts/stack: the real exports in its PostgREST after {took:.2f}s")
        with psycopg.connect(dsn) as conn:
            (roles,) = conn.execute(
                "select count(*) from pg_roles where rolname in "
                "('anon', 'authenticated', 'service_role')"
            ).fetchone()
        assert roles == 3, "Supabase's roles exist, so the migration applies as on Supabase"
    finally:
        stack.send_signal(signal.SIGINT)
        out, _ = stack.communicate(timeout=60)
    assert stack.returncode == 0, out
    assert "stack: stopped" in out
