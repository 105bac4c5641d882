"""The truth tier: real QEMU guests on two libvirtd hosts in their own network namespaces.

What the test driver cannot do is proven here, through the panel's services and the real
Celery worker: save → restore, managed save → start, live migration with copy-storage
there and back with progress seen mid-flight, cancel mid-flight, and a worker killed in
the middle of a save. Needs root; where it cannot run, the skip says why, loudly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import libvirt
import pytest
from django.urls import reverse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from domains import collector, domxml, hypervisor, inventory, outcomes, rules, runner, tasks
from domains.models import (
    Domain,
    DomainUsage,
    Host,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    State,
)
from domains.services import images, migration, operations, snapshots
from domains.services.common import ActionRefused
from provisioning.services import clone_domain
from tests.conftest import REPO, RUN_DIR, run_script, stop_process, subprocess_env
from tests.helpers import (
    browser_log_in,
    button_service,
    client_for,
    wait_finished,
    wait_for,
)

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True)]

GUEST_MEMORY_MIB = 128
DISK_BYTES = 64 * 2**20
SAVE_DIR = "/var/lib/libvirt/save"  # as the hosts' daemons see it


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "it needs root (privileged libvirtd, network namespaces)"
    if os.environ.get("VMPANEL_SKIP_QEMU"):
        return "VMPANEL_SKIP_QEMU is set"
    return None


@pytest.fixture(scope="module")
def qemu():
    """Hosts qa and qb up, the tiny guest built; both torn down after the module."""
    why = _why_not()
    if why:
        pytest.skip(f"QEMU TIER NOT RUN: {why}")
    try:
        run_script("qemuhost.sh", "install", timeout=900)
        run_script("qemu-guest.sh", "build", timeout=900)
    except RuntimeError as exc:
        pytest.skip(f"QEMU TIER NOT RUN: packages or guest could not be installed: {exc}")
    run_script("qemuhost.sh", "up", timeout=120)
    info = SimpleNamespace(guest=run_script("qemu-guest.sh", "path"))
    for name in ("qa", "qb"):
        setattr(
            info,
            name,
            SimpleNamespace(
                uri=run_script("qemuhost.sh", "uri", name),
                p2p=run_script("qemuhost.sh", "p2p-uri", name),
                dir=Path(run_script("qemuhost.sh", "dir", name)),
            ),
        )
    try:
        yield info
    finally:
        hypervisor.forget_all()
        run_script("qemuhost.sh", "down", timeout=120)


@pytest.fixture
def world(qemu, people, celery_worker):
    """Host rows for qa and qb, and one booted guest on qa belonging to team A."""
    hosts = {}
    for name in ("qa", "qb"):
        h = getattr(qemu, name)
        hosts[name] = Host.objects.create(
            name=name, uri=h.uri, migration_uri=h.p2p, save_dir=SAVE_DIR
        )
    name = f"tiny-{uuidlib.uuid4().hex[:6]}"
    uuid = str(uuidlib.uuid4())
    disk = f"/var/lib/libvirt/images/{name}.qcow2"
    hypervisor.create_volume(qemu.qa.uri, disk, DISK_BYTES, "qcow2")
    xml = domxml.build_kernel_boot_guest(
        domxml.KernelBootGuest(
            name=name,
            uuid=uuid,
            kernel=f"{qemu.guest}/vmlinuz",
            initrd=f"{qemu.guest}/initrd.gz",
            disk=disk,
            serial_log=f"/var/log/libvirt/{name}-serial.log",
            memory_mib=GUEST_MEMORY_MIB,
        )
    )
    hypervisor.define_xml(qemu.qa.uri, xml)
    inventory.reconcile_host(hosts["qa"])
    inventory.reconcile_host(hosts["qb"])
    domain = Domain.objects.get(host=hosts["qa"], uuid=uuid)
    domain.team = people.team_a
    domain.save()
    w = SimpleNamespace(qemu=qemu, hosts=hosts, domain=domain, name=name, uuid=uuid, disk=disk)
    finished(button_service("start")(people.olga_operator, domain))
    wait_for(lambda: "GUEST-DISK" in serial(w, "qa"), timeout=90, what="guest booted")
    w.domain = fresh(domain)
    yield w
    for h in ("qa", "qb"):  # wherever the guest ended up: off and gone, disk too
        uri = getattr(qemu, h).uri
        try:
            conn = libvirt.open(uri)
            try:
                dom = conn.lookupByUUIDString(uuid)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
            try:
                conn.storageVolLookupByPath(disk).delete(0)
            except libvirt.libvirtError:
                pass
            conn.close()
        except libvirt.libvirtError:
            pass


def serial(w, host: str) -> str:
    path = getattr(w.qemu, host).dir / "log" / f"{w.name}-serial.log"
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def finished(op: Operation, timeout: float = 120) -> Operation:
    done = wait_finished(op, timeout=timeout)
    assert done.status == OperationStatus.SUCCEEDED, (done.kind, done.message, done.error)
    return done


def live_state(uri: str, uuid: str) -> int | None:
    conn = libvirt.open(uri)
    try:
        return conn.lookupByUUIDString(uuid).state()[0]
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def fresh(domain: Domain) -> Domain:
    return Domain.objects.select_related("host").get(pk=domain.pk)


def test_save_then_restore_a_real_guest(world, people):
    op = finished(images.save_domain(people.olga_operator, world.domain, "tiny"))
    assert (world.qemu.qa.dir / "save" / "tiny.save").stat().st_size > 10 * 2**20
    assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_SHUTOFF
    assert fresh(world.domain).state_reason == "saved"
    image = op.saved_images.get()
    assert image.memory_kib == GUEST_MEMORY_MIB * 1024
    marker = serial(world, "qa").count("GUEST-ALIVE")
    finished(images.restore_domain(people.olga_operator, image))
    assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
    # The guest goes on where it was: it keeps writing its heartbeat to the console.
    wait_for(lambda: serial(world, "qa").count("GUEST-ALIVE") > marker, timeout=30)


def test_managed_save_then_start(world, people):
    finished(button_service("managed_save")(people.olga_operator, world.domain))
    assert fresh(world.domain).has_managed_save
    finished(button_service("start")(people.olga_operator, fresh(world.domain)))
    row = fresh(world.domain)
    assert row.state == State.RUNNING and row.state_reason == "restored"
    assert not row.has_managed_save


def _migrate(user, domain, dest, bandwidth=0, extra=()):
    choice = rules.MigrationChoice(
        destination=dest,
        flags=rules.DEFAULT_MIGRATION_FLAGS | {"NON_SHARED_DISK", *extra},
        bandwidth_mib_s=bandwidth,
    )
    return migration.migrate_domain(user, domain, choice)


def _progress_seen(op: Operation, timeout: float) -> list[int]:
    """Distinct data_processed values seen while the migration runs."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Operation.objects.get(pk=op.pk)
        done = (row.progress_detail or {}).get("data_processed")
        if row.status == OperationStatus.RUNNING and done and done not in seen:
            seen.append(done)
        if row.is_finished:
            break
        time.sleep(0.2)
    return seen


def test_live_migration_there_and_back_with_progress(world, people):
    qa, qb = world.hosts["qa"], world.hosts["qb"]
    # Throttled so that it lasts long enough to be watched.
    op = _migrate(people.olga_operator, world.domain, qb, bandwidth=20)
    seen = _progress_seen(op, timeout=120)
    done = finished(op)
    assert len(seen) >= 2, f"progress seen mid-flight: {seen}"
    assert done.params["seconds"] > 0 and done.params["flags"]
    assert live_state(world.qemu.qb.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert live_state(world.qemu.qa.uri, world.uuid) is None
    # The inventory shows it once, on qb: same row, team and history.
    rows = Domain.objects.filter(uuid=world.uuid, gone_at__isnull=True)
    assert [(r.pk, r.host.name) for r in rows] == [(world.domain.pk, "qb")]
    assert fresh(world.domain).team == people.team_a
    assert fresh(world.domain).operations.filter(kind=OperationKind.MIGRATE).count() == 1
    marker = serial(world, "qb").count("GUEST-ALIVE")
    wait_for(lambda: serial(world, "qb").count("GUEST-ALIVE") > marker, timeout=30)

    back = finished(_migrate(people.olga_operator, fresh(world.domain), qa))
    assert back.target_host == qa
    assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert fresh(world.domain).host == qa


def test_cancel_mid_flight_leaves_the_guest_on_the_source(world, people):
    op = _migrate(people.olga_operator, world.domain, world.hosts["qb"], bandwidth=2)
    # Mid-flight: data is moving (the disks first, then the memory).
    wait_for(
        lambda: (
            (Operation.objects.get(pk=op.pk).progress_detail or {}).get("data_processed", 0) > 0
        ),
        timeout=60,
        what="migration data flowing",
    )
    operations.cancel_operation(people.olga_operator, Operation.objects.get(pk=op.pk))
    done = wait_finished(op, timeout=60)
    assert done.status == OperationStatus.CANCELLED, (done.message, done.error)
    assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert live_state(world.qemu.qb.uri, world.uuid) is None
    row = fresh(world.domain)
    assert row.host.name == "qa" and row.state == State.RUNNING
    # The domain takes operations again.
    finished(button_service("suspend")(people.olga_operator, row))


def test_killed_worker_leaves_a_truthful_failed_operation(world, people, settings):
    # A worker of its own, on a queue of its own, so that killing it spares the others.
    queue = f"kill-test-{os.getpid()}"
    log_path = RUN_DIR / "kill-worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "vmpanel",
                "worker",
                "--pool=solo",
                "-Q",
                queue,
                "--without-mingle",
                "--without-gossip",
                "--hostname",
                f"{queue}@%h",
            ],  # fmt: skip
            cwd=REPO,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        from vmpanel.celery import app

        wait_for(
            lambda: app.control.ping(destination=[f"{queue}@{os.uname().nodename}"], timeout=0.5),
            timeout=30,
            what="the kill-test worker answers",
        )
        domain = world.domain
        op = Operation.objects.create(
            kind=OperationKind.SAVE, user=people.olga_operator, domain=domain,
            host=domain.host, domain_uuid=domain.uuid, domain_name=domain.name,
            team=domain.team, params={"image": "killed", "path": f"{SAVE_DIR}/killed.save"},
        )  # fmt: skip
        app.send_task("domains.tasks.save_domain_task", args=[op.pk], queue=queue)
        wait_for(
            lambda: Operation.objects.get(pk=op.pk).status == OperationStatus.RUNNING,
            timeout=30,
            what="save running",
        )
        os.killpg(worker.pid, signal.SIGKILL)  # mid-save
        worker.wait()
    finally:
        stop_process(worker)

    # Recovery waits for the heartbeat to go stale and for libvirt's job to end.
    settings.VMPANEL_STALE_SECONDS = 3

    def recovered() -> bool:
        runner.recover_orphaned_operations()
        return Operation.objects.get(pk=op.pk).is_finished

    wait_for(recovered, timeout=60, interval=1, what="orphaned save recovered")
    done = Operation.objects.get(pk=op.pk)
    assert done.status == OperationStatus.FAILED
    assert "worker running this operation stopped" in done.message
    real = live_state(world.qemu.qa.uri, world.uuid)
    said = "running" if real == libvirt.VIR_DOMAIN_RUNNING else "shut off"
    assert said in done.message, (real, done.message)
    # A redelivery of the same task does nothing: the operation is not run twice.
    tasks.save_domain_task(op.pk)
    assert Operation.objects.get(pk=op.pk).status == OperationStatus.FAILED


def test_source_daemon_dying_mid_migration_is_no_false_success(world, people):
    """The source host's libvirtd dies mid-transfer: libvirt's call fails while a paused,
    half-arrived copy sits on the destination. That is not a migration: the operation
    says the outcome is unknown until both hosts answer, then settles on the truth; the
    row and its team stay with the real guest; the copies made on the destination go."""
    dest_disk = world.qemu.qb.dir / "images" / Path(world.disk).name
    op = _migrate(people.olga_operator, world.domain, world.hosts["qb"], bandwidth=2)
    wait_for(
        lambda: (
            (Operation.objects.get(pk=op.pk).progress_detail or {}).get("data_processed", 0) > 0
        ),
        timeout=60,
        what="migration data flowing",
    )
    assert dest_disk.exists()  # the copy's volume, made by the migration
    run_script("qemuhost.sh", "kill-daemon", "qa")
    try:
        wait_for(
            lambda: Operation.objects.get(pk=op.pk).status != OperationStatus.RUNNING,
            timeout=60,
            what="the migration call ended",
        )
        row = Operation.objects.get(pk=op.pk)
        assert row.status == OperationStatus.CHECKING, (row.status, row.message)
        assert "Outcome unknown" in row.message and "qa does not answer" in row.message
        assert not row.is_finished
        domain = fresh(world.domain)
        assert domain.host.name == "qa" and domain.team == people.team_a
        with pytest.raises(ActionRefused, match="nothing left to cancel"):
            operations.cancel_operation(people.olga_operator, row)
        # The source still does not answer: looking again settles nothing.
        assert outcomes.settle_checking_operations() == []
        assert Operation.objects.get(pk=op.pk).status == OperationStatus.CHECKING
    finally:
        run_script("qemuhost.sh", "start-daemon", "qa", timeout=60)
    # Until the outcome is settled the domain takes nothing else (the worker's keeper may
    # have settled it already).
    try:
        button_service("suspend")(people.olga_operator, fresh(world.domain))
    except ActionRefused as exc:
        assert "busy with operation" in str(exc)
    else:
        assert Operation.objects.get(pk=op.pk).is_finished

    def settled() -> bool:
        outcomes.settle_checking_operations()
        return Operation.objects.get(pk=op.pk).is_finished

    wait_for(settled, timeout=120, interval=2, what="the migration's outcome settled")
    done = Operation.objects.get(pk=op.pk)
    on_qa = live_state(world.qemu.qa.uri, world.uuid)
    on_qb = live_state(world.qemu.qb.uri, world.uuid)
    rows = Domain.objects.filter(uuid=world.uuid, gone_at__isnull=True)
    # Whatever libvirt did, the record agrees with it.
    if on_qa == libvirt.VIR_DOMAIN_RUNNING:
        assert done.status == OperationStatus.FAILED, (done.status, done.message)
        assert "stayed on qa" in done.message
        assert on_qb is None
        assert not dest_disk.exists(), "the destination's copy was left behind"
        assert [(r.pk, r.host.name) for r in rows] == [(world.domain.pk, "qa")]
        here = "qa"
    else:
        assert on_qb == libvirt.VIR_DOMAIN_RUNNING, (on_qa, on_qb)
        assert done.status == OperationStatus.SUCCEEDED, (done.status, done.message)
        assert [(r.pk, r.host.name) for r in rows] == [(world.domain.pk, "qb")]
        here = "qb"
    assert fresh(world.domain).team == people.team_a
    assert not Domain.objects.filter(uuid=world.uuid, team__isnull=True).exists()
    # The guest lives on where the record says, and takes operations again.
    marker = serial(world, here).count("GUEST-ALIVE")
    wait_for(lambda: serial(world, here).count("GUEST-ALIVE") > marker, timeout=30)
    finished(button_service("suspend")(people.olga_operator, fresh(world.domain)))


def test_usage_of_real_guests_in_one_bulk_call_per_tick(world, people):
    """A guest that burns CPU and reads its disk beside the idle one: the collector reads
    both in one getAllDomainStats call a tick, and their figures tell them apart."""
    qa = world.hosts["qa"]
    name = f"burn-{uuidlib.uuid4().hex[:6]}"
    uuid = str(uuidlib.uuid4())
    disk = f"/var/lib/libvirt/images/{name}.qcow2"
    hypervisor.create_volume(world.qemu.qa.uri, disk, DISK_BYTES, "qcow2")
    xml = domxml.build_kernel_boot_guest(
        domxml.KernelBootGuest(
            name=name, uuid=uuid, kernel=f"{world.qemu.guest}/vmlinuz",
            initrd=f"{world.qemu.guest}/initrd.gz", disk=disk,
            serial_log=f"/var/log/libvirt/{name}-serial.log", memory_mib=GUEST_MEMORY_MIB,
            cmdline="console=ttyS0 quiet panic=-1 vmpanel.burn=1 vmpanel.readdisk=1",
        )
    )  # fmt: skip
    log = world.qemu.qa.dir / "log" / f"{name}-serial.log"
    conn = libvirt.open(world.qemu.qa.uri)
    try:
        conn.defineXML(xml).create()
        wait_for(
            lambda: log.exists() and "GUEST-READDISK started" in log.read_text(errors="replace"),
            timeout=90,
            what="the burning guest booted",
        )
        inventory.reconcile_host(qa)
        burn = Domain.objects.get(host=qa, uuid=uuid)
        ticker = collector.HostTicker(qa, tick_seconds=5)
        seen: dict = {}

        def measured() -> bool:
            ticker.tick()
            assert ticker.last_calls == 1, "one bulk call per host and tick"
            hot = DomainUsage.objects.filter(domain=burn).first()
            idle = DomainUsage.objects.filter(domain=world.domain).first()
            if hot is None or idle is None or hot.cpu_pct is None or idle.cpu_pct is None:
                return False
            reads = sum(d["rd_bps"] or 0 for d in hot.detail["disks"])
            seen.update(hot=hot.cpu_pct, idle=idle.cpu_pct, reads=reads)
            return hot.cpu_pct > 50 and idle.cpu_pct < 20 and reads > 0

        wait_for(measured, timeout=30, interval=5, what=f"usage told apart: {seen}")
        hot = DomainUsage.objects.get(domain=burn)
        assert hot.memory_used_kib and hot.memory_source in ("guest", "host")
        assert [d["name"] for d in hot.detail["disks"]] == ["vda"]
        assert hot.detail["vcpus"] and hot.detail["vcpus"][0]["pct"] is not None
    finally:
        try:
            dom = conn.lookupByUUIDString(uuid)
            dom.destroy()
            dom.undefine()
            conn.storageVolLookupByPath(disk).delete(0)
        except libvirt.libvirtError:
            pass
        conn.close()


# --- consoles of a real guest ---------------------------------------------------------

ORIGIN = "http://127.0.0.1:8000"


def _console_ticket(user, domain, kind: str) -> dict:
    url = reverse("console_ticket", args=[domain.host.name, domain.uuid]) + f"?kind={kind}"
    response = client_for(user).post(url)
    assert response.status_code == 200, response.content
    return response.json()


def _read_until(ws, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in {seconds} s; got {seen[-300:]!r}")
        try:
            data = ws.recv(timeout=left)
        except TimeoutError:
            continue
        seen += data if isinstance(data, bytes) else data.encode()
    return seen


def test_serial_console_of_a_real_guest(world, people, console_proxy):
    answer = _console_ticket(people.olga_operator, world.domain, "serial")
    assert answer["view_only"] is False
    with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
        _read_until(ws, b"GUEST-ALIVE", 15)  # the guest's own output
        ws.send(b"hello-console\r")
        _read_until(ws, b"GUEST-ECHO hello-console", 15)  # typed, and answered

    # A viewer watches: its keys go nowhere.
    answer = _console_ticket(people.victor_viewer, world.domain, "serial")
    assert answer["view_only"] is True
    with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
        _read_until(ws, b"GUEST-ALIVE", 15)
        ws.send(b"viewer-typed\r")
        time.sleep(4)
    assert "GUEST-ECHO viewer-typed" not in serial(world, "qa")

    # Taken off the team mid-session: the console closes within the check period.
    answer = _console_ticket(people.olga_operator, world.domain, "serial")
    with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
        _read_until(ws, b"GUEST-ALIVE", 15)
        Membership.objects.filter(user=people.olga_operator, team=people.team_a).delete()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code == 4403 and "role" in ws.close_reason
        assert time.monotonic() - started < 5


def test_screen_of_a_real_guest_in_chromium(
    world, people, console_proxy, live_server, page, settings
):
    # The page opens the proxy's WebSocket on its own port (no front proxy in tests).
    settings.VMPANEL_CONSOLE_URL = console_proxy
    origin = console_proxy.split("/console/")[0]
    policy = {**settings.CONTENT_SECURITY_POLICY}
    policy["DIRECTIVES"] = {**policy["DIRECTIVES"], "connect-src": ["'self'", origin]}
    settings.CONTENT_SECURITY_POLICY = policy
    problems: list[str] = []
    said: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: said.append(f"{message.type}: {message.text}"))
    browser_log_in(page, live_server.url, "olga_operator")
    page.goto(f"{live_server.url}/domains/qa/{world.uuid}/console/?kind=vnc")
    try:
        page.wait_for_function(
            "() => document.querySelector('[data-console-status]').textContent"
            ".includes('Connected')",
            timeout=20000,
        )
    except Exception:
        status = page.locator("[data-console-status]").inner_text()
        raise AssertionError(f"status {status!r}; console {said[-8:]}; errors {problems}") from None
    page.wait_for_timeout(1500)  # the first frames
    colours = page.evaluate(
        """() => {
            const c = document.querySelector('[data-console-screen] canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length && seen.size < 10; i += 4 * 97) {
                seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
            }
            return seen.size;
        }"""
    )
    assert colours > 1, "the guest's screen is drawn"
    page.screenshot(path="/tmp/vmpanel-shots/console-vnc-1366.png")
    # The serial console in the same page: the guest's output, and an answer to a line typed.
    page.goto(f"{live_server.url}/domains/qa/{world.uuid}/console/?kind=serial")
    page.wait_for_function(
        "() => document.querySelector('[data-console-screen]').innerText.includes('GUEST-ALIVE')",
        timeout=20000,
    )
    page.click("[data-console-screen]")
    page.keyboard.type("typed-in-chromium")
    page.keyboard.press("Enter")
    echoed = "GUEST-ECHO typed-in-chromium"
    page.wait_for_function(
        f"() => document.querySelector('[data-console-screen]').innerText.includes('{echoed}')",
        timeout=15000,
    )
    page.screenshot(path="/tmp/vmpanel-shots/console-serial-1366.png")
    assert problems == []


def test_a_host_going_away_mid_session_disconnects_the_console(world, people, console_proxy):
    answer = _console_ticket(people.olga_operator, world.domain, "serial")
    with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
        _read_until(ws, b"GUEST-ALIVE", 15)
        run_script("qemuhost.sh", "kill-daemon", "qa")
        try:
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=20)
            # Closed with a reason the page shows ("Disconnected: …", with Reconnect).
            assert ws.close_code in (1000, 4502), (ws.close_code, ws.close_reason)
            assert ws.close_reason
        finally:
            run_script("qemuhost.sh", "start-daemon", "qa", timeout=60)
    # Back: a new ticket opens the console again (as Reconnect does: a ticket a try).
    hypervisor.forget(world.qemu.qa.uri)

    def reconnects() -> bool:
        answer = _console_ticket(people.olga_operator, world.domain, "serial")
        with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
            try:
                _read_until(ws, b"GUEST-ALIVE", 10)
            except ConnectionClosed:
                return False
            return True

    wait_for(reconnects, timeout=40, interval=2, what="the console back with its host")


@pytest.fixture
def screen_guest(world, people):
    """`screen_guest(address)`: a running guest on qa of team A whose screen listens on
    `address` (qa's console address); gone afterwards, wherever it went."""
    made = []

    def make(address: str) -> Domain:
        name = f"screen-{uuidlib.uuid4().hex[:6]}"
        uuid = str(uuidlib.uuid4())
        disk = f"/var/lib/libvirt/images/{name}.qcow2"
        hypervisor.create_volume(world.qemu.qa.uri, disk, DISK_BYTES, "qcow2")
        xml = domxml.build_kernel_boot_guest(
            domxml.KernelBootGuest(
                name=name, uuid=uuid, kernel=f"{world.qemu.guest}/vmlinuz",
                initrd=f"{world.qemu.guest}/initrd.gz", disk=disk,
                serial_log=f"/var/log/libvirt/{name}-serial.log",
                memory_mib=GUEST_MEMORY_MIB, vnc_listen=address,
            )
        )  # fmt: skip
        made.append((uuid, disk))
        conn = libvirt.open(world.qemu.qa.uri)
        try:
            conn.defineXML(xml).create()
        finally:
            conn.close()
        inventory.reconcile_host(world.hosts["qa"])
        domain = Domain.objects.get(host=world.hosts["qa"], uuid=uuid)
        domain.team = people.team_a
        domain.save(update_fields=["team"])
        return domain

    yield make
    for uuid, disk in made:
        for h in ("qa", "qb"):
            conn = libvirt.open(getattr(world.qemu, h).uri)
            try:
                dom = conn.lookupByUUIDString(uuid)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError:
                pass
            try:
                conn.storageVolLookupByPath(disk).delete(0)
            except libvirt.libvirtError:
                pass
            conn.close()


def _display_of(uri: str, uuid: str) -> domxml.Graphics:
    conn = libvirt.open(uri)
    try:
        return domxml.console_devices(conn.lookupByUUIDString(uuid).XMLDesc(0)).graphics[0]
    finally:
        conn.close()


def _rfb_banner(console_proxy: str, answer: dict) -> bytes:
    with connect(f"{console_proxy}?ticket={answer['ticket']}", origin=ORIGIN) as ws:
        banner = _read_until(ws, b"\n", 10)
        assert banner.startswith(b"RFB 003.00"), banner
        ws.send(banner[:12])  # the version we speak: the display's own
        types = ws.recv(timeout=10)
        # VNC authentication (2) and nothing weaker: the display has a password.
        assert types[0] >= 1 and 2 in types[1:] and 1 not in types[1:], types
    return banner


def test_a_screen_on_the_hosts_console_address_is_reached_there(
    world, people, console_proxy, screen_guest
):
    """A remote host's consoles: the display listens on the host's management address (its
    console address, a superuser's setting) and the proxy connects to it by TCP, as it must
    for a host whose libvirt connection cannot hand over a socket. Here qa's management link
    from this machine stands for the management network."""
    from domains.models import AuditEvent

    address = run_script("qemuhost.sh", "console-addr", "qa")
    qa = world.hosts["qa"]
    qa.console_address = address
    qa.save(update_fields=["console_address"])
    domain = screen_guest(address)

    answer = _console_ticket(people.olga_operator, domain, "vnc")
    assert answer["password"], "a fresh VNC password for this console"
    _rfb_banner(console_proxy, answer)
    port = _display_of(world.qemu.qa.uri, str(domain.uuid)).port
    opened = AuditEvent.objects.filter(kind="console.opened").latest("created_at")
    assert opened.detail["via"] == f"{address}:{port}"

    # Where the display is not on the console address, a local host's display is still
    # reached, through libvirt's connection (a remote host's would be refused: the
    # decision is rules.display_route, tested in test_rules).
    qa.console_address = "10.255.255.1"
    qa.save(update_fields=["console_address"])
    _rfb_banner(console_proxy, _console_ticket(people.olga_operator, domain, "vnc"))
    opened = AuditEvent.objects.filter(kind="console.opened").latest("created_at")
    assert opened.detail["via"] == "libvirt"


def test_a_migrated_screen_listens_on_the_destinations_console_address(
    world, people, console_proxy, screen_guest
):
    """qa's console address does not exist on qb: the migration moves the display to qb's
    (libvirt's destination XML), and its console is reached there."""
    qa, qb = world.hosts["qa"], world.hosts["qb"]
    for host in (qa, qb):
        host.console_address = run_script("qemuhost.sh", "console-addr", host.name)
        host.save(update_fields=["console_address"])
    domain = screen_guest(qa.console_address)
    done = finished(_migrate(people.olga_operator, domain, qb))
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    display = _display_of(world.qemu.qb.uri, str(domain.uuid))
    assert display.listen == (qb.console_address,)
    _rfb_banner(console_proxy, _console_ticket(people.olga_operator, fresh(domain), "vnc"))


# --- snapshots and clones of a real guest ----------------------------------------------

# A complete heartbeat line of the tiny guest (scripts/qemu-guest.sh): its counter.
ALIVE = re.compile(r"GUEST-ALIVE (\d+) uptime=")


def _beats(text: str) -> list[int]:
    """The heartbeat counters of a serial log's complete lines, in the order written."""
    return [int(n) for n in ALIVE.findall(text[: text.rfind("\n") + 1])]


def _drop_snapshots(uri: str, uuid: str) -> None:
    """Whatever snapshots the domain still has, gone (an undefine refuses them)."""
    conn = libvirt.open(uri)
    try:
        for snap in conn.lookupByUUIDString(uuid).listAllSnapshots(0):
            try:
                snap.delete(0)
            except libvirt.libvirtError:
                pass
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_a_memory_snapshot_takes_the_guest_back_to_its_moment(world, people):
    """A snapshot of the running guest holds its memory: reverted to it, the guest goes on
    from that moment, so its heartbeat counter steps back and counts up again from there,
    without a new boot."""
    wait_for(lambda: _beats(serial(world, "qa")), timeout=30, what="a first heartbeat")
    # The counter the snapshot holds is that of some instant during the operation: no lower
    # than the last beat written before it was asked for, no higher than the last one
    # written once it has finished (the guest is stopped while its memory is written).
    before = _beats(serial(world, "qa"))[-1]
    try:
        op = snapshots.create_snapshot(people.olga_operator, world.domain, "moment")
        finished(op)
        after = _beats(serial(world, "qa"))[-1]
        taken = hypervisor.list_snapshots(world.qemu.qa.uri, world.uuid)
        assert [(s.name, s.memory, s.state) for s in taken] == [("moment", True, "running")]
        assert fresh(world.domain).snapshot_count == 1

        # The guest lives on past its snapshot for a few beats.
        wait_for(
            lambda: _beats(serial(world, "qa"))[-1] >= after + 4,
            timeout=60,
            what="four beats after the snapshot",
        )
        log_before = serial(world, "qa")
        peak = _beats(log_before)[-1]
        finished(snapshots.revert_snapshot(people.alice_admin, fresh(world.domain), "moment"))
        assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
        row = fresh(world.domain)
        assert row.state == State.RUNNING and row.snapshot_count == 1

        def resumed() -> list[int] | None:
            """The counters written since the revert: those from the first step back on
            (a beat or two of the old timeline may come before it)."""
            seq = [peak, *_beats(serial(world, "qa")[len(log_before) :])]
            back = next((i for i in range(1, len(seq)) if seq[i] < seq[i - 1]), None)
            return seq[back:] if back is not None and len(seq) - back >= 2 else None

        since = wait_for(resumed, timeout=30, what="two heartbeats after the revert")
        assert before <= since[0] <= after + 1 < peak, (before, after, peak, since)
        assert since[1] == since[0] + 1, since  # counting on, once a beat
        # Resumed, not booted again.
        assert "GUEST-BOOT-OK" not in serial(world, "qa")[len(log_before) :]

        finished(snapshots.delete_snapshot(people.alice_admin, fresh(world.domain), "moment"))
        assert hypervisor.list_snapshots(world.qemu.qa.uri, world.uuid) == ()
        assert fresh(world.domain).snapshot_count == 0
    finally:
        # The world's teardown undefines the guest, which libvirt refuses while it has
        # snapshots.
        _drop_snapshots(world.qemu.qa.uri, world.uuid)


def _serial_log_of(xml: str) -> str:
    """Where a kernel-boot guest's serial port logs to (<serial><log file>), as its host's
    daemon sees it."""
    log = ET.fromstring(xml).find("devices/serial/log")
    assert log is not None, "the guest logs its serial port to a file"
    return log.get("file")


@pytest.mark.timeout(300)
def test_a_clone_boots_next_to_its_original(world, people):
    qa = world.hosts["qa"]
    finished(button_service("destroy")(people.olga_operator, world.domain))
    assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_SHUTOFF
    clone_name = f"{world.name}-copy"
    clone_uuid = None
    volumes = [f"/var/lib/libvirt/images/{clone_name}-vda.qcow2"]
    conn = libvirt.open(world.qemu.qa.uri)
    try:
        op = finished(clone_domain(people.alice_admin, fresh(world.domain), clone_name))
        clone_uuid = op.params["clone_uuid"]
        volumes = op.params.get("volumes") or volumes
        assert op.kind == OperationKind.CLONE and op.progress == 100
        assert clone_uuid != world.uuid
        row = Domain.objects.get(host=qa, uuid=clone_uuid, gone_at__isnull=True)
        assert row.name == clone_name and row.team == people.team_a
        assert row.state == State.SHUTOFF
        original = Domain.objects.get(pk=world.domain.pk)
        assert original.team == people.team_a and str(original.uuid) == world.uuid

        clone_xml = conn.lookupByUUIDString(clone_uuid).XMLDesc(0)
        original_xml = conn.lookupByUUIDString(world.uuid).XMLDesc(0)
        [disk] = [d for d in domxml.disk_sources(clone_xml) if d.device == "disk"]
        # A copy of its own, beside the original's in the pool "images".
        assert disk.path == f"/var/lib/libvirt/images/{clone_name}-vda.qcow2" != world.disk
        assert disk.format == "qcow2" and volumes == [disk.path]
        copy = world.qemu.qa.dir / "images" / Path(disk.path).name
        assert copy.is_file() and copy.stat().st_size > 0
        assert (world.qemu.qa.dir / "images" / Path(world.disk).name).is_file()

        # Both booted: each boot writes "GUEST-DISK vda ok" to the serial log its XML
        # names — a file each (the clone's own, not its original's).
        logs = [_serial_log_of(original_xml), _serial_log_of(clone_xml)]
        assert logs[1] == f"/var/log/libvirt/{clone_name}-serial.log" != logs[0]
        files = {
            p: world.qemu.qa.dir / "log" / PurePosixPath(p).relative_to("/var/log/libvirt")
            for p in logs
        }
        offsets = {p: f.stat().st_size if f.exists() else 0 for p, f in files.items()}
        finished(button_service("start")(people.olga_operator, fresh(world.domain)))
        finished(button_service("start")(people.olga_operator, row))

        def booted() -> bool:
            for p, f in files.items():
                new = f.read_bytes()[offsets[p] :] if f.exists() else b""
                if new.count(b"GUEST-DISK vda ok") < logs.count(p):
                    return False
            return True

        wait_for(booted, timeout=120, interval=0.5, what=f"both guests booted (logs {logs})")
        assert live_state(world.qemu.qa.uri, world.uuid) == libvirt.VIR_DOMAIN_RUNNING
        assert live_state(world.qemu.qa.uri, clone_uuid) == libvirt.VIR_DOMAIN_RUNNING
        assert fresh(row).state == State.RUNNING
    finally:
        if clone_uuid is not None:
            try:
                dom = conn.lookupByUUIDString(clone_uuid)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                )
            except libvirt.libvirtError:
                pass
        for path in volumes:
            try:
                conn.storageVolLookupByPath(path).delete(0)
            except libvirt.libvirtError:
                pass
        conn.close()
