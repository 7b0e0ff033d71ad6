"""The stale-mount harness matches the agent's I/O (issue 27): every way the agent reaches a
PC folder blocks while the mount is stale, the ways of a poll (the PC root opened, stats
relative to it with `dir_fd`) and of a read (open, fstat, read of the file object) included,
and nothing else does. Run in a subprocess: the harness patches `os` for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys, threading, time
from tests.support import stale_mount

folder, flag, other = sys.argv[1:4]
stale_mount.install(folder, flag)
root_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # opened before the mount went stale
handle = os.fdopen(os.open(os.path.join(folder, "a.json"), os.O_RDONLY), "rb")
raw_fd = os.open(os.path.join(folder, "a.json"), os.O_RDONLY)
open(flag, "w").close()
calls = {
    "stat": lambda: os.stat(os.path.join(folder, "a.json")),
    "stat_dir_fd": lambda: os.stat("a.json", dir_fd=root_fd, follow_symlinks=False),
    "lstat": lambda: os.lstat(folder),
    "scandir": lambda: list(os.scandir(folder)),
    "open_root": lambda: os.close(os.open(folder, os.O_RDONLY | os.O_DIRECTORY)),
    "open_file": lambda: os.close(os.open(os.path.join(folder, "a.json"), os.O_RDONLY)),
    "fstat": lambda: os.fstat(raw_fd),
    "os_read": lambda: os.read(raw_fd, 10),
    "file_read": lambda: handle.read(),
    "open_builtin": lambda: open(os.path.join(folder, "a.json"), "rb").close(),
    "path_read": lambda: __import__("pathlib").Path(folder, "a.json").read_bytes(),
    "elsewhere": lambda: os.stat(other),  # another folder answers
}
threads = {name: threading.Thread(target=call, daemon=True) for name, call in calls.items()}
for thread in threads.values():
    thread.start()
time.sleep(0.5)
hung = sorted(name for name, thread in threads.items() if thread.is_alive())
os.unlink(flag)
for thread in threads.values():
    thread.join(10)
print(json.dumps({"hung": hung, "still_hung": [n for n, t in threads.items() if t.is_alive()]}))
"""


def test_every_call_into_the_stale_folder_hangs_until_it_answers_again(tmp_path: Path) -> None:
    folder = tmp_path / "nas" / "PC02"
    folder.mkdir(parents=True)
    (folder / "a.json").write_bytes(b"{}")
    other = tmp_path / "nas" / "PC01"
    other.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder), str(tmp_path / "stale"), str(other)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    # each blocked for at least half a second (a lower bound: load only lengthens it)
    assert seen["hung"] == sorted(
        [
            "stat",
            "stat_dir_fd",
            "lstat",
            "scandir",
            "open_root",
            "open_file",
            "fstat",
            "os_read",
            "file_read",
            "open_builtin",
            "path_read",
        ]
    )
    assert seen["still_hung"] == [], "the mount answers again: every call returns"
