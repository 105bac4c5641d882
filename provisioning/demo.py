"""Demo data: one template per install method and one pending request to approve."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from domains.models import Host, Team

from .models import Method, Quota, RequestState, Template, VMRequest

DEMO_TEMPLATES = [
    dict(
        name="Debian from ISO",
        method=Method.CDROM,
        description="Installs from the netinst ISO; boots the disk once installed.",
        iso_path="/var/lib/libvirt/images/debian-netinst.iso",
        memory_mib=1024,
        current_memory_mib=1024,
    ),
    dict(name="PXE install", method=Method.PXE, description="Boots the network installer."),
    dict(
        name="Kernel boot installer",
        method=Method.KERNEL,
        description="Direct kernel boot in two phases: installer, then its disk.",
        kernel="/var/lib/libvirt/boot/vmlinuz",
        initrd="/var/lib/libvirt/boot/initrd.gz",
        cmdline="console=ttyS0",
    ),
    dict(
        name="Small VM from image",
        method=Method.DISK,
        description="Boots a copy of an existing disk image.",
        base_image="/var/lib/libvirt/images/base.qcow2",
        memory_mib=512,
        current_memory_mib=512,
    ),
]


def seed(hosts: list[Host], team_slug: str = "platform", requester: str = "vera") -> int:
    """Templates targeting every demo host, a quota, and one pending request."""
    for values in DEMO_TEMPLATES:
        template, _created = Template.objects.update_or_create(name=values["name"], defaults=values)
        template.hosts.set(hosts)
    team = Team.objects.filter(slug=team_slug).first()
    user = get_user_model().objects.filter(username=requester).first()
    if team is None or user is None:
        return len(DEMO_TEMPLATES)
    # Room for what the demo already runs plus the pending request, so it can be approved;
    # the quota page shows how close the team is.
    Quota.objects.update_or_create(
        team=team,
        defaults={
            "max_domains": 16,
            "max_vcpus": 32,
            "max_memory_mib": 32768,
            "max_disk_gib": 200,
        },
    )
    if not VMRequest.objects.filter(team=team, state=RequestState.SUBMITTED).exists():
        VMRequest.objects.create(
            team=team,
            requester=user,
            template=Template.objects.get(name="PXE install"),
            name="vera-sandbox",
            vcpus=1,
            memory_mib=512,
            purpose="A sandbox to try the new release (demo request: approve it).",
        )
    return len(DEMO_TEMPLATES)
