"""`.ci/run` exports CI=true when the runner did not, so that a test needing the real PokerGFX
exports fails there rather than skipping (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ci_sees(tmp_path: Path, env_ci: str | None) -> str:
    """Run the real `.ci/run` from a copy whose `scripts/test` reports the CI it was given."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    probe = tmp_path / "scripts" / "test"
    probe.write_text('#!/bin/sh\nprintf "CI=[%s]" "${CI-unset}"\n')
    probe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if env_ci is not None:
        env["CI"] = env_ci
    result = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return result.stdout


@pytest.mark.parametrize(("given", "seen"), [(None, "CI=[true]"), ("1", "CI=[1]")])
def test_ci_run_sets_ci_when_the_runner_did_not(
    tmp_path: Path, given: str | None, seen: str
) -> None:
    assert _ci_sees(tmp_path, given) == seen
