"""The tests' own waiting helpers keep their deadlines (tests/support/waits.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.waits import read_until

SILENT = "import sys, time; print('one', flush=True); time.sleep(120)"


@pytest.mark.timeout(60)
def test_read_until_keeps_its_deadline_while_a_line_is_awaited() -> None:
    """A process that prints one line and then nothing: `read_until` gives up at its deadline
    (not when pytest-timeout ends the test), says what was printed, and kills the process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SILENT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"within 1\.5s:\none") as raised:
            read_until(proc, "never printed", 1.5)
        assert time.monotonic() - started >= 1.5, raised.value
        assert proc.wait(30) != 0, "the silent process was killed"
    finally:
        proc.kill()
        proc.wait()


def test_read_until_returns_the_match_and_leaves_the_rest_to_read() -> None:
    script = "print('a'); print('port 4711'); print('after')"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    match = read_until(proc, r"port (\d+)", 30)
    assert match.group(1) == "4711"
    assert proc.stdout is not None
    assert proc.stdout.read() == "after\n"
    assert proc.wait(30) == 0
