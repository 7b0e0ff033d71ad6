"""Run the real agent with one folder behaving like a stale SMB mount: while a flag file exists,
every call that reaches a path under it blocks, without error, as a dead CIFS server makes it.

    python -m tests.support.stale_mount run        # the agent's own CLI, arguments unchanged

GFX_TEST_STALE_FOLDER names the folder, GFX_TEST_STALE_FLAG the flag file. A hung CIFS mount
cannot be made here without a server to kill (and FUSE needs privileges a test machine may
not have), so the hang is injected at the one boundary the agent sees, the os calls, and the
rest is the real program: its threads, deadlines, heartbeat, HTTP side and upload.

What hangs, as on a real stale mount: `stat`/`lstat`/`scandir` of a path under the folder, also
given as a name relative to a descriptor of it (`dir_fd`, as the poller stats through the PC
root it opened); `os.open` (the PC root itself, the files) and `open` of such a path; and on
a descriptor opened under the folder, `fstat`, `os.read` and the reads of the file object
`os.fdopen` makes of it (a file opened before the mount went stale hangs on its next read).

GFX_TEST_STALE_CALLS, when set, lists the kinds of call that hang (`stat,scandir,opendir,open,
read,fstat`, all by default; `opendir` is an `os.open` of a folder): `open,read,fstat` is a
mount whose metadata still answers (cached) while its files' data does not, so the poller
sees new files that no read can get.

GFX_TEST_STALE_LOG, when set, names a file that gets one line as each call starts hanging and
one as it ends (`hang <kind> <thread>` / `done <kind> <thread>`): a test counts from it how many
reads of the folder were out at once.
"""

from __future__ import annotations

import builtins
import io
import os
import runpy
import sys
import threading
import time
from typing import Any

_real_stat = os.stat
_real_lstat = os.lstat
_real_fstat = os.fstat
_real_scandir = os.scandir
_real_open = os.open
_real_close = os.close
_real_read = os.read
_real_fdopen = os.fdopen
_real_io_open = io.open


def _flag_up(flag: str) -> bool:
    try:
        _real_stat(flag)
    except FileNotFoundError:
        return False
    return True


class _Mount:
    def __init__(self, folder: str, flag: str, log: str | None, kinds: frozenset[str]) -> None:
        self.prefix = os.path.abspath(folder)
        self.kinds = kinds
        self.flag = flag
        self.log_fd = (
            _real_open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            if log
            else None
        )
        # descriptors opened under the folder: fd -> (path, (st_dev, st_ino)); the identity
        # tells a descriptor number reused for another file (closed by a file object's C code,
        # which no patch sees) from the one opened here
        self.fds: dict[int, tuple[str, tuple[int, int]]] = {}
        self.lock = threading.Lock()

    def under(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + os.sep)

    def path_of(self, path: Any, dir_fd: int | None = None) -> str | None:
        """The absolute path a call names, when it can be told (a descriptor: its own path)."""
        if isinstance(path, int):
            return self.fd_path(path)
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None
        text = os.fsdecode(path)
        if not os.path.isabs(text):
            base = self.fd_path(dir_fd) if dir_fd is not None else os.getcwd()
            if base is None:
                return None
            text = os.path.join(base, text)
        return os.path.normpath(text)

    def fd_path(self, fd: int | None) -> str | None:
        if fd is None:
            return None
        with self.lock:
            entry = self.fds.get(fd)
        if entry is None:
            return None
        try:
            st = _real_fstat(fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != entry[1]:
            with self.lock:
                self.fds.pop(fd, None)
            return None
        return entry[0]

    def hang(self, kind: str, path: str | None) -> None:
        if kind not in self.kinds or path is None or not self.under(path):
            return
        if not _flag_up(self.flag):
            return
        self._note("hang", kind)
        try:
            while _flag_up(self.flag):  # a stale mount neither answers nor fails
                time.sleep(0.05)
        finally:
            self._note("done", kind)

    def _note(self, what: str, kind: str) -> None:
        if self.log_fd is not None:
            os.write(self.log_fd, f"{what} {kind} {threading.get_ident()}\n".encode())

    def opened(self, fd: int, path: str | None) -> None:
        if path is not None and self.under(path):
            st = _real_fstat(fd)
            with self.lock:
                self.fds[fd] = (path, (st.st_dev, st.st_ino))


class _StaleFile:
    """A file object over a descriptor of the stale folder: its reads hang with the mount."""

    def __init__(self, inner: Any, mount: _Mount, path: str) -> None:
        self._inner, self._mount, self._path = inner, mount, path

    def read(self, *args: Any) -> Any:
        self._mount.hang("read", self._path)
        return self._inner.read(*args)

    def readinto(self, *args: Any) -> Any:
        self._mount.hang("read", self._path)
        return self._inner.readinto(*args)

    def __enter__(self) -> _StaleFile:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


KINDS = frozenset({"stat", "scandir", "opendir", "open", "read", "fstat"})


def install(folder: str, flag: str, log: str | None = None, kinds: frozenset[str] = KINDS) -> None:
    mount = _Mount(folder, flag, log, kinds)

    def stat(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> os.stat_result:
        mount.hang("stat", mount.path_of(path, dir_fd))
        return _real_stat(path, *args, dir_fd=dir_fd, **kwargs)

    def lstat(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> os.stat_result:
        mount.hang("stat", mount.path_of(path, dir_fd))
        return _real_lstat(path, *args, dir_fd=dir_fd, **kwargs)

    def fstat(fd: int) -> os.stat_result:
        mount.hang("fstat", mount.fd_path(fd))
        return _real_fstat(fd)

    def scandir(path: Any = ".") -> Any:
        mount.hang("scandir", mount.path_of(path))
        return _real_scandir(path)

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        where = mount.path_of(path, dir_fd)
        mount.hang("opendir" if flags & os.O_DIRECTORY else "open", where)
        fd = _real_open(path, flags, mode, dir_fd=dir_fd)
        mount.opened(fd, where)
        return fd

    def close(fd: int) -> None:
        with mount.lock:
            mount.fds.pop(fd, None)
        _real_close(fd)

    def read(fd: int, n: int) -> bytes:
        mount.hang("read", mount.fd_path(fd))
        return _real_read(fd, n)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        inner = _real_fdopen(fd, *args, **kwargs)
        where = mount.fd_path(fd)
        return inner if where is None else _StaleFile(inner, mount, where)

    def io_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int):
            return _real_io_open(file, *args, **kwargs)  # os.fdopen's own: it wraps the file
        where = mount.path_of(file)
        mount.hang("open", where)
        inner = _real_io_open(file, *args, **kwargs)
        return inner if where is None or not mount.under(where) else _StaleFile(inner, mount, where)

    os.stat, os.lstat, os.fstat, os.scandir = stat, lstat, fstat, scandir  # type: ignore[assignment]
    os.open, os.close, os.read, os.fdopen = open_, close, read, fdopen  # type: ignore[assignment]
    io.open = builtins.open = io_open  # type: ignore[assignment]


if __name__ == "__main__":
    install(
        os.environ["GFX_TEST_STALE_FOLDER"],
        os.environ["GFX_TEST_STALE_FLAG"],
        os.environ.get("GFX_TEST_STALE_LOG"),
        frozenset(os.environ.get("GFX_TEST_STALE_CALLS", ",".join(KINDS)).split(",")),
    )
    sys.argv[0] = "trio-gfxsync"
    runpy.run_module("trio_gfxsync", run_name="__main__", alter_sys=True)
