"""Cumulative histograms, pure: the stages observe into them, /metrics renders them.

Kept apart from prometheus_client so that reading or writing the status loads no exporter.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)  # `le`: a value on a bound counts there
        if index < len(self._counts):
            self._counts[index] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound), ending with +Inf and the total count."""
        running = 0
        out: list[tuple[float, int]] = []
        for bound, n in zip(self.buckets, self._counts, strict=True):
            running += n
            out.append((bound, running))
        out.append((float("inf"), self.count))
        return out


class LabelledHistogram:
    """One histogram per label value (e.g. per PC)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.by_label: dict[str, Histogram] = {}

    def labels(self, value: str) -> Histogram:
        found = self.by_label.get(value)
        if found is None:
            found = self.by_label[value] = Histogram(self.buckets)
        return found
