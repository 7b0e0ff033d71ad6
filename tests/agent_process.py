"""Run `trio-gfxsync` as a real subprocess and read its JSON log lines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def agent_env(
    *, nas: Path, queue: Path, gateway_url: str, key: str, **extra: object
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GFX_SYNC_")}
    env.update(
        {
            "GFX_SYNC_NAS_BASE_PATH": str(nas),
            "GFX_SYNC_QUEUE_DB_PATH": str(queue / "pending.db"),
            "GFX_SYNC_SUPABASE_URL": gateway_url,
            "GFX_SYNC_SUPABASE_SECRET_KEY": key,
            "GFX_SYNC_POLL_INTERVAL": "1.0",
            "GFX_SYNC_HEALTH_PORT": "0",
            "GFX_SYNC_HEALTH_HOST": "127.0.0.1",
            "GFX_SYNC_LOG_LEVEL": "DEBUG",
        }
    )
    env.update({f"GFX_SYNC_{k.upper()}": str(v) for k, v in extra.items()})
    return env


@dataclass
class AgentProcess:
    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ("run",)
    proc: subprocess.Popen[bytes] | None = None
    _offset: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> AgentProcess:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait_exit)
        self._offset = self.log_path.stat().st_size
        self.events = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_gfxsync", *self.args],
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
        )
        return self

    def read_events(self) -> list[dict[str, Any]]:
        with open(self.log_path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append(
                    {"event": "non_json_output", "line": line.decode(errors="replace")}
                )
        return self.events

    def wait_event(self, name: str, timeout: float = 30.0, **match: object) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.read_events():
                if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) before {name}: {self.tail()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} within {timeout}s: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Send `sig`; return (exit code, seconds until exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.wait_exit(timeout)
        return code, time.monotonic() - started

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not exit within {timeout}s: {self.tail()}") from None
        finally:
            self.log_file.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.log_file.close()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
