"""Notifications of health changes and alerts, pure: what to say, to whom, and whether to.

A `Notice` is one change (the agent's health, or an alert started or cleared). `body_for`
shapes it for the webhook's host: Slack `{"text"}`, Discord `{"content"}` (2,000 characters at
most), Microsoft Teams Workflows an Adaptive Card in the `{"type": "message", "attachments"}`
envelope, anything else plain JSON. `NoticeGate` keeps a channel quiet: the same change (kind,
name, PC and status) once per DEDUP_WINDOW, and at most RATE_LIMIT notices per RATE_WINDOW.
The webhook URLs are secrets (their path is the credential): only `url_host` is ever shown.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

DEDUP_WINDOW = 600.0  # seconds: the same change is not sent twice within it
RATE_LIMIT = 10  # notices ...
RATE_WINDOW = 60.0  # ... per this many seconds
DISCORD_MAX = 2000  # characters of a Discord message's content

HEALTH, ALERT = "health", "alert"
STARTED, CLEARED = "started", "cleared"
LEVEL_OF_HEALTH = {"healthy": "info", "degraded": "warn", "unhealthy": "critical"}


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # "health" | "alert"
    name: str  # "agent" for health, else the alert's name
    level: str  # info | warn | review | critical
    status: str  # health: the new status; alert: started | cleared
    previous: str | None  # health: the status before; alert: None
    reason: str  # redacted by the caller
    at: float  # unix time of the change
    pc: str = ""  # the PC it concerns, when it concerns one

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.pc)


def health_notice(status: str, previous: str, reasons: list[str], at: float) -> Notice:
    return Notice(
        HEALTH,
        "agent",
        LEVEL_OF_HEALTH.get(status, "warn"),
        status,
        previous,
        "; ".join(reasons) or "everything flowing",
        at,
    )


def alert_notice(name: str, level: str, message: str, started: bool, at: float) -> Notice:
    return Notice(
        ALERT, name, level, STARTED if started else CLEARED, None, message if started else "", at
    )


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def url_host(url: str) -> str:
    """What a log line may say of a webhook URL: its host, never its path or query."""
    try:
        return urlsplit(url.strip()).hostname or "?"
    except ValueError:
        return "?"


def parse_urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def flavour(url: str) -> str:
    """slack | discord | teams | json, from the webhook's host (and Power Automate's path)."""
    host = url_host(url).lower()
    path = urlsplit(url).path.lower()
    if host == "hooks.slack.com":
        return "slack"
    if host in ("discord.com", "discordapp.com") or host.endswith(
        (".discord.com", ".discordapp.com")
    ):
        return "discord"
    teams_hosts = (
        ".logic.azure.com",
        ".powerplatform.com",
        ".powerautomate.com",
        ".webhook.office.com",
    )
    if (
        host.endswith(teams_hosts)
        or host in ("flow.microsoft.com", "outlook.office.com")
        or "/powerautomate/" in path
    ):
        return "teams"
    return "json"


def headline(n: Notice, venue: str, agent_id: str) -> str:
    where = " ".join(p for p in (venue or "(no venue)", agent_id) if p)
    pc = f" PC {n.pc}" if n.pc else ""
    if n.kind == HEALTH:
        change = n.status if n.previous is None else f"{n.previous} -> {n.status}"
        return f"[{where}]{pc} health {change}"
    return f"[{where}]{pc} {n.kind} {n.name} ({n.level}) {n.status}"


def text_of(n: Notice, venue: str, agent_id: str) -> str:
    head = headline(n, venue, agent_id)
    return f"{head}: {n.reason}" if n.reason else head


def fields_of(n: Notice, venue: str, agent_id: str) -> dict[str, Any]:
    return {
        "venue": venue,
        "agent_id": agent_id,
        "kind": n.kind,
        "name": n.name,
        "level": n.level,
        "pc": n.pc or None,
        "reason": n.reason,
        "status": n.status,
        "previous": n.previous,
        "at": iso(n.at),
    }


def adaptive_card(n: Notice, venue: str, agent_id: str) -> dict[str, Any]:
    colour = {"info": "Good", "warn": "Warning", "review": "Accent", "critical": "Attention"}
    facts = [
        {"title": title, "value": str(value)}
        for title, value in (
            ("Venue", venue or "(no venue)"),
            ("Agent", agent_id),
            ("PC", n.pc),
            ("Status", n.status if n.previous is None else f"{n.previous} -> {n.status}"),
            ("Level", n.level),
            ("At", iso(n.at)),
        )
        if value
    ]
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": headline(n, venue, agent_id),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": colour.get(n.level, "Default"),
        },
        {"type": "FactSet", "facts": facts},
    ]
    if n.reason:
        body.append({"type": "TextBlock", "text": n.reason, "wrap": True})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                },
            }
        ],
    }


def body_for(url: str, n: Notice, venue: str, agent_id: str) -> dict[str, Any]:
    kind = flavour(url)
    if kind == "slack":
        return {"text": text_of(n, venue, agent_id)}
    if kind == "discord":
        text = text_of(n, venue, agent_id)
        if len(text) > DISCORD_MAX:
            text = text[: DISCORD_MAX - 1] + "…"
        return {"content": text}
    if kind == "teams":
        return adaptive_card(n, venue, agent_id)
    return fields_of(n, venue, agent_id)


@dataclass
class NoticeGate:
    """Which notices go out: one per (kind, name, PC, status) per DEDUP_WINDOW; at most
    RATE_LIMIT per RATE_WINDOW (`wait` says how long the next must wait for its slot).
    Time (`now`) is monotonic seconds, passed in."""

    dedup_window: float = DEDUP_WINDOW
    rate_limit: int = RATE_LIMIT
    rate_window: float = RATE_WINDOW
    _last: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    _sent: deque[float] = field(default_factory=deque)

    def admit(self, n: Notice, now: float) -> bool:
        """True: send it (and it counts as sent for the dedup window); False: a repeat."""
        for key in [k for k, t in self._last.items() if now - t >= self.dedup_window]:
            del self._last[key]  # bounded by the changes of the last window
        key = (*n.key, n.status)
        if key in self._last:
            return False
        self._last[key] = now
        return True

    def wait(self, now: float) -> float:
        """Seconds until a notice may go out without exceeding the rate (0: now)."""
        while self._sent and now - self._sent[0] >= self.rate_window:
            self._sent.popleft()
        if len(self._sent) < self.rate_limit:
            return 0.0
        # a microsecond more: `now + wait` rounded down must still leave the oldest out
        return self._sent[0] + self.rate_window - now + 1e-6

    def sent(self, now: float) -> None:
        self._sent.append(now)
