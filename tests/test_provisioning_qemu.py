"""The two-phase direct kernel boot on real QEMU, through the service and the real worker.

Phase 1 runs the tiny guest as a transient installer with `vmpanel.install=1` on its
command line: its init prints GUEST-INSTALL-DONE once the disk answers and powers off,
which ends the transient domain (on_poweroff/on_reboot=destroy). Phase 2 then defines the
persistent domain booting from its disk (no kernel, boot hd) and starts it.

Honest limit: the tiny guest's disk is an empty volume with no OS, so in phase 2 the
firmware finds nothing to boot and waits; libvirt reports the domain running, and that,
with its persistent configuration booting hd, is what is asserted. A real installer would
have written a bootable disk.
"""

from __future__ import annotations

import uuid as uuidlib

import libvirt
import pytest
from lxml import etree

from domains.models import DEFAULT_ALLOWED_PATHS, Domain, Host, Operation, OperationStatus
from provisioning import services
from provisioning.models import Method, Template
from tests.helpers import wait_finished, wait_for
from tests.test_qemu import qemu  # noqa: F401  the module-scoped QEMU hosts fixture

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True)]


def test_two_phase_kernel_boot_on_qemu(qemu, people, celery_worker):  # noqa: F811
    # The tiny guest's kernel lives in the test's own folder: a superuser allowed it.
    host = Host.objects.create(
        name="qa", uri=qemu.qa.uri, allowed_paths=f"{DEFAULT_ALLOWED_PATHS}\n{qemu.guest}"
    )
    template = Template.objects.create(
        name="tiny installer",
        method=Method.KERNEL,
        domain_type="qemu",  # TCG: no KVM on these machines
        kernel=f"{qemu.guest}/vmlinuz",
        initrd=f"{qemu.guest}/initrd.gz",
        cmdline="console=ttyS0 panic=-1 vmpanel.install=1",
        vcpus_max=1,
        vcpus_current=1,
        memory_mib=128,
        current_memory_mib=128,
        min_memory_mib=128,
        disk_gib=1,
        net_type="",
        vnc=False,
        tablet=False,
        serial_log=True,
    )
    template.hosts.set([host])
    name = f"inst-{uuidlib.uuid4().hex[:6]}"
    op = services.create_domain(
        people.alice_admin, template, host, people.team_a, name, 1, 128, services.CreateChoice()
    )
    uuid = str(op.domain_uuid)
    log = qemu.qa.dir / "log" / f"{name}-serial.log"
    try:
        wait_for(
            lambda: Operation.objects.get(pk=op.pk).params.get("phase") == "1",
            timeout=90,
            what="phase 1 started",
        )
        wait_for(
            lambda: log.exists() and "GUEST-INSTALL-DONE" in log.read_text(errors="replace"),
            timeout=120,
            what="the installer finished",
        )
        done = wait_finished(op, timeout=120)
        assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
        assert done.params["phase"] == "2"
        conn = libvirt.open(qemu.qa.uri)
        try:
            dom = conn.lookupByUUIDString(uuid)
            assert dom.isPersistent() and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
            assert root.find("os/kernel") is None
            assert [b.get("dev") for b in root.findall("os/boot")] == ["hd"]
            assert conn.storageVolLookupByPath(f"/var/lib/libvirt/images/{name}.qcow2")
        finally:
            conn.close()
        row = Domain.objects.get(host=host, uuid=uuid)
        assert row.team == people.team_a
    finally:
        conn = libvirt.open(qemu.qa.uri)
        try:
            try:
                dom = conn.lookupByUUIDString(uuid)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError:
                pass
            try:
                conn.storageVolLookupByPath(f"/var/lib/libvirt/images/{name}.qcow2").delete(0)
            except libvirt.libvirtError:
                pass
        finally:
            conn.close()
