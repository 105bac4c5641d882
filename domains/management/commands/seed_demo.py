"""Seed the demo: hosts, people, teams and domains in every state the test driver shows.

Safe to run again: people and teams are kept, and domains are only (re)made on hosts that
lack them — a test-driver daemon starts empty every time it starts.
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from domains import domxml, hypervisor, inventory
from domains.hypervisor import HypervisorError
from domains.models import Domain, Host, Membership, Role, Team
from domains.rules import host_uri_problem

PASSWORD = os.environ.get("VMPANEL_DEMO_PASSWORD", "vmpanel-demo")

TEAMS = {
    "platform": "Platform",
    "research": "Research",
}

# username → (team slug or None, role); the superuser is separate.
PEOPLE = {
    "paula": ("platform", Role.ADMIN),
    "oscar": ("platform", Role.OPERATOR),
    "vera": ("platform", Role.VIEWER),
    "rita": ("research", Role.ADMIN),
    "otto": ("research", Role.OPERATOR),
    "val": ("research", Role.VIEWER),
    "nemo": (None, None),
}


@dataclass(frozen=True)
class DemoDomain:
    host: str
    name: str
    team: str
    state: str  # running | paused | shutoff | transient | managed_save
    vcpus: int = 1
    memory_mib: int = 512
    autostart: bool = False
    snapshot: bool = False

    @property
    def uuid(self) -> str:
        # The same UUID every run, so a re-seed finds what the last one made.
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"vmpanel-demo/{self.host}/{self.name}"))


DOMAINS = [
    DemoDomain("alpha", "web-1", "platform", "running", 2, 1024, autostart=True),
    DemoDomain("alpha", "web-2", "platform", "running", 2, 1024),
    DemoDomain("alpha", "db-1", "platform", "paused", 4, 4096, snapshot=True),
    DemoDomain("alpha", "build-1", "platform", "shutoff", 2, 2048),
    DemoDomain("alpha", "scratch-1", "platform", "transient", 1, 256),
    DemoDomain("alpha", "batch-1", "research", "managed_save", 2, 2048),
    DemoDomain("alpha", "notebook-1", "research", "running", 2, 2048, snapshot=True),
    DemoDomain("beta", "web-3", "platform", "running", 2, 1024, autostart=True),
    DemoDomain("beta", "db-2", "platform", "shutoff", 4, 4096, snapshot=True),
    DemoDomain("beta", "gpu-sim", "research", "running", 8, 8192, autostart=True),
    DemoDomain("beta", "etl-1", "research", "paused", 2, 1024),
    DemoDomain("beta", "archive", "research", "shutoff", 1, 512),
    DemoDomain("beta", "probe", "research", "transient", 1, 128),
    DemoDomain("beta", "report-1", "research", "managed_save", 1, 1024),
]


# `make demo-qemu`: real guests on the QEMU hosts of scripts/qemuhost.sh.
QEMU_SAVE_DIR = "/var/lib/libvirt/save"  # as those hosts' daemons see it
QEMU_GUESTS = [
    DemoDomain("qa", "tiny-web", "platform", "running", 1, 128),
    DemoDomain("qb", "tiny-db", "research", "running", 1, 128),
]


def parse_hosts(raw: str) -> dict[str, str]:
    hosts = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, uri = item.partition("=")
        if not sep or not name or not uri:
            raise CommandError(f"VMPANEL_HOSTS entries look like name=uri, not {item!r}")
        hosts[name] = uri
    return hosts


def demo_save_dir(uri: str) -> str:
    """scripts/testhost.sh keeps a host's socket in <host>/sock/ and its save folder in
    <host>/save/: the demo's hosts get that folder."""
    socket = parse_qs(urlsplit(uri).query).get("socket", [""])[0]
    if socket.endswith("/sock/libvirt-sock"):
        return socket.removesuffix("/sock/libvirt-sock") + "/save"
    return ""


# The test driver's own storage pool: a disk there is a volume, which a clone can copy.
DEMO_POOL_DIR = "/default-pool"


def make_domain(uri: str, spec: DemoDomain) -> None:
    """Create `spec` through libvirt and bring it to its state."""
    disk = f"{DEMO_POOL_DIR}/{spec.name}.qcow2"
    if not hypervisor.volume_exists(uri, disk):
        hypervisor.create_volume(uri, disk, 8 * 2**30, "qcow2")
    xml = domxml.build_simple_domain(
        domxml.SimpleDomain(
            name=spec.name,
            uuid=spec.uuid,
            vcpus=spec.vcpus,
            memory_mib=spec.memory_mib,
            # A disk and a NIC, so that the usage graphs have something to show.
            disk=disk,
            mac="52:54:00:" + ":".join(spec.uuid.replace("-", "")[i : i + 2] for i in (0, 2, 4)),
        )
    )
    if spec.state == "transient":
        hypervisor.create_xml(uri, xml)
        return
    hypervisor.define_xml(uri, xml)
    if spec.snapshot:
        hypervisor.create_snapshot(uri, spec.uuid, "before-upgrade", "the demo's first")
    if spec.autostart:
        hypervisor.set_autostart(uri, spec.uuid, True)
    if spec.state in ("running", "paused", "managed_save"):
        hypervisor.start(uri, spec.uuid)
    if spec.state == "paused":
        hypervisor.suspend(uri, spec.uuid)
    if spec.state == "managed_save":
        hypervisor.managed_save(uri, spec.uuid)


class Command(BaseCommand):
    help = "Create the demo's hosts, people, teams and domains (safe to run again)."

    def handle(self, *args, **options):
        hosts = parse_hosts(os.environ.get("VMPANEL_HOSTS", ""))
        if not hosts:
            raise CommandError("Set VMPANEL_HOSTS=name=uri,... (make demo does).")
        migration_uris = parse_hosts(os.environ.get("VMPANEL_MIGRATION_URIS", ""))
        # The same rule as the host form's, before anything is saved or connected to.
        for variable, uris in (
            ("VMPANEL_HOSTS", hosts),
            ("VMPANEL_MIGRATION_URIS", migration_uris),
        ):
            for name, uri in uris.items():
                problem = host_uri_problem(uri)
                if problem:
                    raise CommandError(f"{variable}: host {name}: {problem}")
        teams = self.seed_people()
        started = timezone.now()
        rows = [
            Host.objects.update_or_create(name=name, defaults={"uri": uri})[0]
            for name, uri in hosts.items()
        ]
        qemu_guest = os.environ.get("VMPANEL_QEMU_GUEST", "")
        for host in rows:
            folder = QEMU_SAVE_DIR if qemu_guest else demo_save_dir(host.uri)
            if not host.save_dir and folder:
                host.save_dir = folder
            host.migration_uri = migration_uris.get(host.name, host.migration_uri)
            host.save(update_fields=["save_dir", "migration_uri"])
        self.wait_for_watcher(rows, started)
        for host in rows:
            try:
                if qemu_guest:
                    self.seed_qemu_host(host, teams, qemu_guest)
                    continue
                self.seed_host(host, teams)
            except HypervisorError as exc:
                raise CommandError(f"host {host.name} ({host.uri}): {exc.message}") from None
        # Provisioning: one template per install method and one request to approve.
        from provisioning import demo

        count = demo.seed(rows)
        self.stdout.write(f"{count} templates and one pending request (vera, Platform)")
        self.print_logins()

    def wait_for_watcher(self, hosts: list[Host], since, timeout: float = 20) -> None:
        """Wait until the watcher has read every host since `since`.

        A test-driver daemon forgets its domains when its last client disconnects, so
        domains made here survive this command only if the watcher holds a connection.
        """
        deadline = time.monotonic() + timeout
        pks = [h.pk for h in hosts]
        while time.monotonic() < deadline:
            waiting = Host.objects.filter(pk__in=pks).exclude(last_seen_at__gte=since)
            if not waiting.exists():
                return
            time.sleep(0.2)
        self.stderr.write(
            "The inventory watcher has not read every host yet (is manage.py "
            "watch_inventory running?). Without it the test-driver hosts forget the "
            "demo domains when this command ends."
        )

    @transaction.atomic
    def seed_people(self) -> dict[str, Team]:
        teams = {
            slug: Team.objects.get_or_create(slug=slug, defaults={"name": name})[0]
            for slug, name in TEAMS.items()
        }
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
        for username, (team_slug, role) in PEOPLE.items():
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User.objects.create_user(username, f"{username}@example.com", PASSWORD)
            if team_slug:
                Membership.objects.get_or_create(
                    user=user, team=teams[team_slug], defaults={"role": role}
                )
        return teams

    def seed_host(self, host: Host, teams: dict[str, Team]) -> None:
        made = 0
        for spec in (d for d in DOMAINS if d.host == host.name):
            if not hypervisor.domain_exists(host.uri, spec.uuid):
                make_domain(host.uri, spec)
                made += 1
        inventory.reconcile_host(host)
        # Give each demo domain its team, unless someone has already chosen another.
        for spec in (d for d in DOMAINS if d.host == host.name):
            Domain.objects.filter(host=host, uuid=spec.uuid, team__isnull=True).update(
                team=teams[spec.team]
            )
        # The test driver's own "test" domain goes to the platform team.
        Domain.objects.filter(host=host, name="test", team__isnull=True).update(
            team=teams["platform"]
        )
        self.stdout.write(f"host {host.name}: {made} demo domains created")

    def seed_qemu_host(self, host: Host, teams: dict[str, Team], guest_dir: str) -> None:
        """One tiny real guest per host, running, its disk in the host's storage pool."""
        made = 0
        for spec in (g for g in QEMU_GUESTS if g.host == host.name):
            if not hypervisor.domain_exists(host.uri, spec.uuid):
                disk = f"/var/lib/libvirt/images/{spec.name}.qcow2"
                if not hypervisor.volume_exists(host.uri, disk):
                    hypervisor.create_volume(host.uri, disk, 64 * 2**20, "qcow2")
                hypervisor.define_xml(
                    host.uri,
                    domxml.build_kernel_boot_guest(
                        domxml.KernelBootGuest(
                            name=spec.name,
                            uuid=spec.uuid,
                            kernel=f"{guest_dir}/vmlinuz",
                            initrd=f"{guest_dir}/initrd.gz",
                            disk=disk,
                            serial_log=f"/var/log/libvirt/{spec.name}-serial.log",
                            memory_mib=spec.memory_mib,
                        )
                    ),
                )
                hypervisor.start(host.uri, spec.uuid)
                made += 1
        inventory.reconcile_host(host)
        for spec in (g for g in QEMU_GUESTS if g.host == host.name):
            Domain.objects.filter(uuid=spec.uuid, team__isnull=True).update(team=teams[spec.team])
        self.stdout.write(f"host {host.name}: {made} QEMU guests created")

    def print_logins(self) -> None:
        self.stdout.write("")
        self.stdout.write(f"Logins (password for all: {PASSWORD}):")
        self.stdout.write("  admin   superuser: everything, every host and domain")
        for username, (team, role) in PEOPLE.items():
            where = f"{role} of {TEAMS[team]}" if team else "no team: sees nothing"
            self.stdout.write(f"  {username:<7} {where}")
