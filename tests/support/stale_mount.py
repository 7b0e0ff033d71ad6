"""Run the real agent with one folder behaving like a stale SMB mount: every stat or listing of
a path under it blocks, without error, while a flag file exists.

    python -m tests.support.stale_mount run        # the agent's own CLI, arguments unchanged

GFX_TEST_STALE_FOLDER names the folder, GFX_TEST_STALE_FLAG the flag file. A hung CIFS mount
cannot be made here without a server to kill (and FUSE needs privileges a test machine may
not have), so the hang is injected at the one boundary the agent sees, the os calls, and the
rest is the real program: its threads, heartbeat, HTTP side and upload.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any

_real_stat = os.stat
_real_lstat = os.lstat
_real_scandir = os.scandir


def _flag_up(flag: str) -> bool:
    try:
        _real_stat(flag)
    except FileNotFoundError:
        return False
    return True


def install(folder: str, flag: str) -> None:
    prefix = os.path.abspath(folder)

    def hang_if_stale(path: Any) -> None:
        if isinstance(path, int):
            return  # a descriptor: opened before the mount went stale
        text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if text and (text == prefix or text.startswith(prefix + os.sep)):
            while _flag_up(flag):  # a stale mount neither answers nor fails
                time.sleep(0.05)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        hang_if_stale(path)
        return _real_stat(path, *args, **kwargs)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        hang_if_stale(path)
        return _real_lstat(path, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        hang_if_stale(path)
        return _real_scandir(path)

    os.stat, os.lstat, os.scandir = stat, lstat, scandir  # type: ignore[assignment]


if __name__ == "__main__":
    install(os.environ["GFX_TEST_STALE_FOLDER"], os.environ["GFX_TEST_STALE_FLAG"])
    sys.argv[0] = "trio-gfxsync"
    runpy.run_module("trio_gfxsync", run_name="__main__", alter_sys=True)
