"""The libvirt layer of snapshots and clones (`hypervisor` and `domxml`), against the
private test-driver hosts. What each call did is read back through the tests' own
connection, never the application's.

The test driver takes internal snapshots (with the memory of a running or paused guest),
reverts and deletes them, and copies volumes in its pool "default-pool" (/default-pool,
in memory); it refuses disk-only snapshots and has no guest agent.
"""

from __future__ import annotations

import time
import uuid as uuidlib

import libvirt
import pytest

from domains import domxml, hypervisor
from domains.hypervisor import HypervisorError, SnapshotFacts
from tests.helpers import live

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

POOL = "default-pool"
MIB = 2**20


@pytest.fixture
def uri(hosts) -> str:
    return hosts.alpha.uri


@pytest.fixture
def conn(libvirt_hosts) -> libvirt.virConnect:
    return libvirt_hosts.conn("alpha")


@pytest.fixture
def pool(conn):
    """The test host's storage pool; every volume a test leaves in it is removed after."""
    pool = conn.storagePoolLookupByName(POOL)
    before = set(pool.listVolumes())
    yield pool
    for name in set(pool.listVolumes()) - before:
        pool.storageVolLookupByName(name).delete(0)


def define(conn, make_domain, xml: str, state: str = "shutoff") -> str:
    """Define `xml` through the tests' connection (removed after the test); its UUID."""
    dom = conn.defineXML(xml)
    make_domain.track("alpha", dom.UUIDString())
    if state != "shutoff":
        dom.create()
    if state == "paused":
        dom.suspend()
    return dom.UUIDString()


def domain_xml(name: str, disks: str = "", extra_devices: str = "", os_extra: str = "") -> str:
    return f"""<domain type='test'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>256</memory>
  <os><type arch='i686'>hvm</type>{os_extra}</os>
  <devices>{disks}{extra_devices}</devices>
</domain>"""


def file_disk(path: str, target: str = "vda", fmt: str | None = "qcow2", extra: str = "") -> str:
    driver = f"<driver name='qemu' type='{fmt}'/>" if fmt else ""
    return f"""<disk type='file' device='disk'>{driver}<source file='{path}'/>
  <target dev='{target}' bus='virtio'/>{extra}</disk>"""


def make_volume(pool, name: str, capacity: int = 8 * MIB, fmt: str = "qcow2") -> str:
    return pool.createXML(domxml.build_volume(name, capacity, fmt), 0).path()


def snapshot_names(conn, uuid: str) -> set[str]:
    return {s.getName() for s in conn.lookupByUUIDString(uuid).listAllSnapshots(0)}


def snapshot_xml(conn, uuid: str, name: str) -> str:
    return conn.lookupByUUIDString(uuid).snapshotLookupByName(name, 0).getXMLDesc(0)


def redefine_tree(conn, uuid: str, tree: list[tuple[str, str, int]]) -> None:
    """Snapshots (name, parent, creation time) as metadata only (REDEFINE), so that their
    creation times are what the test says, not the clock's second."""
    dom = conn.lookupByUUIDString(uuid)
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for name, parent, created in tree:
        parent_el = f"<parent><name>{parent}</name></parent>" if parent else ""
        dom.snapshotCreateXML(
            f"<domainsnapshot><name>{name}</name>{parent_el}<state>shutoff</state>"
            f"<creationTime>{created}</creationTime><memory snapshot='no'/>{inactive}"
            "</domainsnapshot>",
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE,
        )


# --- create -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, memory",
    [("running", True), ("paused", True), ("shutoff", False)],
)
def test_create_holds_the_memory_of_an_active_guest(uri, conn, make_domain, state, memory):
    uuid = make_domain.define(state=state)
    before = int(time.time())

    hypervisor.create_snapshot(uri, uuid, "s1", "before the upgrade")

    assert snapshot_names(conn, uuid) == {"s1"}
    facts = domxml.snapshot_facts(snapshot_xml(conn, uuid, "s1"))
    assert facts["state"] == state
    assert facts["memory"] is memory
    (listed,) = hypervisor.list_snapshots(uri, uuid)
    assert listed.name == "s1"
    assert listed.description == "before the upgrade"
    assert listed.state == state
    assert listed.memory is memory
    assert listed.disk_only is False
    assert listed.parent == ""
    assert listed.current is True
    assert before <= listed.created_at <= int(time.time())
    assert listed.xml == snapshot_xml(conn, uuid, "s1")
    assert (
        live(conn, uuid).state
        == {
            "running": libvirt.VIR_DOMAIN_RUNNING,
            "paused": libvirt.VIR_DOMAIN_PAUSED,
            "shutoff": libvirt.VIR_DOMAIN_SHUTOFF,
        }[state]
    )


def test_a_name_with_markup_is_the_snapshot_name_itself(uri, conn, make_domain):
    uuid = make_domain.define(state="running")
    name, description = '<b>&"x"', "a < b & 'c'"

    hypervisor.create_snapshot(uri, uuid, name, description)

    assert snapshot_names(conn, uuid) == {name}
    (listed,) = hypervisor.list_snapshots(uri, uuid)
    assert (listed.name, listed.description) == (name, description)


def test_disk_only_is_refused_by_the_test_driver(uri, conn, make_domain):
    uuid = make_domain.define(state="running")

    with pytest.raises(HypervisorError) as caught:
        hypervisor.create_snapshot(uri, uuid, "ext", "", disk_only=True)

    # "unsupported flags (0x10) in function testDomainSnapshotCreateXML"
    assert caught.value.code == libvirt.VIR_ERR_INVALID_ARG
    assert "unsupported flags" in caught.value.message
    assert snapshot_names(conn, uuid) == set()


def test_a_taken_name_is_refused(uri, conn, make_domain):
    uuid = make_domain.define(state="running")
    hypervisor.create_snapshot(uri, uuid, "s1", "")

    with pytest.raises(HypervisorError) as caught:
        hypervisor.create_snapshot(uri, uuid, "s1", "again")

    assert "already exists" in caught.value.message
    assert snapshot_names(conn, uuid) == {"s1"}


# --- the tree -----------------------------------------------------------------------------


def test_list_is_a_tree_parents_first_siblings_oldest_first(uri, conn, make_domain):
    uuid = make_domain.define()
    # Given out of order, and the older sibling's name sorts last.
    redefine_tree(
        conn,
        uuid,
        [
            ("root", "", 100),
            ("z-older", "root", 200),
            ("a-newer", "root", 300),
            ("a-newer-child", "a-newer", 400),
            ("z-older-child", "z-older", 500),
            ("second-root", "", 150),
        ],
    )

    listed = hypervisor.list_snapshots(uri, uuid)

    assert [s.name for s in listed] == [
        "root",
        "z-older",
        "z-older-child",
        "a-newer",
        "a-newer-child",
        "second-root",
    ]
    parents = {s.name: s.parent for s in listed}
    assert parents == {
        "root": "",
        "z-older": "root",
        "z-older-child": "z-older",
        "a-newer": "root",
        "a-newer-child": "a-newer",
        "second-root": "",
    }
    assert not any(s.current for s in listed)  # redefined snapshots are not current
    assert [s.created_at for s in listed] == [100, 200, 500, 300, 400, 150]


def test_taken_snapshots_form_a_tree_with_the_current_one(uri, conn, make_domain):
    uuid = make_domain.define(state="running")
    hypervisor.create_snapshot(uri, uuid, "s1", "")
    hypervisor.create_snapshot(uri, uuid, "s2", "")
    hypervisor.revert_snapshot(uri, uuid, "s1")
    hypervisor.create_snapshot(uri, uuid, "s3", "")

    listed = hypervisor.list_snapshots(uri, uuid)

    assert [(s.name, s.parent) for s in listed] == [("s1", ""), ("s2", "s1"), ("s3", "s1")]
    assert [s.name for s in listed if s.current] == ["s3"]
    dom = conn.lookupByUUIDString(uuid)
    assert dom.snapshotCurrent(0).getName() == "s3"
    assert dom.snapshotLookupByName("s3", 0).getParent(0).getName() == "s1"


def test_list_of_a_domain_without_snapshots_is_empty(uri, make_domain):
    assert hypervisor.list_snapshots(uri, make_domain.define()) == ()


def test_tree_order_of_siblings_taken_in_the_same_second_is_by_name():
    def facts(name: str, parent: str = "", created: int = 7) -> SnapshotFacts:
        return SnapshotFacts(name, "", created, "running", True, False, parent, False, "")

    given = [facts("c", "a"), facts("b", "a"), facts("a", created=1), facts("orphan", "gone")]
    ordered = hypervisor._tree_order(given)
    assert [s.name for s in ordered] == ["a", "b", "c", "orphan"]


# --- revert -------------------------------------------------------------------------------

RUNNING, PAUSED, SHUTOFF = (
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF,
)


@pytest.mark.parametrize(
    "taken_when, now, then, after",
    [
        ("running", "shutoff", "", RUNNING),
        ("running", "running", "paused", PAUSED),
        ("running", "paused", "running", RUNNING),
        ("paused", "running", "", PAUSED),
        ("paused", "shutoff", "running", RUNNING),
        ("shutoff", "running", "", SHUTOFF),
        ("shutoff", "paused", "", SHUTOFF),
    ],
)
def test_revert(uri, conn, make_domain, taken_when, now, then, after):
    uuid = make_domain.define(state=taken_when)
    hypervisor.create_snapshot(uri, uuid, "s", "")
    dom = conn.lookupByUUIDString(uuid)
    if dom.isActive():
        dom.destroy()
    if now != "shutoff":
        dom.create()
    if now == "paused":
        dom.suspend()

    hypervisor.revert_snapshot(uri, uuid, "s", then=then)

    assert live(conn, uuid).state == after
    assert dom.snapshotCurrent(0).getName() == "s"


def test_revert_with_force(uri, conn, make_domain):
    uuid = make_domain.define(state="running")
    hypervisor.create_snapshot(uri, uuid, "s", "")
    conn.lookupByUUIDString(uuid).suspend()

    hypervisor.revert_snapshot(uri, uuid, "s", then="running", force=True)

    assert live(conn, uuid).state == RUNNING


def test_revert_to_a_missing_snapshot(uri, make_domain):
    uuid = make_domain.define(state="running")
    with pytest.raises(HypervisorError) as caught:
        hypervisor.revert_snapshot(uri, uuid, "nope")
    assert caught.value.code == hypervisor.NO_SUCH_SNAPSHOT


def test_revert_and_delete_take_only_their_words(uri, make_domain):
    uuid = make_domain.define()
    with pytest.raises(ValueError):
        hypervisor.revert_snapshot(uri, uuid, "s", then="stopped")
    with pytest.raises(ValueError):
        hypervisor.delete_snapshot(uri, uuid, "s", mode="all")


# --- delete -------------------------------------------------------------------------------

TREE = [
    ("root", "", 100),
    ("a", "root", 200),
    ("a1", "a", 300),
    ("a2", "a", 400),
    ("b", "root", 500),
]


@pytest.mark.parametrize(
    "name, mode, left",
    [
        ("a", "one", {"root": "", "a1": "root", "a2": "root", "b": "root"}),
        ("a", "with_children", {"root": "", "b": "root"}),
        ("a", "children_only", {"root": "", "a": "root", "b": "root"}),
        ("root", "children_only", {"root": ""}),
        ("root", "with_children", {}),
    ],
)
def test_delete(uri, conn, make_domain, name, mode, left):
    uuid = make_domain.define()
    redefine_tree(conn, uuid, TREE)

    hypervisor.delete_snapshot(uri, uuid, name, mode=mode)

    dom = conn.lookupByUUIDString(uuid)
    found = {}
    for snapshot in dom.listAllSnapshots(0):
        try:
            found[snapshot.getName()] = snapshot.getParent(0).getName()
        except libvirt.libvirtError:
            found[snapshot.getName()] = ""
    assert found == left
    assert {s.name: s.parent for s in hypervisor.list_snapshots(uri, uuid)} == left


def test_delete_of_a_missing_snapshot_says_so_by_its_code(uri, conn, make_domain):
    uuid = make_domain.define(state="running")
    hypervisor.create_snapshot(uri, uuid, "s", "")
    hypervisor.delete_snapshot(uri, uuid, "s")

    with pytest.raises(HypervisorError) as caught:
        hypervisor.delete_snapshot(uri, uuid, "s")

    assert caught.value.code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT
    assert hypervisor.NO_SUCH_SNAPSHOT == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT
    assert snapshot_names(conn, uuid) == set()


# --- what an internal snapshot needs ------------------------------------------------------


@pytest.mark.parametrize(
    "disks, problems",
    [
        (file_disk("/guest/q.qcow2", fmt="qcow2"), []),
        (file_disk("/guest/r.img", fmt="raw"), ["vda"]),
        (file_disk("/guest/n.img", fmt=None), ["vda"]),  # the test driver's default
        (
            file_disk("/guest/q.qcow2", "vda", "qcow2")
            + file_disk("/guest/r.img", "vdb", "raw")
            + file_disk("/guest/ro.img", "vdc", "raw", "<readonly/>")
            + file_disk("/guest/sh.img", "vdd", "raw", "<shareable/>")
            + "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            "<source file='/iso/x.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>",
            ["vdb"],
        ),
        ("", []),
    ],
    ids=["qcow2", "raw", "no-format", "mixed", "no-disks"],
)
def test_snapshot_disk_problems(uri, conn, make_domain, disks, problems):
    uuid = define(conn, make_domain, domain_xml("disks-" + uuidlib.uuid4().hex[:6], disks))
    assert hypervisor.snapshot_disk_problems(uri, uuid) == problems


def test_no_guest_agent_answers_on_the_test_driver(uri, make_domain):
    # "this function is not supported by the connection driver: virDomainQemuAgentCommand"
    assert hypervisor.guest_agent_answers(uri, make_domain.define(state="running")) is False
    assert hypervisor.guest_agent_answers(uri, make_domain.define()) is False
    assert hypervisor.guest_agent_answers(uri, str(uuidlib.uuid4())) is False


# --- clones -------------------------------------------------------------------------------


@pytest.fixture
def original(conn, make_domain, pool):
    """A shut-off domain with two qcow2 disks in the pool (one as a file, one as a
    volume), a CD-ROM, a NIC, a UEFI NVRAM file and a display password."""
    name = "orig-" + uuidlib.uuid4().hex[:6]
    vda = make_volume(pool, f"{name}-vda.qcow2", 8 * MIB)
    make_volume(pool, f"{name}-data.qcow2", 3 * MIB)
    disks = (
        file_disk(vda, "vda")
        + f"""<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
  <source pool='{POOL}' volume='{name}-data.qcow2'/><target dev='vdb' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/iso/install.iso'/>
  <target dev='hdc' bus='ide'/><readonly/></disk>"""
    )
    devices = """<interface type='network'><mac address='52:54:00:aa:bb:cc'/>
  <source network='default'/></interface>
<graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>"""
    os_extra = (
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
        f"<nvram>/var/lib/libvirt/qemu/nvram/{name}_VARS.fd</nvram>"
    )
    uuid = define(conn, make_domain, domain_xml(name, disks, devices, os_extra))
    return name, uuid


def test_clone(uri, conn, make_domain, pool, original):
    name, uuid = original
    original_xml = conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    new_uuid = str(uuidlib.uuid4())
    make_domain.track("alpha", new_uuid)
    calls = []

    result = hypervisor.clone_domain(
        uri,
        uuid,
        f"{name}-copy",
        new_uuid=new_uuid,
        progress=lambda done, total: calls.append((done, total)),
        cancelled=lambda: False,
    )

    assert result.uuid == new_uuid
    copy_vda = f"/{POOL}/{name}-copy-vda.qcow2"
    copy_vdb = f"/{POOL}/{name}-copy-vdb.qcow2"
    assert result.volumes == (copy_vda, copy_vdb)
    assert calls == [(0, 11 * MIB), (8 * MIB, 11 * MIB), (11 * MIB, 11 * MIB)]

    clone = conn.lookupByUUIDString(new_uuid)
    assert clone.name() == f"{name}-copy"
    assert live(conn, new_uuid).persistent and not live(conn, new_uuid).active
    xml = clone.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
    sources = {d.target: d for d in domxml.disk_sources(xml)}
    assert sources["vda"].path == copy_vda
    assert (sources["vdb"].pool, sources["vdb"].volume) == (POOL, f"{name}-copy-vdb.qcow2")
    assert sources["hdc"].path == "/iso/install.iso"  # shared, not copied
    for path, original_path in ((copy_vda, f"/{POOL}/{name}-vda.qcow2"),):
        copy_vol, orig_vol = (conn.storageVolLookupByPath(p) for p in (path, original_path))
        assert copy_vol.info()[1] == orig_vol.info()[1] == 8 * MIB
        assert domxml.volume_format(copy_vol.XMLDesc(0)) == "qcow2"
    assert conn.storageVolLookupByPath(copy_vdb).info()[1] == 3 * MIB
    original_macs = {n.mac for n in domxml.interfaces(original_xml)}
    clone_macs = {n.mac for n in domxml.interfaces(xml)}
    assert len(clone_macs) == 1 and not clone_macs & original_macs
    assert "s3cret" in xml  # the display password came along
    assert f"{name}_VARS.fd" not in xml  # a fresh NVRAM, not the original's

    # The original is as it was.
    assert conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE) == original_xml
    assert conn.storageVolLookupByPath(f"/{POOL}/{name}-vda.qcow2").info()[1] == 8 * MIB


def test_clone_of_a_running_domain_is_refused(uri, conn, make_domain, pool, original):
    name, uuid = original
    conn.lookupByUUIDString(uuid).create()
    volumes = set(pool.listVolumes())

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, f"{name}-copy", new_uuid=str(uuidlib.uuid4()))

    assert "shut it off" in caught.value.message
    assert caught.value.code == libvirt.VIR_ERR_OPERATION_INVALID
    assert set(pool.listVolumes()) == volumes


def test_clone_under_a_taken_name_is_refused(uri, conn, make_domain, pool, original):
    name, uuid = original
    other = make_domain.define()
    taken = conn.lookupByUUIDString(other).name()
    volumes = set(pool.listVolumes())

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, taken, new_uuid=str(uuidlib.uuid4()))

    assert taken in caught.value.message and "already exists" in caught.value.message
    assert set(pool.listVolumes()) == volumes


def test_clone_of_a_disk_outside_the_pools_copies_nothing(uri, conn, make_domain, pool):
    vda = make_volume(pool, "outside-" + uuidlib.uuid4().hex[:6] + ".qcow2")
    disks = file_disk(vda, "vda") + file_disk("/x", "vdb")
    uuid = define(conn, make_domain, domain_xml("outside-" + uuidlib.uuid4().hex[:6], disks))
    volumes = set(pool.listVolumes())
    new_uuid = str(uuidlib.uuid4())

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, "outside-copy", new_uuid=new_uuid)

    assert caught.value.message == (
        "vdb's file /x is not in one of the host's storage pools, so it cannot be copied."
    )
    assert set(pool.listVolumes()) == volumes
    assert live(conn, new_uuid) is None


def test_cancelled_clone_leaves_nothing_behind(uri, conn, make_domain, pool, original):
    name, uuid = original
    volumes = set(pool.listVolumes())
    new_uuid = str(uuidlib.uuid4())
    asked = []

    def cancelled() -> bool:
        asked.append(set(pool.listVolumes()) - volumes)
        return len(asked) == 2  # after the first disk is copied

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, f"{name}-copy", new_uuid=new_uuid, cancelled=cancelled)

    assert caught.value.message == "Cancelled; nothing was left behind."
    assert asked == [set(), {f"{name}-copy-vda.qcow2"}]
    assert set(pool.listVolumes()) == volumes
    assert live(conn, new_uuid) is None


def test_cancelled_before_anything_is_copied(uri, conn, pool, original):
    name, uuid = original
    volumes = set(pool.listVolumes())

    with pytest.raises(HypervisorError, match="Cancelled"):
        hypervisor.clone_domain(
            uri, uuid, f"{name}-copy", new_uuid=str(uuidlib.uuid4()), cancelled=lambda: True
        )

    assert set(pool.listVolumes()) == volumes


def test_failed_copy_removes_the_copies_made(uri, conn, make_domain, pool, original):
    """The second copy fails (its name was taken meanwhile): the first copy goes, what
    someone else made stays."""
    name, uuid = original
    volumes = set(pool.listVolumes())
    new_uuid = str(uuidlib.uuid4())
    in_the_way = f"{name}-copy-vdb.qcow2"

    def progress(done: int, total: int) -> None:
        if done == 8 * MIB:  # vda copied: someone takes vdb's name
            make_volume(pool, in_the_way, MIB)

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, f"{name}-copy", new_uuid=new_uuid, progress=progress)

    assert "storage vol already exists" in caught.value.message
    assert set(pool.listVolumes()) == volumes | {in_the_way}
    assert live(conn, new_uuid) is None


def test_copy_name_taken_beforehand_is_refused_before_copying(uri, pool, original):
    name, uuid = original
    make_volume(pool, f"{name}-copy-vdb.qcow2", MIB)
    volumes = set(pool.listVolumes())

    with pytest.raises(HypervisorError) as caught:
        hypervisor.clone_domain(uri, uuid, f"{name}-copy", new_uuid=str(uuidlib.uuid4()))

    assert f"{name}-copy-vdb.qcow2 already exists" in caught.value.message
    assert set(pool.listVolumes()) == volumes


# --- domxml: the XML of snapshots and clones ----------------------------------------------


def test_build_snapshot_escapes_and_reads_back():
    xml = domxml.build_snapshot('<a&"b">', "1 < 2 & 'x'", False)
    assert "<a&" not in xml and "&lt;a&amp;" in xml
    root = domxml.parse(xml)
    assert root.findtext("name") == '<a&"b">'
    assert root.findtext("description") == "1 < 2 & 'x'"
    assert root.find("memory") is None


def test_build_snapshot_disk_only_has_no_memory():
    root = domxml.parse(domxml.build_snapshot("ext", "", True))
    assert root.find("memory").get("snapshot") == "no"
    assert root.find("description") is None


SNAPSHOT = """<domainsnapshot>
  <name>s2</name>
  <description>after &lt;upgrade&gt;</description>
  <state>{state}</state>
  <parent><name>s1</name></parent>
  <creationTime>1700000000</creationTime>
  {memory}
  <disks><disk name='vda' snapshot='{disk}'/></disks>
  <domain type='test'><name>x</name></domain>
</domainsnapshot>"""


@pytest.mark.parametrize(
    "state, memory, disk, expect_memory, expect_disk_only",
    [
        ("running", "<memory snapshot='internal'/>", "internal", True, False),
        ("paused", "<memory snapshot='external' file='/m'/>", "external", True, False),
        ("shutoff", "<memory snapshot='no'/>", "internal", False, False),
        ("disk-snapshot", "<memory snapshot='no'/>", "external", False, True),
        ("shutoff", "<memory snapshot='no'/>", "external", False, True),
        ("running", "", "internal", True, False),  # older libvirt: no <memory>
    ],
)
def test_snapshot_facts(state, memory, disk, expect_memory, expect_disk_only):
    facts = domxml.snapshot_facts(SNAPSHOT.format(state=state, memory=memory, disk=disk))
    assert facts == {
        "name": "s2",
        "description": "after <upgrade>",
        "created_at": 1700000000,
        "state": state,
        "memory": expect_memory,
        "disk_only": expect_disk_only,
        "parent": "s1",
    }


def test_snapshot_facts_of_a_root():
    facts = domxml.snapshot_facts("<domainsnapshot><name>r</name></domainsnapshot>")
    assert (facts["parent"], facts["created_at"], facts["description"]) == ("", 0, "")


def test_snapshot_facts_refuses_what_is_not_a_snapshot():
    with pytest.raises(domxml.XMLError):
        domxml.snapshot_facts("<domain/>")


CLONE_SOURCE = """<domain type='kvm'>
  <name>web</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <genid>aaaaaaaa-2222-3333-4444-555555555555</genid>
  <description>the web server</description>
  <sysinfo type='smbios'><system>
    <entry name='uuid'>11111111-2222-3333-4444-555555555555</entry>
  </system></sysinfo>
  <os>
    <type arch='x86_64'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    {nvram}
  </os>
  <seclabel type='dynamic' model='selinux' relabel='yes'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/>
      <backingStore type='file'><format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw'/>
      <source pool='data' volume='web-data.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg/web'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:57'/>
      <source bridge='br0'/>
    </interface>
    <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>
  </devices>
</domain>"""

NEW_UUID = "99999999-8888-7777-6666-555555555555"


def test_clone_xml():
    xml = CLONE_SOURCE.format(nvram="<nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>")
    paths = {
        "/var/lib/libvirt/images/web.qcow2": "/var/lib/libvirt/images/web2-vda.qcow2",
        "data/web-data.img": "/srv/data/web2-vdb.img",
        "/dev/vg/web": "/dev/vg/web2-vdc",
    }

    root = domxml.parse(domxml.clone_xml(xml, "web2", NEW_UUID, paths))

    assert root.findtext("name") == "web2"
    assert root.findtext("uuid") == NEW_UUID
    assert root.findtext("sysinfo/system/entry[@name='uuid']") == NEW_UUID
    assert not (root.findtext("genid") or "")  # libvirt makes a new one
    assert root.findtext("description") == "the web server"
    assert root.find("devices/interface/mac") is None
    assert len(root.findall("devices/interface")) == 2
    assert root.find("os/nvram") is None
    assert root.findtext("os/loader") == "/usr/share/OVMF/OVMF_CODE.fd"
    disks = root.findall("devices/disk")
    assert disks[0].find("source").get("file") == "/var/lib/libvirt/images/web2-vda.qcow2"
    assert disks[0].find("backingStore") is None  # the copy stands alone
    assert dict(disks[1].find("source").attrib) == {"pool": "data", "volume": "web2-vdb.img"}
    assert disks[2].find("source").get("dev") == "/dev/vg/web2-vdc"
    assert disks[3].find("source").get("file") == "/iso/install.iso"  # shared
    assert root.find("devices/graphics").get("passwd") == "s3cret"
    assert root.find("seclabel").get("relabel") == "yes"


def test_clone_xml_keeps_an_nvram_template_without_its_file():
    xml = CLONE_SOURCE.format(
        nvram="<nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/var/nv/web_VARS.fd</nvram>"
    )
    root = domxml.parse(domxml.clone_xml(xml, "web2", NEW_UUID, {}))
    nvram = root.find("os/nvram")
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS.fd"
    assert not (nvram.text or "").strip()
    # Sources not named in `paths` stay.
    assert root.find("devices/disk/source").get("file") == "/var/lib/libvirt/images/web.qcow2"


def test_clone_xml_adds_a_uuid_where_there_was_none():
    xml = "<domain type='test'><name>a</name><devices/></domain>"
    root = domxml.parse(domxml.clone_xml(xml, "b", NEW_UUID, {}))
    assert [el.tag for el in root][:2] == ["name", "uuid"]
    assert root.findtext("uuid") == NEW_UUID


def test_disk_formats_and_sources():
    xml = CLONE_SOURCE.format(nvram="")
    assert domxml.disk_formats(xml) == [
        ("vda", "qcow2", True),
        ("vdb", "raw", True),
        ("vdc", "", True),
        ("hdc", "", False),
    ]
    keys = [d.key for d in domxml.disk_sources(xml)]
    assert keys == [
        "/var/lib/libvirt/images/web.qcow2",
        "data/web-data.img",
        "/dev/vg/web",
        "/iso/install.iso",
    ]


@pytest.mark.parametrize(
    "before, after",
    [
        ("/var/log/libvirt/web-serial.log", "/var/log/libvirt/web2-serial.log"),
        ("/var/log/libvirt/web.log", "/var/log/libvirt/web2.log"),
        # Not the domain's name at the start of the file name (a word that merely begins
        # with it is not it): the new name in front.
        ("/var/log/libvirt/webserver.log", "/var/log/libvirt/web2-webserver.log"),
        ("/var/log/console.log", "/var/log/web2-console.log"),
    ],
)
def test_clone_xml_gives_the_copy_serial_files_of_its_own(before, after):
    xml = domxml.build_kernel_boot_guest(
        domxml.KernelBootGuest(
            name="web", uuid="11111111-1111-1111-1111-111111111111", kernel="/k",
            initrd="/i", disk="/var/lib/libvirt/images/web.qcow2", serial_log=before,
        )
    )  # fmt: skip
    root = domxml.parse(domxml.clone_xml(xml, "web2", NEW_UUID, {}))
    assert root.find("devices/serial/log").get("file") == after
