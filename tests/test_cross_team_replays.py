"""Replays across teams: what an outside prober tries once signed in.

The attacker is a member of team B (bob_b, operator; bea_admin_b, admin) who captured or
guessed what team A's people send, and replays it: as it was, or mixed — their OWN VM in
the address with team A's object in the form (a snapshot name, a saved image, an
operation, an edit's number, a disk path, a destination whose disk is team A's), or the
right team's object of the wrong kind or parent. `test_permission_matrix.py` already puts
every URL as it is in front of every role; this file is about the objects inside.

Each refusal must be one a person can read (a 404 or 403 page, a form's error or a 409
with the reason; never a 500), and leave everything as it was: no operation queued, no
change in libvirt, none to team A's rows, and nothing of team A's in the answer (its VMs'
names, UUIDs, XML).
"""

from __future__ import annotations

import uuid as uuidlib
from types import SimpleNamespace

import libvirt
import pytest
from django.urls import reverse

from domains import domxml, inventory
from domains.models import (
    Domain,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    Role,
    SavedImage,
)
from provisioning.models import Method, Notification, RequestState, Template, VMRequest
from tests.helpers import client_for, live

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

IMAGES = "/var/lib/libvirt/images"


# --- the world -------------------------------------------------------------------------


@pytest.fixture
def bea(people):
    """Team B's admin (the shared `people` have only an operator there)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bea_admin_b", "bea@example.org", "password")
    Membership.objects.create(user=user, team=people.team_b, role=Role.ADMIN)
    return user


def define_with_disk(make_domain, libvirt_hosts, host: str, team: str, disk: str, **kw) -> Domain:
    """A persistent domain whose disk is `disk` (a path of our choosing), of `team`."""
    uuid = str(uuidlib.uuid4())
    name = kw.pop("name", f"vm-{uuid[:8]}")
    conn = libvirt_hosts.conn(host)
    xml = domxml.build_simple_domain(
        domxml.SimpleDomain(name=name, uuid=uuid, disk=disk, mac=domxml.generate_mac())
    )
    if kw.pop("shareable", False):
        xml = xml.replace("</disk>", "<shareable/></disk>", 1)
    make_domain.track(host, uuid)
    dom = conn.defineXML(xml)
    if kw.pop("running", False):
        dom.create()
    host_row = getattr(make_domain.hosts, host)
    inventory.reconcile_host(host_row)
    row = Domain.objects.get(host=host_row, uuid=uuid)
    row.team = {"a": make_domain.people.team_a, "b": make_domain.people.team_b}[team]
    row.save(update_fields=["team"])
    return row


@pytest.fixture
def world(people, hosts, make_domain, libvirt_hosts, bea):
    """Team A's VM (with a snapshot, a saved image, a queued and a failed operation) and
    team B's own VMs, on the same host."""
    a_vm = make_domain(team="a", state="shutoff", snapshots=1)
    b_vm = make_domain(team="b", state="shutoff")
    a_queued = Operation.objects.create(
        kind=OperationKind.START, user=people.olga_operator, domain=a_vm, host=a_vm.host,
        domain_uuid=a_vm.uuid, domain_name=a_vm.name, team=people.team_a,
        status=OperationStatus.QUEUED, task_id=str(uuidlib.uuid4()),
    )  # fmt: skip
    a_refused_edit = Operation.objects.create(
        kind=OperationKind.EDIT_XML, user=people.alice_admin, domain=a_vm, host=a_vm.host,
        domain_uuid=a_vm.uuid, domain_name=a_vm.name, team=people.team_a,
        status=OperationStatus.FAILED, error="unsupported configuration",
        xml_after=f"<domain type='test'><name>{a_vm.name}</name>"
        "<description>team A's secret text</description></domain>",
    )  # fmt: skip
    a_image = SavedImage.objects.create(
        host=a_vm.host, path="/tmp/vmpanel-replay-save/a.save", domain=a_vm,
        domain_uuid=a_vm.uuid, domain_name=a_vm.name, team=people.team_a,
    )  # fmt: skip
    return SimpleNamespace(
        people=people, hosts=hosts, bea=bea, a_vm=a_vm, b_vm=b_vm, a_queued=a_queued,
        a_refused_edit=a_refused_edit, a_image=a_image, conn=libvirt_hosts.conn("alpha"),
        libvirt_hosts=libvirt_hosts, make_domain=make_domain,
    )  # fmt: skip


def state_of(w) -> dict:
    """All a replay must leave as it was: libvirt's view of every VM of the test, the
    operations, the requests, the memberships, the images, the notifications."""
    vms = Domain.objects.filter(gone_at__isnull=True).exclude(name="test")
    return {
        "libvirt": {
            str(d.uuid): (live(w.libvirt_hosts.conn(d.host.name), d.uuid), d.host.name) for d in vms
        },
        "domains": set(Domain.objects.values_list("pk", "team_id", "name", "host_id")),
        "ops": set(Operation.objects.values_list("pk", "status", "cancel_requested")),
        "requests": set(VMRequest.objects.values_list("pk", "state", "host_id", "decided_by")),
        "memberships": set(Membership.objects.values_list("user_id", "team_id", "role")),
        "images": set(SavedImage.objects.values_list("pk", "domain_id", "team_id")),
        "notifications": set(Notification.objects.values_list("pk", "read_at")),
    }


def assert_unchanged(w, before: dict, refused_on=None) -> None:
    """Nothing changed; at most one refused operation on record, on `refused_on` (the
    attacker's own VM, DESIGN rule 3)."""
    after = state_of(w)
    new = Operation.objects.exclude(pk__in=[pk for pk, *_rest in before["ops"]])
    if refused_on is not None and new.exists():
        op = new.get()
        assert op.status == OperationStatus.REFUSED and not op.task_id, op.message
        assert op.domain_id in (None, getattr(refused_on, "pk", None))
        after["ops"].discard((op.pk, op.status, op.cancel_requested))
    else:
        assert not new.exists(), list(new.values("kind", "status", "message"))
    assert after == before


def assert_says_nothing_of_a(w, response, sent: str = "") -> None:
    """Nothing of team A's in the answer, but what the replay sent itself (`sent`: its
    address, which a page's language switch echoes as where to come back to)."""
    text = response.content.decode()
    if sent:
        text = text.replace(sent, "")
    for secret in (w.a_vm.name, str(w.a_vm.uuid), "team A's secret text"):
        assert secret not in text, secret


def readable(response, *statuses: int) -> str:
    """The answer is one of `statuses` and says something (never a bare 500)."""
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    return response.content.decode()


# --- the attacker's own VM in the address, team A's object in the form -----------------


@pytest.mark.parametrize("view", ["domain_snapshot_revert", "domain_snapshot_delete"])
def test_a_snapshot_of_team_a_named_on_an_own_vm(view, world):
    """Team A's VM has snap0; team B's admin names it on team B's VM: refused as a
    snapshot this VM does not have, and team A's snapshot stays."""
    w = world
    url = reverse(view, args=[w.b_vm.host.name, str(w.b_vm.uuid)])
    client = client_for(w.bea)
    before = state_of(w)

    page = client.get(url, {"name": "snap0"})
    readable(page, 404)
    response = client.post(url, {"name": "snap0", "then": "", "mode": "one"})

    text = readable(response, 409)
    assert "has no snapshot named “snap0”" in text
    assert_unchanged(w, before, refused_on=w.b_vm)
    assert live(w.conn, w.a_vm.uuid).snapshots == 1
    assert_says_nothing_of_a(w, response)


def test_edit_again_with_an_operation_of_team_a(world):
    """ "Edit again" (?again=N) with team A's refused edit on team B's VM: the editor
    shows team B's VM's own configuration, never team A's text."""
    w = world
    url = reverse("domain_xml_edit", args=[w.b_vm.host.name, str(w.b_vm.uuid)])

    response = client_for(w.bea).get(url, {"again": w.a_refused_edit.pk})

    text = readable(response, 200)
    assert w.b_vm.name in text and "libvirt refused this text" not in text
    assert_says_nothing_of_a(w, response)


@pytest.mark.parametrize("who", ["bob_b", "bea"])
@pytest.mark.parametrize("view", ["image_restore", "image_forget"])
def test_a_saved_image_of_team_a(view, who, world):
    w = world
    user = w.bea if who == "bea" else w.people.bob_b
    url = reverse(view, args=["alpha", w.a_image.pk])
    before = state_of(w)

    response = client_for(user).post(url, {"confirm": "yes"})

    readable(response, 404)
    assert_unchanged(w, before)
    assert_says_nothing_of_a(w, response)


def test_a_saved_image_through_another_hosts_address(world):
    """The image's own team, but the address names a host the image is not on."""
    w = world
    before = state_of(w)
    for view in ("image_restore", "image_forget"):
        response = client_for(w.people.alice_admin).post(
            reverse(view, args=["beta", w.a_image.pk]), {"confirm": "yes"}
        )
        readable(response, 404)
    assert_unchanged(w, before)


@pytest.mark.parametrize("who", ["bob_b", "bea"])
def test_cancelling_an_operation_of_team_a(who, world):
    w = world
    user = w.bea if who == "bea" else w.people.bob_b
    before = state_of(w)

    response = client_for(user).post(reverse("operation_cancel", args=[w.a_queued.pk]))

    readable(response, 404)
    assert_unchanged(w, before)
    assert Operation.objects.get(pk=w.a_queued.pk).status == OperationStatus.QUEUED
    for view in ("operation_detail", "provision_detail"):
        page = client_for(user).get(reverse(view, args=[w.a_queued.pk]))
        readable(page, 404)
        assert_says_nothing_of_a(w, page)


def test_ticking_team_a_vms_among_ones_own(world, settings):
    """A bulk start with team A's VM ticked beside team B's: only team B's is started, and
    team A's is named in no message."""
    w = world
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    picks = [f"alpha/{w.a_vm.uuid}", f"alpha/{w.b_vm.uuid}"]
    before = state_of(w)

    response = client_for(w.people.bob_b).post(
        reverse("domain_bulk"), {"action": "start", "pick": picks}, follow=True
    )

    text = readable(response, 200)
    new = Operation.objects.exclude(pk__in=[pk for pk, *_r in before["ops"]])
    assert [(op.domain, op.kind) for op in new] == [(w.b_vm, OperationKind.START)]
    assert f"alpha/{w.a_vm.uuid}: no such VM." in text
    assert w.a_vm.name not in text
    assert live(w.conn, w.a_vm.uuid) == before["libvirt"][str(w.a_vm.uuid)][0]


@pytest.mark.parametrize("who", ["bob_b", "bea"])
@pytest.mark.parametrize(
    "view,method",
    [
        ("console_ticket", "post"),
        ("domain_console", "get"),
        ("domain_screenshot", "get"),
        ("domain_usage", "get"),
        ("domain_snapshots", "get"),
        ("domain_xml_edit", "get"),
        ("domain_clone", "post"),
        ("domain_assign", "post"),
    ],
)
def test_team_a_vm_by_its_address(view, method, who, world):
    """Team A's VM's own addresses, replayed by team B: a 404 that names nothing."""
    w = world
    user = w.bea if who == "bea" else w.people.bob_b
    url = reverse(view, args=["alpha", str(w.a_vm.uuid)])
    before = state_of(w)

    response = getattr(client_for(user), method)(url, {"name": "stolen", "team": "team-b"})

    readable(response, 404)
    assert_unchanged(w, before)
    assert_says_nothing_of_a(w, response, sent=url)


def test_assigning_an_own_vm_to_team_a(world):
    """Only superusers give VMs to teams: team B's admin cannot push (or pull) one."""
    w = world
    before = state_of(w)

    response = client_for(w.bea).post(
        reverse("domain_assign", args=["alpha", str(w.b_vm.uuid)]), {"team": "team-a"}
    )

    readable(response, 403)
    assert_unchanged(w, before)


def test_a_clone_named_as_team_a_vm(world):
    """A clone of team B's VM named as team A's VM on the same host: refused before
    libvirt is asked; team A's VM is as it was."""
    w = world
    before = state_of(w)

    response = client_for(w.bea).post(
        reverse("domain_clone", args=["alpha", str(w.b_vm.uuid)]), {"name": w.a_vm.name}
    )

    readable(response, 409)
    assert_unchanged(w, before, refused_on=w.b_vm)


# --- team A's files named in team B's own VM ------------------------------------------


def _with_disk(xml: str, path: str, readonly: bool = False) -> str:
    extra = "<readonly/>" if readonly else ""
    disk = (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{path}'/><target dev='vdb' bus='virtio'/>{extra}</disk>"
    )
    return xml.replace("</devices>", f"{disk}</devices>", 1)


@pytest.fixture
def disk_world(world):
    """Team A's VM whose disk lies in the images folder that team admins may use."""
    w = world
    w.a_disk = f"{IMAGES}/a-private-{uuidlib.uuid4().hex[:6]}.qcow2"
    w.a_vm = define_with_disk(w.make_domain, w.libvirt_hosts, "alpha", "a", w.a_disk)
    return w


def _saved_xml(w, domain) -> str:
    return (
        w.libvirt_hosts.conn(domain.host.name)
        .lookupByUUIDString(str(domain.uuid))
        .XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    )


@pytest.mark.parametrize("readonly", [False, True], ids=["as-is", "read-only"])
def test_an_xml_edit_cannot_take_the_disk_of_team_a_vm(readonly, disk_world):
    """Team B's admin adds team A's VM's disk to team B's VM (a path inside the folders
    team admins may use): neither the preview nor the save lets it through, since team B
    would read (and write) team A's data."""
    w = disk_world
    url = reverse("domain_xml_edit", args=["alpha", str(w.b_vm.uuid)])
    xml = _with_disk(_saved_xml(w, w.b_vm), w.a_disk, readonly)
    client = client_for(w.bea)
    before = state_of(w)

    preview = client.post(url, {"xml": xml, "preview": "1"})
    text = readable(preview, 200)
    assert "in use by another VM on this host" in text
    response = client.post(url, {"xml": xml, "save": "1"})

    text = readable(response, 409)
    assert "in use by another VM on this host" in text
    assert_unchanged(w, before, refused_on=w.b_vm)
    assert w.a_disk not in _saved_xml(w, w.b_vm)
    assert_says_nothing_of_a(w, response, sent=w.a_disk)


def test_an_xml_edit_cannot_take_a_memory_image_of_team_a(disk_world):
    """A save folder inside a folder team admins may use: team A's VM's saved memory
    image, added as a disk of team B's VM, would hand team B team A's memory."""
    w = disk_world
    path = f"{IMAGES}/saves/a-memory.save"
    SavedImage.objects.create(
        host=w.a_vm.host, path=path, domain=w.a_vm, domain_uuid=w.a_vm.uuid,
        domain_name=w.a_vm.name, team=w.people.team_a,
    )  # fmt: skip
    url = reverse("domain_xml_edit", args=["alpha", str(w.b_vm.uuid)])
    xml = _with_disk(_saved_xml(w, w.b_vm), path, readonly=True)
    before = state_of(w)

    response = client_for(w.bea).post(url, {"xml": xml, "save": "1"})

    assert "in use by another VM on this host" in readable(response, 409)
    assert_unchanged(w, before, refused_on=w.b_vm)


def test_an_xml_edit_cannot_move_a_file_of_team_a_into_a_disk(disk_world, libvirt_hosts):
    """Team B's VM writes its serial log where team A's VM keeps its own (both named so):
    kept as it is, that log is allowed; the same file added as a disk, to read it, is not."""
    w = disk_world
    log = f"/var/log/libvirt/{w.a_vm.name}-serial.log"
    serial = f"<serial type='file'><source path='{log}'/><target port='0'/></serial></devices>"
    for vm in (w.a_vm, w.b_vm):
        w.conn.defineXML(_saved_xml(w, vm).replace("</devices>", serial, 1))
    url = reverse("domain_xml_edit", args=["alpha", str(w.b_vm.uuid)])
    xml = _with_disk(_saved_xml(w, w.b_vm), log, readonly=True)
    before = state_of(w)

    response = client_for(w.bea).post(url, {"xml": xml, "save": "1"})

    assert "in use by another VM on this host" in readable(response, 409)
    assert_unchanged(w, before, refused_on=w.b_vm)
    unchanged = _saved_xml(w, w.b_vm).replace("</uuid>", "</uuid><description>ok</description>")
    response = client_for(w.bea).post(url, {"xml": unchanged, "save": "1"})
    assert response.status_code == 303, response.content.decode()[:3000]


def test_an_xml_edit_may_still_share_what_team_a_only_reads(disk_world):
    """An installer's ISO that team A's VM has as a CD-ROM is no secret of team A's:
    team B's admin may add it too."""
    w = disk_world
    iso = f"{IMAGES}/shared-installer.iso"
    conn = w.conn
    a_xml = _saved_xml(w, w.a_vm).replace(
        "</devices>",
        f"<disk type='file' device='cdrom'><source file='{iso}'/>"
        "<target dev='sda' bus='sata'/><readonly/></disk></devices>",
        1,
    )
    conn.defineXML(a_xml)
    b_xml = _saved_xml(w, w.b_vm).replace(
        "</devices>",
        f"<disk type='file' device='cdrom'><source file='{iso}'/>"
        "<target dev='sda' bus='sata'/><readonly/></disk></devices>",
        1,
    )
    url = reverse("domain_xml_edit", args=["alpha", str(w.b_vm.uuid)])

    response = client_for(w.bea).post(url, {"xml": b_xml, "save": "1"})

    assert response.status_code == 303, response.content.decode()[:2000]
    op = Operation.objects.get(domain=w.b_vm, kind=OperationKind.EDIT_XML)
    assert op.status == OperationStatus.QUEUED


def test_a_superusers_edit_past_it_is_on_record(disk_world):
    """A superuser may (as with the rest of the host policy); what was waived is kept."""
    w = disk_world
    url = reverse("domain_xml_edit", args=["alpha", str(w.b_vm.uuid)])
    xml = _with_disk(_saved_xml(w, w.b_vm), w.a_disk)

    response = client_for(w.people.root).post(url, {"xml": xml, "save": "1"})

    assert response.status_code == 303
    op = Operation.objects.get(domain=w.b_vm, kind=OperationKind.EDIT_XML)
    assert op.status == OperationStatus.QUEUED
    assert any("in use by another VM" in p for p in op.params["policy_waived"])


def test_what_a_vm_keeps_to_itself():
    """Its disks, logs, firmware variables and sockets; not what it only reads (a CD-ROM,
    a read-only disk, a backing image, its kernel and firmware), nor a pty the host hands
    it; its shareable disks unless asked to leave them out."""
    xml = """<domain type='test'><name>k</name><uuid>4e1c5c3e-1111-4222-8333-944455556666</uuid>
      <memory>1024</memory><os><type>hvm</type><kernel>/boot/vmlinuz</kernel>
      <initrd>/boot/initrd</initrd><loader readonly='yes'>/usr/share/OVMF/CODE.fd</loader>
      <nvram>/var/lib/libvirt/qemu/nvram/k_VARS.fd</nvram></os><devices>
      <disk type='file' device='disk'><source file='/img/k.qcow2'/><target dev='vda'/>
        <backingStore type='file'><source file='/img/base.qcow2'/></backingStore></disk>
      <disk type='file' device='cdrom'><source file='/img/setup.iso'/><target dev='sda'/></disk>
      <disk type='file' device='disk'><source file='/img/ro.raw'/><target dev='vdb'/>
        <readonly/></disk>
      <disk type='file' device='disk'><source file='/img/cluster.raw'/><target dev='vdc'/>
        <shareable/></disk>
      <serial type='pty'><source path='/dev/pts/3'/><target port='0'/></serial>
      <console type='file'><source path='/var/log/libvirt/k.log'/><target type='serial'/></console>
      <channel type='unix'><source mode='bind' path='/run/k/agent.sock'/>
        <target type='virtio'/></channel>
      </devices></domain>"""
    assert domxml.private_paths(xml) == {
        "/var/lib/libvirt/qemu/nvram/k_VARS.fd", "/img/k.qcow2", "/img/cluster.raw",
        "/var/log/libvirt/k.log", "/run/k/agent.sock",
    }  # fmt: skip
    assert "/img/cluster.raw" not in domxml.private_paths(xml, shareable=False)


def test_a_migration_onto_the_disk_of_team_a_vm(world, libvirt_hosts):
    """Team B's VM on alpha and team A's VM on beta have a disk at the same path; beta
    has that volume (team A's). Moving team B's VM there would run it on team A's disk
    (or, copying storage, write over it): refused, and nothing is queued."""
    w = world
    beta = libvirt_hosts.conn("beta")
    pool = beta.storagePoolLookupByName("default-pool")
    name = f"clash-{uuidlib.uuid4().hex[:6]}.qcow2"
    vol = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='M'>16</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    try:
        path = vol.path()
        w.a_vm = define_with_disk(w.make_domain, libvirt_hosts, "beta", "a", path)
        b_vm = define_with_disk(w.make_domain, libvirt_hosts, "alpha", "b", path, running=True)
        before = state_of(w)
        url = reverse("domain_migrate", args=["alpha", str(b_vm.uuid)])
        for data in (
            {"destination": "beta", "how": "live"},
            {"destination": "beta", "how": "live", "copy_disks": "on"},
        ):
            response = client_for(w.people.bob_b).post(url, data)
            text = readable(response, 409)
            assert "in use by another VM on the destination" in text
            assert_says_nothing_of_a(w, response)
            assert_unchanged(w, before, refused_on=b_vm)
            before = state_of(w)
    finally:
        vol.delete(0)


# --- provisioning: requests, creation, quotas ------------------------------------------


@pytest.fixture
def requests_world(world):
    """A PXE template on alpha only, team A's request waiting, and its provisioning."""
    w = world
    w.template = Template.objects.create(
        name="replay-tpl", method=Method.PXE, domain_type="test", max_vcpus=4,
        min_memory_mib=128,
    )  # fmt: skip
    w.template.hosts.set([w.hosts.alpha])
    w.a_request = VMRequest.objects.create(
        team=w.people.team_a, requester=w.people.victor_viewer, template=w.template,
        name="a-asked", vcpus=1, memory_mib=256, purpose="team A's reasons",
    )  # fmt: skip
    w.a_provision = Operation.objects.create(
        kind=OperationKind.PROVISION, user=w.people.alice_admin, host=w.hosts.alpha,
        domain_name=w.a_vm.name, domain_uuid=w.a_vm.uuid, team=w.people.team_a,
        params={"phase": ""}, status=OperationStatus.RUNNING,
    )  # fmt: skip
    return w


@pytest.mark.parametrize("view", ["request_approve", "request_reject", "request_detail"])
def test_team_b_admin_and_team_a_request(view, requests_world):
    """Team B's admin decides (or reads) team A's request: a 404, whatever the form."""
    w = requests_world
    url = reverse(view, args=[w.a_request.pk])
    data = {"host": w.hosts.alpha.pk, "reason": "mine now"}
    client = client_for(w.bea)
    before = state_of(w)

    response = client.get(url) if view == "request_detail" else client.post(url, data)

    text = readable(response, 404)
    assert "a-asked" not in text and "team A's reasons" not in text
    assert_unchanged(w, before)


def test_approving_onto_a_host_the_template_does_not_target(requests_world):
    """Team A's admin, team A's request, but a host of the template's choosing? No: beta
    is not among its hosts. The form says so; nothing is decided or queued."""
    w = requests_world
    before = state_of(w)

    response = client_for(w.people.alice_admin).post(
        reverse("request_approve", args=[w.a_request.pk]), {"host": w.hosts.beta.pk}
    )

    readable(response, 400)
    assert_unchanged(w, before)
    assert VMRequest.objects.get(pk=w.a_request.pk).state == RequestState.SUBMITTED


@pytest.mark.parametrize(
    "change,field",
    [({"team": "team_a"}, "team"), ({"host": "beta"}, "host")],
    ids=["team-a", "host-not-targeted"],
)
def test_creating_for_team_a_or_on_another_host(change, field, requests_world):
    """Team B's admin creates from a template, naming team A as the owner (or a host the
    template does not target): the form's error, and nothing queued."""
    w = requests_world
    data = {
        "team": w.people.team_b.pk, "host": w.hosts.alpha.pk, "name": "b-made", "vcpus": 1,
        "memory_mib": 256, "persistent": "on", "confirm": "1",
    }  # fmt: skip
    if "team" in change:
        data["team"] = w.people.team_a.pk
    if "host" in change:
        data["host"] = w.hosts.beta.pk
    before = state_of(w)

    response = client_for(w.bea).post(reverse("template_create", args=[w.template.pk]), data)

    readable(response, 200)
    assert response.context["form"].errors.get(field), response.context["form"].errors
    assert_unchanged(w, before)


def test_a_request_named_as_team_a_request_does_not_say_its_number(requests_world):
    """Team B asks for a VM named as team A's waiting request: refused (the name would
    clash), but team A's request number is not team B's to learn."""
    w = requests_world
    data = {
        "team": w.people.team_b.pk, "template": w.template.pk, "name": "a-asked",
        "vcpus": 1, "memory_mib": 256, "purpose": "probe",
    }  # fmt: skip
    before = state_of(w)

    response = client_for(w.people.bob_b).post(reverse("request_new"), data)

    text = readable(response, 409)
    assert "asks for a VM named a-asked already" in text
    assert f"#{w.a_request.pk}" not in text
    assert_unchanged(w, before)
    # Team A's own people still learn which request it is.
    mine = client_for(w.people.olga_operator).post(
        reverse("request_new"), {**data, "team": w.people.team_a.pk}
    )
    assert f"Request #{w.a_request.pk} asks for a VM named a-asked" in readable(mine, 409)


def test_a_new_vm_named_onto_team_a_vm_disk(requests_world):
    """Team A's VM (renamed since) still has its disk where a VM named "web-x" gets its
    own: team B's admin creating "web-x" would be given team A's disk. Refused before
    anything is queued; team A's VM is as it was."""
    w = requests_world
    name = f"web-{uuidlib.uuid4().hex[:6]}"
    w.a_vm = define_with_disk(
        w.make_domain, w.libvirt_hosts, "alpha", "a", f"{IMAGES}/{name}.qcow2"
    )
    data = {
        "team": w.people.team_b.pk, "host": w.hosts.alpha.pk, "name": name, "vcpus": 1,
        "memory_mib": 256, "persistent": "on", "confirm": "1",
    }  # fmt: skip
    before = state_of(w)

    response = client_for(w.bea).post(reverse("template_create", args=[w.template.pk]), data)

    text = readable(response, 409)
    assert f"{IMAGES}/{name}.qcow2" in text and "choose another name" in text
    assert_unchanged(w, before, refused_on=w.b_vm)
    assert_says_nothing_of_a(w, response)


def test_a_new_vm_named_onto_a_volume_left_behind(requests_world, libvirt_hosts):
    """A volume left in the images folder (a deleted VM's disk, team A's data) where the
    new VM's own disk goes: the new VM would boot on it. Refused, for a team admin's
    creation and a request's approval alike."""
    w = requests_world
    conn = libvirt_hosts.conn("alpha")
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>replay-images</name><target><path>{IMAGES}</path></target></pool>",
        0,
    )
    try:
        name = f"left-{uuidlib.uuid4().hex[:6]}"
        pool.createXML(
            f"<volume><name>{name}.qcow2</name><capacity unit='M'>16</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        data = {
            "team": w.people.team_b.pk, "host": w.hosts.alpha.pk, "name": name,
            "vcpus": 1, "memory_mib": 256, "persistent": "on", "confirm": "1",
        }  # fmt: skip
        before = state_of(w)
        response = client_for(w.bea).post(reverse("template_create", args=[w.template.pk]), data)
        assert "choose another name" in readable(response, 409)
        assert_unchanged(w, before, refused_on=w.b_vm)

        w.a_request.name = name
        w.a_request.save(update_fields=["name"])
        before = state_of(w)
        response = client_for(w.people.alice_admin).post(
            reverse("request_approve", args=[w.a_request.pk]), {"host": w.hosts.alpha.pk}
        )
        readable(response, 303)
        assert VMRequest.objects.get(pk=w.a_request.pk).state == RequestState.SUBMITTED
        assert_unchanged(w, before, refused_on=w.b_vm)
    finally:
        for vol in pool.listAllVolumes():
            vol.delete(0)
        pool.destroy()


def test_team_b_admin_and_team_a_provisioning(requests_world):
    w = requests_world
    for view in ("provision_detail", "operation_detail"):
        response = client_for(w.bea).get(reverse(view, args=[w.a_provision.pk]))
        readable(response, 404)
        assert_says_nothing_of_a(w, response)
    before = state_of(w)
    response = client_for(w.bea).post(reverse("operation_cancel", args=[w.a_provision.pk]))
    readable(response, 404)
    assert_unchanged(w, before)


@pytest.mark.parametrize(("team", "status"), [("team-a", 404), ("team-b", 403)])
def test_a_team_admin_and_the_quota(team, status, requests_world):
    """Quotas are the superusers': a team admin's post is refused, their own team's or
    team A's (which they do not even see)."""
    w = requests_world
    data = {"max_domains": 99, "max_vcpus": 99, "max_memory_mib": 99999, "max_disk_gib": 999}
    before = state_of(w)

    response = client_for(w.bea).post(reverse("team_quota", args=[team]), data)

    readable(response, status)
    assert_unchanged(w, before)
    assert not w.people.team_a.__class__.objects.filter(quota__max_vcpus=99).exists()


# --- teams, notifications, lists ----------------------------------------------------------


@pytest.mark.parametrize(
    "view,args,data",
    [
        ("team_member_set", ["team-a"], {"username": "bea_admin_b", "role": "admin"}),
        ("team_member_set", ["team-a"], {"username": "victor_viewer", "role": "admin"}),
        ("team_member_remove", ["team-a", "victor_viewer"], {}),
        ("team_member_remove", ["team-a", "alice_admin"], {}),
    ],
)
def test_team_b_admin_and_team_a_members(view, args, data, world):
    """Team B's admin adds themselves to team A, promotes or removes team A's people: a
    404 (team A is not theirs to see), and its members are as they were."""
    w = world
    args = [getattr(w.people, a).pk if a in ("victor_viewer", "alice_admin") else a for a in args]
    before = state_of(w)

    response = client_for(w.bea).post(reverse(view, args=args), data)

    text = readable(response, 404)
    assert "victor_viewer" not in text and "alice_admin" not in text
    assert_unchanged(w, before)


@pytest.mark.parametrize("who", ["bob_b", "bea", "root"])
def test_removing_from_team_a_someone_who_is_not_in_it(who, world):
    """Team A's admin "removes" a member of team B (or a superuser) from team A: nobody of
    that number is in team A, so there is nobody to remove, and their name is not said."""
    w = world
    member = w.bea if who == "bea" else getattr(w.people, who)
    before = state_of(w)

    response = client_for(w.people.alice_admin).post(
        reverse("team_member_remove", args=["team-a", member.pk]), follow=True
    )

    text = readable(response, 404)
    assert member.username not in text
    assert_unchanged(w, before)
    assert not w.people.team_a.memberships.filter(user=member).exists()


def test_marking_read_marks_only_ones_own(world):
    w = world
    mine = Notification.objects.create(user=w.people.bob_b, text="for bob")
    theirs = Notification.objects.create(user=w.people.alice_admin, text="team A's news")

    client_for(w.people.bob_b).post(reverse("notification_read"))
    page = client_for(w.people.bob_b).get(reverse("notification_list"))

    assert Notification.objects.get(pk=mine.pk).read_at is not None
    assert Notification.objects.get(pk=theirs.pk).read_at is None
    assert "team A's news" not in page.content.decode()


@pytest.mark.parametrize("view", ["domain_list", "activity", "request_list"])
def test_filtering_by_team_a(view, requests_world):
    """Lists filtered by team A's slug, VM or people: no row of team A's comes back (the
    page repeats the filter as asked, so its rows are what is looked at; a team that is
    not theirs is no filter, and team B's own rows may show)."""
    w = requests_world
    client = client_for(w.bea)
    rows = {
        "domain_list": lambda c: list(c["page"].paginator.object_list),
        "activity": lambda c: list(c["ops_page"].paginator.object_list),
        "request_list": lambda c: [*c["mine"], *c["to_decide"]],
    }[view]
    for query in (
        {"team": "team-a"},
        {"team": "team-a", "q": w.a_vm.name, "gone": "on"},
        {"domain": w.a_vm.name},
        {"domain": str(w.a_vm.uuid)},
        {"user": "olga_operator"},
    ):
        response = client.get(reverse(view), query)
        readable(response, 200)
        for row in rows(response.context):
            assert not {w.a_vm.name, str(w.a_vm.uuid), "Team A", "a-asked"} & {
                str(v) for v in (row.values() if isinstance(row, dict) else vars(row).values())
            }, (query, row)


def test_a_migration_beside_a_peer_that_shares_its_disk_on_purpose(world, libvirt_hosts):
    """A disk both VMs mark shareable (a cluster's, on shared storage) is no clash: team B
    moves one peer to the other's host."""
    w = world
    beta = libvirt_hosts.conn("beta")
    pool = beta.storagePoolLookupByName("default-pool")
    name = f"cluster-{uuidlib.uuid4().hex[:6]}.raw"
    vol = pool.createXML(f"<volume><name>{name}</name><capacity unit='M'>16</capacity></volume>", 0)
    try:
        path = vol.path()
        define_with_disk(w.make_domain, libvirt_hosts, "beta", "b", path, shareable=True)
        b_vm = define_with_disk(
            w.make_domain, libvirt_hosts, "alpha", "b", path, running=True, shareable=True
        )
        response = client_for(w.people.bob_b).post(
            reverse("domain_migrate", args=["alpha", str(b_vm.uuid)]),
            {"destination": "beta", "how": "live"},
        )
        assert response.status_code == 303, response.content.decode()[:3000]
        op = Operation.objects.get(domain=b_vm, kind=OperationKind.MIGRATE)
        assert op.status == OperationStatus.QUEUED
    finally:
        vol.delete(0)
