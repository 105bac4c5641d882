"""Host capabilities: probed from libvirt, not guessed from the driver's name.

Unit tests of the XML readers on samples taken from a real QEMU 7.2 host (libvirt 9.0,
trimmed), then the probes on the private test-driver hosts: what the test driver really
answers, that nothing is made by asking, that the answer lives and dies with the
connection, and that the Host row and the host page get it.
"""

from __future__ import annotations

import uuid

import pytest

from domains import domxml
from domains.domxml import XMLError
from domains.hypervisor import HostCapabilities

# virsh capabilities on a QEMU host (host CPU features and most machine types cut).
QEMU_CAPABILITIES = """\
<capabilities>
  <host>
    <uuid>f4c8b3b7-276b-4d33-bddb-5013fc67584b</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>kvm64</model>
      <vendor>AMD</vendor>
      <topology sockets='1' dies='1' cores='2' threads='1'/>
      <feature name='vme'/>
    </cpu>
    <power_management/>
    <iommu support='no'/>
    <migration_features>
      <live/>
      <uri_transports>
        <uri_transport>tcp</uri_transport>
        <uri_transport>rdma</uri_transport>
      </uri_transports>
    </migration_features>
    <topology>
      <cells num='1'>
        <cell id='0'>
          <memory unit='KiB'>6383388</memory>
          <cpus num='2'>
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/>
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1'/>
          </cpus>
        </cell>
      </cells>
    </topology>
    <secmodel>
      <model>dac</model>
      <doi>0</doi>
      <baselabel type='kvm'>+64055:+994</baselabel>
      <baselabel type='qemu'>+64055:+994</baselabel>
    </secmodel>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/qemu-system-i386</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
    <features>
      <pae/>
      <nonpae/>
      <acpi default='on' toggle='yes'/>
      <apic default='on' toggle='no'/>
      <cpuselection/>
      <deviceboot/>
      <disksnapshot default='on' toggle='no'/>
    </features>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
    <features>
      <acpi default='on' toggle='yes'/>
      <apic default='on' toggle='no'/>
      <cpuselection/>
      <deviceboot/>
      <disksnapshot default='on' toggle='no'/>
    </features>
  </guest>
</capabilities>
"""

# A QEMU host without /dev/kvm offers TCG only.
QEMU_TCG_ONLY_CAPABILITIES = QEMU_CAPABILITIES.replace("      <domain type='kvm'/>\n", "")

# What the test driver's capabilities say (libvirt 9.0, measured): no migration features.
TEST_DRIVER_CAPABILITIES = """\
<capabilities>
  <host>
    <cpu><arch>i686</arch><features><pae/><nonpae/></features></cpu>
    <power_management/>
    <iommu support='no'/>
    <secmodel><model>testSecurity</model><doi></doi></secmodel>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/test-hv</emulator>
      <domain type='test'/>
    </arch>
  </guest>
  <guest>
    <os_type>xen</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/test-hv</emulator>
      <domain type='test'/>
    </arch>
  </guest>
</capabilities>
"""

# virsh domcapabilities on the same QEMU host (CPU models and most enums cut).
QEMU_DOMAIN_CAPABILITIES = """\
<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>kvm</domain>
  <machine>pc-i440fx-7.2</machine>
  <arch>x86_64</arch>
  <vcpu max='255'/>
  <iothreads supported='yes'/>
  <os supported='yes'>
    <enum name='firmware'/>
    <loader supported='yes'>
      <enum name='type'><value>rom</value><value>pflash</value></enum>
      <enum name='readonly'><value>yes</value><value>no</value></enum>
      <enum name='secure'><value>no</value></enum>
    </loader>
  </os>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='host-model' supported='yes'><model fallback='forbid'>kvm64</model></mode>
  </cpu>
  <devices>
    <disk supported='yes'>
      <enum name='diskDevice'>
        <value>disk</value><value>cdrom</value><value>floppy</value><value>lun</value>
      </enum>
      <enum name='bus'>
        <value>ide</value><value>fdc</value><value>scsi</value><value>virtio</value>
        <value>usb</value><value>sata</value>
      </enum>
    </disk>
    <graphics supported='yes'>
      <enum name='type'>
        <value>sdl</value>
        <value>vnc</value>
        <value>spice</value>
        <value>egl-headless</value>
        <value>dbus</value>
      </enum>
    </graphics>
    <video supported='yes'>
      <enum name='modelType'><value>vga</value><value>virtio</value><value>none</value></enum>
    </video>
    <channel supported='yes'>
      <enum name='type'><value>pty</value><value>unix</value><value>spicevmc</value></enum>
    </channel>
  </devices>
  <features>
    <gic supported='no'/>
    <vmcoreinfo supported='yes'/>
    <genid supported='yes'/>
    <backup supported='yes'/>
    <sev supported='no'/>
  </features>
</domainCapabilities>
"""


# --- the XML readers (unit) ----------------------------------------------------------------


def test_qemu_capabilities_give_domain_types_in_order_and_migration():
    facts = domxml.read_capabilities(QEMU_CAPABILITIES)
    assert facts.domain_types == ("qemu", "kvm")  # once each, though two arches list them
    assert facts.migration is True


def test_a_host_without_kvm_offers_qemu_only():
    assert domxml.read_capabilities(QEMU_TCG_ONLY_CAPABILITIES).domain_types == ("qemu",)


def test_test_driver_capabilities_offer_test_and_no_migration():
    facts = domxml.read_capabilities(TEST_DRIVER_CAPABILITIES)
    assert facts == domxml.CapabilitiesFacts(domain_types=("test",), migration=False)


def test_domain_capabilities_give_the_graphics_types():
    facts = domxml.read_domain_capabilities(QEMU_DOMAIN_CAPABILITIES)
    assert facts.graphics == ("sdl", "vnc", "spice", "egl-headless", "dbus")


def test_graphics_not_supported_means_none_whatever_it_lists():
    xml = QEMU_DOMAIN_CAPABILITIES.replace("graphics supported='yes'", "graphics supported='no'")
    assert domxml.read_domain_capabilities(xml).graphics == ()
    bare = "<domainCapabilities><path>/usr/bin/x</path><devices/></domainCapabilities>"
    assert domxml.read_domain_capabilities(bare).graphics == ()


def test_readers_refuse_other_documents_and_entities():
    with pytest.raises(XMLError, match="not a <capabilities>"):
        domxml.read_capabilities(QEMU_DOMAIN_CAPABILITIES)
    with pytest.raises(XMLError, match="not a <domainCapabilities>"):
        domxml.read_domain_capabilities(QEMU_CAPABILITIES)
    with pytest.raises(XMLError, match="Malformed"):
        domxml.read_capabilities("")
    # The hardened parser never reads a file into a domain type.
    xxe = (
        '<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        "<capabilities><guest><arch><domain type='&x;'/></arch></guest></capabilities>"
    )
    with pytest.raises(XMLError, match="external entity"):
        domxml.read_capabilities(xxe)


# --- HostCapabilities as JSON (unit) ---------------------------------------------------------


def test_capabilities_round_trip_through_json():
    import json

    caps = HostCapabilities(
        driver="QEMU",
        hypervisor_version="7.2.0",
        libvirt_version="9.0.0",
        domain_types=("qemu", "kvm"),
        autodestroy=True,
        start_paused=True,
        bulk_stats=("state", "cpu-total"),
        external_snapshots=True,
        console=True,
        migration=True,
        graphics=("vnc", "spice"),
    )
    data = json.loads(json.dumps(caps.to_dict()))
    assert data["domain_types"] == ["qemu", "kvm"]
    assert HostCapabilities.from_dict(data) == caps


def test_missing_or_unknown_keys_take_the_cautious_defaults():
    assert HostCapabilities.from_dict({}) == HostCapabilities()
    assert HostCapabilities.from_dict(None) == HostCapabilities()
    old = HostCapabilities.from_dict({"driver": "QEMU", "autodestroy": True, "future": 1})
    assert (old.driver, old.autodestroy, old.start_paused) == ("QEMU", True, False)
    assert old.bulk_stats is None and old.external_snapshots is None and old.graphics == ()


# --- the probes on the test-driver hosts (integration) ---------------------------------------

# What libvirt 9.0's test driver answers, measured: it takes neither START_AUTODESTROY nor
# START_PAUSED nor DISK_ONLY snapshots ("unsupported flags"), answers the "state" and
# "iothread" statistics groups only, has no console streams, no domain capabilities (so no
# graphics types) and no migration features; it runs domains of type "test".
TEST_DRIVER_ANSWERS = {
    "driver": "TEST",
    "domain_types": ("test",),
    "autodestroy": False,
    "start_paused": False,
    "bulk_stats": ("state", "iothread"),
    "external_snapshots": False,
    "console": False,
    "migration": False,
    "graphics": (),
}


def _world(conn) -> list[tuple[str, str, bool, int]]:
    """Every domain of a host with its state and snapshot count: what a probe must not change."""
    return sorted(
        (d.UUIDString(), d.name(), bool(d.isActive()), d.snapshotNum())
        for d in conn.listAllDomains(0)
    )


@pytest.mark.integration
def test_test_driver_probes_give_the_measured_answers(libvirt_hosts):
    from domains import hypervisor

    uri = libvirt_hosts.uri("alpha")
    hypervisor.forget(uri)
    caps = hypervisor.capabilities(uri)
    assert {k: getattr(caps, k) for k in TEST_DRIVER_ANSWERS} == TEST_DRIVER_ANSWERS
    conn = libvirt_hosts.conn("alpha")
    assert caps.libvirt_version == hypervisor._version(conn.getLibVersion())
    assert caps.hypervisor_version == hypervisor._version(conn.getVersion())


@pytest.mark.integration
def test_probing_changes_nothing_on_the_host(libvirt_hosts, make_domain):
    from domains import hypervisor

    # A defined domain with a snapshot and a running one: the probes ask the running one,
    # which must keep running with its snapshots, and nothing new may appear.
    make_domain.define("alpha", snapshots=1)
    make_domain.define("alpha", state="running", snapshots=1)
    conn = libvirt_hosts.conn("alpha")
    before = _world(conn)
    uri = libvirt_hosts.uri("alpha")
    for _ in range(3):
        hypervisor.forget(uri)
        hypervisor.capabilities(uri)
    assert _world(conn) == before


@pytest.mark.integration
def test_the_answer_lives_and_dies_with_the_connection(libvirt_hosts):
    from domains import hypervisor

    uri = libvirt_hosts.uri("beta")
    hypervisor.forget(uri)
    first = hypervisor.capabilities(uri)
    assert hypervisor.capabilities(uri) is first  # asked once per connection
    hypervisor.forget(uri)
    second = hypervisor.capabilities(uri)
    assert second is not first and second == first  # asked again after forget
    # A connection that broke under the panel: re-opened, and the host asked again.
    hypervisor.connection(uri).close()
    third = hypervisor.capabilities(uri)
    assert third is not second and third == first
    assert hypervisor.capabilities(uri) is third


def test_a_host_without_domains_leaves_the_domain_questions_open():
    """The in-process test driver, emptied: no domain to ask, so those answers are None."""
    import libvirt

    from domains import hypervisor

    uri = "test:///default"  # private to this process; its world resets when last closed
    mine = libvirt.open(uri)
    try:
        for dom in mine.listAllDomains(0):
            dom.destroy()
            dom.undefine()
        caps = hypervisor.capabilities(uri)
        assert (caps.bulk_stats, caps.external_snapshots, caps.console) == (None, None, None)
        assert (caps.autodestroy, caps.start_paused, caps.domain_types) == (False, False, ("test",))
        assert mine.listAllDomains(0) == []  # the probes made nothing
    finally:
        hypervisor.forget(uri)
        mine.close()


# --- stored on the Host row, shown on the host page (integration) ----------------------------


def _as_json(answers: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in answers.items()}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_watcher_stores_the_capabilities_whenever_it_connects(
    start_watcher, hosts, libvirt_hosts
):
    from domains.models import Host
    from tests.helpers import wait_for

    start_watcher(reconcile_seconds=600)
    for name in ("alpha", "beta"):
        host = Host.objects.get(name=name)
        assert host.capabilities_probed_at is not None
        stored = {k: host.capabilities.get(k) for k in TEST_DRIVER_ANSWERS}
        assert stored == _as_json(TEST_DRIVER_ANSWERS)
    first = Host.objects.get(name="beta").capabilities_probed_at
    # A restarted daemon means a new connection: the watcher asks again.
    libvirt_hosts.restart("beta")
    wait_for(
        lambda: Host.objects.get(name="beta").capabilities_probed_at > first,
        timeout=5,
        what="the watcher probed beta again after its restart",
    )


@pytest.mark.integration
@pytest.mark.django_db
def test_saving_a_host_stores_its_capabilities(people, libvirt_hosts):
    from domains.models import Host
    from domains.services.hosts import save_host

    host = save_host(people.root, Host(name="gamma", uri=libvirt_hosts.uri("alpha")))
    host.refresh_from_db()
    assert host.capabilities["autodestroy"] is False
    assert host.capabilities["domain_types"] == ["test"]
    off = save_host(
        people.root, Host(name="delta", uri="test+unix:///default?socket=/nowhere", enabled=False)
    )
    off.refresh_from_db()
    assert off.capabilities == {} and off.capabilities_probed_at is None  # not asked


@pytest.mark.integration
@pytest.mark.django_db
def test_the_host_page_says_in_plain_words_what_the_host_can_do(people, hosts):
    from django.urls import reverse

    from domains import inventory
    from tests.helpers import client_for

    url = reverse("host_detail", args=["alpha"])
    page = client_for(people.root).get(url).content.decode()
    assert "Not asked yet" in page
    inventory.store_capabilities(hosts.alpha)
    response = client_for(people.root).get(url)
    page = response.content.decode()
    rows = dict(response.context["host"].capability_rows())
    assert rows["Can destroy temporary VMs automatically"] == "no"
    assert rows["Can start VMs paused"] == "no"
    assert rows["Can migrate VMs"] == "no"
    assert rows["Can take external (disk-only) snapshots"] == "no"
    assert rows["Statistics it reports for all VMs at once"] == "state, iothread"
    assert rows["Graphical consoles"] == "none known"
    assert rows["VM types it runs"] == "test"
    assert "Can destroy temporary VMs automatically" in page and "state, iothread" in page
    # Superusers only, as every host page.
    assert client_for(people.alice_admin).get(url).status_code in (403, 404)


def test_rows_of_a_host_that_had_no_vm_to_ask_say_so():
    from domains.models import Host

    caps = HostCapabilities(driver="QEMU", domain_types=("qemu",), autodestroy=True)
    rows = dict(Host(capabilities=caps.to_dict()).capability_rows())
    assert rows["Can destroy temporary VMs automatically"] == "yes"
    assert rows["Can take external (disk-only) snapshots"].startswith("not known yet")
    assert rows["Statistics it reports for all VMs at once"].startswith("not known yet")
    assert Host().capability_rows() == []


# --- provisioning decides by the host's answer, not its driver's name ----------------------


def _template(**fields):
    from provisioning.models import Method, Template

    values = {
        "name": "caps-tpl",
        "method": Method.CDROM,
        "iso_path": "/srv/iso/debian.iso",
        "domain_type": "kvm",
        "memory_mib": 512,
        "current_memory_mib": 512,
        "vcpus_max": 2,
        "vnc": True,
        "tablet": True,
        "serial_console": True,
        "bios_useserial": True,
    }
    values.update(fields)
    return Template(**values)


def test_a_kvm_template_follows_the_domain_types_the_host_runs():
    from domains.models import Host
    from provisioning.services import template_to_spec

    host = Host(name="q", uri="qemu:///system")

    def spec(**caps):
        return template_to_spec(
            _template(), "vm1", str(uuid.uuid4()), 1, 512, host, HostCapabilities(**caps)
        )

    assert spec(domain_types=("qemu", "kvm")).domain_type == "kvm"  # offered: kept
    assert spec(domain_types=("qemu",)).domain_type == "qemu"  # no KVM: the host's first
    assert spec(domain_types=("test",)).domain_type == "test"
    with_vnc = spec(domain_types=("qemu",), graphics=("sdl", "vnc", "spice"))
    assert (with_vnc.vnc, with_vnc.tablet) == (True, True)
    spice_only = spec(domain_types=("qemu",), graphics=("spice",))
    assert (spice_only.vnc, spice_only.tablet) == (False, False)
    # Serial console, BIOS serial output and the disks are the template's on any host.
    bare = spec()
    assert bare.serial_console and bare.bios_useserial
    assert [d.device for d in bare.disks] == ["disk", "cdrom"]


@pytest.mark.integration
@pytest.mark.django_db
def test_the_test_driver_takes_the_template_with_disk_and_serial_port(people, hosts, libvirt_hosts):
    """Why the test-driver domains had no disk and no serial port: no reason. The test
    driver defines and boots them (it opens neither the disk file nor the pty); what it
    lacks, VNC (no domain capabilities), is left out by capability."""
    import libvirt
    from lxml import etree

    from provisioning import services

    template = _template()
    template.save()
    template.hosts.set([hosts.alpha])
    view = services.preview(template, hosts.alpha, "caps-1", 1, 512, str(uuid.uuid4()))
    assert not view.problems, view.problems
    root = etree.fromstring(view.xml.encode())
    assert root.get("type") == "test"
    assert root.find("devices/graphics") is None and root.find("devices/input") is None
    assert root.find("devices/serial") is not None and root.find("devices/console") is not None
    assert root.find("os/bios").get("useserial") == "yes"
    sources = [d.find("source").get("file") for d in root.iterfind("devices/disk")]
    assert sources == ["/var/lib/libvirt/images/caps-1.qcow2", "/srv/iso/debian.iso"]
    conn = libvirt_hosts.conn("alpha")
    dom = conn.defineXMLFlags(view.xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        dom.create()
        live = etree.fromstring(dom.XMLDesc(0).encode())
        assert live.find("devices/serial") is not None
        assert len(live.findall("devices/disk")) == 2
    finally:
        dom.destroy()
        dom.undefine()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_no_volume_is_made_where_no_pool_holds_the_images_folder(
    people, hosts, libvirt_hosts, make_domain
):
    import libvirt

    from provisioning import services
    from tests.helpers import wait_finished

    template = _template(name="caps-pool")
    template.save()
    template.hosts.set([hosts.alpha])
    op = services.create_domain(
        people.root, template, hosts.alpha, people.team_a, "caps-2", 1, 512,
        services.CreateChoice(paused=True),
    )  # fmt: skip
    make_domain.track("alpha", op.domain_uuid)
    done = wait_finished(op)
    assert done.status == "succeeded", (done.message, done.error)
    conn = libvirt_hosts.conn("alpha")
    dom = conn.lookupByUUIDString(str(op.domain_uuid))
    # No START_PAUSED on this host: started, then paused at once.
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert "/var/lib/libvirt/images/caps-2.qcow2" in dom.XMLDesc(0)
    with pytest.raises(libvirt.libvirtError) as missing:
        conn.storageVolLookupByPath("/var/lib/libvirt/images/caps-2.qcow2")
    assert missing.value.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL
