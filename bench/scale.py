"""Benchmark: inventory watchers at scale, one against two sharing the hosts (issue 14).

20 test-driver hosts × 500 VMs (private daemons, Redis and database of its own). For 1 and
then 2 `manage.py watch_inventory` processes, printed:

1. full reconcile: the watchers are running (registered, idle) while every host is
   disabled; all hosts are enabled at once, and the clock runs until every VM is in the
   inventory. The watchers take their shares of the leases and read their hosts in full.
2. burst: 1,000 VMs started out of band (through the hosts' own libvirt connections, as
   fast as one process can), and the delay from each start to its row saying "running"
   (libvirt's event, the owning watcher's refresh, the row), median, p95 and worst.
3. the watchers' CPU seconds during each phase and their peak memory (VmHWM).

Targets: 2 watchers reconcile in <= 0.6 x the time of 1; burst p95 <= 2 s; watcher memory
<= 200 MiB at 10,000 VMs.

    .venv/bin/python bench/scale.py [--hosts 20] [--per-host 500] [--changes 1000]
                                    [--database-url postgres://…]   # default: SQLite

Two cores run the daemons, the watchers and this script alike: figures move with the
machine's other load.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RUN_DIR = Path(os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench-scale"))
REDIS_PORT = os.environ.setdefault("VMPANEL_REDIS_PORT", "16490")
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # a benchmark, not a panel

import libvirt  # noqa: E402  (the bench plays the hosts' other clients)
from benchlib import script, wait  # noqa: E402

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def define_domains(conn: libvirt.virConnect, host: str, count: int) -> list[str]:
    from domains import domxml

    have = {d.name() for d in conn.listAllDomains(0)}
    uuids = []
    for i in range(count):
        name = f"{host}-{i:04d}"
        if name in have:
            uuids.append(conn.lookupByName(name).UUIDString())
            continue
        uuid = str(uuidlib.uuid4())
        conn.defineXML(domxml.build_simple_domain(domxml.SimpleDomain(name=name, uuid=uuid)))
        uuids.append(uuid)
    return uuids


def start_watchers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    procs = []
    for n in range(count):
        log = open(logs / f"watcher-{count}-{n}.log", "wb")  # noqa: SIM115 (lives with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "watch_inventory", "--reconcile-seconds", "600"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(count: int, args, env, hosts, conns, chosen: dict[str, str]) -> dict:
    """One round with `count` watchers; `chosen` are the VMs the burst starts (UUID → host)."""
    import redis
    from django.db import close_old_connections

    from domains import leases
    from domains.models import Domain, Host, State

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()  # no leases, members or marks of the last round
    Domain.objects.all().delete()
    Host.objects.update(enabled=False, last_seen_at=None)
    board = leases.Board("watcher", client)
    procs = start_watchers(count, env, RUN_DIR)
    try:
        wait(lambda: client.zcard(board.members_key) == count, 60, "the watchers registered")
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        total = len(hosts) * (args.per_host + 1)  # each test-driver host has its "test" VM
        started = time.monotonic()
        Host.objects.update(enabled=True)
        wait(
            lambda: Domain.objects.filter(gone_at__isnull=True).count() >= total,
            900,
            "every VM in the inventory",
        )
        reconcile = time.monotonic() - started
        cpu1 = [cpu_seconds(p.pid) for p in procs]
        owners = board.owners(list(Host.objects.values_list("pk", flat=True)))
        shares = sorted(
            sum(1 for o in owners.values() if o and o[0].split(":")[1] == str(p.pid)) for p in procs
        )

        # The burst: start `changes` VMs as fast as one process can, round-robin over the
        # hosts; a thread polls the inventory meanwhile and notes when each shows running.
        changed: dict[str, float] = {}
        seen: dict[str, float] = {}
        done = threading.Event()

        def poll() -> None:
            wanted = set(chosen)
            while not done.is_set() and len(seen) < len(wanted):
                rows = Domain.objects.filter(
                    uuid__in=list(wanted - set(seen)), state=State.RUNNING
                ).values_list("uuid", flat=True)
                now = time.time()
                for uuid in rows:
                    seen.setdefault(str(uuid), now)
                time.sleep(0.02)
            close_old_connections()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for uuid, host in chosen.items():
            conns[host].lookupByUUIDString(uuid).create()
            changed[uuid] = time.time()
        burst_issue = time.time() - min(changed.values())
        wait(lambda: len(seen) == len(chosen), 120, "every started VM showing running")
        done.set()
        poller.join()
        cpu2 = [cpu_seconds(p.pid) for p in procs]
        delays = sorted(seen[u] - changed[u] for u in chosen)
        return {
            "watchers": count,
            "shares": shares,
            "reconcile_s": reconcile,
            "burst_issue_s": burst_issue,
            "delay_median_s": statistics.median(delays),
            "delay_p95_s": delays[int(0.95 * (len(delays) - 1))],
            "delay_max_s": delays[-1],
            "cpu_reconcile_s": sum(b - a for a, b in zip(cpu0, cpu1, strict=True)),
            "cpu_burst_s": sum(b - a for a, b in zip(cpu1, cpu2, strict=True)),
            "peak_mib": [round(peak_mib(p.pid), 1) for p in procs],
        }
    finally:
        stop(procs)
        for uuid, host in chosen.items():
            dom = conns[host].lookupByUUIDString(uuid)
            if dom.isActive():
                dom.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--per-host", type=int, default=500)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--watchers", default="1,2")
    parser.add_argument("--database-url", default=f"sqlite:///{RUN_DIR}/bench.sqlite3")
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = args.database_url
    if args.database_url.startswith("sqlite:"):
        Path(args.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)

    names = [f"scale{i:02d}" for i in range(args.hosts)]
    script("redis.sh", "start")
    uris = {}
    for name in names:
        script("testhost.sh", "start", name)
        uris[name] = script("testhost.sh", "uri", name)
    # The bench's own connections keep the test-driver worlds alive between rounds.
    conns = {name: libvirt.open(uri) for name, uri in uris.items()}
    try:
        t0 = time.monotonic()
        per_host = {name: define_domains(conns[name], name, args.per_host) for name in names}
        print(
            f"defined {args.hosts} x {args.per_host} VMs in {time.monotonic() - t0:.1f} s",
            file=sys.stderr,
        )

        import django

        django.setup()
        from django.core.management import call_command

        from domains.models import Host

        call_command("migrate", verbosity=0)
        Host.objects.all().delete()
        for name, uri in uris.items():
            Host.objects.create(name=name, uri=uri, enabled=False)
        # The VMs the burst starts: an even share on every host.
        chosen = {}
        for i in range(args.changes):
            name = names[i % len(names)]
            chosen[per_host[name][i // len(names)]] = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        results = []
        for count in (int(c) for c in args.watchers.split(",")):
            result = run(count, args, env, names, conns, chosen)
            results.append(result)
            print(result, file=sys.stderr)
    finally:
        for conn in conns.values():
            conn.close()
        for name in names:
            script("testhost.sh", "stop", name)
        script("redis.sh", "stop")

    domains = args.hosts * args.per_host
    print(f"{args.hosts} hosts x {args.per_host} VMs ({domains} VMs), {args.changes} changes")
    print(
        f"{'watchers':>8} {'hosts each':>10} {'reconcile s':>11} {'CPU s':>6} "
        f"{'burst p50 s':>11} {'p95 s':>6} {'max s':>6} {'CPU s':>6} {'peak MiB':>14}"
    )
    for r in results:
        print(
            f"{r['watchers']:>8} {'/'.join(map(str, r['shares'])):>10} "
            f"{r['reconcile_s']:>11.2f} {r['cpu_reconcile_s']:>6.1f} "
            f"{r['delay_median_s']:>11.2f} {r['delay_p95_s']:>6.2f} {r['delay_max_s']:>6.2f} "
            f"{r['cpu_burst_s']:>6.1f} {'/'.join(map(str, r['peak_mib'])):>14}"
        )
    if len(results) >= 2:
        ratio = results[1]["reconcile_s"] / results[0]["reconcile_s"]
        print(f"reconcile, 2 watchers / 1: {ratio:.2f} (target <= 0.60)")
    print(
        f"burst p95: {max(r['delay_p95_s'] for r in results):.2f} s (target <= 2), "
        f"watcher peak memory: {max(m for r in results for m in r['peak_mib']):.0f} MiB "
        "(target <= 200)"
    )


if __name__ == "__main__":
    main()
