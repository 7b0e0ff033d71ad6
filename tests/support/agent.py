"""Run `trio-gfxsync` as a real subprocess and read its JSON log lines.

    with running_agent(env, tmp_path / "agent.log") as agent:   # started, HTTP side listening
        ...                                                    # agent.url, agent.wait_event()
    # left the block: SIGTERM, exit 0 within 15 s asserted; killed if anything went wrong

A failure inside the block carries the agent's last log lines as a note, so the test report
says what the agent was doing. `run_cli(env, "check")` runs a one-shot command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Docker's grace period (deploy's stop_grace_period, 15 s): a graceful stop must end inside it
# (the 5 s drain is measured by the tests of GFX_SYNC_SHUTDOWN_TIMEOUT, not by this limit)
STOP_WITHIN = 15.0


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
    # the program: this interpreter's package by default; the image test runs another venv's
    command: tuple[str, ...] = (sys.executable, "-m", "trio_gfxsync")
    proc: subprocess.Popen[bytes] | None = None
    _offset: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> AgentProcess:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait_exit)
        self._offset = self.log_path.stat().st_size
        self.events = []
        self.proc = subprocess.Popen(
            [*self.command, *self.args],
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

    @property
    def url(self) -> str:
        """The HTTP side's base URL (from the `http_listening` event)."""
        for event in self.events:
            if event.get("event") == "http_listening":
                return str(event["urls"][0])
        return str(self.wait_event("http_listening")["urls"][0])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_cleanly(self) -> float:
        """SIGTERM; assert exit 0 within STOP_WITHIN seconds; return how long it took."""
        code, seconds = self.stop()
        assert code == 0, f"exit {code} after SIGTERM:\n{self.tail()}"
        assert seconds < STOP_WITHIN, f"SIGTERM took {seconds:.1f}s"
        return seconds

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


@contextlib.contextmanager
def running_agent(
    env: dict[str, str],
    log_path: Path,
    *,
    args: tuple[str, ...] = ("run",),
    ready: str | None = "http_listening",
    stop: bool = True,
    ready_timeout: float = 30.0,
    command: tuple[str, ...] | None = None,
) -> Iterator[AgentProcess]:
    """The agent as a subprocess for the length of a `with` block.

    `ready`: the log event that means started (None: do not wait). On leaving the block the
    agent gets SIGTERM and must exit 0 within STOP_WITHIN (unless `stop` is False or it has
    already exited); on any failure it is killed and its log tail is attached to the error."""
    agent = AgentProcess(env, log_path, args)
    if command is not None:
        agent.command = command
    agent.start()
    try:
        if ready is not None:
            agent.wait_event(ready, timeout=ready_timeout)
        yield agent
        if stop and agent.running:
            agent.stop_cleanly()
    except BaseException as exc:
        exc.add_note(f"agent log ({log_path}), last lines:\n{agent.tail(40)}")
        raise
    finally:
        agent.kill()


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One `trio-gfxsync` command to its end; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "trio_gfxsync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
