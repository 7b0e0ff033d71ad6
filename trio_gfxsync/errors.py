"""Every exception the agent's callers act on, in one tree (drawn the way httpx draws its own).

    GfxSyncError
    ├── ConfigError          a setting is invalid; `problems` holds `GFX_SYNC_<NAME>: why` lines.
    │                        Every command exits 2 with them, never echoing the value.
    ├── RegistryError        the registry file or a watch_path is unusable. At runtime the last
    │                        good registry is kept and the reason shows in /health.
    ├── StoreError           the queue database cannot be used (a newer schema, a folder that
    │                        cannot be created, a damaged file a command must not move).
    ├── ParseError           one file cannot become a record; `reason` is a stable code. The
    │   │                    file is quarantined (or read again once it stops changing).
    │   ├── FileTooLarge     size above max_file_bytes
    │   ├── BadEncoding      not UTF-8 (with or without BOM) nor UTF-16/32 with a BOM
    │   ├── NotJson          not strict RFC 8259 JSON (a half-written file looks like this)
    │   ├── NotASession      valid JSON but not an object, or holds what PostgreSQL cannot store
    │   └── NoSessionId      no usable `ID` and no `GameID=<n>` in the file name
    └── UpstreamError        the target did not store a request. `verdict` (policy.Verdict) is
                             what it means, `status`/`code`/`message` what the target said,
                             `retry_after` when it may be asked again; `status` None means no
                             answer at all (`kind` names the transport failure).

Not in the tree on purpose: a crash of a core stage is a bug, not an error to handle. The
nursery cancels, `run` exits 1 and Docker restarts the agent, which re-sends what was not
acknowledged.
"""

from __future__ import annotations

from .policy import Verdict, classify


class GfxSyncError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(GfxSyncError):
    """Invalid configuration; `problems` holds one `GFX_SYNC_<NAME>: reason` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RegistryError(GfxSyncError):
    """The registry file is unusable; the message says which entry and why."""


class StoreError(GfxSyncError):
    """The queue database cannot be used (newer schema, unreadable folder)."""


class ParseError(GfxSyncError):
    """A file that cannot become a SessionRecord; `reason` is a stable code for logs and DLQ."""

    reason = "parse_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileTooLarge(ParseError):
    reason = "too_large"


class BadEncoding(ParseError):
    reason = "bad_encoding"


class NotJson(ParseError):
    reason = "not_json"


class NotASession(ParseError):
    reason = "not_a_session"


class NoSessionId(ParseError):
    reason = "no_session_id"


class UpstreamError(GfxSyncError):
    """The target's answer was not "stored", or there was no answer.

    `verdict` defaults to the policy's reading of an HTTP `status` and PostgREST `code`; a
    target that is not HTTP (the embedded SQLite one) passes its own."""

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str,
        *,
        retry_after: float | None = None,
        kind: str | None = None,
        verdict: Verdict | None = None,
    ) -> None:
        super().__init__(f"{status or kind}: {code or '-'} {message}".strip())
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.kind = kind  # transport failure class name when status is None
        self.verdict = verdict if verdict is not None else classify(status, code)

    @property
    def summary(self) -> str:
        if self.status is None:
            return f"{self.kind}: {self.message}"
        return f"HTTP {self.status} {self.code or ''} {self.message}".strip()


class NotARegularFile(ParseError):
    """A FIFO, socket, device or symbolic link where a session file was expected."""

    reason = "not_a_regular_file"


class NasUnavailable(GfxSyncError):
    """A read of the NAS that a decision needs could not be made now (the PC is not watched,
    the file is being written or unreadable, the mount does not answer): decide later."""
