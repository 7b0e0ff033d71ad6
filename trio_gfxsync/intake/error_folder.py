"""The error folder: a copy of each quarantined file beside a note of why, for an operator.

Safe whatever GFX_SYNC_ERROR_FOLDER says (settings refuse the dangerous places as well):
- every file it makes is recorded in the queue database (`error_copy`: device, inode, ctime)
  before a byte is written into it;
- it never writes over a file it did not make: it creates files with O_EXCL, a name taken by
  anything else gets the next free one (`x (2).json`), and its own earlier copy of the same
  quarantined file is removed first only if it is still the very file it made. Nothing it does
  can replace the file it copies, and it makes nothing under the folders it is told to keep
  out of (the NAS: its scanners would read the copies as sessions);
- pruning removes only recorded copies (and their notes), the oldest first, while they hold
  more than FOLDER_MAX_BYTES together; the quarantine records stay (`dlq list` names them all);
- a copy holds at most COPY_MAX_BYTES of its file (the note says where it was cut).
The source is opened like any NAS file: no link followed, no FIFO blocking the thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO

import trio

from ..logs import get_logger, scrub
from ..state.rows import NOTE_SUFFIX, ErrorCopy
from ..state.store import Store

log = get_logger("error_folder")

COPY_MAX_BYTES = 64 * 2**20  # of one quarantined file
FOLDER_MAX_BYTES = 512 * 2**20  # of every copy together: the oldest go first
FREE_NAMES = 10  # names tried for a copy when the first is taken by a file not the agent's
PRUNE_PAGE = 256
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# how the blocking copy is run: in a NAS thread within the deadline (it reads the NAS)
RunBlocking = Callable[..., Awaitable[Any]]


async def _in_a_thread(fn: Callable[..., Any], *args: object) -> Any:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


class ErrorFolder:
    def __init__(
        self,
        root: Path,
        store: Store,
        *,
        copy_max_bytes: int = COPY_MAX_BYTES,
        folder_max_bytes: int = FOLDER_MAX_BYTES,
        keep_out: tuple[Path, ...] = (),
    ) -> None:
        self.root = root
        self.keep_out = keep_out
        self.store = store
        self.copy_max_bytes = copy_max_bytes
        self.folder_max_bytes = folder_max_bytes

    async def keep(
        self,
        source: Path,
        pc_id: str,
        rel_path: str,
        reason: str,
        message: str,
        run: RunBlocking = _in_a_thread,
    ) -> Path | str:
        """Copy a quarantined file: the copy's path, or why none was made (a read-only folder,
        a NAS that does not answer, every name taken)."""
        earlier = await self.store.error_copies_of(pc_id, rel_path)
        token = trio.lowlevel.current_trio_token()
        store = self.store

        def record(copy: ErrorCopy) -> None:
            # from the copying thread, before it writes: a system task of its own, so a
            # caller that gave up on a hung NAS does not leave a copy made but not recorded
            try:
                trio.from_thread.run(store.record_error_copy, copy, trio_token=token)
            except trio.RunFinishedError:
                raise OSError(errno.ECANCELED, "the agent is stopping") from None

        try:
            made: ErrorCopy = await run(
                make_copy,
                source,
                self.root / pc_id / rel_path,
                (pc_id, rel_path),
                scrub(f"{reason}: {message}"),
                earlier,
                record,
                self.copy_max_bytes,
                self.keep_out,
            )
        except OSError as exc:
            return f"{exc.strerror or type(exc).__name__}: {exc.filename or self.root}"
        await self.store.forget_error_copies(c.path for c in earlier if c.path != made.path)
        await self.prune(spare=made.path)
        return Path(made.path)

    async def prune(self, spare: str | None = None) -> list[str]:
        """The oldest recorded copies go while all of them hold more than the folder's cap
        (never `spare`, the copy just made). Returns the copies removed."""
        total = await self.store.error_copy_bytes()
        removed: list[str] = []
        while total > self.folder_max_bytes:
            oldest = [
                c for c in await self.store.oldest_error_copies(PRUNE_PAGE) if c.path != spare
            ]
            if not oldest:
                break
            victims = []
            for copy in oldest:
                if total <= self.folder_max_bytes:
                    break
                victims.append(copy)
                total -= copy.bytes
            await trio.to_thread.run_sync(remove_copies, victims, abandon_on_cancel=True)
            await self.store.forget_error_copies(c.path for c in victims)
            removed += [c.path for c in victims]
        if removed:
            log.info("error_folder_pruned", removed=len(removed), kept_bytes=total)
        return removed


def make_copy(
    source: Path,
    target: Path,
    of: tuple[str, str],
    note: str,
    earlier: list[ErrorCopy],
    record: Callable[[ErrorCopy], None],
    limit: int,
    keep_out: tuple[Path, ...] = (),
) -> ErrorCopy:
    """Blocking: copy `source` (never move it: the NAS is read-only) to `target`, or the next
    free name, beside `<copy>.reason.txt`; `record` each file made before writing into it."""
    where = target.parent.resolve()
    for folder in keep_out:
        if where.is_relative_to(folder.resolve()):
            raise OSError(
                errno.EPERM, "the error folder lies on the NAS: no copy made", str(folder)
            )
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        if _identity(target) == (st.st_dev, st.st_ino):
            raise OSError(
                errno.EEXIST, "the copy would be the quarantined file itself", str(target)
            )
        remove_copies(earlier)
        target.parent.mkdir(parents=True, exist_ok=True)
        path, copy_fd, note_fd = _create_free(target)
        with os.fdopen(copy_fd, "wb") as out, os.fdopen(note_fd, "wb") as note_out:
            st, note_st = os.fstat(copy_fd), os.fstat(note_fd)
            made = ErrorCopy(str(path), *of, st.st_dev, st.st_ino, note_st.st_ino, 0, time.time())
            try:
                record(made)
            except BaseException:
                for mine in (path, f"{path}{NOTE_SUFFIX}"):
                    os.unlink(mine)  # just made, never recorded: nothing may stay unknown
                raise
            digest = hashlib.sha256()
            copied = _copy_at_most(src, out, limit, digest)
            cut = f"\n(copy cut at {copied} bytes)" if src.read(1) else ""
            text = f"{note}{cut}\n".encode("utf-8", "replace")
            note_out.write(text)
    made = replace(
        made,
        bytes=copied + len(text),
        sha256=digest.hexdigest(),
        note_sha256=hashlib.sha256(text).hexdigest(),
    )
    record(made)
    return made


def _create_free(target: Path) -> tuple[Path, int, int]:
    """Create the copy and its note, both new (O_EXCL): the first name whose two files are
    free. A name held by anything the agent did not make is left alone."""
    for n in range(1, FREE_NAMES + 1):
        path = target if n == 1 else target.with_name(f"{target.stem} ({n}){target.suffix}")
        try:
            copy_fd = os.open(path, CREATE, 0o644)
        except FileExistsError:
            continue
        try:
            note_fd = os.open(f"{path}{NOTE_SUFFIX}", CREATE, 0o644)
        except OSError as exc:
            os.close(copy_fd)
            os.unlink(path)  # made a moment ago: ours to take back
            if isinstance(exc, FileExistsError):
                continue
            raise
        return path, copy_fd, note_fd
    raise FileExistsError(
        errno.EEXIST,
        "every name for the copy is taken by files the agent did not make",
        str(target),
    )


def remove_copies(copies: Iterable[ErrorCopy]) -> None:
    """Blocking: remove copies and notes the agent made, each only if it is still that file
    (same device, inode and bytes). One never finished (a crash while copying) is forgotten,
    not removed: what is there now cannot be told from a file put there since."""
    for copy in copies:
        _unlink_own(copy.path, copy.device, copy.inode, copy.sha256)
        if copy.note_inode is not None:
            _unlink_own(copy.note_path, copy.device, copy.note_inode, copy.note_sha256)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


def _unlink_own(path: str, device: int, inode: int, sha256: str | None) -> None:
    if sha256 is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # a link put in its place: not the agent's
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (device, inode):
            return
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() == sha256:
        os.unlink(path)


def _copy_at_most(src: BinaryIO, out: BinaryIO, limit: int, digest: Any) -> int:
    done = 0
    while done < limit:
        chunk = src.read(min(1 << 20, limit - done))
        if not chunk:
            break
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
    return done
