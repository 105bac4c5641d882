"""Benchmark: inventory watchers at scale, one against two sharing the hosts (issue 14).

20 test-driver hosts × 500 VMs (private daemons, Redis and database of its own). For 1 and
then 2 `manage.py watch_inventory` processes, printed:

1. full reconcile: the watchers are running (registered, idle) while every host is
   disabled; all hosts are enabled at once, and the clock runs until every VM is in the
   inventory. The watchers take their shares of the leases and read their hosts in full.
2. burst: 1,000 VMs started out of band (through the hosts' own libvirt connections, as
   fast as one process can), and the delay from each start to its row saying "running"
   (libvirt's event, the owning watcher's refresh, the row), median, p95 and worst.
3. the watchers' CPU seconds during each phase and their peak memory (VmHWM); during the
   reconcile also the CPU of the host daemons, of the database server and of the whole
   machine (how busy its cores were).

Twice: first on the machine as it is, where the 20 daemons, the database and the watchers
share its cores; then with each watcher held to `--watcher-cores` of a core (a cgroup CPU
quota), standing for watchers on machines of their own, with the rest of the machine
left to the hosts and the database. On a small machine the first is bound by the machine
(a second watcher cannot add cores that are not there: its busy figure says when), the
second shows whether the work itself divides between watchers.

Targets: 2 watchers reconcile in <= 0.6 x the time of 1; burst p95 <= 2 s; watcher memory
<= 200 MiB at 10,000 VMs.

    .venv/bin/python bench/scale.py [--hosts 20] [--per-host 500] [--changes 1000]
                                    [--watcher-cores 0.5 | --watcher-cores 0]
                                    [--database-url postgres://…]   # default: SQLite

The held run needs root and a cgroup CPU controller (v1 or v2); without them it is skipped,
saying why.
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


def machine_cpu() -> dict[str, float]:
    """CPU seconds so far: the machine's busy time over all cores, the host daemons', the
    database server's."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    seconds = {"machine": (sum(fields) - fields[3] - fields[4]) / TICK, "daemons": 0.0, "db": 0.0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm == "libvirtd":
                seconds["daemons"] += cpu_seconds(int(proc.name))
            elif comm.startswith("postgres"):
                seconds["db"] += cpu_seconds(int(proc.name))
        except (OSError, IndexError):
            continue  # ended meanwhile
    return seconds


class CpuCap:
    """Each watcher process held to `cores` of a core by a cgroup of its own (v2's cpu.max,
    else v1's CFS quota). `why_not` says why it cannot be done here."""

    PERIOD_US = 100_000

    def __init__(self, cores: float):
        self.cores = cores
        self.groups: list[Path] = []
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        controllers = v2 / "cgroup.controllers"
        self.root: Path | None = None
        self.v2 = controllers.exists() and "cpu" in controllers.read_text().split()
        if self.v2:
            self.root = v2
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.root = v1
        self.why_not = None
        if self.root is None:
            self.why_not = "no cgroup CPU controller on this machine"
        elif not os.access(self.root, os.W_OK):
            self.why_not = f"{self.root} is not writable (run as root)"
        elif self.v2:  # children may have their CPU limited
            (self.root / "cgroup.subtree_control").write_text("+cpu")

    def hold(self, pid: int) -> None:
        group = self.root / f"vmpanel-bench-{pid}"
        group.mkdir()
        quota = int(self.cores * self.PERIOD_US)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))  # every thread of the process
        self.groups.append(group)

    def remove(self) -> None:
        for group in self.groups:
            for _ in range(50):  # empty once its process has ended
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        self.groups.clear()


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


def start_watchers(
    count: int, env: dict[str, str], logs: Path, cap: CpuCap | None
) -> list[subprocess.Popen]:
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
        if cap is not None:
            cap.hold(procs[-1].pid)  # before it has read a thing
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


def run(count: int, args, env, hosts, conns, chosen: dict[str, str], cap: CpuCap | None) -> dict:
    """One round with `count` watchers (each held by `cap`, if given); `chosen` are the VMs
    the burst starts (UUID → host)."""
    import redis
    from django.db import close_old_connections

    from domains import leases
    from domains.models import Domain, Host, State

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()  # no leases, members or marks of the last round
    Domain.objects.all().delete()
    Host.objects.update(enabled=False, last_seen_at=None)
    board = leases.Board("watcher", client)
    procs = start_watchers(count, env, RUN_DIR, cap)
    try:
        wait(lambda: client.zcard(board.members_key) == count, 60, "the watchers registered")
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        machine0 = machine_cpu()
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
        machine1 = machine_cpu()
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
            "daemons_cpu_s": machine1["daemons"] - machine0["daemons"],
            "db_cpu_s": machine1["db"] - machine0["db"],
            "busy_pct": 100
            * (machine1["machine"] - machine0["machine"])
            / (reconcile * (os.cpu_count() or 1)),
            "cpu_burst_s": sum(b - a for a, b in zip(cpu1, cpu2, strict=True)),
            "peak_mib": [round(peak_mib(p.pid), 1) for p in procs],
        }
    finally:
        stop(procs)
        if cap is not None:
            cap.remove()
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
    parser.add_argument(
        "--watcher-cores",
        type=float,
        default=0.5,
        help="the second run's CPU per watcher, in cores (0: no second run)",
    )
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

        from domains.models import Domain, Host

        call_command("migrate", verbosity=0)
        # A previous run's rows go first: a host's VMs keep it from being deleted.
        Domain.objects.all().delete()
        Host.objects.all().delete()
        for name, uri in uris.items():
            Host.objects.create(name=name, uri=uri, enabled=False)
        # The VMs the burst starts: an even share on every host.
        chosen = {}
        for i in range(args.changes):
            name = names[i % len(names)]
            chosen[per_host[name][i // len(names)]] = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        counts = [int(c) for c in args.watchers.split(",")]
        runs: list[tuple[str, list[dict]]] = []
        caps: list[CpuCap | None] = [None]
        if args.watcher_cores:
            cap = CpuCap(args.watcher_cores)
            if cap.why_not:
                print(f"held run skipped: {cap.why_not}", file=sys.stderr)
            else:
                caps.append(cap)
        for cap in caps:
            results = []
            for count in counts:
                result = run(count, args, env, names, conns, chosen, cap)
                results.append(result)
                print(result, file=sys.stderr)
            title = (
                f"the machine's {os.cpu_count()} cores shared by the daemons, the database "
                "and the watchers"
                if cap is None
                else f"each watcher held to {cap.cores:g} of a core (as on machines of their own)"
            )
            runs.append((title, results))
    finally:
        for conn in conns.values():
            conn.close()
        for name in names:
            script("testhost.sh", "stop", name)
        script("redis.sh", "stop")

    domains = args.hosts * args.per_host
    print(f"{args.hosts} hosts x {args.per_host} VMs ({domains} VMs), {args.changes} changes")
    for title, results in runs:
        report(title, results)
    shared = runs[0][1]  # the burst target is for the machine as it is
    every = [r for _title, results in runs for r in results]
    print(
        f"\nburst p95, the machine as it is: {max(r['delay_p95_s'] for r in shared):.2f} s "
        f"(target <= 2); watcher peak memory: "
        f"{max(m for r in every for m in r['peak_mib']):.0f} MiB (target <= 200)"
    )


def report(title: str, results: list[dict]) -> None:
    print(f"\n{title}:")
    print(
        f"{'watchers':>8} {'hosts each':>10} {'reconcile s':>11} {'CPU s':>6} "
        f"{'daemons':>7} {'db':>5} {'busy %':>6} "
        f"{'burst p50 s':>11} {'p95 s':>6} {'max s':>6} {'CPU s':>6} {'peak MiB':>14}"
    )
    for r in results:
        print(
            f"{r['watchers']:>8} {'/'.join(map(str, r['shares'])):>10} "
            f"{r['reconcile_s']:>11.2f} {r['cpu_reconcile_s']:>6.1f} "
            f"{r['daemons_cpu_s']:>7.1f} {r['db_cpu_s']:>5.1f} {r['busy_pct']:>6.0f} "
            f"{r['delay_median_s']:>11.2f} {r['delay_p95_s']:>6.2f} {r['delay_max_s']:>6.2f} "
            f"{r['cpu_burst_s']:>6.1f} {'/'.join(map(str, r['peak_mib'])):>14}"
        )
    if len(results) >= 2:
        ratio = results[1]["reconcile_s"] / results[0]["reconcile_s"]
        print(f"reconcile, 2 watchers / 1: {ratio:.2f} (target <= 0.60)")
        busy = max(r["busy_pct"] for r in results)
        if busy >= 85:
            print(
                f"  the machine was {busy:.0f} % busy: bound by its cores, which a second "
                "watcher on the same machine does not add"
            )


if __name__ == "__main__":
    main()
