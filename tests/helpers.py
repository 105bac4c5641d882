"""Small helpers shared by the tests: polling, logged-in clients, live libvirt facts.

Tests may import libvirt directly (only application code is limited to hypervisor.py): the
facts read here come through the tests' own connections, never the application's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt
from django.test import Client

from domains.kinds import KINDS
from domains.models import Domain, Operation

PASSWORD = "password"

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 5, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail at `timeout`.

    Never sleep a fixed time to assert: poll, so a fast machine is fast and a slow one is
    given the whole `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true within {timeout} s: {what or getattr(predicate, '__name__', predicate)}"
                f" (last value {value!r})"
            )
        time.sleep(interval)


def wait_finished(op: Operation, timeout: float = 10) -> Operation:
    """Wait until the worker has finished `op`; returns the fresh row."""

    def finished() -> Operation | None:
        fresh = Operation.objects.get(pk=op.pk)
        return fresh if fresh.is_finished else None

    return wait_for(finished, timeout, interval=0.02, what=f"operation #{op.pk} finished")


def fresh(domain: Domain) -> Domain:
    """The inventory row as the database has it now."""
    return Domain.objects.get(pk=domain.pk)


def client_for(user) -> Client:
    """A test Client logged in as `user`, without going through the login form.

    The backend is named because the first configured one (axes' standalone backend) only
    guards logins and cannot load a user back from the session.
    """
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@dataclass(frozen=True)
class LiveFacts:
    """What libvirt itself says about a domain, read through the tests' own connection."""

    name: str
    state: int
    active: bool
    persistent: bool
    autostart: bool
    managed_save: bool
    snapshots: int


def live(conn: libvirt.virConnect, uuid) -> LiveFacts | None:
    """Read a domain's facts fresh from libvirt (a fresh lookup: virDomain caches its ID)."""
    try:
        dom = conn.lookupByUUIDString(str(uuid))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    return LiveFacts(
        name=dom.name(),
        state=dom.state()[0],
        active=bool(dom.isActive()),
        persistent=bool(dom.isPersistent()),
        autostart=bool(dom.autostart()),
        managed_save=bool(dom.hasManagedSaveImage()),
        snapshots=dom.snapshotNum(),
    )


# The fourteen listAllDomains filters of the guide, by the panel's filter keys.
LIST_FLAGS = {
    "active": libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE,
    "inactive": libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE,
    "persistent": libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
    "transient": libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT,
    "running": libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING,
    "paused": libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED,
    "shutoff": libvirt.VIR_CONNECT_LIST_DOMAINS_SHUTOFF,
    "other": libvirt.VIR_CONNECT_LIST_DOMAINS_OTHER,
    "managed_save": libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE,
    "no_managed_save": libvirt.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE,
    "autostart": libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
    "no_autostart": libvirt.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART,
    "has_snapshot": libvirt.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT,
    "no_snapshot": libvirt.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT,
}


def button_service(kind: str) -> Callable:
    """The service the detail page's button for `kind` calls, found as the view finds it
    (through the kind registry): `service(user, domain, **options)`."""
    return KINDS[kind].service_function


def browser_log_in(page, base_url: str, username: str, go: bool = True) -> None:
    """Sign `username` in through the login page in a browser (Playwright), as a person
    does; `go=False` when the page is on the login page already."""
    if go:
        page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/domains/**")


def template_form_data(host_pk: int, **more) -> dict:
    """What a superuser posts to make a plain PXE template on one host; `more` changes
    fields (a None leaves one out)."""
    data = {
        "name": "office-tpl", "method": "pxe", "domain_type": "kvm", "hosts": [host_pk],
        "vcpus_max": 2, "vcpus_current": 1, "vcpu_placement": "static", "memory_mib": 512,
        "current_memory_mib": 512, "firmware": "bios", "clock_offset": "utc",
        "on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy",
        "disk_gib": 5, "disk_format": "qcow2", "disk_bus": "virtio", "net_type": "network",
        "net_source": "default", "net_model": "virtio", "balloon_period": 10,
        "min_vcpus": 1, "max_vcpus": 2, "min_memory_mib": 128, "max_memory_mib": 1024,
    }  # fmt: skip
    data.update(more)
    return {k: v for k, v in data.items() if v is not None}
