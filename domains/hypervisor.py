"""The only module that talks to libvirt.

It keeps one connection per host URI per process, opened on first use (so after Celery
forks) and opened again when it breaks. It returns plain dataclasses and raises
`HypervisorError` carrying libvirt's code and message and whether a retry can help.
Domains are always addressed by UUID: names are labels and can change.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial

import libvirt
from django.conf import settings
from django.utils.translation import gettext, gettext_noop

from . import domxml

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we carry them in exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

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
    def password_unsupported(self) -> bool:
        """QEMU will not set a password on a display that started without one."""
        return self.code == libvirt.VIR_ERR_INTERNAL_ERROR and "set_password" in self.message

    @property
    def no_such_volume(self) -> bool:
        return self.code == libvirt.VIR_ERR_NO_STORAGE_VOL

    @property
    def host_unreachable(self) -> bool:
        return self.code in _CONNECTION_CODES


_HINTS = {
    libvirt.VIR_ERR_OPERATION_INVALID: gettext_noop(
        "The VM's state does not allow this now; reload the page to see its current state."
    ),
    libvirt.VIR_ERR_NO_DOMAIN: gettext_noop("The VM no longer exists on this host."),
    libvirt.VIR_ERR_NO_CONNECT: gettext_noop(
        "The host does not answer; try again when it is back."
    ),
    libvirt.VIR_ERR_SYSTEM_ERROR: gettext_noop(
        "The host does not answer; try again when it is back."
    ),
    libvirt.VIR_ERR_RPC: gettext_noop("The connection to the host broke; try again."),
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED: gettext_noop("This host's hypervisor cannot do this."),
    libvirt.VIR_ERR_NO_SUPPORT: gettext_noop("This host's hypervisor cannot do this."),
    libvirt.VIR_ERR_XML_ERROR: gettext_noop("Correct the XML definition and try again."),
    libvirt.VIR_ERR_XML_INVALID_SCHEMA: gettext_noop(
        "The XML does not fit libvirt's schema; nothing was changed. Correct it and try again."
    ),
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
#
# One host that hangs (a stopped daemon, a port that accepts and never answers) must not
# stall the others: every open and every call is bounded, each URI has a lock of its own,
# and a host that just failed to answer is not asked again for a moment. The bounds are
# kept by running the libvirt call in a daemon thread and giving up waiting for it; the
# thread ends when libvirt does (keepalive closes a dead connection), and a connection that
# arrives after we gave up is closed then.


class _Unanswered(Exception):
    """A bounded libvirt call did not return in time (internal to this section)."""


def _bounded(what: str, fn: Callable[[], object], seconds: float | None):
    """`fn()`, or `_Unanswered` once `seconds` have passed (None: wait as long as it takes)."""
    if seconds is None:
        return fn()
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"libvirt-{what}", daemon=True).start()
    if not done.wait(seconds):
        raise _Unanswered(what)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _connect_seconds() -> float:
    return float(settings.VMPANEL_LIBVIRT_CONNECT_SECONDS)


def _call_seconds() -> float:
    return float(settings.VMPANEL_LIBVIRT_CALL_SECONDS)


def _unanswered_error(seconds: float) -> HypervisorError:
    return HypervisorError(
        gettext("The host did not answer within %(s)s s.") % {"s": f"{seconds:g}"},
        code=libvirt.VIR_ERR_OPERATION_TIMEOUT,
        retryable=True,
    )


def _close_later(conn: libvirt.virConnect) -> None:
    """Close `conn` without waiting: closing a connection to a hung host may hang too."""

    def close() -> None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    threading.Thread(target=close, name="libvirt-close", daemon=True).start()


def _open(uri: str) -> libvirt.virConnect:
    """A new connection to `uri`, within VMPANEL_LIBVIRT_CONNECT_SECONDS, with keepalive.

    Keepalive needs libvirt's event loop running in this process before the open; with it,
    a connection whose host stops answering is closed by libvirt within a few seconds, which
    ends any call still waiting on it. Should the open outlast our patience, the connection
    (and an ssh process behind it) is closed as soon as it arrives.
    """
    start_event_loop()
    abandoned = threading.Event()
    lock = threading.Lock()

    def open_it() -> libvirt.virConnect:
        conn = libvirt.open(uri)
        with lock:
            if abandoned.is_set():
                _close_later(conn)
        return conn

    seconds = _connect_seconds()
    try:
        conn = _bounded("open", open_it, seconds)
    except _Unanswered:
        with lock:
            abandoned.set()
        log.warning("connection to %s not made within %s s; given up", uri, seconds)
        raise _unanswered_error(seconds) from None
    except libvirt.libvirtError as exc:
        err = _wrap(exc)
        # An unreachable host is worth another try later, whatever code it came with.
        err.retryable = True
        err.code = err.code if err.code is not None else libvirt.VIR_ERR_NO_CONNECT
        raise err from None
    try:
        conn.setKeepAlive(
            settings.VMPANEL_LIBVIRT_KEEPALIVE_SECONDS, settings.VMPANEL_LIBVIRT_KEEPALIVE_COUNT
        )
    except libvirt.libvirtError:
        pass  # not every driver supports keepalive (the in-process test driver)
    return conn


_connections: dict[str, libvirt.virConnect] = {}
# What each open connection's host can do, with the connection it was probed on: it goes
# when that connection goes (a re-opened connection may reach an upgraded daemon).
_capabilities: dict[str, tuple[libvirt.virConnect, HostCapabilities]] = {}
_locks: dict[str, threading.Lock] = {}  # one per URI: a hung host holds only its own
_locks_lock = threading.Lock()
# URI → monotonic time before which a host that did not answer is not asked again.
_quiet_until: dict[str, float] = {}
QUIET_SECONDS = 10.0


def _uri_lock(uri: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(uri, threading.Lock())


def connection(uri: str) -> libvirt.virConnect:
    """The process's connection to `uri`, opened or re-opened as needed (bounded)."""
    with _uri_lock(uri):
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
    _capabilities.pop(uri, None)
    conn = _connections.pop(uri, None)
    if conn is not None:
        _close_later(conn)


def forget(uri: str) -> None:
    """Close and forget the connection to `uri` (after it broke, or in tests)."""
    with _locks_lock:
        _quiet_until.pop(uri, None)
    _drop(uri)


def forget_all() -> None:
    for uri in list(_connections):
        forget(uri)


def _call(
    uri: str,
    fn: Callable[[libvirt.virConnect], object],
    reconnect: bool = True,
    bounded: bool = True,
):
    """Run `fn(conn)`, reconnecting once if the connection turned out to be broken.

    Bounded by VMPANEL_LIBVIRT_CALL_SECONDS, after which the host counts as not answering
    and is not asked again for QUIET_SECONDS. `reconnect=False, bounded=False` for long jobs
    (save, restore, migrate): they take as long as they take (keepalive still ends them
    when the host dies), and a connection that broke after the job began must not run it
    twice.
    """
    if time.monotonic() < _quiet_until.get(uri, 0):
        raise HypervisorError(
            gettext("The host did not answer a moment ago; try again shortly."),
            code=libvirt.VIR_ERR_OPERATION_TIMEOUT,
            retryable=True,
        )
    for attempt in (1, 2):
        conn = connection(uri)
        try:
            return _bounded("call", partial(fn, conn), _call_seconds() if bounded else None)
        except _Unanswered:
            with _locks_lock:
                _quiet_until[uri] = time.monotonic() + QUIET_SECONDS
            if _connections.get(uri) is conn:
                _drop(uri)
            log.warning("%s did not answer within %s s", uri, _call_seconds())
            raise _unanswered_error(_call_seconds()) from None
        except libvirt.libvirtError as exc:
            err = _wrap(exc)
            if reconnect and attempt == 1 and err.code in _CONNECTION_CODES:
                forget(uri)
                continue
            raise err from None
    raise AssertionError("unreachable")


def ping(uri: str) -> None:
    """Raise HypervisorError unless the host answers now."""
    _call(uri, lambda conn: conn.getHostname())


def check_uri(uri: str) -> None:
    """Open a fresh connection to `uri` and close it; raises HypervisorError if not.
    Bounded like every call."""
    conn = _open(uri)
    try:
        _bounded("check", conn.getHostname, _call_seconds())
    except _Unanswered:
        raise _unanswered_error(_call_seconds()) from None
    except libvirt.libvirtError as exc:
        raise _wrap(exc) from None
    finally:
        _close_later(conn)


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
    # The physical CPU each vCPU runs on now (the guide's vcpus()); empty when inactive.
    vcpu_cpus: Mapping[int, int] = field(default_factory=dict)
    disks: tuple[domxml.DiskView, ...] = ()
    # Each disk's size as the guest sees it (bytes), by target; where the host tells.
    disk_sizes: tuple[tuple[str, int], ...] = ()
    nics: tuple[domxml.NicView, ...] = ()
    # The IP addresses of a running guest by MAC ("10.0.0.5/24"), from the host's DHCP
    # leases or, failing those, the guest agent; empty where neither tells.
    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()


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


# --- capabilities: what a host can do, probed rather than guessed from its driver ----------


@dataclass(frozen=True)
class HostCapabilities:
    """What a host can do, as its libvirt answered when this process connected.

    Read from the capabilities and domain capabilities documents, and by "trying the call"
    where no document says: libvirt drivers check a call's flags (virCheckFlags) before
    they read its XML, so a call with the flag in question and a document that is not XML
    answers "unsupported flags" (VIR_ERR_INVALID_ARG) where the driver does not take the
    flag and an XML error where it does. Nothing is made either way.

    The defaults are what a host that was never probed is taken to offer: nothing, so that
    code falls back to what always works.
    """

    driver: str = ""  # virConnectGetType: "QEMU", "TEST" …
    hypervisor_version: str = ""
    libvirt_version: str = ""  # the daemon's
    domain_types: tuple[str, ...] = ()  # <domain type=…> values the host runs, first first
    autodestroy: bool = False  # createXML takes VIR_DOMAIN_START_AUTODESTROY
    start_paused: bool = False  # createXML (and create) take VIR_DOMAIN_START_PAUSED
    # The three below are asked of a domain: None on a host that had none to ask.
    bulk_stats: tuple[str, ...] | None = None  # getAllDomainStats groups the host answers
    external_snapshots: bool | None = None  # DISK_ONLY (external) snapshots
    console: bool | None = None  # virDomainOpenConsole exists (serial console streams)
    migration: bool = False  # the capabilities list <migration_features>
    graphics: tuple[str, ...] = ()  # vnc, spice …; () where domain capabilities are unknown

    def to_dict(self) -> dict:
        """Plain JSON: tuples become lists."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            for value in (getattr(self, f.name),)
        }

    @classmethod
    def from_dict(cls, data: Mapping | None) -> HostCapabilities:
        """The inverse of `to_dict`; keys it does not know are ignored, missing keys (a row
        stored by an older panel, or never probed) take the defaults."""
        data = data or {}
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


# getAllDomainStats groups by libvirt's own names (as virsh domstats --cpu-total …), those
# this binding knows. Measured on libvirt 9.0: the test driver answers "state" and
# "iothread" (the latter empty); QEMU 7.2 all eleven for a running domain, all but
# "iothread", "dirtyrate" and "vm" for an inactive one.
_STATS_GROUPS: tuple[tuple[str, int], ...] = tuple(
    (name, getattr(libvirt, constant))
    for name, constant in (
        ("state", "VIR_DOMAIN_STATS_STATE"),
        ("cpu-total", "VIR_DOMAIN_STATS_CPU_TOTAL"),
        ("balloon", "VIR_DOMAIN_STATS_BALLOON"),
        ("vcpu", "VIR_DOMAIN_STATS_VCPU"),
        ("interface", "VIR_DOMAIN_STATS_INTERFACE"),
        ("block", "VIR_DOMAIN_STATS_BLOCK"),
        ("perf", "VIR_DOMAIN_STATS_PERF"),
        ("iothread", "VIR_DOMAIN_STATS_IOTHREAD"),
        ("memory", "VIR_DOMAIN_STATS_MEMORY"),
        ("dirtyrate", "VIR_DOMAIN_STATS_DIRTYRATE"),
        ("vm", "VIR_DOMAIN_STATS_VM"),
    )
    if hasattr(libvirt, constant)
)

# Not XML at all, so no driver can make a domain or a snapshot of it, whatever the flags.
_PROBE_DOCUMENT = ""
# A device alias no domain can have (user aliases start with "ua-"): a console probe that
# reaches the driver finds nothing to attach to.
_PROBE_CONSOLE = "vmpanel-probe-no-such-device"
# The answers of a driver that took the flags and went on to read the document.
_XML_ERROR_CODES = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_XML_INVALID_SCHEMA,
}


def _takes_flags(what: str, call: Callable[[], object], undo: Callable[[object], None]) -> bool:
    """Whether the driver accepts the flags `call` passes along with `_PROBE_DOCUMENT`.

    True when it answers with an XML error (it took the flags, then failed to read the
    document). "unsupported flags" (VIR_ERR_INVALID_ARG), a call the driver lacks
    (VIR_ERR_NO_SUPPORT) or any other answer counts as no: the panel then takes the path
    that works everywhere. A broken connection is raised, so nothing false is cached.
    """
    try:
        made = call()
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code in _CONNECTION_CODES:
            raise
        if code not in _XML_ERROR_CODES and code != libvirt.VIR_ERR_INVALID_ARG:
            log.info("capability probe %s: unexpected answer %s: %s", what, code, exc)
        return code in _XML_ERROR_CODES
    # No driver makes anything of a document that is not XML; should one ever, undo it.
    log.warning("capability probe %s made something of an empty document; undoing it", what)
    try:
        undo(made)
    except libvirt.libvirtError:
        pass
    return True


def _answers_stats(conn: libvirt.virConnect, dom: libvirt.virDomain, group: int) -> bool:
    """Whether the host answers the statistics group `group` for `dom`.

    ENFORCE_STATS makes libvirt refuse a group it cannot fill instead of leaving it out;
    NOWAIT keeps a domain busy with a job (a migration, a save) from holding the probe up.
    Asked of one domain, so the probe costs one domain's statistics however many the host
    runs. Not asked of a host without domains: QEMU checks the groups against each
    domain's emulator, so with no domain it accepts every group, even unknown ones.
    """
    flags = (
        libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
        | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    )
    try:
        conn.domainListGetStats([dom], group, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _CONNECTION_CODES:
            raise
        return False  # VIR_ERR_ARGUMENT_UNSUPPORTED: "Stats types bits … are not supported"
    return True


def _has_console(conn: libvirt.virConnect, dom: libvirt.virDomain) -> bool:
    """Whether the driver implements virDomainOpenConsole, asked with a device that does
    not exist: a driver that has it answers "cannot find character device" (or "not
    running" for an inactive domain); one that lacks it, VIR_ERR_NO_SUPPORT."""
    stream = conn.newStream(0)
    try:
        dom.openConsole(_PROBE_CONSOLE, stream, 0)
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code in _CONNECTION_CODES:
            raise
        return code not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED)
    finally:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
    return True


def _probe_domain(conn: libvirt.virConnect) -> libvirt.virDomain | None:
    """A domain to ask what only a domain can answer, or None on a host without domains.

    A running one where there is one: QEMU decides which statistics groups it answers from
    the domain's running emulator (for an inactive domain it refuses "iothread",
    "dirtyrate" and "vm", which a running QEMU 7.2 answers). The questions change nothing
    on it (see the probes).
    """
    for flags in (
        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE,
        libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE,
    ):
        domains = conn.listAllDomains(flags)
        if domains:
            return domains[0]
    return None


def _probe(conn: libvirt.virConnect) -> HostCapabilities:
    """Ask the host behind `conn` everything `HostCapabilities` holds (about 20 calls)."""
    caps = domxml.read_capabilities(conn.getCapabilities())
    try:
        graphics = domxml.read_domain_capabilities(
            conn.getDomainCapabilities(None, None, None, None, 0)
        ).graphics
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _CONNECTION_CODES:
            raise
        graphics = ()  # the test driver has no domain capabilities (VIR_ERR_NO_SUPPORT)

    def create(flags: int) -> Callable[[], object]:
        return lambda: conn.createXML(_PROBE_DOCUMENT, flags)

    def destroy(dom: libvirt.virDomain) -> None:
        dom.destroy()

    dom = _probe_domain(conn)
    bulk_stats: tuple[str, ...] | None = None
    external_snapshots = console = None
    if dom is not None:
        bulk_stats = tuple(name for name, bit in _STATS_GROUPS if _answers_stats(conn, dom, bit))
        external_snapshots = _takes_flags(
            "DISK_ONLY snapshot",
            lambda: dom.snapshotCreateXML(
                _PROBE_DOCUMENT, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            ),
            lambda snapshot: snapshot.delete(0),
        )
        console = _has_console(conn, dom)
    return HostCapabilities(
        driver=conn.getType(),
        hypervisor_version=_version(conn.getVersion()),
        libvirt_version=_version(conn.getLibVersion()),
        domain_types=caps.domain_types,
        autodestroy=_takes_flags(
            "START_AUTODESTROY", create(libvirt.VIR_DOMAIN_START_AUTODESTROY), destroy
        ),
        start_paused=_takes_flags("START_PAUSED", create(libvirt.VIR_DOMAIN_START_PAUSED), destroy),
        bulk_stats=bulk_stats,
        external_snapshots=external_snapshots,
        console=console,
        migration=caps.migration,
        graphics=graphics,
    )


def capabilities(uri: str) -> HostCapabilities:
    """What the host at `uri` can do, probed once per connection of this process.

    The answer is kept with the connection and dropped with it (`forget`, or a broken
    connection re-opened): the next call after that probes again. The probes change
    nothing on the host; see `HostCapabilities`.
    """
    conn = connection(uri)
    with _locks_lock:
        cached = _capabilities.get(uri)
        if cached is not None and cached[0] is conn:
            return cached[1]
    probed_on, caps = _call(uri, lambda c: (c, _probe(c)))
    with _locks_lock:
        # Only while that connection is still the process's: a dropped one took its
        # answer with it.
        if _connections.get(uri) is probed_on:
            _capabilities[uri] = (probed_on, caps)
    return caps


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


def reason_text(state: int, reason: int) -> str:
    """Why the domain is in `state`, in libvirt's words ("migration", "user" …)."""
    return _STATE_REASONS.get(state, {}).get(reason, "unknown")


def _facts(
    dom: libvirt.virDomain,
    autostart: bool,
    managed_save: bool,
    snapshots: int,
    persistent: bool | None = None,
    listed_state: tuple[int, int] | None = None,
) -> DomainFacts:
    """`persistent` and `listed_state` (state, reason) when a bulk read already said them;
    else they are asked of this domain."""
    state, max_mem, mem, vcpus, _cpu_time = dom.info()
    if listed_state is not None and listed_state[0] == state:
        reason = listed_state[1]
    else:  # not listed, or changed since the listing: the reason of the state just read
        _state, reason = dom.state()
    if persistent is None:
        persistent = bool(dom.isPersistent())
    dom_id = dom.ID()
    return DomainFacts(
        uuid=dom.UUIDString(),
        name=dom.name(),
        id=dom_id if dom_id >= 0 else None,
        state=state,
        state_reason=reason_text(state, reason),
        vcpus=vcpus,
        memory_kib=mem,
        max_memory_kib=max_mem,
        persistent=persistent,
        autostart=autostart,
        has_managed_save=managed_save,
        snapshot_count=snapshots,
    )


def list_domains(uri: str) -> list[DomainFacts]:
    """Every domain on the host, with what the inventory stores.

    The yes/no facts come from a few filtered listAllDomains calls, and every domain's
    state and reason from one getAllDomainStats call (where the host has it), instead of
    one call per domain each: a full read of a large host costs about one call per domain
    (its counts: `info`).
    """

    def read(conn: libvirt.virConnect) -> list[DomainFacts]:
        def uuids(flags: int) -> set[str]:
            return {d.UUIDString() for d in conn.listAllDomains(flags)}

        # Every domain first, then what is true of them: one defined in between is read
        # next time, rather than listed without its facts (say, as not persistent).
        domains = conn.listAllDomains(0)
        autostart = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        managed = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
        snap = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)
        persistent = uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
        listed: dict[str, tuple[int, int]] = {}
        try:
            for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
                listed[dom.UUIDString()] = (stats["state.state"], stats["state.reason"])
        except (libvirt.libvirtError, KeyError):
            listed = {}  # no bulk statistics here: each domain is asked its state
        result = []
        for dom in domains:
            uuid = dom.UUIDString()
            try:
                snapshots = dom.snapshotNum() if uuid in snap else 0
                result.append(
                    _facts(
                        dom,
                        uuid in autostart,
                        uuid in managed,
                        snapshots,
                        persistent=uuid in persistent,
                        listed_state=listed.get(uuid),
                    )  # fmt: skip
                )
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


# States for judging a migration's outcome (rules.migration_outcome) without libvirt there.
STATE_RUNNING = libvirt.VIR_DOMAIN_RUNNING
STATE_BLOCKED = libvirt.VIR_DOMAIN_BLOCKED
STATE_PAUSED = libvirt.VIR_DOMAIN_PAUSED
ACTIVE_STATES = frozenset({STATE_RUNNING, STATE_PAUSED, STATE_BLOCKED})
# Paused for these reasons, a guest runs nowhere yet: an incoming copy waiting for memory,
# or a source that sent its memory and waits for confirmation. Paused by its user (or an
# I/O error), it is a guest that arrived.
IN_TRANSIT_PAUSES = frozenset(
    {
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
        libvirt.VIR_DOMAIN_PAUSED_UNKNOWN,
    }
)


@dataclass(frozen=True)
class GuestSighting:
    """What one host says of a guest, for judging a migration's outcome: whether it holds
    it, in which state and why (libvirt's VIR_DOMAIN_* numbers), and whether a libvirt job
    (the migration itself, or its recovery) still runs on it there."""

    present: bool
    state: int = libvirt.VIR_DOMAIN_NOSTATE
    reason: int = 0
    job: bool = False


def sighting(uri: str, uuid: str) -> GuestSighting:
    """The guest as `uri` sees it now; HypervisorError when the host does not answer."""

    def read(conn: libvirt.virConnect) -> GuestSighting:
        try:
            dom = _lookup(conn, uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return GuestSighting(present=False)
            raise
        state, reason = dom.state()
        try:
            stats = dom.jobStats(0)
            job = bool(stats) and stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE
        except libvirt.libvirtError as exc:
            # The guest left between the two calls, or the driver keeps no jobs.
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return GuestSighting(present=False)
            job = False
        return GuestSighting(present=True, state=state, reason=reason, job=job)

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
        vcpu_cpus = {}
        if dom.isActive():
            max_vcpus = dom.maxVcpus()
            try:
                vcpu_cpus = {int(n): int(cpu) for n, _state, _time, cpu in dom.vcpus()[0]}
            except libvirt.libvirtError:
                pass  # not every driver tells
        else:
            max_vcpus = dom.vcpusFlags(
                libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
        xml = dom.XMLDesc(flags)
        disks, nics = domxml.device_views(xml)
        return DomainDetail(
            facts=facts,
            os_type=dom.OSType(),
            max_vcpus=max_vcpus,
            xml=xml,
            vcpu_cpus=vcpu_cpus,
            disks=disks,
            disk_sizes=_disk_sizes(dom, disks),
            nics=nics,
            addresses=_addresses(dom) if dom.isActive() and nics else (),
        )

    return _call(uri, read)


def _disk_sizes(dom: libvirt.virDomain, disks) -> tuple[tuple[str, int], ...]:
    sizes = []
    for disk in disks:
        if not disk.source or disk.device not in ("disk", "lun"):
            continue
        try:
            sizes.append((disk.target, dom.blockInfo(disk.target)[0]))
        except libvirt.libvirtError:
            pass  # a file the host cannot read now: no size shown
    return tuple(sizes)


def _addresses(dom: libvirt.virDomain) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """IP addresses by MAC: the host's DHCP leases first, then the guest agent."""
    for source in (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    ):
        try:
            found = dom.interfaceAddresses(source)
        except libvirt.libvirtError:
            continue
        by_mac = {
            (nic.get("hwaddr") or "").lower(): tuple(
                f"{a['addr']}/{a['prefix']}" for a in nic.get("addrs") or ()
            )
            for nic in (found or {}).values()
        }
        if any(by_mac.values()):
            return tuple(sorted(by_mac.items()))
    return ()


# --- lifecycle ---------------------------------------------------------------------


def _on_domain(
    uri: str, uuid: str, action: Callable[[libvirt.virDomain], object], reconnect: bool = True
):
    """Read something of the domain `uuid` (bounded, like every read)."""
    return _call(uri, lambda conn: action(_lookup(conn, uuid)), reconnect)


def _act(
    uri: str, uuid: str, action: Callable[[libvirt.virDomain], object], reconnect: bool = True
):
    """Change the domain `uuid`: not bounded, since a change takes as long as it takes (a
    start restoring a large managed-save image, a save); keepalive still ends it when the
    host stops answering. Changes run in workers, never in a web request."""
    return _call(uri, lambda conn: action(_lookup(conn, uuid)), reconnect, bounded=False)


def start(uri: str, uuid: str, paused: bool = False) -> None:
    """Boot a defined domain (virDomainCreateWithFlags), optionally paused."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    _act(uri, uuid, lambda dom: dom.createWithFlags(flags))


def shutdown(uri: str, uuid: str) -> None:
    """Ask the guest to power off; returns before it has."""
    _act(uri, uuid, lambda dom: dom.shutdown())


def destroy(uri: str, uuid: str) -> None:
    """Power the domain off at once, like pulling the plug."""
    _act(uri, uuid, lambda dom: dom.destroy())


def reboot(uri: str, uuid: str) -> None:
    _act(uri, uuid, lambda dom: dom.reboot(0))


def reset(uri: str, uuid: str) -> None:
    """Reset the guest at once, like a PC's reset button (virDomainReset): no shutdown,
    unsaved data in the guest is lost, the domain stays running."""
    _act(uri, uuid, lambda dom: dom.reset(0))


def suspend(uri: str, uuid: str) -> None:
    _act(uri, uuid, lambda dom: dom.suspend())


def resume(uri: str, uuid: str) -> None:
    _act(uri, uuid, lambda dom: dom.resume())


def set_autostart(uri: str, uuid: str, enabled: bool) -> None:
    _act(uri, uuid, lambda dom: dom.setAutostart(1 if enabled else 0))


def undefine(
    uri: str, uuid: str, managed_save: bool = False, snapshots_metadata: bool = False
) -> None:
    """Remove the persistent configuration; an active domain goes on as transient."""
    flags = 0
    if managed_save:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    if snapshots_metadata:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    _act(uri, uuid, lambda dom: dom.undefineFlags(flags))


def xml_of(uri: str, uuid: str, inactive: bool = False, secure: bool = False) -> str:
    """The domain's XML: the running one, or with `inactive` the saved configuration (what
    the next boot uses). `secure` includes secrets such as graphics passwords."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    if secure:
        flags |= libvirt.VIR_DOMAIN_XML_SECURE
    return _on_domain(uri, uuid, lambda dom: dom.XMLDesc(flags))


def define_xml(uri: str, xml: str, validate: bool = False) -> str:
    """Define (or redefine) a persistent domain; returns its UUID.

    With `validate`, libvirt checks the XML against its schema first
    (VIR_DOMAIN_DEFINE_VALIDATE) and refuses what does not fit, saying where.
    """
    if not validate:
        return _call(uri, lambda conn: conn.defineXML(xml).UUIDString(), bounded=False)
    flags = libvirt.VIR_DOMAIN_DEFINE_VALIDATE
    return _call(uri, lambda conn: conn.defineXMLFlags(xml, flags).UUIDString(), bounded=False)


def create_xml(uri: str, xml: str, paused: bool = False) -> str:
    """Start a transient domain; returns its UUID."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    return _call(uri, lambda conn: conn.createXML(xml, flags).UUIDString(), bounded=False)


def managed_save(uri: str, uuid: str) -> None:
    _act(uri, uuid, lambda dom: dom.managedSave(0))


def managed_save_remove(uri: str, uuid: str) -> None:
    _act(uri, uuid, lambda dom: dom.managedSaveRemove(0))


# --- save, restore and long jobs ---------------------------------------------------


def save(uri: str, uuid: str, path: str) -> None:
    """Save a running or paused domain's memory to `path` (as the host sees it).

    Blocks until done; the domain is shut off afterwards. Disks are not saved.
    """
    _act(uri, uuid, lambda dom: dom.saveFlags(path, None, 0), reconnect=False)


def restore(uri: str, path: str) -> None:
    """Start a domain from a saved image; its disks must be as they were at save time."""
    _call(uri, lambda conn: conn.restoreFlags(path, None, 0), reconnect=False, bounded=False)


@dataclass(frozen=True)
class SavedImageFacts:
    path: str
    name: str
    uuid: str
    memory_kib: int


def saved_image(uri: str, path: str) -> SavedImageFacts:
    """What a saved image holds (libvirt's saveImageGetXMLDesc), read through domxml."""
    xml = _call(uri, lambda conn: conn.saveImageGetXMLDesc(path, 0))
    facts = domxml.identity(xml)
    return SavedImageFacts(path=path, name=facts.name, uuid=facts.uuid, memory_kib=facts.memory_kib)


@dataclass(frozen=True)
class JobProgress:
    """A long job as libvirt reports it (virDomainGetJobStats); sizes in bytes."""

    operation: str
    elapsed_ms: int
    data_total: int
    data_processed: int
    data_remaining: int
    memory_bps: int
    disk_total: int
    disk_processed: int

    @property
    def percent(self) -> int:
        total = self.data_total or (self.data_processed + self.data_remaining)
        if not total:
            return 0
        return min(99, int(100 * self.data_processed / total))


_JOB_OPERATIONS = {
    0: "unknown",
    1: "start",
    2: "save",
    3: "restore",
    4: "migration in",
    5: "migration out",
    6: "snapshot",
    7: "snapshot revert",
    8: "dump",
    9: "backup",
}


def job_progress(uri: str, uuid: str) -> JobProgress | None:
    """The domain's current job, or None when there is none or the driver cannot tell."""

    def read(dom: libvirt.virDomain) -> JobProgress | None:
        stats = dom.jobStats(0)
        if not stats or stats.get("type", 0) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return JobProgress(
            operation=_JOB_OPERATIONS.get(stats.get("operation", 0), "unknown"),
            elapsed_ms=stats.get("time_elapsed", 0),
            data_total=stats.get("data_total", 0),
            data_processed=stats.get("data_processed", 0),
            data_remaining=stats.get("data_remaining", 0),
            memory_bps=stats.get("memory_bps", 0),
            disk_total=stats.get("disk_total", 0),
            disk_processed=stats.get("disk_processed", 0),
        )

    try:
        return _on_domain(uri, uuid, read)
    except HypervisorError as exc:
        if exc.code in (
            libvirt.VIR_ERR_NO_SUPPORT,
            libvirt.VIR_ERR_OPERATION_INVALID,
            libvirt.VIR_ERR_NO_DOMAIN,  # a restore that has not made its domain yet
        ):
            return None
        raise


def abort_job(uri: str, uuid: str) -> None:
    """Cancel the domain's running job (save, restore, migration)."""
    _act(uri, uuid, lambda dom: dom.abortJob())


# --- storage (what migration needs to know and make) -------------------------------


@dataclass(frozen=True)
class DiskFacts:
    target: str
    device: str
    source: str
    format: str
    capacity_bytes: int  # the guest's view: the size the copy must have
    allocation_bytes: int  # what it takes on the host: what the copy will need


def domain_disks(uri: str, uuid: str) -> list[DiskFacts]:
    """The domain's file- or block-backed disks with their virtual sizes."""

    def read(dom: libvirt.virDomain) -> list[DiskFacts]:
        result = []
        for disk in domxml.disks(dom.XMLDesc(0)):
            if not disk.source or disk.device == "cdrom" or disk.readonly:
                continue
            capacity, allocation, _physical = dom.blockInfo(disk.target)
            result.append(
                DiskFacts(disk.target, disk.device, disk.source, disk.format, capacity, allocation)
            )
        return result

    return _on_domain(uri, uuid, read)


def volume_exists(uri: str, path: str) -> bool:
    def read(conn: libvirt.virConnect) -> bool:
        try:
            conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise
        return True

    return _call(uri, read)


def _private_paths(dom: libvirt.virDomain, shareable: bool = True) -> frozenset[str]:
    """`domxml.private_paths` of the running definition and, for a permanent domain, of
    the saved one too (what its next boot takes); empty for a domain gone meanwhile."""
    try:
        paths = domxml.private_paths(dom.XMLDesc(0), shareable)
        if dom.isActive() and dom.isPersistent():
            inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            paths |= domxml.private_paths(inactive, shareable)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return frozenset()
        raise
    return paths


def private_paths_of(uri: str, uuid: str, shareable: bool = True) -> frozenset[str]:
    """The host paths the domain keeps to itself (its disks, logs, sockets …); without
    `shareable`, not its disks shared on purpose."""
    return _on_domain(uri, uuid, lambda dom: _private_paths(dom, shareable))


def paths_in_use(uri: str, exclude_uuid: str = "") -> frozenset[str]:
    """The host paths the host's other domains keep to themselves (`domxml.
    private_paths`): what no further domain may name, or it reaches their data. One XML
    read per domain of the host."""

    def read(conn: libvirt.virConnect) -> frozenset[str]:
        paths: set[str] = set()
        for dom in conn.listAllDomains(0):
            if dom.UUIDString() != str(exclude_uuid):
                paths |= _private_paths(dom)
        return frozenset(paths)

    return _call(uri, read)


def pool_paths(uri: str) -> tuple[str, ...]:
    """The target folders of the host's active storage pools."""

    def read(conn: libvirt.virConnect) -> tuple[str, ...]:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        return tuple(p for p in (domxml.pool_target_path(pool.XMLDesc(0)) for pool in pools) if p)

    return _call(uri, read)


def platforms(uri: str) -> tuple[domxml.Platform, ...]:
    """Every domain type and architecture the host runs, with emulators and machines."""
    return _call(uri, lambda conn: domxml.read_platforms(conn.getCapabilities()))


def _pool_for_dir(conn: libvirt.virConnect, directory: str) -> libvirt.virStoragePool | None:
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        if domxml.pool_target_path(pool.XMLDesc(0)) == directory.rstrip("/"):
            return pool
    return None


def pool_free_bytes(uri: str, path: str) -> int | None:
    """Free bytes in the active pool holding the folder of `path`; None if no pool does."""
    directory = path.rsplit("/", 1)[0]

    def read(conn: libvirt.virConnect) -> int | None:
        pool = _pool_for_dir(conn, directory)
        if pool is None:
            return None
        pool.refresh(0)
        return pool.info()[3]

    return _call(uri, read)


def create_volume(uri: str, path: str, capacity_bytes: int, fmt: str) -> None:
    """Create an empty image at `path` through the host's storage API (copy-storage target)."""
    directory, name = path.rsplit("/", 1)

    def make(conn: libvirt.virConnect) -> None:
        pool = _pool_for_dir(conn, directory)
        if pool is None:
            raise HypervisorError(
                gettext("No active storage pool holds %(folder)s on this host.")
                % {"folder": directory}
            )
        pool.refresh(0)
        pool.createXML(domxml.build_volume(name, capacity_bytes, fmt), 0)

    _call(uri, make, bounded=False)


def delete_volume(uri: str, path: str) -> None:
    def remove(conn: libvirt.virConnect) -> None:
        conn.storageVolLookupByPath(path).delete(0)

    _call(uri, remove, bounded=False)


def domain_name_taken(uri: str, name: str) -> bool:
    def read(conn: libvirt.virConnect) -> bool:
        try:
            conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise
        return True

    return _call(uri, read)


# --- migration -----------------------------------------------------------------------

# The flags of the guide, by the names the panel uses.
MIGRATION_FLAGS: dict[str, int] = {
    "LIVE": libvirt.VIR_MIGRATE_LIVE,
    "PEER2PEER": libvirt.VIR_MIGRATE_PEER2PEER,
    "TUNNELLED": libvirt.VIR_MIGRATE_TUNNELLED,
    "PERSIST_DEST": libvirt.VIR_MIGRATE_PERSIST_DEST,
    "UNDEFINE_SOURCE": libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    "PAUSED": libvirt.VIR_MIGRATE_PAUSED,
    "NON_SHARED_DISK": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "NON_SHARED_INC": libvirt.VIR_MIGRATE_NON_SHARED_INC,
    "CHANGE_PROTECTION": libvirt.VIR_MIGRATE_CHANGE_PROTECTION,
    "UNSAFE": libvirt.VIR_MIGRATE_UNSAFE,
    "OFFLINE": libvirt.VIR_MIGRATE_OFFLINE,
}


@dataclass(frozen=True)
class MigrationRequest:
    flags: frozenset[str]
    dest_uri: str  # the panel's URI of the destination (direct migration)
    dest_p2p_uri: str  # the URI the source daemon uses to reach it (peer-to-peer)
    bandwidth_mib_s: int = 0
    new_name: str = ""
    migrate_uri: str = ""  # the data channel, e.g. tcp://10.0.0.2
    listen_address: str = ""
    # (source host's console address, where the display is to listen on the destination):
    # a display on the source's console address cannot listen there on another host.
    display_moves: tuple[str, str] | None = None


def migrate(uri: str, uuid: str, req: MigrationRequest) -> None:
    """Move the domain to another host; blocks until done, failed or aborted."""
    flags = 0
    for name in req.flags:
        flags |= MIGRATION_FLAGS[name]
    params: dict[str, object] = {}
    if req.bandwidth_mib_s:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(req.bandwidth_mib_s)
    if req.new_name:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = req.new_name
    if req.migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = req.migrate_uri
    if req.listen_address:
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = req.listen_address
    if req.display_moves:
        # The destination's definition: the same, its display on the destination's address
        # (with its password: SECURE).
        xml = _on_domain(
            uri,
            uuid,
            lambda dom: dom.XMLDesc(
                libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
            ),
        )
        moved = domxml.graphics_listen_moved(xml, *req.display_moves)
        if moved is not None:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = moved

    if "PEER2PEER" in req.flags:
        # The source daemon opens the destination itself.
        _act(
            uri,
            uuid,
            lambda dom: dom.migrateToURI3(req.dest_p2p_uri, params, flags),
            reconnect=False,
        )
        return
    # Direct: this process drives both ends, through a connection of its own to each.
    dest = _open(req.dest_uri)
    try:
        _act(uri, uuid, lambda dom: dom.migrate3(dest, params, flags), reconnect=False)
    finally:
        try:
            dest.close()
        except libvirt.libvirtError:
            pass


# --- events ------------------------------------------------------------------------

_event_loop_registered = False
_event_loop_pid = 0  # the process whose thread runs the loop: a forked child needs its own
_event_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread of this process.

    Must happen before a connection is opened, or that connection delivers no events and
    sends no keepalive. Every process does it on its first open (`_open`); a process forked
    after (a Celery worker) starts a thread of its own, since threads do not survive fork.
    """
    global _event_loop_registered, _event_loop_pid
    with _event_loop_lock:
        if _event_loop_pid == os.getpid():
            return
        if not _event_loop_registered:
            libvirt.virEventRegisterDefaultImpl()
            _event_loop_registered = True

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_pid = os.getpid()


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
    """Whether this process's connection to `uri` is open and answering (bounded)."""
    conn = _connections.get(uri)
    if conn is None:
        return False
    try:
        return bool(
            _bounded("alive", lambda: conn.isAlive() and conn.getHostname(), _call_seconds())
        )
    except (_Unanswered, libvirt.libvirtError):
        return False


# --- provisioning ----------------------------------------------------------------------


def has_pool_for(uri: str, path: str) -> bool:
    """Whether an active storage pool holds the folder of `path`."""
    directory = path.rsplit("/", 1)[0]
    return _call(uri, lambda conn: _pool_for_dir(conn, directory) is not None)


def create_transient(uri: str, xml: str, paused: bool = False, autodestroy: bool = False) -> str:
    """Start a transient domain (createXML) with schema validation; returns its UUID.

    Auto-destroy ties the domain to this connection: it goes when the panel's connection
    closes. Callers check `capabilities(uri).autodestroy` first. Paused: with
    START_PAUSED where the host takes it, else started and paused at once.
    """
    flags = libvirt.VIR_DOMAIN_START_VALIDATE
    pause_after = paused and not capabilities(uri).start_paused
    if paused and not pause_after:
        flags |= libvirt.VIR_DOMAIN_START_PAUSED
    if autodestroy:
        flags |= libvirt.VIR_DOMAIN_START_AUTODESTROY

    def make(conn: libvirt.virConnect) -> str:
        dom = conn.createXML(xml, flags)
        if pause_after:
            # Without START_PAUSED the guest may run a moment before this (the test
            # driver, which has none, runs no guest code at all).
            dom.suspend()
        return dom.UUIDString()

    return _call(uri, make, reconnect=False, bounded=False)


def start_maybe_paused(uri: str, uuid: str, paused: bool) -> None:
    """Boot a defined domain, paused if asked: with START_PAUSED where the host takes it,
    else started and suspended at once."""
    if paused and not capabilities(uri).start_paused:
        start(uri, uuid)
        suspend(uri, uuid)
    else:
        start(uri, uuid, paused=paused)


def domain_state(uri: str, uuid: str) -> int | None:
    """libvirt's state number of the domain, or None when libvirt no longer knows it."""

    def read(conn: libvirt.virConnect) -> int | None:
        try:
            return conn.lookupByUUIDString(uuid).state()[0]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    return _call(uri, read)


# --- resize: vCPUs and memory, live and in the saved configuration --------------------


@dataclass(frozen=True)
class ResizeLimits:
    """A domain's vCPU and memory counts where they can change, and the host's size.

    The live values are None while the domain is off; the configuration's are None for a
    transient domain, which has none. Memory in KiB.
    """

    active: bool
    persistent: bool
    vcpus_live: int | None
    vcpus_max_live: int | None
    vcpus_config: int | None
    vcpus_max_config: int | None
    memory_live_kib: int | None
    memory_max_live_kib: int | None
    memory_config_kib: int | None
    memory_max_config_kib: int | None
    host_cpus: int
    host_memory_kib: int


def resize_limits(uri: str, uuid: str) -> ResizeLimits:
    """What the resize page shows and the resize checks compare with (reads only)."""

    def read(conn: libvirt.virConnect) -> ResizeLimits:
        dom = _lookup(conn, uuid)
        active = bool(dom.isActive())
        persistent = bool(dom.isPersistent())
        vcpus_live = vcpus_max_live = memory_live = memory_max_live = None
        if active:
            vcpus_live = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
            vcpus_max_live = dom.maxVcpus()
            _state, memory_max_live, memory_live, _n, _t = dom.info()
        vcpus_config = vcpus_max_config = memory_config = memory_max_config = None
        if persistent:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            vcpu = domxml.vcpu_counts(xml)
            memory = domxml.memory_counts(xml)
            vcpus_config, vcpus_max_config = vcpu.current, vcpu.maximum
            memory_config, memory_max_config = memory.current_kib, memory.maximum_kib
        info = conn.getInfo()
        return ResizeLimits(
            active=active,
            persistent=persistent,
            vcpus_live=vcpus_live,
            vcpus_max_live=vcpus_max_live,
            vcpus_config=vcpus_config,
            vcpus_max_config=vcpus_max_config,
            memory_live_kib=memory_live,
            memory_max_live_kib=memory_max_live,
            memory_config_kib=memory_config,
            memory_max_config_kib=memory_max_config,
            host_cpus=info[2],
            host_memory_kib=info[1] * 1024,
        )

    return _call(uri, read)


def _live_then_config(
    uri: str, uuid: str, live: bool, config: bool, call: Callable[[libvirt.virDomain, int], object]
) -> None:
    """`call(dom, flags)` for the running domain, then for its saved configuration.

    One call each rather than one with both flags: some drivers (the test driver's
    setMemoryFlags) refuse AFFECT_LIVE|AFFECT_CONFIG together, and live first means a
    change the running guest refuses leaves the configuration untouched too.
    """
    if live:
        _act(uri, uuid, lambda dom: call(dom, libvirt.VIR_DOMAIN_AFFECT_LIVE))
    if config:
        _act(uri, uuid, lambda dom: call(dom, libvirt.VIR_DOMAIN_AFFECT_CONFIG))


def set_vcpus(uri: str, uuid: str, count: int, live: bool, config: bool) -> None:
    """Set the number of vCPUs online, in the running domain and/or its configuration.

    Live, the guest must bring the new vCPUs online itself (most Linux guests do).
    """
    _live_then_config(uri, uuid, live, config, lambda dom, f: dom.setVcpusFlags(count, f))


def set_max_vcpus(uri: str, uuid: str, count: int) -> None:
    """Set the maximum vCPUs in the saved configuration (takes effect at the next boot)."""
    flags = libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    _act(uri, uuid, lambda dom: dom.setVcpusFlags(count, flags))


def set_memory(uri: str, uuid: str, kib: int, live: bool, config: bool) -> None:
    """Set the current memory (the balloon), in the running domain and/or its configuration."""
    _live_then_config(uri, uuid, live, config, lambda dom, f: dom.setMemoryFlags(kib, f))


def set_max_memory(uri: str, uuid: str, kib: int) -> None:
    """Set the maximum memory in the saved configuration (takes effect at the next boot)."""
    flags = libvirt.VIR_DOMAIN_MEM_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    _act(uri, uuid, lambda dom: dom.setMemoryFlags(kib, flags))


# --- usage counters (the collector's one read per host and tick) ----------------------

# The groups of getAllDomainStats the collector asks for, in one call per host.
STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
# Running domains only, and never wait for a domain busy with a job (a migration): its
# figures are skipped this tick instead of stalling every other domain's.
STATS_FLAGS = (
    libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
)


@dataclass
class CounterRead:
    at: float  # unix time, taken once, after libvirt answered
    guests: list  # of usage.GuestCounters
    calls: int  # libvirt calls it took (1 on a host that answers everything in bulk)


@dataclass(frozen=True)
class HostCounters:
    at: float
    cpus: int
    cpu_busy_ns: int | None  # user + kernel, all CPUs
    cpu_total_ns: int | None  # user + kernel + idle + iowait
    memory_total_kib: int
    memory_free_kib: int | None  # free + buffers + cached: what the host could still give


def _number_keys(stats: dict, prefix: str) -> range:
    return range(int(stats.get(f"{prefix}.count", 0)))


def _guest_counters(dom: libvirt.virDomain, stats: dict, devices: dict) -> tuple:
    """One domain's counters from its bulk record, asking the guide's per-domain calls
    only for the groups the host left out (the test driver gives `state.*` alone).
    Returns (usage.GuestCounters, calls made)."""
    from .usage import DiskCounters, GuestCounters, NetCounters

    calls = 0
    uuid = dom.UUIDString()
    vcpu_time, vcpu_state, vcpu_cpu = {}, {}, {}
    if "vcpu.current" in stats:
        vcpus = int(stats["vcpu.current"])
        for n in range(int(stats.get("vcpu.maximum", vcpus))):
            if f"vcpu.{n}.time" in stats:
                vcpu_time[n] = int(stats[f"vcpu.{n}.time"])
                vcpu_state[n] = int(stats.get(f"vcpu.{n}.state", 0))
    else:
        # info() first: one round trip (the binding's vcpus() makes three: info, the host's
        # CPU map, the vCPUs). A one-vCPU domain's vCPU time is its CPU time; only a domain
        # with more asks vcpus() for each one's time, state and physical CPU.
        info = dom.info()
        calls += 1
        vcpus = int(info[3])
        if vcpus > 1:
            for number, state, time_ns, cpu in dom.vcpus()[0]:
                vcpu_time[number], vcpu_state[number] = int(time_ns), int(state)
                vcpu_cpu[number] = int(cpu)
            calls += 1
        elif vcpus == 1:
            vcpu_time[0] = int(info[4])
            vcpu_state[0] = libvirt.VIR_VCPU_RUNNING if info[0] == 1 else libvirt.VIR_VCPU_BLOCKED
    if "cpu.time" in stats:
        cpu_time = int(stats["cpu.time"])
    elif "vcpu.current" in stats:
        cpu_time = sum(vcpu_time.values())  # the vCPUs' own time, from the bulk record
    else:
        cpu_time = int(info[4])
    if "balloon.current" in stats:
        current = stats.get("balloon.current")
        usable = stats.get("balloon.usable")
        rss = stats.get("balloon.rss")
    else:
        memory = dom.memoryStats()
        calls += 1
        current, usable, rss = memory.get("actual"), memory.get("usable"), memory.get("rss")
    disks, nets = {}, {}
    if "block.count" in stats:
        for n in _number_keys(stats, "block"):
            name = stats.get(f"block.{n}.name")
            if not name or f"block.{n}.rd.bytes" not in stats:
                continue  # an empty CD-ROM has no counters
            disks[name] = DiskCounters(
                rd_bytes=int(stats[f"block.{n}.rd.bytes"]),
                wr_bytes=int(stats.get(f"block.{n}.wr.bytes", 0)),
                rd_reqs=int(stats.get(f"block.{n}.rd.reqs", 0)),
                wr_reqs=int(stats.get(f"block.{n}.wr.reqs", 0)),
                source=stats.get(f"block.{n}.path", ""),
            )
    if "net.count" in stats:
        for n in _number_keys(stats, "net"):
            name = stats.get(f"net.{n}.name")
            if not name:
                continue
            nets[name] = NetCounters(
                rx_bytes=int(stats.get(f"net.{n}.rx.bytes", 0)),
                tx_bytes=int(stats.get(f"net.{n}.tx.bytes", 0)),
                rx_pkts=int(stats.get(f"net.{n}.rx.pkts", 0)),
                tx_pkts=int(stats.get(f"net.{n}.tx.pkts", 0)),
                rx_errs=int(stats.get(f"net.{n}.rx.errs", 0)),
                tx_errs=int(stats.get(f"net.{n}.tx.errs", 0)),
                rx_drop=int(stats.get(f"net.{n}.rx.drop", 0)),
                tx_drop=int(stats.get(f"net.{n}.tx.drop", 0)),
            )
    if "block.count" not in stats or "net.count" not in stats:
        # The devices' names come from the XML, read once per domain (the collector keeps
        # them; a domain that changes devices gets a new entry when it restarts).
        if uuid not in devices:
            xml = dom.XMLDesc(0)
            calls += 1
            devices[uuid] = (
                [(d.target, d.source) for d in domxml.disks(xml) if d.source and d.target],
                [(n.target or n.mac, n.mac) for n in domxml.interfaces(xml) if n.target or n.mac],
            )
        disk_names, nic_names = devices[uuid]
        if "block.count" not in stats:
            for target, source in disk_names:
                try:
                    rd_reqs, rd_bytes, wr_reqs, wr_bytes, errs = dom.blockStats(target)
                except libvirt.libvirtError:
                    continue  # hot-unplugged since the XML was read
                finally:
                    calls += 1
                disks[target] = DiskCounters(
                    rd_bytes, wr_bytes, rd_reqs, wr_reqs, errs if errs >= 0 else None, source
                )
        if "net.count" not in stats:
            for name, mac in nic_names:
                try:
                    rx_b, rx_p, rx_e, rx_d, tx_b, tx_p, tx_e, tx_d = dom.interfaceStats(name)
                except libvirt.libvirtError:
                    continue
                finally:
                    calls += 1
                nets[name] = NetCounters(rx_b, tx_b, rx_p, tx_p, rx_e, tx_e, rx_d, tx_d, mac)
    counters = GuestCounters(
        uuid=uuid,
        vcpus=vcpus,
        cpu_time_ns=cpu_time,
        vcpu_time_ns=vcpu_time,
        vcpu_state=vcpu_state,
        vcpu_cpu=vcpu_cpu,
        balloon_current_kib=None if current is None else int(current),
        balloon_usable_kib=None if usable is None else int(usable),
        rss_kib=None if rss is None else int(rss),
        disks=disks,
        nets=nets,
    )
    return counters, calls


def guest_counters(uri: str, devices: dict | None = None) -> CounterRead:
    """Every running domain's counters on `uri`: one getAllDomainStats call where the host
    answers all the groups in bulk, the per-domain calls for what it leaves out. A domain
    that vanishes mid-read is skipped. `devices` keeps the disk and NIC names read from
    XML between calls (by UUID; the caller owns it)."""
    devices = {} if devices is None else devices

    def one(record) -> tuple | None:
        dom, stats = record
        try:
            return _guest_counters(dom, stats, devices)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (
                libvirt.VIR_ERR_NO_DOMAIN,
                libvirt.VIR_ERR_OPERATION_INVALID,  # shut off between the two calls
            ):
                return None
            raise

    def read(conn: libvirt.virConnect) -> CounterRead:
        records = conn.getAllDomainStats(STATS_GROUPS, STATS_FLAGS)
        # One by one: four threads sharing the connection made a 1,000-domain read of the
        # test driver slower, not faster (measured, bench/stats.py).
        results = [one(record) for record in records]
        guests = [counters for counters, _more in filter(None, results)]
        calls = 1 + sum(more for _counters, more in filter(None, results))
        return CounterRead(at=time.time(), guests=guests, calls=calls)

    return _call(uri, read)


def host_counters(uri: str) -> HostCounters:
    """The host's own CPU time and memory (getCPUStats / getMemoryStats, getInfo for what a
    driver leaves out)."""

    def read(conn: libvirt.virConnect) -> HostCounters:
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        busy = total = None
        try:
            cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
            busy = int(cpu.get("user", 0)) + int(cpu.get("kernel", 0))
            total = busy + int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))
        except libvirt.libvirtError:
            pass
        memory_total = int(info[1]) * 1024
        free = None
        try:
            mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            memory_total = int(mem.get("total", memory_total))
            free = sum(int(mem.get(k, 0)) for k in ("free", "buffers", "cached"))
        except libvirt.libvirtError:
            try:
                free = int(conn.getFreeMemory()) // 1024
            except libvirt.libvirtError:
                free = None
        return HostCounters(time.time(), int(info[2]), busy, total, memory_total, free)

    return _call(uri, read)


# --- the guest's screen -------------------------------------------------------------

SCREENSHOT_MAX_BYTES = 32 * 2**20  # a 4K screen in PPM is 25 MiB


def screenshot(uri: str, uuid: str) -> tuple[str, bytes]:
    """(MIME type, image) of the running domain's first screen, as the hypervisor makes
    it (QEMU: PPM; the test driver: PNG). Bounded like every read."""

    def read(conn: libvirt.virConnect) -> tuple[str, bytes]:
        dom = _lookup(conn, uuid)
        stream = conn.newStream(0)
        try:
            mime = dom.screenshot(stream, 0, 0)
            chunks, size = [], 0
            while True:
                data = stream.recv(256 * 1024)
                if not data:
                    break
                size += len(data)
                if size > SCREENSHOT_MAX_BYTES:
                    raise HypervisorError(gettext("The screen image is too large to show."))
                chunks.append(data)
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            raise
        return mime or "application/octet-stream", b"".join(chunks)

    return _call(uri, read)


# --- consoles (the console proxy's side) ------------------------------------------------


def console_devices(uri: str, uuid: str) -> domxml.ConsoleDevices:
    return _on_domain(uri, uuid, lambda dom: domxml.console_devices(dom.XMLDesc(0)))


def set_vnc_password(uri: str, uuid: str, password: str, seconds: int) -> None:
    """A fresh VNC password on the live domain, valid for `seconds` (passwdValidTo): the
    page gets it with its ticket, and it is worth nothing soon after."""
    valid_to = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds))

    def update(dom: libvirt.virDomain) -> None:
        xml = domxml.vnc_password_update(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE), password, valid_to
        )
        dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    _act(uri, uuid, update)


def open_graphics_socket(uri: str, uuid: str) -> socket.socket:
    """A socket connected to the domain's display through the libvirt connection itself
    (openGraphicsFD): nothing has to listen where the proxy could reach it."""
    fd = _act(uri, uuid, lambda dom: dom.openGraphicsFD(0, 0))
    return socket.socket(fileno=fd)


class SerialStream:
    """The domain's text console through libvirt's console stream (openConsole). Blocking
    reads and writes, for a thread each; `close` ends both."""

    def __init__(self, uri: str, uuid: str):
        def open_it(conn: libvirt.virConnect) -> libvirt.virStream:
            stream = conn.newStream(0)
            # FORCE: a console left open by a broken connection must not lock the next one.
            _lookup(conn, uuid).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            return stream

        self.stream = _call(uri, open_it, bounded=False)

    def recv(self, size: int = 4096) -> bytes:
        """Up to `size` bytes the guest wrote; b"" when the console closed."""
        try:
            data = self.stream.recv(size)
        except libvirt.libvirtError:
            return b""
        return data if isinstance(data, bytes) else b""

    def send(self, data: bytes) -> None:
        self.stream.send(data)

    def close(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass


# --- snapshots and clones ---------------------------------------------------------------

# libvirt's codes the services tell apart, so that they need not import libvirt.
NO_SUCH_SNAPSHOT = libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT  # "already deleted"
SNAPSHOT_REVERT_RISKY = libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY  # goes ahead only when forced

# How long a guest agent may take to answer a ping; well inside a bounded read.
AGENT_PING_SECONDS = 2


@dataclass(frozen=True)
class SnapshotFacts:
    name: str
    description: str
    created_at: int  # unix seconds (<creationTime>)
    state: str  # libvirt's <state>: running, paused, shutoff, disk-snapshot …
    # Holds the guest's memory (<memory snapshot='internal'|'external'>): a revert brings
    # the guest back running or paused where it was.
    memory: bool
    disk_only: bool  # an external disk-only snapshot
    parent: str  # "" for a root
    current: bool
    xml: str  # the snapshot's XML (getXMLDesc(0): no secrets)


def _tree_order(snapshots: list[SnapshotFacts]) -> tuple[SnapshotFacts, ...]:
    """Parents before children, depth first; siblings oldest first (then by name). A
    snapshot whose parent is not among them counts as a root."""
    names = {s.name for s in snapshots}
    children: dict[str, list[SnapshotFacts]] = {}
    for s in snapshots:
        children.setdefault(s.parent if s.parent in names else "", []).append(s)
    ordered: list[SnapshotFacts] = []
    stack = sorted(children.get("", []), key=lambda s: (s.created_at, s.name), reverse=True)
    while stack:
        snapshot = stack.pop()
        ordered.append(snapshot)
        kids = children.get(snapshot.name, [])
        stack.extend(sorted(kids, key=lambda s: (s.created_at, s.name), reverse=True))
    return tuple(ordered)


def list_snapshots(uri: str, uuid: str) -> tuple[SnapshotFacts, ...]:
    """Every snapshot of the domain, parents before children (siblings oldest first)."""

    def read(dom: libvirt.virDomain) -> tuple[SnapshotFacts, ...]:
        try:
            current = dom.snapshotCurrent(0).getName()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise
            current = ""  # none is current (never any, or the current one was deleted)
        found = []
        for snapshot in dom.listAllSnapshots(0):
            try:
                xml = snapshot.getXMLDesc(0)
            except libvirt.libvirtError as exc:
                # Deleted between the listing and this read: it is simply not there.
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    continue
                raise
            facts = domxml.snapshot_facts(xml)
            found.append(SnapshotFacts(**facts, current=facts["name"] == current, xml=xml))
        return _tree_order(found)

    return _on_domain(uri, uuid, read)


def create_snapshot(
    uri: str,
    uuid: str,
    name: str,
    description: str,
    *,
    disk_only: bool = False,
    quiesce: bool = False,
) -> None:
    """Take a snapshot named `name`. Without `disk_only` an internal one (every writable
    disk qcow2: `snapshot_disk_problems`), which for a running or paused domain holds its
    memory too; with it an external disk-only one, all disks or none (ATOMIC), where the
    host takes them (`capabilities(uri).external_snapshots`). `quiesce`: the guest agent
    freezes the guest's file systems meanwhile (`guest_agent_answers`)."""
    xml = domxml.build_snapshot(name, description, disk_only)
    flags = 0
    if disk_only:
        flags |= (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        )
    if quiesce:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    # Not again on a new connection: a snapshot taken before the old one broke would be
    # refused as existing.
    _act(uri, uuid, lambda dom: dom.snapshotCreateXML(xml, flags), reconnect=False)


_REVERT_THEN = {
    "": 0,
    "running": libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
    "paused": libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
}


def revert_snapshot(uri: str, uuid: str, name: str, *, then: str = "", force: bool = False) -> None:
    """Bring the domain back to snapshot `name`: as it was saved (`then` ""), or running or
    paused afterwards. libvirt refuses a risky revert (SNAPSHOT_REVERT_RISKY) unless
    `force`d."""
    if then not in _REVERT_THEN:
        raise ValueError(f"then must be one of {sorted(_REVERT_THEN)}, not {then!r}")
    flags = _REVERT_THEN[then]
    if force:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE

    def revert(dom: libvirt.virDomain) -> None:
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), flags)

    _act(uri, uuid, revert, reconnect=False)


_DELETE_MODES = {
    "one": 0,
    "with_children": libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN,
    "children_only": libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY,
}


def delete_snapshot(uri: str, uuid: str, name: str, *, mode: str = "one") -> None:
    """Delete snapshot `name` ("one": its children move to its parent), it and all its
    descendants ("with_children"), or only its descendants ("children_only"). A snapshot
    that no longer exists: HypervisorError with code NO_SUCH_SNAPSHOT."""
    if mode not in _DELETE_MODES:
        raise ValueError(f"mode must be one of {sorted(_DELETE_MODES)}, not {mode!r}")
    flags = _DELETE_MODES[mode]
    _act(uri, uuid, lambda dom: dom.snapshotLookupByName(name, 0).delete(flags))


def snapshot_disk_problems(uri: str, uuid: str) -> list[str]:
    """The writable disks (by target: "vda" …) an internal snapshot cannot hold: those
    whose format is not qcow2 (no <driver type> counts as not qcow2). [] when all can."""

    def read(dom: libvirt.virDomain) -> list[str]:
        return [
            target
            for target, fmt, writable in domxml.disk_formats(dom.XMLDesc(0))
            if writable and fmt != "qcow2"
        ]

    return _on_domain(uri, uuid, read)


def guest_agent_answers(uri: str, uuid: str) -> bool:
    """Whether a QEMU guest agent answers a ping in the domain within AGENT_PING_SECONDS.
    False on any error: no agent, not running, a driver without agents (the test driver),
    a host that does not answer."""
    try:
        import libvirt_qemu
    except ImportError:
        return False

    def ping(dom: libvirt.virDomain) -> bool:
        libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', AGENT_PING_SECONDS, 0)
        return True

    try:
        return bool(_on_domain(uri, uuid, ping))
    except HypervisorError:
        return False


@dataclass(frozen=True)
class CloneResult:
    uuid: str
    volumes: tuple[str, ...]  # paths of the volumes made


@dataclass(frozen=True)
class _DiskCopy:
    """One disk of a clone: where it is, and what its copy is to be."""

    target: str
    key: str  # domxml.DiskSource.key: what clone_xml replaces
    pool: str  # the name of the pool holding the original, where the copy goes too
    volume: str  # the original's volume name
    name: str  # the copy's volume name
    format: str
    capacity: int


def _not_copyable(disk: domxml.DiskSource) -> HypervisorError:
    if disk.volume:
        message = gettext(
            "%(disk)s's volume %(volume)s is not in the host's storage pool %(pool)s, "
            "so it cannot be copied."
        )
    elif disk.type == "block":
        message = gettext(
            "%(disk)s's device %(path)s is not in one of the host's storage pools, "
            "so it cannot be copied."
        )
    elif disk.path:
        message = gettext(
            "%(disk)s's file %(path)s is not in one of the host's storage pools, "
            "so it cannot be copied."
        )
    else:
        message = gettext(
            "%(disk)s is a disk of type %(type)s, not a storage volume of the host, "
            "so it cannot be copied."
        )
    values = {
        "disk": disk.target,
        "volume": disk.volume,
        "pool": disk.pool,
        "path": disk.path,
        "type": disk.type,
    }
    return HypervisorError(message % values, code=libvirt.VIR_ERR_NO_STORAGE_VOL)


def _volume_of(conn: libvirt.virConnect, disk: domxml.DiskSource) -> libvirt.virStorageVol:
    """The storage volume behind `disk`, or HypervisorError saying why it cannot be copied.

    A file its pool was not told of yet (written outside libvirt) is found once the pool
    holding its folder is refreshed."""
    missing = (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL)
    if disk.volume:
        try:
            return conn.storagePoolLookupByName(disk.pool).storageVolLookupByName(disk.volume)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in missing:
                raise
        raise _not_copyable(disk)
    if not disk.path:
        raise _not_copyable(disk)
    for attempt in (1, 2):
        try:
            return conn.storageVolLookupByPath(disk.path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in missing:
                raise
        pool = _pool_for_dir(conn, disk.path.rsplit("/", 1)[0]) if attempt == 1 else None
        if pool is None:
            break
        pool.refresh(0)
    raise _not_copyable(disk)


def _copy_name(new_name: str, target: str, original: str) -> str:
    """The copy's volume name: "<new_name>-<target>.<ext>", with the extension of the
    original's name (qcow2, img …); without one where it has none (an LVM volume)."""
    base = original.rsplit("/", 1)[-1]
    ext = base.rsplit(".", 1)[-1] if "." in base.strip(".") else ""
    if ext.isalnum() and len(ext) <= 8:
        return f"{new_name}-{target}.{ext}"
    return f"{new_name}-{target}"


def _plan_clone(
    conn: libvirt.virConnect, uuid: str, new_name: str, new_uuid: str
) -> tuple[str, list[_DiskCopy]]:
    """The domain's XML (inactive, with its secrets) and the disks to copy; HypervisorError
    for what would stop the clone, before anything is made."""
    dom = _lookup(conn, uuid)
    if dom.isActive():
        raise HypervisorError(
            gettext("%(name)s is running; shut it off before cloning it.") % {"name": dom.name()},
            code=libvirt.VIR_ERR_OPERATION_INVALID,
        )
    for lookup, value in ((conn.lookupByName, new_name), (conn.lookupByUUIDString, new_uuid)):
        try:
            lookup(value)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        else:
            raise HypervisorError(
                gettext("A VM %(name)s already exists on this host.") % {"name": value},
                code=libvirt.VIR_ERR_OPERATION_FAILED,
            )
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    copies = []
    for disk in domxml.disk_sources(xml):
        if not disk.writable:
            continue  # shared with the clone: a CD-ROM, a read-only or shareable disk
        if not disk.key and disk.type in ("file", "block", "volume"):
            continue  # an empty drive: nothing to copy
        vol = _volume_of(conn, disk)
        pool = vol.storagePoolLookupByVolume()
        name = _copy_name(new_name, disk.target, disk.volume or disk.path)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        else:
            raise HypervisorError(
                gettext(
                    "A volume %(volume)s already exists in the storage pool %(pool)s; "
                    "choose another name for the clone, or remove that volume."
                )
                % {"volume": name, "pool": pool.name()},
                code=libvirt.VIR_ERR_STORAGE_VOL_EXIST,
            )
        copies.append(
            _DiskCopy(
                target=disk.target,
                key=disk.key,
                pool=pool.name(),
                volume=vol.name(),
                name=name,
                format=domxml.volume_format(vol.XMLDesc(0)) or disk.format or "raw",
                capacity=vol.info()[1],
            )
        )
    return xml, copies


def _copy_volume(uri: str, disk: _DiskCopy) -> str:
    """Copy `disk` into its pool (createXMLFrom); the copy's path. As long as it takes,
    and not again on a new connection: a copy made before the old one broke would be
    refused as existing."""

    def make(conn: libvirt.virConnect) -> str:
        pool = conn.storagePoolLookupByName(disk.pool)
        original = pool.storageVolLookupByName(disk.volume)
        xml = domxml.build_volume(disk.name, disk.capacity, disk.format)
        return pool.createXMLFrom(xml, original, 0).path()

    return _call(uri, make, reconnect=False, bounded=False)


def _remove_volumes(uri: str, paths: list[str]) -> list[str]:
    """Remove the volumes at `paths`, as far as the host lets us; the paths left behind."""
    left = []
    for path in reversed(paths):
        try:
            delete_volume(uri, path)
        except HypervisorError as exc:
            if not exc.no_such_volume:
                log.warning("could not remove %s after a clone that did not happen: %s", path, exc)
                left.append(path)
    return left


class _CloneCancelled(Exception):
    """cancelled() said yes (internal to clone_domain)."""


def _left_behind(message: str, left: list[str]) -> str:
    if not left:
        return message
    return (
        message
        + " "
        + gettext("These copies could not be removed; remove them by hand: %(paths)s.")
        % {"paths": ", ".join(left)}
    )


def clone_size(uri: str, uuid: str, new_name: str) -> int:
    """What a clone named `new_name` would copy, in bytes (the volumes' capacities); or
    HypervisorError for what would stop it (running, name taken, a disk not in a storage
    pool …), so the panel can say so before it queues anything. A read."""

    def read(conn: libvirt.virConnect) -> int:
        _xml, copies = _plan_clone(conn, uuid, new_name, str(uuidlib.uuid4()))
        return sum(c.capacity for c in copies)

    return _call(uri, read)


def clone_domain(
    uri: str,
    uuid: str,
    new_name: str,
    *,
    new_uuid: str,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> CloneResult:
    """Copy the shut-off domain `uuid` as a new persistent domain `new_name`, `new_uuid`.

    Each writable disk (device='disk', not read-only or shareable) is copied into the pool
    holding it (createXMLFrom) as "<new_name>-<target>.<ext>", in the same format and
    capacity; CD-ROMs and read-only or shareable disks are shared (the clone names the same
    file). What would stop the clone — a running domain, the name or UUID taken, a disk that
    is not a storage volume the host knows, a copy's name taken — is refused before
    anything is copied. `progress(done_bytes, total_bytes)` is called at 0 and after each
    disk; `cancelled()` is asked before each disk and before the clone is defined. On
    cancellation or any failure the copies made so far are removed, and HypervisorError
    says what happened (and names any copy that could not be removed). The definition is
    `domxml.clone_xml`: new MACs, a fresh NVRAM, graphics passwords kept.
    """
    # Part of a change (in a worker): not bounded, since refreshing a large pool may take
    # a while.
    xml, copies = _call(
        uri, lambda conn: _plan_clone(conn, uuid, new_name, new_uuid), bounded=False
    )
    total = sum(disk.capacity for disk in copies)
    made: list[str] = []

    def check_cancelled() -> None:
        if cancelled is not None and cancelled():
            raise _CloneCancelled

    try:
        done = 0
        if progress is not None:
            progress(done, total)
        paths: dict[str, str] = {}
        for disk in copies:
            check_cancelled()
            path = _copy_volume(uri, disk)
            made.append(path)
            paths[disk.key] = path
            done += disk.capacity
            if progress is not None:
                progress(done, total)
        check_cancelled()
        new_xml = domxml.clone_xml(xml, new_name, new_uuid, paths)
        made_uuid = _call(uri, lambda conn: conn.defineXML(new_xml).UUIDString(), bounded=False)
    except _CloneCancelled:
        left = _remove_volumes(uri, made)
        if not left:
            raise HypervisorError(gettext("Cancelled; nothing was left behind.")) from None
        raise HypervisorError(_left_behind(gettext("Cancelled."), left)) from None
    except HypervisorError as exc:
        left = _remove_volumes(uri, made)
        if left:
            exc.message = _left_behind(exc.message, left)
            exc.args = (exc.message,)
        raise
    except domxml.XMLError as exc:
        left = _remove_volumes(uri, made)
        raise HypervisorError(_left_behind(str(exc), left)) from None
    except BaseException:
        _remove_volumes(uri, made)
        raise
    return CloneResult(uuid=made_uuid, volumes=tuple(made))
