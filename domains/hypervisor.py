"""The only module that talks to libvirt.

It keeps one connection per host URI per process, opened on first use (so after Celery
forks) and opened again when it breaks. It returns plain dataclasses and raises
`HypervisorError` carrying libvirt's code and message and whether a retry can help.
Domains are always addressed by UUID: names are labels and can change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import libvirt
from django.utils.translation import gettext, gettext_noop

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we carry them in exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_connections: dict[str, libvirt.virConnect] = {}
_lock = threading.Lock()

# Errors where the same call may work a moment later. Not VIR_ERR_INTERNAL_ERROR: libvirt
# uses it for lasting refusals too ("domain is already running").
_RETRYABLE_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
}
_CONNECTION_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
}


class HypervisorError(Exception):
    """A libvirt failure in plain terms."""

    def __init__(self, message: str, code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable

    @property
    def hint(self) -> str:
        """What the user can do about it, in plain words."""
        return gettext(
            _HINTS.get(self.code, gettext_noop("libvirt refused this; its message says why."))
        )

    @property
    def no_such_domain(self) -> bool:
        return self.code == libvirt.VIR_ERR_NO_DOMAIN

    @property
    def host_unreachable(self) -> bool:
        return self.code in _CONNECTION_CODES


_HINTS = {
    libvirt.VIR_ERR_OPERATION_INVALID: gettext_noop(
        "The domain's state does not allow this now; reload the page to see its current state."
    ),
    libvirt.VIR_ERR_NO_DOMAIN: gettext_noop("The domain no longer exists on this host."),
    libvirt.VIR_ERR_NO_CONNECT: gettext_noop(
        "The host does not answer; try again when it is back."
    ),
    libvirt.VIR_ERR_SYSTEM_ERROR: gettext_noop(
        "The host does not answer; try again when it is back."
    ),
    libvirt.VIR_ERR_RPC: gettext_noop("The connection to the host broke; try again."),
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED: gettext_noop("This host's hypervisor cannot do this."),
    libvirt.VIR_ERR_NO_SUPPORT: gettext_noop("This host's hypervisor cannot do this."),
    libvirt.VIR_ERR_XML_ERROR: gettext_noop("Correct the domain XML and try again."),
    libvirt.VIR_ERR_OPERATION_TIMEOUT: gettext_noop("The host is busy; try again in a moment."),
}


def _wrap(exc: libvirt.libvirtError) -> HypervisorError:
    code = exc.get_error_code()
    return HypervisorError(
        exc.get_error_message() or str(exc),
        code=code,
        retryable=code in _RETRYABLE_CODES,
    )


# --- connections -------------------------------------------------------------------


def _open(uri: str) -> libvirt.virConnect:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        err = _wrap(exc)
        # An unreachable host is worth another try later, whatever code it came with.
        err.retryable = True
        err.code = err.code if err.code is not None else libvirt.VIR_ERR_NO_CONNECT
        raise err from None
    try:
        conn.setKeepAlive(5, 3)
    except libvirt.libvirtError:
        pass  # not every driver supports keepalive (the in-process test driver)
    return conn


def connection(uri: str) -> libvirt.virConnect:
    """The process's connection to `uri`, opened or re-opened as needed."""
    with _lock:
        conn = _connections.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            _drop(uri)
        conn = _open(uri)
        _connections[uri] = conn
        return conn


def _drop(uri: str) -> None:
    conn = _connections.pop(uri, None)
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def forget(uri: str) -> None:
    """Close and forget the connection to `uri` (after it broke, or in tests)."""
    with _lock:
        _drop(uri)


def forget_all() -> None:
    with _lock:
        for uri in list(_connections):
            _drop(uri)


def _call(uri: str, fn: Callable[[libvirt.virConnect], object]):
    """Run `fn(conn)`, reconnecting once if the connection turned out to be broken."""
    for attempt in (1, 2):
        conn = connection(uri)
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            err = _wrap(exc)
            if attempt == 1 and err.code in _CONNECTION_CODES:
                forget(uri)
                continue
            raise err from None
    raise AssertionError("unreachable")


def ping(uri: str) -> None:
    """Raise HypervisorError unless the host answers now."""
    _call(uri, lambda conn: conn.getHostname())


def check_uri(uri: str) -> None:
    """Open a fresh connection to `uri` and close it; raises HypervisorError if not."""
    conn = _open(uri)
    try:
        conn.getHostname()
    except libvirt.libvirtError as exc:
        raise _wrap(exc) from None
    finally:
        conn.close()


# --- facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    cpu_model: str
    cpus: int
    memory_kib: int
    free_memory_kib: int


@dataclass(frozen=True)
class DomainFacts:
    uuid: str
    name: str
    id: int | None  # None while inactive
    state: int
    state_reason: str
    vcpus: int
    memory_kib: int
    max_memory_kib: int
    persistent: bool
    autostart: bool
    has_managed_save: bool
    snapshot_count: int


@dataclass(frozen=True)
class DomainDetail:
    facts: DomainFacts
    os_type: str
    max_vcpus: int
    xml: str


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def host_facts(uri: str) -> HostFacts:
    def read(conn: libvirt.virConnect) -> HostFacts:
        info = conn.getInfo()
        return HostFacts(
            hostname=conn.getHostname(),
            hypervisor_type=conn.getType(),
            hypervisor_version=_version(conn.getVersion()),
            libvirt_version=_version(conn.getLibVersion()),
            cpu_model=info[0],
            cpus=info[2],
            memory_kib=info[1] * 1024,
            free_memory_kib=conn.getFreeMemory() // 1024,
        )

    return _call(uri, read)


_STATE_REASONS: dict[int, dict[int, str]] = {
    libvirt.VIR_DOMAIN_RUNNING: {
        0: "unknown",
        1: "booted",
        2: "migrated",
        3: "restored",
        4: "from snapshot",
        5: "unpaused",
        6: "migration cancelled",
        7: "save cancelled",
        8: "woken up",
        9: "crashed",
        10: "post-copy",
    },
    libvirt.VIR_DOMAIN_PAUSED: {
        0: "unknown",
        1: "user",
        2: "migration",
        3: "save",
        4: "dump",
        5: "I/O error",
        6: "watchdog",
        7: "from snapshot",
        8: "shutting down",
        9: "snapshot",
        10: "crashed",
        11: "starting up",
        12: "post-copy",
        13: "post-copy failed",
    },
    libvirt.VIR_DOMAIN_SHUTDOWN: {0: "unknown", 1: "user"},
    libvirt.VIR_DOMAIN_SHUTOFF: {
        0: "unknown",
        1: "shutdown",
        2: "destroyed",
        3: "crashed",
        4: "migrated",
        5: "saved",
        6: "failed",
        7: "from snapshot",
        8: "daemon",
    },
    libvirt.VIR_DOMAIN_CRASHED: {0: "unknown", 1: "panicked"},
    libvirt.VIR_DOMAIN_PMSUSPENDED: {0: "unknown"},
}


def _reason_text(state: int, reason: int) -> str:
    return _STATE_REASONS.get(state, {}).get(reason, "unknown")


def _facts(
    dom: libvirt.virDomain,
    autostart: bool,
    managed_save: bool,
    snapshots: int,
) -> DomainFacts:
    state, max_mem, mem, vcpus, _cpu_time = dom.info()
    _state, reason = dom.state()
    dom_id = dom.ID()
    return DomainFacts(
        uuid=dom.UUIDString(),
        name=dom.name(),
        id=dom_id if dom_id >= 0 else None,
        state=state,
        state_reason=_reason_text(state, reason),
        vcpus=vcpus,
        memory_kib=mem,
        max_memory_kib=max_mem,
        persistent=bool(dom.isPersistent()),
        autostart=autostart,
        has_managed_save=managed_save,
        snapshot_count=snapshots,
    )


def list_domains(uri: str) -> list[DomainFacts]:
    """Every domain on the host, with what the inventory stores.

    The yes/no facts come from a few filtered listAllDomains calls instead of one call per
    domain each, so a full read of a large host costs about two calls per domain.
    """

    def read(conn: libvirt.virConnect) -> list[DomainFacts]:
        def uuids(flags: int) -> set[str]:
            return {d.UUIDString() for d in conn.listAllDomains(flags)}

        autostart = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        managed = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
        snap = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)
        result = []
        for dom in conn.listAllDomains(0):
            uuid = dom.UUIDString()
            try:
                snapshots = dom.snapshotNum() if uuid in snap else 0
                result.append(_facts(dom, uuid in autostart, uuid in managed, snapshots))
            except libvirt.libvirtError as exc:
                # Undefined between the listing and this read: it is simply not there.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return result

    return _call(uri, read)


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    return conn.lookupByUUIDString(str(uuid))


def domain_facts(uri: str, uuid: str) -> DomainFacts:
    """One domain's inventory facts; HypervisorError.no_such_domain if it is gone."""

    def read(conn: libvirt.virConnect) -> DomainFacts:
        dom = _lookup(conn, uuid)
        snapshots = dom.snapshotNum()
        return _facts(dom, bool(dom.autostart()), bool(dom.hasManagedSaveImage()), snapshots)

    return _call(uri, read)


def domain_exists(uri: str, uuid: str) -> bool:
    try:
        _call(uri, lambda conn: _lookup(conn, uuid))
    except HypervisorError as exc:
        if exc.no_such_domain:
            return False
        raise
    return True


def domain_detail(uri: str, uuid: str, secure: bool = False) -> DomainDetail:
    """Live facts for the detail page, with the XML (SECURE only when asked)."""

    def read(conn: libvirt.virConnect) -> DomainDetail:
        dom = _lookup(conn, uuid)
        facts = _facts(
            dom,
            bool(dom.autostart()),
            bool(dom.hasManagedSaveImage()),
            dom.snapshotNum(),
        )
        flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        if dom.isActive():
            max_vcpus = dom.maxVcpus()
        else:
            max_vcpus = dom.vcpusFlags(
                libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
        return DomainDetail(
            facts=facts,
            os_type=dom.OSType(),
            max_vcpus=max_vcpus,
            xml=dom.XMLDesc(flags),
        )

    return _call(uri, read)


# --- lifecycle ---------------------------------------------------------------------


def _on_domain(uri: str, uuid: str, action: Callable[[libvirt.virDomain], object]):
    return _call(uri, lambda conn: action(_lookup(conn, uuid)))


def start(uri: str, uuid: str, paused: bool = False) -> None:
    """Boot a defined domain (virDomainCreateWithFlags), optionally paused."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    _on_domain(uri, uuid, lambda dom: dom.createWithFlags(flags))


def shutdown(uri: str, uuid: str) -> None:
    """Ask the guest to power off; returns before it has."""
    _on_domain(uri, uuid, lambda dom: dom.shutdown())


def destroy(uri: str, uuid: str) -> None:
    """Power the domain off at once, like pulling the plug."""
    _on_domain(uri, uuid, lambda dom: dom.destroy())


def reboot(uri: str, uuid: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.reboot(0))


def suspend(uri: str, uuid: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.suspend())


def resume(uri: str, uuid: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.resume())


def set_autostart(uri: str, uuid: str, enabled: bool) -> None:
    _on_domain(uri, uuid, lambda dom: dom.setAutostart(1 if enabled else 0))


def undefine(
    uri: str, uuid: str, managed_save: bool = False, snapshots_metadata: bool = False
) -> None:
    """Remove the persistent configuration; an active domain goes on as transient."""
    flags = 0
    if managed_save:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    if snapshots_metadata:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    _on_domain(uri, uuid, lambda dom: dom.undefineFlags(flags))


def xml_of(uri: str, uuid: str, inactive: bool = False) -> str:
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return _on_domain(uri, uuid, lambda dom: dom.XMLDesc(flags))


def define_xml(uri: str, xml: str) -> str:
    """Define (or redefine) a persistent domain; returns its UUID."""
    return _call(uri, lambda conn: conn.defineXML(xml).UUIDString())


def create_xml(uri: str, xml: str, paused: bool = False) -> str:
    """Start a transient domain; returns its UUID."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    return _call(uri, lambda conn: conn.createXML(xml, flags).UUIDString())


def managed_save(uri: str, uuid: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.managedSave(0))


def create_snapshot(uri: str, uuid: str, xml: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.snapshotCreateXML(xml, 0))


def rename(uri: str, uuid: str, new_name: str) -> None:
    _on_domain(uri, uuid, lambda dom: dom.rename(new_name, 0))


# --- events ------------------------------------------------------------------------

_event_loop_started = False


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread.

    Must happen before any connection is opened, or that connection delivers no events.
    """
    global _event_loop_started
    if _event_loop_started:
        return
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _event_loop_started = True


LifecycleCallback = Callable[[str, str], None]  # (uri, domain uuid)


def watch_lifecycle(uri: str, on_event: LifecycleCallback) -> int:
    """Call `on_event(uri, uuid)` for every lifecycle event of every domain on `uri`.

    The callback runs in the event-loop thread: it must only hand the work on.
    Returns the registration id; the registration lives as long as the connection.
    """

    def callback(_conn, dom, _event, _detail, _opaque):
        on_event(uri, dom.UUIDString())

    return _call(
        uri,
        lambda conn: conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, callback, None
        ),
    )


def is_alive(uri: str) -> bool:
    """Whether this process's connection to `uri` is open and answering."""
    with _lock:
        conn = _connections.get(uri)
    if conn is None:
        return False
    try:
        return bool(conn.isAlive()) and bool(conn.getHostname())
    except libvirt.libvirtError:
        return False
