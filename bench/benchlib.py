"""What the benchmarks share: running the project's scripts and waiting for a condition.

A benchmark runs as `python bench/<name>.py`, which puts this folder first on sys.path:
`from benchlib import script, wait`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script(name: str, *args: str, timeout: float = 900) -> str:
    """Run scripts/<name> with `args`; the last line it printed."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def wait(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something truthy and return that; stop the
    benchmark saying `what` it waited for if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out: {what}")
