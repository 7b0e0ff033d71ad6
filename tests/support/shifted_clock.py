"""Run the real agent with its wall clock shifted, as on a machine whose clock is wrong.

    python -m tests.support.shifted_clock run      # the agent's own CLI, arguments unchanged

GFX_TEST_CLOCK_OFFSET is the shift in seconds (3600: an hour fast; -3600: an hour slow).
`time.time` and `time.time_ns`, the agent's only wall clocks, read that much ahead; the
monotonic clocks (trio's, the timeouts) are untouched, as they are on a real machine whose
time of day is wrong. No libfaketime needed, and the rest is the real program.
"""

from __future__ import annotations

import os
import runpy
import sys
import time

_offset = float(os.environ.pop("GFX_TEST_CLOCK_OFFSET", "0"))
_offset_ns = int(_offset * 1e9)
_real_time = time.time
_real_time_ns = time.time_ns


def _shifted_time() -> float:
    return _real_time() + _offset


def _shifted_time_ns() -> int:
    return _real_time_ns() + _offset_ns


time.time = _shifted_time
time.time_ns = _shifted_time_ns

if __name__ == "__main__":
    sys.argv = ["trio_gfxsync", *sys.argv[1:]]
    runpy.run_module("trio_gfxsync", run_name="__main__", alter_sys=True)
