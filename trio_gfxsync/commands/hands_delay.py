"""The security delay's lines of `trio-gfxsync check`, from `gfx_hands_status()["release"]`.

20261205110000_gfx_hands_delay.sql keeps hands from the `delayed` tier until
`gfx_security_delay(pc)` has passed, and announces them on `gfx:delayed:<pc>` when
`gfx_release_hands()` runs (every minute from pg_cron on Supabase). The database reports:

    {"delay_seconds": 1800, "delays": {"PC01": 600}, "release_scheduled": true | false | null,
     "release_schedule": "* * * * *" | null, "waiting": 3, "overdue": 0}

`release_scheduled` is null where pg_cron is absent; `overdue` counts hands still waiting five
minutes after their delay passed (nobody runs the release). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .results import CheckResult

# What docs/hands.md tells operators to run once on Supabase.
RELEASE_CRON_LINE = (
    "select cron.schedule('gfx-release-hands', '* * * * *', 'select public.gfx_release_hands()');"
)


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{what}={value!r}, not a number of seconds")
    return float(value)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}={value!r}, not a count")
    return value


@dataclass(frozen=True, slots=True)
class ReleaseStatus:
    delay_seconds: float
    delays: dict[str, float]
    scheduled: bool | None
    schedule: str | None
    waiting: int
    overdue: int

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> ReleaseStatus:
        """Raises ValueError naming the field that is not of the documented shape."""
        delays = obj.get("delays")
        if not isinstance(delays, dict):
            raise ValueError(f"release.delays={delays!r}, not an object")
        scheduled = obj.get("release_scheduled")
        if scheduled is not None and not isinstance(scheduled, bool):
            raise ValueError(f"release.release_scheduled={scheduled!r}")
        schedule = obj.get("release_schedule")
        if schedule is not None and not isinstance(schedule, str):
            raise ValueError(f"release.release_schedule={schedule!r}")
        return cls(
            delay_seconds=_seconds(obj.get("delay_seconds"), "release.delay_seconds"),
            delays={
                str(pc): _seconds(value, f"release.delays[{pc!r}]") for pc, value in delays.items()
            },
            scheduled=scheduled,
            schedule=schedule,
            waiting=_count(obj.get("waiting"), "release.waiting"),
            overdue=_count(obj.get("overdue"), "release.overdue"),
        )


def format_delay(seconds: float) -> str:
    """1800 -> '30 min', 5400 -> '1 h 30 min', 3605 -> '1 h 5 s', 0 -> '0 s', 2.5 -> '2.5 s'."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts) or "0 s"


def release_lines(status: ReleaseStatus) -> list[CheckResult]:
    """'security delay' (what is in force) and 'delayed release' (is anybody announcing)."""
    delay = f"{format_delay(status.delay_seconds)} for every table"
    if status.delays:
        delay += "; " + ", ".join(
            f"{pc}: {format_delay(seconds)}" for pc, seconds in sorted(status.delays.items())
        )
    lines = [CheckResult("security delay", True, delay)]
    waiting = f"{status.waiting} hands waiting for their delay"
    if status.overdue:
        lines.append(
            CheckResult(
                "delayed release",
                False,
                f"{status.overdue} hands still unannounced 5 min after their delay passed: "
                f"gfx_release_hands() is not running; schedule it: {RELEASE_CRON_LINE}",
            )
        )
    elif status.scheduled is None:
        lines.append(
            CheckResult(
                "delayed release",
                True,
                "pg_cron is not installed: call gfx_release_hands() every minute "
                f"(docs/hands.md); {waiting}",
            )
        )
    elif status.scheduled:
        lines.append(
            CheckResult(
                "delayed release",
                True,
                f"scheduled by pg_cron ({status.schedule or 'active'}); {waiting}",
            )
        )
    else:
        lines.append(
            CheckResult(
                "delayed release",
                False,
                f"pg_cron has no active job calling gfx_release_hands(): {RELEASE_CRON_LINE}",
            )
        )
    return lines
