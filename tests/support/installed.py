"""The agent installed the way the image installs it, where any user can run it.

The Dockerfile's builder stage turns the project and its pinned dependencies into wheels; the
runtime stage installs them offline into the image. Here the same two steps put the agent into a
fresh virtualenv inside a world-readable temporary folder: the image's unprivileged user (uid
1000) can run that one wherever the checkout is, even under a folder only its owner may enter
(root's 0700 home, `mktemp -d`), where `python -m trio_gfxsync` from the checkout cannot even be
imported by another user. The build reads a copy of the image's build context (what
.dockerignore lets in), never the checkout itself, so two test workers building at once do not
share setuptools' in-tree build folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP_UID = 1000  # the Dockerfile's default APP_UID/APP_GID: the image's user
# the image's build context (.dockerignore keeps everything else out)
CONTEXT = ("pyproject.toml", "README.md", "constraints.txt", "trio_gfxsync")
BUILD_TIMEOUT = 600


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def _copy_context(source: Path, into: Path) -> None:
    for name in CONTEXT:
        path = source / name
        if path.is_dir():
            shutil.copytree(
                path, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(path, into / name)


def world_readable(path: Path) -> None:
    """Every folder and file under `path` readable (and folders enterable) by every user."""
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            (Path(folder) / name).chmod(0o755)
        for name in files:
            target = Path(folder) / name
            if not target.is_symlink():
                target.chmod(target.stat().st_mode | 0o444)


@contextlib.contextmanager
def installed_agent(source: Path = REPO) -> Iterator[Path]:
    """A virtualenv holding the agent built from `source` as the image builds it (its
    `bin/trio-gfxsync` is the image's ENTRYPOINT), in a 0755 folder removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="gfxsync-installed-"))
    try:
        root.chmod(0o755)
        context, wheels, target = root / "context", root / "wheels", root / "venv"
        context.mkdir()
        _copy_context(source, context)
        # builder stage: RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
        _run([*pip_wheel, "--constraint", str(context / "constraints.txt"), str(context)])
        # runtime stage: pip install --no-index --find-links=/tmp/wheels trio_gfxsync-*.whl
        venv.EnvBuilder(with_pip=True).create(target)
        (wheel,) = wheels.glob("trio_gfxsync-*.whl")
        pip = [str(target / "bin" / "pip"), "install", "--quiet", "--no-cache-dir", "--no-index"]
        _run([*pip, f"--find-links={wheels}", str(wheel)])
        world_readable(target)
        yield target
    finally:
        shutil.rmtree(root, ignore_errors=True)


def reachable_by_everyone(path: Path) -> list[str]:
    """What stops another user from reading `path`: each folder on the way from / that is not
    enterable by others, and `path` itself when not readable by them (empty: nothing)."""
    problems = []
    for folder in reversed(path.parents):
        if not folder.stat().st_mode & 0o001:
            problems.append(f"{folder} (mode {folder.stat().st_mode & 0o777:o})")
    if not path.stat().st_mode & 0o004:
        problems.append(f"{path} (mode {path.stat().st_mode & 0o777:o})")
    return problems


def as_image_user(command: list[str]) -> list[str]:
    """`command` as the image runs it (uid/gid 1000, no supplementary groups) when we are root,
    who could otherwise read a mode-000 file or write a root-owned folder; as it is otherwise."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("root needs setpriv (util-linux) to run the agent as the image's user")
    return [setpriv, f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups", *command]
