"""Benchmark: snapshots through the panel against the same libvirt calls made directly.

On the real QEMU hosts (scripts/qemuhost.sh, root), with the tiny guest running on qa: take
a snapshot with its memory (internal, qcow2) and revert to it, each made directly with
libvirt-python (snapshotCreateXML, revertToSnapshot) and through the panel (service →
Operation → Redis → real Celery worker → libvirt → inventory), timed from the call to the
finished Operation row. Direct and panel take turns, the first of each round alternating;
every snapshot is deleted (untimed) before the next is taken, so that each create starts
from a guest with no snapshot.

The guest keeps FILL_MIB of random data in its memory (vmpanel.fillmem), as a guest at
work does: a snapshot with memory writes it, so the figures are those of a small real VM,
not of an idle one whose memory is nearly all zero pages (70 ms a snapshot, where the
panel's fixed ~35 ms of checks, queue and record would be the whole story).

Target: each ratio panel/direct <= 1.10.

    sudo .venv/bin/python bench/snapshots.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path

from benchlib import script, wait  # bench/ is first on sys.path when run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN_DIR = Path(os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench-snap"))
GUEST_MEMORY_MIB = 512
FILL_MIB = 400
RUN_DIR.mkdir(mode=0o755, exist_ok=True)
DB_FILE = RUN_DIR / "bench.sqlite3"
WORKER_LOG = RUN_DIR / "bench-worker.log"
REDIS_PORT = os.environ.setdefault("VMPANEL_REDIS_PORT", "6395")
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["DATABASE_URL"] = f"sqlite:///{DB_FILE}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # a benchmark, not a panel

import libvirt  # noqa: E402  (the direct side of the comparison)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
SAVE_DIR = "/var/lib/libvirt/save"
TARGET = 1.10


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM the worker (its own session), then SIGKILL its group if it lingers."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(worker.pid, 9)  # a prefork pool child left behind
    except (ProcessLookupError, PermissionError):
        pass
    worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("bench/snapshots.py needs root (privileged libvirtd in namespaces)")

    script("qemuhost.sh", "install")
    script("qemu-guest.sh", "build")
    guest = script("qemu-guest.sh", "path")
    worker: subprocess.Popen | None = None
    conn: libvirt.virConnect | None = None
    try:
        script("qemuhost.sh", "up")
        script("redis.sh", "start")
        uri = script("qemuhost.sh", "uri", "qa")
        DB_FILE.unlink(missing_ok=True)

        import django

        django.setup()
        # The operations' "queued" lines would drown the figures.
        logging.getLogger("domains").setLevel(logging.WARNING)
        from django.contrib.auth.models import User
        from django.core.management import call_command

        from domains import domxml, hypervisor, inventory
        from domains.models import Domain, Host, Membership, Operation, Team
        from domains.services import snapshots

        call_command("migrate", verbosity=0)
        team = Team.objects.create(name="Bench", slug="bench")
        # A team admin: reverting is theirs.
        user = User.objects.create_user("bench-admin", password="x")
        Membership.objects.create(user=user, team=team, role="admin")
        host = Host.objects.create(name="qa", uri=uri, save_dir=SAVE_DIR)
        worker_log = open(WORKER_LOG, "wb")  # closed with the worker, below
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "vmpanel", "worker",
             "--concurrency=1", "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
            cwd=ROOT, env=dict(os.environ), start_new_session=True,
            stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        conn = libvirt.open(uri)
        from vmpanel.celery import app

        wait(lambda: app.control.ping(timeout=0.5), 60, f"worker (its log: {WORKER_LOG})")

        name = "bench-snap"
        uuid = str(uuidlib.uuid4())
        disk = f"/var/lib/libvirt/images/{name}.qcow2"
        hypervisor.create_volume(uri, disk, 64 * 2**20, "qcow2")
        hypervisor.define_xml(
            uri,
            domxml.build_kernel_boot_guest(
                domxml.KernelBootGuest(
                    name=name, uuid=uuid, kernel=f"{guest}/vmlinuz",
                    initrd=f"{guest}/initrd.gz", disk=disk,
                    serial_log=f"/var/log/libvirt/{name}-serial.log",
                    memory_mib=GUEST_MEMORY_MIB,
                    cmdline=f"console=ttyS0 quiet panic=-1 vmpanel.fillmem={FILL_MIB}",
                )
            ),
        )  # fmt: skip
        conn.lookupByUUIDString(uuid).create()
        serial = Path(script("qemuhost.sh", "dir", "qa")) / "log" / f"{name}-serial.log"
        wait(
            lambda: serial.exists() and "GUEST-FILLMEM" in serial.read_text(errors="replace"),
            120,
            "guest boot, its memory filled",
        )
        inventory.reconcile_host(host)
        Domain.objects.update(team=team)

        def dom():
            return conn.lookupByUUIDString(uuid)

        def row() -> Domain:
            return Domain.objects.select_related("host").get(uuid=uuid, gone_at__isnull=True)

        phases: dict[str, dict[str, list[float]]] = {"create": {}, "revert": {}}

        def through_panel(kind: str, start_op) -> float:
            t0, wall0 = time.perf_counter(), time.time()
            op = start_op()
            done = wait(lambda: (o := Operation.objects.get(pk=op.pk)).is_finished and o, 300, "op")
            seen = time.time()
            total = time.perf_counter() - t0
            if done.status != "succeeded":
                raise SystemExit(f"{done.kind} failed: {done.message} {done.error}")
            # Where the time went, by the wall clock (the worker's stamps are this
            # machine's clock too).
            started, ended = done.started_at.timestamp(), done.finished_at.timestamp()
            for phase, seconds in (
                ("to claim", started - wall0),  # checks, the row, Redis, the worker's claim
                ("worker", ended - started),  # lock, libvirt, inventory, record
                ("noticed", seen - ended),  # this loop's polling
            ):
                phases[kind].setdefault(phase, []).append(seconds)
            return total

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def no_snapshots() -> None:
            """Back to the same start: no snapshot, the inventory told."""
            for snap in dom().listAllSnapshots(0):
                snap.delete(0)
            inventory.reconcile_host(host)

        def direct(n: int) -> tuple[float, float]:
            snap_xml = domxml.build_snapshot(f"direct-{n}")  # what the panel sends
            d = dom()
            create = timed(lambda: d.snapshotCreateXML(snap_xml, 0))
            snap = d.snapshotLookupByName(f"direct-{n}", 0)
            revert = timed(lambda: d.revertToSnapshot(snap, 0))
            no_snapshots()
            return create, revert

        def panel(n: int) -> tuple[float, float]:
            snap = f"panel-{n}"
            create = through_panel("create", lambda: snapshots.create_snapshot(user, row(), snap))
            revert = through_panel("revert", lambda: snapshots.revert_snapshot(user, row(), snap))
            no_snapshots()
            return create, revert

        no_snapshots()
        results: dict[str, dict[str, list[float]]] = {"create": {}, "revert": {}}
        print(f"{'round':<6} {'side':<7} {'create s':>9} {'revert s':>9}")
        for n in range(args.rounds):
            order = ("direct", "panel") if n % 2 == 0 else ("panel", "direct")
            for side in order:
                create, revert = (direct if side == "direct" else panel)(n)
                results["create"].setdefault(side, []).append(create)
                results["revert"].setdefault(side, []).append(revert)
                print(f"{n + 1:<6} {side:<7} {create:>9.3f} {revert:>9.3f}", flush=True)
            # The guest still runs after each revert (the snapshots held it running).
            if dom().state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                raise SystemExit(f"the guest is not running after round {n + 1}")

        print(
            f"\n{'operation':<10} {'direct s':>9} {'panel s':>9} {'ratio':>7}"
            f"  (median of {args.rounds}; target ratio <= {TARGET:.2f})"
        )
        for kind, sides in results.items():
            d = statistics.median(sides["direct"])
            p = statistics.median(sides["panel"])
            print(f"{kind:<10} {d:>9.3f} {p:>9.3f} {p / d:>7.2f}")
        print("\nthe panel's time, median ms: to claim (service checks, row, Redis, the worker's")
        print("claim) + worker (lock, libvirt, inventory, record) + noticed (this loop's polling)")
        for kind, parts in phases.items():
            said = " + ".join(
                f"{phase} {statistics.median(values) * 1000:.0f}" for phase, values in parts.items()
            )
            print(f"{kind:<10} {said}")
    finally:
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        if worker is not None:
            stop_worker(worker)
            worker_log.close()
        try:
            from domains import hypervisor

            hypervisor.forget_all()
        except Exception:  # Django may not be set up yet
            pass
        # Destroys the guests (snapshot metadata too) and removes the hosts' folders; the
        # one does not wait for the other to succeed.
        for name, verb in (("qemuhost.sh", "down"), ("redis.sh", "stop")):
            try:
                script(name, verb, timeout=180)
            except (subprocess.SubprocessError, OSError) as exc:
                print(f"teardown: scripts/{name} {verb} failed: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
