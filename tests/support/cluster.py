"""A throwaway PostgreSQL cluster: initdb in a temporary folder, a unix socket only, stopped and
deleted at the end. The tests, the benchmarks and `scripts/stack` all run on one of these, never
on a system service at 5432.

initdb refuses to run as root (CI runs as root): the cluster is then owned by an unprivileged
user (`postgres`, which Debian's package creates, else `nobody`) through `runuser`. Debian keeps
the binaries in /usr/lib/postgresql/<N>/bin, outside PATH.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60


class ClusterError(RuntimeError):
    """PostgreSQL is missing or did not start; the message says how to fix the machine."""


def postgres_bin() -> Path:
    override = os.environ.get("GFXSYNC_PG_BIN")
    candidates = [Path(override)] if override else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ClusterError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: "
        "apt-get install postgresql (scripts/test does), or set GFXSYNC_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    bin: Path
    port: int
    owner: str | None  # the user it runs as when we are root

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def dsn(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        if self.owner is None:
            return cmd
        return ["runuser", "-u", self.owner, "--", *cmd]

    def _run(self, cmd: list[str], what: str) -> None:
        result = subprocess.run(
            self._as_owner(cmd), capture_output=True, text=True, timeout=START_TIMEOUT
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> Cluster:
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
            "initdb",
        )
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=''",  # the socket only: nothing on the network
                "-c fsync=off",  # throwaway data: speed over durability
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=60",
            ]
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ],
            "pg_ctl start",
        )
        return self

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                self._as_owner(
                    [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]
                ),
                capture_output=True,
                timeout=START_TIMEOUT,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_cluster() -> Cluster:
    """A new cluster on a free port, its socket in a fresh temporary folder."""
    binary = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="gfxsync-pg-"))
    owner = None
    if os.geteuid() == 0:
        owner = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o755)  # the tests, as root, reach the socket inside
    (root / "socket").mkdir()
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(root / "socket", entry.pw_uid, entry.pw_gid)
    cluster = Cluster(root=root, bin=binary, port=_free_port(), owner=owner)
    try:
        return cluster.start()
    except BaseException:
        log = cluster.log()
        cluster.stop()
        if log:
            raise ClusterError(f"PostgreSQL did not start:\n{log}") from None
        raise


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
