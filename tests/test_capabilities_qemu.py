"""What a real QEMU host answers to the capability probes (the qemu tier, root only).

The counterpart of the test-driver measurements in test_capabilities.py: QEMU takes
START_AUTODESTROY and START_PAUSED, migrates, offers VNC graphics, and (asked of a defined
domain) DISK_ONLY snapshots and console streams. Asking changes nothing on the host.
"""

from __future__ import annotations

import uuid as uuidlib

import libvirt
import pytest

from domains import domxml, hypervisor
from tests.test_qemu import qemu  # noqa: F401  the module-scoped QEMU hosts fixture

pytestmark = [pytest.mark.qemu]


def test_a_real_qemu_host_probes_what_it_can_do(qemu):  # noqa: F811
    uri = qemu.qa.uri
    hypervisor.forget(uri)
    caps = hypervisor.capabilities(uri)
    assert caps.driver == "QEMU"
    assert (caps.autodestroy, caps.start_paused, caps.migration) == (True, True, True)
    assert "vnc" in caps.graphics
    assert "qemu" in caps.domain_types

    # A defined (never started) domain to ask what only a domain can answer.
    uuid = str(uuidlib.uuid4())
    name = f"probe-{uuid[:6]}"
    xml = domxml.build_kernel_boot_guest(
        domxml.KernelBootGuest(
            name=name,
            uuid=uuid,
            kernel=f"{qemu.guest}/vmlinuz",
            initrd=f"{qemu.guest}/initrd.gz",
            disk=f"/var/lib/libvirt/images/{name}.qcow2",  # never opened: never started
            serial_log=f"/var/log/libvirt/{name}-serial.log",
        )
    )
    conn = libvirt.open(uri)
    dom = conn.defineXML(xml)
    try:
        hypervisor.forget(uri)
        asked = hypervisor.capabilities(uri)
        assert (asked.external_snapshots, asked.console) == (True, True)
        assert {"state", "cpu-total", "balloon", "vcpu", "block"} <= set(asked.bulk_stats)
        # Nothing changed: the one domain, still off, without snapshots.
        assert [d.UUIDString() for d in conn.listAllDomains(0)] == [uuid]
        assert (dom.isActive(), dom.snapshotNum()) == (0, 0)
    finally:
        dom.undefine()
        conn.close()
        hypervisor.forget(uri)
