"""Benchmark: slow operations through the panel against the same libvirt calls made directly.

On the real QEMU hosts (scripts/qemuhost.sh, root), with the tiny guest: save, restore and
live migration (peer-to-peer, copy-storage) there and back, each made directly with
libvirt-python and through the panel (service → Operation → Redis → real Celery worker →
libvirt → inventory), timed from the call to the finished Operation row. Then the
click-to-libvirt dispatch latency: from an HTTP POST of a quick action to the worker's
claim of the operation, right before it calls libvirt.

Targets (issue 3): each ratio panel/direct <= 1.10; dispatch p95 <= 100 ms.

    sudo .venv/bin/python bench/slow_ops.py [--rounds 3] [--clicks 40]
"""

from __future__ import annotations

import argparse
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
RUN_DIR = Path(os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench-slow"))
RUN_DIR.mkdir(mode=0o755, exist_ok=True)
DB_FILE = RUN_DIR / "bench.sqlite3"
REDIS_PORT = os.environ.setdefault("VMPANEL_REDIS_PORT", "6394")
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["DATABASE_URL"] = f"sqlite:///{DB_FILE}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # a benchmark, not a panel

import libvirt  # noqa: E402  (the direct side of the comparison)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
SAVE_DIR = "/var/lib/libvirt/save"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/slow_ops.py needs root (privileged libvirtd in namespaces)")

    script("qemuhost.sh", "install")
    script("qemu-guest.sh", "build")
    guest = script("qemu-guest.sh", "path")
    script("qemuhost.sh", "up")
    script("redis.sh", "start")
    uri = {h: script("qemuhost.sh", "uri", h) for h in ("qa", "qb")}
    p2p = {h: script("qemuhost.sh", "p2p-uri", h) for h in ("qa", "qb")}
    DB_FILE.unlink(missing_ok=True)

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from domains import domxml, hypervisor, inventory
    from domains.models import Domain, Host, Membership, Operation, SavedImage, Team
    from domains.rules import DEFAULT_MIGRATION_FLAGS, MigrationChoice
    from domains.services import images, migration

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="Bench", slug="bench")
    user = User.objects.create_user("bench-operator", password="x")
    Membership.objects.create(user=user, team=team, role="operator")
    hosts = {
        h: Host.objects.create(name=h, uri=uri[h], migration_uri=p2p[h], save_dir=SAVE_DIR)
        for h in ("qa", "qb")
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "vmpanel", "worker",
         "--concurrency=1", "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        cwd=ROOT, env=dict(os.environ), start_new_session=True,
    )  # fmt: skip
    conns = {h: libvirt.open(uri[h]) for h in ("qa", "qb")}
    try:
        from vmpanel.celery import app

        wait(lambda: app.control.ping(timeout=0.5), 60, "worker")

        name = "bench-tiny"
        uuid = str(uuidlib.uuid4())
        disk = f"/var/lib/libvirt/images/{name}.qcow2"
        hypervisor.create_volume(uri["qa"], disk, 64 * 2**20, "qcow2")
        hypervisor.define_xml(
            uri["qa"],
            domxml.build_kernel_boot_guest(
                domxml.KernelBootGuest(
                    name=name, uuid=uuid, kernel=f"{guest}/vmlinuz",
                    initrd=f"{guest}/initrd.gz", disk=disk,
                    serial_log=f"/var/log/libvirt/{name}-serial.log",
                )
            ),
        )  # fmt: skip
        conns["qa"].lookupByUUIDString(uuid).create()
        serial = Path(script("qemuhost.sh", "dir", "qa")) / "log" / f"{name}-serial.log"
        wait(lambda: "GUEST-DISK" in serial.read_text(errors="replace"), 120, "guest boot")
        for h in hosts.values():
            inventory.reconcile_host(h)
        Domain.objects.update(team=team)

        def dom(h: str):
            return conns[h].lookupByUUIDString(uuid)

        def row() -> Domain:
            return Domain.objects.select_related("host").get(uuid=uuid, gone_at__isnull=True)

        def through_panel(start_op) -> float:
            t0 = time.perf_counter()
            op = start_op()
            done = wait(lambda: (o := Operation.objects.get(pk=op.pk)).is_finished and o, 300, "op")
            if done.status != "succeeded":
                raise SystemExit(f"{done.kind} failed: {done.message} {done.error}")
            return time.perf_counter() - t0

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        flags = (
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            | libvirt.VIR_MIGRATE_NON_SHARED_DISK
        )  # fmt: skip
        choice_flags = DEFAULT_MIGRATION_FLAGS | {"NON_SHARED_DISK"}
        results: dict[str, dict[str, list[float]]] = {}

        def add(kind: str, side: str, seconds: float) -> None:
            results.setdefault(kind, {}).setdefault(side, []).append(seconds)

        for n in range(args.rounds):
            # Directly.
            path = f"{SAVE_DIR}/direct-{n}.save"
            add("save", "direct", timed(lambda: dom("qa").save(path)))  # noqa: B023
            add("restore", "direct", timed(lambda: conns["qa"].restore(path)))  # noqa: B023
            add(
                "migrate",
                "direct",
                timed(lambda: dom("qa").migrateToURI3(p2p["qb"], {}, flags)),
            )
            dom("qb").migrateToURI3(p2p["qa"], {}, flags)
            for h in hosts.values():
                inventory.reconcile_host(h)
            # Through the panel.
            add("save", "panel", through_panel(
                lambda: images.save_domain(user, row(), f"panel-{n}")  # noqa: B023
            ))  # fmt: skip
            image = SavedImage.objects.order_by("-pk").first()
            add("restore", "panel", through_panel(
                lambda: images.restore_domain(user, image)  # noqa: B023
            ))  # fmt: skip
            add("migrate", "panel", through_panel(
                lambda: migration.migrate_domain(
                    user, row(), MigrationChoice(hosts["qb"], flags=choice_flags)
                )
            ))  # fmt: skip
            through_panel(
                lambda: migration.migrate_domain(
                    user, row(), MigrationChoice(hosts["qa"], flags=choice_flags)
                )
            )

        print(
            f"{'operation':<10} {'direct s':>9} {'panel s':>9} {'ratio':>7}"
            f"  (median of {args.rounds})"
        )
        for kind, sides in results.items():
            direct = statistics.median(sides["direct"])
            panel = statistics.median(sides["panel"])
            print(f"{kind:<10} {direct:>9.2f} {panel:>9.2f} {panel / direct:>7.2f}")

        # Click to libvirt: POST of a quick action until the worker claims it.
        client = Client()
        client.force_login(user)
        latencies = []
        for i in range(args.clicks):
            action = "suspend" if i % 2 == 0 else "resume"
            d = row()
            t0 = time.time()
            client.post(f"/domains/{d.host.name}/{d.uuid}/do/{action}/")
            op = Operation.objects.filter(domain=d).order_by("-pk").first()
            started = wait(
                lambda: Operation.objects.get(pk=op.pk).started_at,  # noqa: B023
                30,
                "claim",
            )
            latencies.append((started.timestamp() - t0) * 1000)
            wait(lambda: Operation.objects.get(pk=op.pk).is_finished, 30, "finish")  # noqa: B023
        p95 = statistics.quantiles(latencies, n=20)[-1]
        print(
            f"dispatch (click → worker claim) over {len(latencies)} clicks: "
            f"median {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms (target <= 100)"
        )
    finally:
        for c in conns.values():
            c.close()
        worker.terminate()
        worker.wait(timeout=30)
        hypervisor.forget_all()
        script("qemuhost.sh", "down")
        script("redis.sh", "stop")


if __name__ == "__main__":
    main()
