"""Snapshots and clones through HTTP, the real Celery worker and libvirt's test driver.

Each action is posted as the least role allowed (operator to take a snapshot, team admin
to revert, delete and clone); the operation succeeds, libvirt's own view (read through
the tests' connection) shows the change, and so do the inventory and the pages. Each
refusal says why in plain words, is on record, and leaves libvirt as it was.
"""

from __future__ import annotations

import html
import re
import uuid as uuidlib

import libvirt
import pytest
from django.urls import reverse

from domains import domxml, inventory
from domains.models import Domain, Operation, OperationKind, OperationStatus, State
from provisioning.models import Quota
from tests.helpers import client_for, fresh, wait_finished

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


@pytest.fixture(autouse=True)
def _quick_wait(settings):
    settings.VMPANEL_QUICK_WAIT_SECONDS = 15


def _url(name: str, domain: Domain, query: str = "") -> str:
    return reverse(name, args=[domain.host.name, str(domain.uuid)]) + query


def _latest(domain: Domain, kind: str) -> Operation:
    return Operation.objects.filter(domain_uuid=domain.uuid, kind=kind).latest("created_at")


def _done(domain: Domain, kind: str) -> Operation:
    op = wait_finished(_latest(domain, kind), timeout=30)
    assert op.status == OperationStatus.SUCCEEDED, (op.status, op.message, op.error)
    return op


def _names(conn: libvirt.virConnect, domain: Domain) -> list[str]:
    dom = conn.lookupByUUIDString(str(domain.uuid))
    return sorted(s.getName() for s in dom.listAllSnapshots(0))


def _snap(conn, domain: Domain, name: str) -> libvirt.virDomainSnapshot:
    return conn.lookupByUUIDString(str(domain.uuid)).snapshotLookupByName(name, 0)


def _take(client, domain: Domain, name: str, **more):
    return client.post(_url("domain_snapshot_create", domain), {"name": name, **more})


# --- taking one ------------------------------------------------------------------------


def test_a_snapshot_of_a_running_domain_holds_its_memory(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    conn = libvirt_hosts.conn("alpha")
    client = client_for(people.olga_operator)
    response = _take(client, domain, "before upgrade", description="version 4 still")
    assert response.status_code == 303
    op = _done(domain, OperationKind.SNAPSHOT_CREATE)
    assert "before upgrade" in op.message
    snap = domxml.snapshot_facts(_snap(conn, domain, "before upgrade").getXMLDesc(0))
    assert snap["memory"] and snap["state"] == "running"
    assert snap["description"] == "version 4 still"
    assert fresh(domain).snapshot_count == 1

    page = client.get(_url("domain_snapshots", domain)).content.decode()
    assert "before upgrade" in page and "a running VM, with its memory" in page
    assert "version 4 still" in page and "current" in page


def test_a_snapshot_of_a_shut_off_domain_and_a_name_by_default(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    client = client_for(people.olga_operator)
    assert _take(client, domain, "").status_code == 303
    op = _done(domain, OperationKind.SNAPSHOT_CREATE)
    (name,) = _names(libvirt_hosts.conn("alpha"), domain)
    assert re.fullmatch(r"snapshot-\d{4}-\d\d-\d\d-\d{6}", name), name
    assert op.params["name"] == name
    page = client.get(_url("domain_snapshots", domain)).content.decode()
    assert "a shut-off VM (the disks)" in page


def test_the_tree_shows_children_under_their_parent(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    conn = libvirt_hosts.conn("alpha")
    dom = conn.lookupByUUIDString(str(domain.uuid))
    for name in ("base", "left"):
        dom.snapshotCreateXML(domxml.build_snapshot(name), 0)
    dom.revertToSnapshot(dom.snapshotLookupByName("base", 0), 0)
    dom.snapshotCreateXML(domxml.build_snapshot("right"), 0)
    page = client_for(people.victor_viewer).get(_url("domain_snapshots", domain)).content
    page = page.decode()
    assert page.index(">base<") < page.index(">left<") < page.index(">right<")
    assert page.count('class="snapshot-name depth-1"') == 2
    assert "after “base”" in page
    # A viewer sees them, and no button to change them.
    assert "Revert…" not in page and "Take snapshot…" not in page
    operator = client_for(people.olga_operator).get(_url("domain_snapshots", domain))
    assert "Take snapshot…" in operator.content.decode()
    assert "Revert…" not in operator.content.decode()
    admin = client_for(people.alice_admin).get(_url("domain_snapshots", domain)).content
    assert "Revert…" in admin.decode() and "XML of base" in admin.decode()


# --- going back ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "then, state",
    [("", libvirt.VIR_DOMAIN_RUNNING), ("paused", libvirt.VIR_DOMAIN_PAUSED)],
)
def test_revert(then, state, people, make_domain, libvirt_hosts):
    domain = make_domain(state="running", snapshots=1)  # snap0, taken while running
    conn = libvirt_hosts.conn("alpha")
    conn.lookupByUUIDString(str(domain.uuid)).destroy()
    inventory.refresh_domain(domain.host, domain.uuid)
    client = client_for(people.alice_admin)
    page = client.get(_url("domain_snapshot_revert", domain, "?name=snap0")).content.decode()
    assert "This throws away the present state of the VM" in page
    response = client.post(
        _url("domain_snapshot_revert", domain), {"name": "snap0", "then": then, "force": "on"}
    )
    assert response.status_code == 303
    op = _done(domain, OperationKind.SNAPSHOT_REVERT)
    assert op.params == {"name": "snap0", "then": then, "force": True}
    assert conn.lookupByUUIDString(str(domain.uuid)).state()[0] == state
    expected = State.PAUSED if state == libvirt.VIR_DOMAIN_PAUSED else State.RUNNING
    assert fresh(domain).state == expected


@pytest.mark.parametrize(
    "mode, left",
    [
        ("one", ["root", "grandchild"]),
        ("with_children", ["root"]),
        ("children_only", ["root", "child"]),
    ],
)
def test_delete(mode, left, people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    conn = libvirt_hosts.conn("alpha")
    dom = conn.lookupByUUIDString(str(domain.uuid))
    for name in ("root", "child", "grandchild"):
        dom.snapshotCreateXML(domxml.build_snapshot(name), 0)
    inventory.refresh_domain(domain.host, domain.uuid)
    client = client_for(people.alice_admin)
    page = client.get(_url("domain_snapshot_delete", domain, "?name=child")).content.decode()
    assert "only its children" in page
    response = client.post(_url("domain_snapshot_delete", domain), {"name": "child", "mode": mode})
    assert response.status_code == 303
    _done(domain, OperationKind.SNAPSHOT_DELETE)
    assert _names(conn, domain) == sorted(left)
    assert fresh(domain).snapshot_count == len(left)


# --- refusals: plain words, on record, nothing done -----------------------------------


def _refused(response, words: str, domain: Domain, kind: str) -> None:
    assert response.status_code in (400, 409), response.status_code
    assert words in html.unescape(response.content.decode())
    op = _latest(domain, kind)
    assert op.status == OperationStatus.REFUSED and words in op.message


@pytest.mark.parametrize(
    "name, words",
    [
        ("a/b", "cannot contain “/”"),
        ("tab\there", "control characters"),
        ("snap0", "has a snapshot named “snap0” already"),
    ],
)
def test_bad_names_are_refused(name, words, people, make_domain, libvirt_hosts):
    domain = make_domain(state="running", snapshots=1)
    response = _take(client_for(people.olga_operator), domain, name)
    _refused(response, words, domain, OperationKind.SNAPSHOT_CREATE)
    assert _names(libvirt_hosts.conn("alpha"), domain) == ["snap0"]


def test_a_snapshot_over_the_teams_limit_is_refused_with_the_numbers(
    people, make_domain, libvirt_hosts
):
    people.team_a.max_snapshots_per_domain = 2
    people.team_a.save()
    domain = make_domain(state="running", snapshots=2)
    response = _take(client_for(people.olga_operator), domain, "third")
    _refused(response, "has 2 snapshots and Team A allows 2 per VM", domain,
             OperationKind.SNAPSHOT_CREATE)  # fmt: skip
    assert _names(libvirt_hosts.conn("alpha"), domain) == ["snap0", "snap1"]


def test_disk_only_where_the_host_cannot_and_quiesce_without_it(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    response = _take(client, domain, "ext", disk_only="yes")
    _refused(response, "does not take disk-only snapshots", domain, OperationKind.SNAPSHOT_CREATE)
    response = _take(client, domain, "frozen", quiesce="on")
    _refused(response, "Quiescing is for disk-only snapshots", domain,
             OperationKind.SNAPSHOT_CREATE)  # fmt: skip


def test_a_raw_disk_is_refused_before_libvirt_is_asked(people, make_domain, libvirt_hosts):
    conn = libvirt_hosts.conn("alpha")
    uuid = str(uuidlib.uuid4())
    xml = domxml.build_simple_domain(
        domxml.SimpleDomain(name=f"raw-{uuid[:6]}", uuid=uuid, disk="/guest/raw.img",
                            disk_format="raw")
    )  # fmt: skip
    make_domain.track("alpha", uuid)
    conn.defineXML(xml).create()
    inventory.reconcile_host(make_domain.hosts.alpha)
    domain = Domain.objects.get(uuid=uuid)
    domain.team = people.team_a
    domain.save()
    response = _take(client_for(people.olga_operator), domain, "nope")
    _refused(response, "vda are not qcow2", domain, OperationKind.SNAPSHOT_CREATE)
    assert _names(conn, domain) == []


def test_deleting_a_snapshot_someone_just_deleted(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running", snapshots=1)
    client = client_for(people.alice_admin)
    assert client.get(_url("domain_snapshot_delete", domain, "?name=snap0")).status_code == 200
    _snap(libvirt_hosts.conn("alpha"), domain, "snap0").delete(0)  # someone else, meanwhile
    response = client.post(_url("domain_snapshot_delete", domain), {"name": "snap0", "mode": "one"})
    _refused(response, "someone may have deleted it", domain, OperationKind.SNAPSHOT_DELETE)


def test_reverting_a_domain_mid_migration_is_busy(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running", snapshots=1)
    moving = Operation.objects.create(
        kind=OperationKind.MIGRATE, user=people.olga_operator, domain=domain,
        host=domain.host, domain_uuid=domain.uuid, domain_name=domain.name,
        team=domain.team, status=OperationStatus.RUNNING,
    )  # fmt: skip
    response = client_for(people.alice_admin).post(
        _url("domain_snapshot_revert", domain), {"name": "snap0", "then": ""}
    )
    assert response.status_code == 409
    assert f"busy with operation #{moving.pk}" in response.content.decode()
    assert libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).isActive()


def test_roles_revert_and_delete_are_for_team_admins(people, make_domain):
    domain = make_domain(state="running", snapshots=1)
    client = client_for(people.olga_operator)
    response = client.post(_url("domain_snapshot_revert", domain), {"name": "snap0"})
    assert response.status_code == 403
    response = client.post(_url("domain_snapshot_delete", domain), {"name": "snap0", "mode": "one"})
    assert response.status_code == 403


# --- clones ----------------------------------------------------------------------------


def _domain_on_a_volume(people, make_domain, conn, gib: int = 1) -> Domain:
    """A shut-off domain of team A whose qcow2 disk is a volume of the host's pool."""
    uuid = str(uuidlib.uuid4())
    name = f"orig-{uuid[:6]}"
    pool = conn.storagePoolLookupByName("default-pool")
    vol = pool.createXML(
        f"<volume><name>{name}.qcow2</name><capacity unit='G'>{gib}</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    mac = domxml.generate_mac()
    xml = domxml.build_simple_domain(
        domxml.SimpleDomain(name=name, uuid=uuid, disk=vol.path(), mac=mac)
    )
    make_domain.track("alpha", uuid)
    conn.defineXML(xml)
    inventory.reconcile_host(make_domain.hosts.alpha)
    domain = Domain.objects.get(uuid=uuid)
    domain.team = people.team_a
    domain.save()
    domain.mac = mac
    domain.volume = vol.path()
    return domain


def test_clone_copies_the_disks_with_a_new_identity_into_the_team(
    people, make_domain, libvirt_hosts
):
    conn = libvirt_hosts.conn("alpha")
    original = _domain_on_a_volume(people, make_domain, conn)
    client = client_for(people.alice_admin)
    assert "Clone" in client.get(_url("domain_clone", original)).content.decode()
    response = client.post(_url("domain_clone", original), {"name": "copy-1"})
    assert response.status_code == 303
    op = _done(original, OperationKind.CLONE)
    assert op.progress == 100
    clone = Domain.objects.get(name="copy-1", gone_at__isnull=True)
    make_domain.track("alpha", clone.uuid)
    assert clone.uuid != original.uuid and clone.team == people.team_a
    xml = conn.lookupByUUIDString(str(clone.uuid)).XMLDesc(0)
    assert original.mac not in xml
    (disk,) = [d for d in domxml.disks(xml) if d.device == "disk"]
    assert disk.source != original.volume and "copy-1" in disk.source
    copied = conn.storageVolLookupByPath(disk.source)
    assert copied.info()[1] == conn.storageVolLookupByPath(original.volume).info()[1]
    # The original stays as it was.
    assert original.mac in conn.lookupByUUIDString(str(original.uuid)).XMLDesc(0)


def test_clone_refusals(people, make_domain, libvirt_hosts):
    conn = libvirt_hosts.conn("alpha")
    original = _domain_on_a_volume(people, make_domain, conn, gib=3)
    client = client_for(people.alice_admin)
    Quota.objects.create(team=people.team_a, max_disk_gib=2)
    response = client.post(_url("domain_clone", original), {"name": "too-big"})
    _refused(response, "Team A would use 3 of 2 GiB of disk", original, OperationKind.CLONE)
    response = client.post(_url("domain_clone", original), {"name": original.name})
    _refused(response, f"has a VM named {original.name} already", original,
             OperationKind.CLONE)  # fmt: skip
    # A disk that is no storage volume cannot be copied: said before anything is queued.
    loose = make_domain(state="shutoff", devices=True)
    response = client.post(_url("domain_clone", loose), {"name": "loose-copy"})
    _refused(response, "is not in one of the host's storage pools", loose, OperationKind.CLONE)
    running = make_domain(state="running")
    response = client.post(_url("domain_clone", running), {"name": "hot-copy"})
    _refused(response, "only a shut-off VM can be cloned", running, OperationKind.CLONE)
    assert not Domain.objects.filter(name__in=["too-big", "hot-copy"]).exists()


def test_a_superuser_sets_the_teams_snapshot_limit_on_its_quota_page(people):
    client = client_for(people.root)
    page = client.get(reverse("team_quota", args=["team-a"])).content.decode()
    assert "Snapshots per VM" in page
    data = {"max_domains": 5, "max_vcpus": 8, "max_memory_mib": 4096, "max_disk_gib": 50,
            "max_snapshots_per_domain": 3}  # fmt: skip
    assert client.post(reverse("team_quota", args=["team-a"]), data).status_code == 303
    people.team_a.refresh_from_db()
    assert people.team_a.max_snapshots_per_domain == 3
    # Team admins see it, and may not change it.
    admin = client_for(people.alice_admin)
    assert admin.post(reverse("team_quota", args=["team-a"]), data).status_code == 403
