"""The suite passes from any checkout (issue 23): a clone under a folder only its owner may enter
(root's 0700 home, `mktemp -d`), as root and as a user who is not root.

The one part of the suite that runs as another user is the agent as the image runs it (uid 1000,
tests/test_agent_states.py and tests/test_image.py). Started from the checkout, it could not even
import the package when the checkout sits in a 0700 folder (`No module named trio_gfxsync`). It
runs from the image's install instead (tests/support/installed.py): wheels built from a copy of
the build context, installed into a world-readable temporary virtualenv. This test builds that
install from a clone in a 0700 folder and runs it as the image's user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.installed import (
    CONTEXT,
    REPO,
    as_image_user,
    installed_agent,
    reachable_by_everyone,
)

pytestmark = pytest.mark.e2e


def test_the_image_user_runs_the_agent_built_from_a_checkout_nobody_else_may_enter(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    clone = private / "trio-gfxsync"
    clone.mkdir()
    for name in CONTEXT:  # the files the build reads, as a clone holds them
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, clone / name)
    if os.geteuid() == 0:
        # the premise: the image's user cannot read the checkout at all
        peek = subprocess.run(as_image_user(["test", "-r", str(clone / "pyproject.toml")]))
        assert peek.returncode == 1, "uid 1000 can read the private clone: the test proves nothing"

    with installed_agent(clone) as venv:
        entry = venv / "bin" / "trio-gfxsync"
        (package,) = venv.glob("lib/python3*/site-packages/trio_gfxsync/__init__.py")
        for path in (entry, package, venv / "bin" / "python"):
            assert reachable_by_everyone(path.resolve()) == [], path
        # nothing in the install points back into the checkout
        for path in venv.glob("lib/python3*/site-packages/trio_gfxsync*/**/*"):
            if path.is_file() and path.suffix in (".py", ".json", ".txt", ".pth", ""):
                assert str(private) not in path.read_text(errors="replace"), path

        result = subprocess.run(
            as_image_user([str(entry), "version"]),
            capture_output=True,
            text=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("trio-gfxsync ") and "queue_schema " in result.stdout
