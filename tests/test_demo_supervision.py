"""`make demo` keeps its processes running: a killed watcher, worker or gunicorn master is
started again (with back-off, logged), and Ctrl-C still stops everything.

Runs scripts/demo.sh for real, in a run folder, database and ports of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(cmdline)  # a zombie has none


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def running_demo(kind: str | None, port: int, redis_port: int, up_seconds: float):
    """scripts/demo.sh (`VMPANEL_DEMO=kind`; None: the plain demo) in a run folder,
    database and ports of its own, until its web answers; stopped as Ctrl-C stops it, and
    cleaned away, afterwards. Yields (the process, the run folder)."""
    run_dir = Path(tempfile.mkdtemp(prefix="vmpanel-demo-test-", dir="/tmp"))
    run_dir.chmod(0o755)
    env = {
        **os.environ,
        "VMPANEL_RUN_DIR": str(run_dir),
        "VMPANEL_PORT": str(port),
        "VMPANEL_REDIS_PORT": str(redis_port),
        "VMPANEL_CONSOLE_PORT": str(_free_port(18801)),
        "DATABASE_URL": f"sqlite:///{run_dir}/demo.sqlite3",
    }
    env.pop("VMPANEL_LEASE_SECONDS", None)  # the demo's own
    if kind:
        env["VMPANEL_DEMO"] = kind
    else:
        env.pop("VMPANEL_DEMO", None)
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "demo.sh")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{port}/healthz"),
            timeout=up_seconds, interval=0.5, what="demo up",
        )  # fmt: skip
        yield proc, run_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # as Ctrl-C: demo.sh stops everything itself
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([str(REPO / "scripts" / "stop.sh")], env=env, cwd=REPO, capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def demo():
    port = _free_port(18000)
    with running_demo(None, port, _free_port(16391), up_seconds=180) as (proc, run_dir):
        yield proc, run_dir / "demo", f"http://127.0.0.1:{port}"


def test_killed_processes_come_back_and_ctrl_c_stops_all(demo):
    proc, pids, base = demo
    names = ("watcher", "worker", "consoleproxy", "gunicorn")
    first = {name: _pid(pids / f"{name}.pid") for name in names}
    assert all(_alive(pid) for pid in first.values()), first

    for name in names:
        os.killpg(
            first[name], signal.SIGKILL
        )  # the process and its children, as the OOM killer might
        wait_for(
            lambda name=name: (
                _pid(pids / f"{name}.pid") not in (None, first[name])
                and _alive(_pid(pids / f"{name}.pid"))
            ),
            timeout=40,
            interval=0.2,
            what=f"{name} started again",
        )
    wait_for(lambda: _answers(f"{base}/healthz"), timeout=60, interval=0.5, what="gunicorn back")
    log = (pids.parent / "logs" / "supervisor.log").read_text()
    for name in names:
        assert f"{name} exited with status" in log

    now = {name: _pid(pids / f"{name}.pid") for name in names}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130  # Ctrl-C's exit, after stopping everything
    wait_for(
        lambda: not any(_alive(pid) for pid in now.values()),
        timeout=30,
        what="everything stopped, nothing started again",
    )
    assert not _answers(f"{base}/healthz")
