"""Test-only pause points, so fault tests can kill a run at a chosen moment.

With `PRODCAT_TEST_PAUSE_AT=NAME` (or `NAME:N`), the first (N-th) time the process reaches
`pause_point(NAME)` it writes `prodcat-test-pause: NAME` on stderr and sleeps, waiting for the
test's signal (tests/test_faults.py). Unset, as for every user, a point does nothing.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "PRODCAT_TEST_PAUSE_AT"
_reached: dict[str, int] = {}


def pause_point(name: str) -> None:
    """Pause here if the test environment asks for this point."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        print(f"prodcat-test-pause: {name}", file=sys.stderr, flush=True)
        time.sleep(300)
