"""Run this interpreter as a child process, as the tests that need a fresh one do."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` to its end, its output captured as text.

    ``env`` replaces the environment (None: this process's), ``cwd`` the working folder.
    Does not raise on a non-zero exit (the caller asserts on ``returncode``); raises
    ``subprocess.TimeoutExpired`` after ``timeout`` seconds, once the child is killed.
    """
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
