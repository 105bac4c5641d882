"""`make demo-cluster`: the panel as several machines run it, on this one (issue 14, item 4):
four test-driver hosts, two watchers sharing them through leases, two workers, two web
processes. A watcher killed with SIGKILL has its hosts taken over within a lease, comes
back (supervised) and takes its share again; the demo's VMs survive it; Ctrl-C stops all.

Runs scripts/demo.sh for real, in a run folder, database and ports of its own.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter

import pytest
import redis

from domains.leases import Board, Process
from tests.conftest import _free_port
from tests.helpers import wait_for
from tests.test_demo_supervision import _alive, _answers, _pid, running_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

LEASE = 6  # the cluster demo's lease


@pytest.fixture
def cluster():
    port, redis_port = _free_port(18200), _free_port(16392)
    with running_demo("cluster", port, redis_port, up_seconds=240) as (proc, run_dir):
        yield proc, run_dir, port, redis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")


def _owners(board: Board, hosts: dict[int, str]) -> dict[str, int | None]:
    owners = board.owners(list(hosts))
    return {
        name: None if owners[pk] is None else int(Process(owners[pk][0]).pid)
        for pk, name in hosts.items()
    }


def test_a_killed_watcher_of_the_cluster_demo_is_taken_over_and_comes_back(cluster):
    proc, run_dir, port, client = cluster
    pids = run_dir / "demo"
    assert _answers(f"http://127.0.0.1:{port + 10}/healthz")  # the second web process
    db = sqlite3.connect(run_dir / "demo.sqlite3")
    hosts = dict(db.execute("SELECT id, name FROM domains_host"))
    assert sorted(hosts.values()) == ["alpha", "beta", "delta", "gamma"]
    board = Board("watcher", client)
    first, second = _pid(pids / "watcher.pid"), _pid(pids / "watcher-2.pid")
    wait_for(
        lambda: Counter(_owners(board, hosts).values()) == {first: 2, second: 2},
        timeout=3 * LEASE,
        what="two hosts for each watcher",
    )
    workers = {_pid(pids / "worker.pid"), _pid(pids / "worker-2.pid")}
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    present = "SELECT count(*) FROM domains_domain WHERE gone_at IS NULL"
    vms = db.execute(present).fetchone()[0]

    os.killpg(first, signal.SIGKILL)
    killed_at = time.monotonic()
    orphans = [name for name, pid in _owners(board, hosts).items() if pid == first]

    def owned_by_the_living() -> bool:
        owners = _owners(board, hosts)
        return all(pid not in (None, first) and _alive(pid) for pid in owners.values())

    wait_for(owned_by_the_living, timeout=LEASE + 2, interval=0.1, what="taken over")
    assert time.monotonic() - killed_at <= LEASE + 2
    assert orphans and all(_owners(board, hosts)[name] != first for name in orphans)

    # The supervisor starts it again; it takes its share back.
    wait_for(
        lambda: _pid(pids / "watcher.pid") not in (None, first),
        timeout=20,
        what="the watcher started again",
    )
    again = _pid(pids / "watcher.pid")
    wait_for(
        lambda: Counter(_owners(board, hosts).values()) == {again: 2, second: 2},
        timeout=3 * LEASE,
        what="the hosts shared again",
    )
    # The test-driver hosts kept their VMs through it (the demo's keep-NAME connections).
    assert db.execute(present).fetchone()[0] == vms

    everything = {p.name: _pid(p) for p in pids.glob("*.pid") if "supervisor" not in p.name}
    assert {"keep-alpha.pid", "gunicorn-2.pid", "worker-2.pid", "watcher-2.pid"} <= set(everything)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 130
    wait_for(
        lambda: not any(_alive(pid) for pid in everything.values()),
        timeout=30,
        what="everything stopped",
    )
