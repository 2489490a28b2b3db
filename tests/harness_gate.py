"""Whether tests of the network harness run here: skip where the machine cannot run it, but
fail in CI when it runs as root with ``ip`` and ``tc``, where the harness must work."""

from __future__ import annotations

import os
import shutil

import pytest

from benchmarks.netharness import unavailable_reason


def require_harness() -> None:
    """Skip the calling test, with the reason, where the harness cannot run; fail instead
    when ``CI=true`` and the machine has root, ``ip`` and ``tc``."""
    reason = unavailable_reason()
    if reason is None:
        return
    tools = all(shutil.which(tool) for tool in ("ip", "tc"))
    if os.environ.get("CI") == "true" and os.geteuid() == 0 and tools:
        pytest.fail(f"CI has root, ip and tc, yet the network harness cannot run: {reason}")
    pytest.skip(reason)
