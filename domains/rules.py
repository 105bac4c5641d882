"""The panel's pure decisions: which libvirt calls a resize makes, which migration
flags and states fit together, whether edited XML may replace the saved one.

Nothing here talks to libvirt or the database, so these rules have unit tests that need no
daemon. The services (`domains.services`) read the facts, ask these rules, and refuse in
the words the rules return.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import uuid as uuidlib
from dataclasses import dataclass

from django.utils.translation import gettext as _

from . import domxml, hypervisor
from .hypervisor import MIGRATION_FLAGS, GuestSighting, ResizeLimits
from .models import Domain, Host, State

# --- URIs and addresses ---------------------------------------------------------------

# The libvirt URIs a superuser means when adding a host: a remote QEMU host over SSH, TLS
# or TCP, the local system daemon, and the private test-driver daemons of the demo and the
# tests. Anything else (test:///<file> reads a local file as a driver configuration and
# echoes its first line; ?command= runs a program; qemu:///session is the panel's own
# user's daemon) is refused before libvirt is asked.
#
# Query parameters each transport may take, as libvirt's remote driver documents them.
# Never command= or netcat= (they run programs), nor socket= on a remote transport.
URI_PARAMS = {
    "qemu+ssh": frozenset({"keyfile", "known_hosts", "no_verify", "no_tty", "sshauth"}),
    "qemu+tls": frozenset({"pkipath", "no_verify"}),
    "qemu+tcp": frozenset(),
}
# Parameters whose value is a path on the panel's machine: absolute, no "..".
_PATH_PARAMS = frozenset({"keyfile", "known_hosts", "pkipath", "socket"})
_FLAG_PARAMS = frozenset({"no_verify", "no_tty"})
_SCHEME_RE = re.compile(r"([a-z][a-z0-9+]*)://(.*)", re.DOTALL)
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PORT_RE = re.compile(r"[0-9]{1,5}")
MAX_URI_CHARS = 500


def _plain_ascii(text: str) -> bool:
    """Printable ASCII without spaces: what a URI or an address is made of."""
    return all(33 <= ord(c) < 127 for c in text)


def _host_problem(host: str) -> str | None:
    """Why `host` (a URI's host part, IPv6 in brackets) is not a host name or address."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return _("The address in brackets is not an IPv6 address.")
        return None
    if _HOSTNAME_RE.fullmatch(host):
        return None
    return _("The host is not a host name or an IP address.")


def _netloc_problem(netloc: str, *, user: bool) -> str | None:
    """Why `netloc` is not [user@]host[:port]."""
    if "@" in netloc:
        if not user:
            return _("No user name here, only a host and a port.")
        name, _at, netloc = netloc.rpartition("@")
        if not _USER_RE.fullmatch(name):
            return _("A user name is letters, digits, dots, dashes and underscores (no password).")
    host, port = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return _("The host is not a host name or an IP address.")
        port = rest[1:] if rest else ""
        if rest and not port:
            return _("A port is a number from 1 to 65535.")
    elif ":" in netloc:
        host, port = netloc.rsplit(":", 1)
        if not port:
            return _("A port is a number from 1 to 65535.")
    if not host:
        return _("Name the host.")
    if port and not (_PORT_RE.fullmatch(port) and 1 <= int(port) <= 65535):
        return _("A port is a number from 1 to 65535.")
    return _host_problem(host)


# Parameters as libvirt reads them, without any decoding: names, then values of letters,
# digits and / . _ , : - only. No “%”, “+”, “;” (libvirt splits on “;” as well as “&”) or
# “=” inside a value, so that libvirt and this check cannot read a query two ways.
_QUERY_RE = re.compile(r"[a-z_]+=[A-Za-z0-9/._,:-]*(?:&[a-z_]+=[A-Za-z0-9/._,:-]*)*")


def _query_problem(query: str, allowed: frozenset[str]) -> tuple[dict[str, str], str | None]:
    """(the parameters, or why they are not ones this transport may take)."""
    if not query:
        return {}, None
    if not _QUERY_RE.fullmatch(query):
        return {}, _(
            "The parameters after “?” are name=value pairs of letters, digits and / . _ , : -"
        )
    params: dict[str, str] = {}
    for pair in query.split("&"):
        name, _eq, value = pair.partition("=")
        if name not in allowed:
            if allowed:
                return {}, _("Parameter %(name)s is not allowed here; allowed: %(allowed)s.") % {
                    "name": name[:40],
                    "allowed": ", ".join(sorted(allowed)),
                }
            return {}, _("This transport takes no parameters after “?”.")
        if name in params:
            return {}, _("Parameter %(name)s is given twice.") % {"name": name}
        if name in _PATH_PARAMS and (
            not value.startswith("/") or "/../" in f"{value}/" or "/./" in f"{value}/"
        ):
            return {}, _("Parameter %(name)s must be an absolute path without “..”.") % {
                "name": name
            }
        if name in _FLAG_PARAMS and value not in ("0", "1"):
            return {}, _("Parameter %(name)s is 0 or 1.") % {"name": name}
        params[name] = value
    return params, None


def host_uri_problem(uri: str) -> str | None:
    """Why the panel will not connect to `uri`, in plain words; None when it may.

    Allowed: qemu+ssh://[user@]host[:port]/system, qemu+tls://…/system and
    qemu+tcp://…/system (a remote host), qemu:///system with an optional
    ?socket=<absolute path> (the local daemon, or one on another socket), and
    test+unix:///default?socket=<absolute path> (the demo's and the tests' private
    test-driver daemons). The words never repeat what the URI names, nor anything libvirt
    would say: this is decided before libvirt is asked.
    """
    if not uri:
        return _("Give a libvirt URI.")
    if len(uri) > MAX_URI_CHARS:
        return _("A libvirt URI is at most %(n)s characters.") % {"n": MAX_URI_CHARS}
    if not _plain_ascii(uri):
        return _("A libvirt URI has no spaces, control characters or non-ASCII letters.")
    match = _SCHEME_RE.fullmatch(uri)
    if match is None:
        return _("A libvirt URI looks like qemu+ssh://root@kvm1/system.")
    scheme, rest = match.groups()
    if "#" in rest:
        return _("A libvirt URI has no “#” part.")
    location, _q, query = rest.partition("?")
    netloc, slash, path = location.partition("/")
    path = slash + path
    if scheme in URI_PARAMS:
        if path != "/system":
            return _("A remote QEMU host's URI ends in /system (e.g. qemu+ssh://root@kvm1/system).")
        problem = _netloc_problem(netloc, user=True)
        if problem:
            return problem
        return _query_problem(query, URI_PARAMS[scheme])[1]
    if scheme == "qemu":
        if netloc or path != "/system":
            return _(
                "The local QEMU daemon is qemu:///system (the panel uses no per-user session "
                "daemons); a remote host is qemu+ssh://, qemu+tls:// or qemu+tcp://."
            )
        return _query_problem(query, frozenset({"socket"}))[1]
    if scheme == "test+unix":
        if netloc or path != "/default":
            return _("A test-driver host is a private daemon: test+unix:///default?socket=<path>.")
        params, problem = _query_problem(query, frozenset({"socket"}))
        if problem:
            return problem
        if "socket" not in params:
            return _("A test-driver host needs its daemon's socket: ?socket=<absolute path>.")
        return None
    return _(
        "The panel connects to qemu+ssh://, qemu+tls://, qemu+tcp:// or qemu:///system hosts "
        "(and test+unix:///default?socket=… for the demo); not to this kind of URI."
    )


def migrate_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a migration data URI (tcp://host[:port] or rdma://host[:port]);
    None when it is, or when it is blank (the host's setting)."""
    if not uri:
        return None
    if len(uri) > 200 or not _plain_ascii(uri):
        return _("A migration URI is tcp://host[:port] or rdma://host[:port], without spaces.")
    match = _SCHEME_RE.fullmatch(uri)
    if match is None or match.group(1) not in ("tcp", "rdma"):
        return _("A migration URI is tcp://host[:port] or rdma://host[:port].")
    netloc = match.group(2)
    if any(c in netloc for c in "/?#"):
        return _("A migration URI has a host and a port only: no path, no “?” or “#”.")
    return _netloc_problem(netloc, user=False)


def listen_address_problem(address: str) -> str | None:
    """Why `address` is not an IP address or a host name; None when it is, or is blank."""
    if not address:
        return None
    if len(address) > 100 or not _plain_ascii(address):
        return _("A listen address is an IP address or a host name, without spaces.")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        return None
    if _HOSTNAME_RE.fullmatch(address):
        return None
    return _("A listen address is an IP address or a host name.")


def console_address_problem(address: str) -> str | None:
    """Why `address` cannot be a host's console address (where displays listen for the
    console proxy); None when it can, or is blank."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return _("A console address is an IP address, e.g. 10.0.0.2.")
    if ip.is_unspecified:
        return _(
            "%(address)s means every interface: anyone on any network could reach the "
            "screens. Give the host's address on the management network."
        ) % {"address": address}
    if ip.is_loopback:
        return _(
            "%(address)s is the host's own loopback, which the console proxy on another "
            "machine cannot reach: leave the field blank for that."
        ) % {"address": address}
    if ip.is_multicast:
        return _("A console address is one host's address, not a multicast group.")
    return None


def uri_is_local(uri: str) -> bool:
    """Whether `uri` reaches a daemon on the panel's own machine through a unix socket:
    only such a connection can hand over a file descriptor (openGraphicsFD)."""
    return uri.split(":", 1)[0] in ("qemu", "test+unix")


@dataclass(frozen=True)
class DisplayRoute:
    """How the console proxy reaches a domain's display."""

    address: str = ""  # "": through libvirt's own connection (openGraphicsFD)
    port: int = 0


def display_route(
    name: str, uri: str, listen: tuple[str, ...], port: int, console_address: str
) -> DisplayRoute | str:
    """The route to a display listening on `listen` (its live port `port`) of a host at
    `uri` with `console_address`; or why there is none, in plain words.

    A display on the host's console address is reached there, by TCP: that address is a
    superuser's setting, so the proxy connects nowhere a domain's XML alone could name. Any
    other display is reached through libvirt's connection, which a local one can do.
    """
    if console_address and console_address in listen:
        if port <= 0:
            return _("%(name)s's display has no port yet; try again in a moment.") % {"name": name}
        return DisplayRoute(console_address, port)
    if uri_is_local(uri):
        return DisplayRoute()
    if not console_address:
        return _(
            "%(name)s runs on a remote host without a console address, so the console "
            "proxy cannot reach its display. A superuser sets the host's console address "
            "(its address on the management network); then make the display listen there "
            "and restart %(name)s."
        ) % {"name": name}
    return _(
        "%(name)s's display listens on %(listen)s, not on its host's console address "
        "%(address)s, where the console proxy reaches displays. Make it listen on "
        "%(address)s (edit its XML) and restart %(name)s."
    ) % {"name": name, "listen": ", ".join(listen) or "127.0.0.1", "address": console_address}


# --- snapshots ------------------------------------------------------------------------

SNAPSHOT_NAME_MAX = 100


def snapshot_name_problem(name: str) -> str | None:
    """Why `name` cannot name a snapshot; None when it can."""
    if not name.strip():
        return _("Give the snapshot a name.")
    if len(name) > SNAPSHOT_NAME_MAX:
        return _("A snapshot name is at most %(n)d characters.") % {"n": SNAPSHOT_NAME_MAX}
    if "/" in name:
        return _("A snapshot name cannot contain “/”.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return _("A snapshot name cannot contain control characters (tabs, line breaks…).")
    if name != name.strip():
        return _("A snapshot name does not start or end with a space.")
    return None


def snapshot_limit_problem(name: str, team: str, count: int, limit: int) -> str | None:
    """Why one more snapshot of domain `name` (holding `count`) is over its team's limit."""
    if count + 1 <= limit:
        return None
    return _(
        "%(name)s has %(count)d snapshots and %(team)s allows %(limit)d per VM: delete one first."
    ) % {"name": name, "count": count, "team": team, "limit": limit}


# --- migration ------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationChoice:
    """What the migration form asks for."""

    destination: Host | None  # one of the panel's hosts …
    destination_uri: str = ""  # … or, for superusers, any libvirt URI
    flags: frozenset[str] = frozenset()
    bandwidth_mib_s: int = 0
    new_name: str = ""
    migrate_uri: str = ""
    listen_address: str = ""


DEFAULT_MIGRATION_FLAGS = frozenset({"LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"})


def destination_uris(choice: MigrationChoice) -> tuple[str, str]:
    """(the panel's URI of the destination, the URI the source daemon uses)."""
    if choice.destination is not None:
        dest = choice.destination
        return dest.uri, dest.migration_uri or dest.uri
    return choice.destination_uri, choice.destination_uri


class MigrationOutcome:
    """Where a guest is after a migration that libvirt did not report as done."""

    MOVED = "moved"  # runs on the destination, and the source holds it no more
    STAYED = "stayed"  # the source still has it (or neither host runs it): it did not move
    UNKNOWN = "unknown"  # a host does not answer, or a copy is half-way: look again later


def _holds_running(seen: GuestSighting | None) -> bool:
    """The host runs the guest for real: running, or paused for a reason of its own."""
    if seen is None or not seen.present or seen.job:
        return False
    if seen.state in (hypervisor.STATE_RUNNING, hypervisor.STATE_BLOCKED):
        return True
    return seen.state == hypervisor.STATE_PAUSED and seen.reason not in hypervisor.IN_TRANSIT_PAUSES


def _active(seen: GuestSighting) -> bool:
    return seen.present and (seen.state in hypervisor.ACTIVE_STATES or seen.job)


def migration_outcome(
    source: GuestSighting | None, dest: GuestSighting | None, offline: bool = False
) -> str:
    """Judge a migration libvirt did not report as done, from what each host says now
    (None: the host did not answer). "Runs on the destination" means running there (not a
    paused, half-arrived copy) and no longer active on the source; anything short of
    knowing that either way is UNKNOWN, never success. An offline migration moves only the
    definition: moved once the destination holds it."""
    if offline:
        if dest is None:
            return MigrationOutcome.UNKNOWN
        return MigrationOutcome.MOVED if dest.present else MigrationOutcome.STAYED
    if _holds_running(dest) and source is not None and not _active(source):
        return MigrationOutcome.MOVED
    if _holds_running(source) and not _holds_running(dest):
        return MigrationOutcome.STAYED
    if (
        source is not None
        and dest is not None
        and not _active(source)
        and not dest.job
        and not (dest.present and dest.state in hypervisor.ACTIVE_STATES)
    ):
        return MigrationOutcome.STAYED  # it runs nowhere: it stopped on the source
    return MigrationOutcome.UNKNOWN


# --- since when a domain is in its state ---------------------------------------------

# Paused for these reasons (libvirt's words, as the inventory stores them) a guest is being
# moved or started: nobody stopped it.
PASSING_PAUSES = frozenset({"migration", "post-copy", "starting up"})
RUNNING, PASSING, LEFT = "running", "passing", "left"


def state_kind(state: int, reason: str) -> str:
    """A domain's state as its since-time counts it: RUNNING (running or blocked), PASSING
    (paused a moment while it moves or starts), LEFT (the copy a migration left shut off
    behind it: the guest runs on where it went), else the state's number."""
    if state in (State.RUNNING, State.BLOCKED):
        return RUNNING
    if state == State.PAUSED and reason in PASSING_PAUSES:
        return PASSING
    if state == State.SHUTOFF and reason == "migrated":
        return LEFT
    return str(int(state))


def arrives_by_migration(state: int, reason: str) -> bool:
    """Read on a migration's destination: the incoming copy, or the guest running there
    as it arrived."""
    kind = state_kind(state, reason)
    if kind == RUNNING:
        return reason in ("migrated", "post-copy")
    return kind == PASSING and reason != "starting up"


def carries_running_since(state: int, reason: str) -> bool:
    """A row stored in this state holds the guest's running-since (see state_goes_on)."""
    return state_kind(state, reason) in (RUNNING, PASSING, LEFT)


def state_goes_on(old: tuple[int, str], new: tuple[int, str]) -> bool:
    """Whether a domain stored in `old` (state, reason) and read in `new` is still in the
    state its since-time counts, so that the time stays. A migration is no change: the
    guest runs on through the pause that moves it, and its row follows it to the
    destination (the copy it leaves shut off keeps the time until the row moves; started
    again there instead, it is a new start)."""
    was, now = state_kind(*old), state_kind(*new)
    if was == now:
        return True
    if now == PASSING:
        return was == RUNNING
    if was == PASSING:
        return now == RUNNING
    if now == LEFT:
        return was == RUNNING
    if was == LEFT:
        return arrives_by_migration(*new)
    return False


def migration_flag_problems(domain: Domain, choice: MigrationChoice) -> list[str]:
    """What in the choice itself does not fit: flag combinations this libvirt refuses, the
    domain's state against the flags, the destination, the new name and the bandwidth.
    Facts of the hosts are the service's to read (`services.migration`)."""
    flags = choice.flags
    problems: list[str] = []
    # The URIs and addresses first: a refused URI is never handed to libvirt.
    if choice.destination is None:
        problem = host_uri_problem(choice.destination_uri)
        if problem:
            problems.append(_("Destination URI: %(problem)s") % {"problem": problem})
    problem = migrate_uri_problem(choice.migrate_uri)
    if problem:
        problems.append(problem)
    problem = listen_address_problem(choice.listen_address)
    if problem:
        problems.append(problem)
    if problems:
        return problems
    unknown = flags - set(MIGRATION_FLAGS)
    if unknown:
        return [_("Unknown migration flags: %(flags)s.") % {"flags": ", ".join(sorted(unknown))}]
    copy = flags & {"NON_SHARED_DISK", "NON_SHARED_INC"}
    # Flag combinations this libvirt refuses, said before it does.
    if "TUNNELLED" in flags and "PEER2PEER" not in flags:
        problems.append(
            _("Tunnelled migration goes through the source daemon: choose peer-to-peer too.")
        )
    if "TUNNELLED" in flags and copy:
        problems.append(
            _("This libvirt cannot copy storage through a tunnel: choose one of the two.")
        )
    if copy == {"NON_SHARED_DISK", "NON_SHARED_INC"}:
        problems.append(_("Copy the whole disks or only their changes, not both."))
    if "OFFLINE" in flags:
        if "PERSIST_DEST" not in flags:
            problems.append(
                _(
                    "An offline migration moves only the configuration: "
                    "choose to keep it defined on the destination (PERSIST_DEST)."
                )
            )
        if "LIVE" in flags:
            problems.append(_("Offline and live exclude each other."))
        if copy:
            problems.append(_("An offline migration copies no storage."))
    if "UNDEFINE_SOURCE" in flags and "PERSIST_DEST" not in flags and domain.persistent:
        problems.append(
            _(
                "Deleting its definition on the source (UNDEFINE_SOURCE) without keeping it "
                "defined on the destination (PERSIST_DEST) would lose the VM's configuration."
            )
        )
    if "PAUSED" in flags and "OFFLINE" in flags:
        problems.append(_("An offline VM cannot be left paused."))
    # The guest's state must fit the flags.
    if "OFFLINE" not in flags and not domain.is_active:
        problems.append(
            _("%(name)s is shut off: only an offline migration can move it.")
            % {"name": domain.name}
        )
    if "OFFLINE" in flags and not domain.persistent:
        problems.append(_("A temporary VM has no configuration to move offline."))
    if choice.destination is not None and choice.destination.pk == domain.host_id:
        problems.append(_("The destination is the host the VM is on."))
    if choice.destination is not None and not choice.destination.enabled:
        problems.append(_("Host %(host)s is disabled.") % {"host": choice.destination})
    if choice.new_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", choice.new_name):
        problems.append(_("A new name uses letters, digits, dots, dashes and underscores only."))
    if choice.bandwidth_mib_s < 0:
        problems.append(_("Bandwidth is a number of MiB/s, 0 for no limit."))
    return problems


# --- resize -----------------------------------------------------------------------

# Beyond what any libvirt driver takes; also keeps the numbers inside libvirt's C types.
MAX_VCPUS = 16384
MAX_MEMORY_MIB = 2**32


@dataclass(frozen=True)
class ResizeRequest:
    """What the resize form asks for. None leaves a value as it is; memory in MiB.

    `live` and `config` say where the counts change; the maximums only ever change in the
    saved configuration (libvirt cannot change them on a running domain).
    """

    vcpus: int | None = None
    vcpus_max: int | None = None
    memory_mib: int | None = None
    memory_max_mib: int | None = None
    live: bool = False
    config: bool = False


@dataclass(frozen=True)
class ResizeStep:
    """One libvirt call of a resize: `what` is vcpus, vcpus_max, memory or memory_max."""

    what: str
    value: int  # a number of vCPUs, or KiB
    live: bool = False
    config: bool = False


def _mib(kib: int | None) -> int | None:
    return None if kib is None else kib // 1024


def _resize_rows(lim: ResizeLimits, req: ResizeRequest) -> list[tuple]:
    """(what, unit in KiB, wanted, wanted maximum, live now, live maximum, config now,
    config maximum) for vCPUs and for memory, the memory in MiB."""
    return [
        (
            "vcpus", 1, req.vcpus, req.vcpus_max, lim.vcpus_live, lim.vcpus_max_live,
            lim.vcpus_config, lim.vcpus_max_config,
        ),
        (
            "memory", 1024, req.memory_mib, req.memory_max_mib, _mib(lim.memory_live_kib),
            _mib(lim.memory_max_live_kib), _mib(lim.memory_config_kib),
            _mib(lim.memory_max_config_kib),
        ),
    ]  # fmt: skip


def resize_plan(lim: ResizeLimits, req: ResizeRequest) -> list[ResizeStep]:
    """The libvirt calls that take the domain from `lim` to `req`; [] if nothing changes.

    Maximums first, so that a count may rise to a new maximum; but where a maximum comes
    down below the configuration's count, that count comes down first. Either way every
    count stays within its maximum at each step.
    """
    steps: list[ResizeStep] = []
    for what, unit, value, top, now_live, _max_live, now_config, now_top in _resize_rows(lim, req):
        live = req.live and value is not None and now_live is not None and value != now_live
        config = req.config and value is not None and now_config is not None and value != now_config
        count = [ResizeStep(what, value * unit, live, config)] if live or config else []
        if top is not None and now_top is not None and top != now_top:
            maximum = [ResizeStep(f"{what}_max", top * unit, config=True)]
            steps += count + maximum if top < (now_config or 0) else maximum + count
        else:
            steps += count
    return steps


def resize_problems(domain: Domain, lim: ResizeLimits, req: ResizeRequest) -> list[str]:
    """Everything that would make this resize fail, in plain words, before libvirt is asked."""
    name = domain.name
    problems: list[str] = []
    labels = {
        "vcpus": _("vCPUs"),
        "vcpus_max": _("Maximum vCPUs"),
        "memory_mib": _("Memory"),
        "memory_max_mib": _("Maximum memory"),
    }
    for field, label in labels.items():
        value = getattr(req, field)
        ceiling = MAX_MEMORY_MIB if field.startswith("memory") else MAX_VCPUS
        if value is not None and value < 1:
            problems.append(_("%(what)s must be at least 1.") % {"what": label})
        elif value is not None and value > ceiling:
            problems.append(
                _("%(what)s: %(value)s is more than libvirt takes (%(max)s).")
                % {"what": label, "value": value, "max": ceiling}
            )
    if req.live and not lim.active:
        problems.append(
            _(
                "%(name)s is shut off: a live change needs it running. Choose the saved "
                "configuration only."
            )
            % {"name": name}
        )
    if not lim.persistent:
        if req.config:
            problems.append(
                _(
                    "%(name)s is temporary: it has no saved configuration to change. "
                    "Choose live only."
                )
                % {"name": name}
            )
        if (req.vcpus_max is not None and req.vcpus_max != lim.vcpus_max_live) or (
            req.memory_max_mib is not None and req.memory_max_mib != _mib(lim.memory_max_live_kib)
        ):
            problems.append(
                _(
                    "The maximums change only in a saved configuration, and %(name)s is "
                    "temporary: it has none."
                )
                % {"name": name}
            )
    host_mib = _mib(lim.host_memory_kib) if lim.host_memory_kib else None
    for field in ("memory_mib", "memory_max_mib"):
        value = getattr(req, field)
        if host_mib and value is not None and value > host_mib:
            problems.append(
                _(
                    "%(what)s: %(value)s MiB is more than the host's whole memory of %(host)s "
                    "MiB; the guest could never have it."
                )
                % {"what": labels[field], "value": value, "host": host_mib}
            )
    if problems:
        return problems

    if not req.live and not req.config:
        # The form shows the live values of a running domain, the configuration's else.
        shown = [
            (value, now_live if lim.active else now_config)
            for _w, _u, value, _t, now_live, _ml, now_config, _mc in _resize_rows(lim, req)
        ]
        if any(value is not None and value != now for value, now in shown):
            problems.append(
                _("Choose where the change goes: the running VM, the saved configuration, or both.")
            )
    for what, _unit, value, top, _now_live, max_live, now_config, now_top in _resize_rows(lim, req):
        mib = what == "memory"
        new_top = top if top is not None else now_top
        if req.live and value is not None and max_live is not None and value > max_live:
            problems.append(
                (
                    _(
                        "%(value)s MiB is more than the running VM's maximum memory of "
                        "%(max)s MiB. A new maximum takes effect only at the next boot."
                    )
                    if mib
                    else _(
                        "%(value)s vCPUs is more than the running VM's maximum of "
                        "%(max)s. A new maximum takes effect only at the next boot."
                    )
                )
                % {"value": value, "max": max_live}
            )
        if not lim.persistent or new_top is None:
            continue
        changed_here = req.config and value is not None
        count = value if changed_here else now_config
        if count is not None and count > new_top:
            if changed_here:
                message = (
                    _(
                        "%(value)s MiB is more than the maximum memory of %(max)s MiB in the "
                        "saved configuration; raise the maximum as well."
                    )
                    if mib
                    else _(
                        "%(value)s vCPUs is more than the maximum of %(max)s in the saved "
                        "configuration; raise the maximum as well."
                    )
                )
            else:
                message = (
                    _(
                        "The new maximum memory of %(max)s MiB is below the %(value)s MiB of "
                        "the saved configuration; lower that as well."
                    )
                    if mib
                    else _(
                        "The new maximum of %(max)s vCPUs is below the %(value)s vCPUs of the "
                        "saved configuration; lower those as well."
                    )
                )
            problems.append(message % {"value": count, "max": new_top})
    if not problems and not resize_plan(lim, req):
        problems.append(_("Nothing to change: these are the current values."))
    return problems


# --- edited XML -------------------------------------------------------------------

MAX_XML_CHARS = 1_000_000


def xml_edit_check(current: str, new_xml: str) -> tuple[str, str]:
    """(diff, problem) of replacing `current` by `new_xml`; problem "" when it may go."""
    if len(new_xml) > MAX_XML_CHARS:
        return "", _("The XML is longer than %(n)s characters.") % {"n": MAX_XML_CHARS}
    try:
        new = domxml.edited_domain_identity(new_xml)
    except domxml.XMLError as exc:
        return "", str(exc)
    now = domxml.identity(current)
    try:
        same_uuid = uuidlib.UUID(new.uuid) == uuidlib.UUID(now.uuid)
    except ValueError:
        same_uuid = False
    if not same_uuid:
        return "", _(
            "The UUID must stay %(uuid)s: this page edits this VM, and another UUID "
            "would define another VM."
        ) % {"uuid": now.uuid}
    if new.name != now.name:
        return "", _("The name must stay %(name)s: renaming is not done by editing the XML.") % {
            "name": now.name
        }
    diff = domxml.xml_diff(current, new_xml)
    if not diff:
        return "", _("The XML is the same as the saved configuration: nothing to change.")
    return diff, ""


# --- what a team admin's XML may reach on the host ---------------------------------------

# Host devices any guest may read from: entropy sources.
HARMLESS_DEVICES = frozenset({"/dev/random", "/dev/urandom", "/dev/hwrng"})


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    if ".." in path.split("/"):
        return False  # no way out of an allowed folder
    norm = posixpath.normpath(path)
    return any(norm == r.rstrip("/") or norm.startswith(r.rstrip("/") + "/") for r in roots)


def edit_policy_problems(
    new: domxml.DomainReach,
    current: domxml.DomainReach | None,
    platforms: tuple[domxml.Platform, ...],
    roots: tuple[str, ...],
    allow_hostdev: bool = False,
) -> list[str]:
    """What in a domain XML reaches further on its host than a team admin may, in plain
    words; [] when it may go. Superusers are not held to this (their edits are recorded).

    What the saved configuration already has (`current`, None for a new domain) stays
    allowed: the policy is about what the edit adds. Checked: the domain type, machine
    and architecture among the host's `platforms`; the emulator one the host names; every
    host path inside `roots` (the host's storage pools and the folders a superuser allowed
    for it); no network disks, hypervisor pass-through (other XML namespaces), security
    label changes or interface scripts; host devices only where `allow_hostdev`.
    """
    was = current or domxml.DomainReach("", "", "", "", (), (), (), (), (), ())
    problems: list[str] = []
    same_platform = (new.domain_type, new.arch, new.machine) == (
        was.domain_type,
        was.arch,
        was.machine,
    )
    fitting = [
        p
        for p in platforms
        if p.domain_type == new.domain_type and (not new.arch or p.arch == new.arch)
    ]
    if not same_platform and not fitting:
        offered = sorted({f"{p.domain_type} ({p.arch})" for p in platforms})
        problems.append(
            _("This host runs %(offered)s, not %(type)s (%(arch)s).")
            % {
                "offered": ", ".join(offered) or "-",
                "type": new.domain_type or "-",
                "arch": new.arch or "-",
            }
        )
    elif not same_platform and new.machine and not any(new.machine in p.machines for p in fitting):
        problems.append(
            _("This host has no machine type %(machine)s for %(type)s.")
            % {"machine": new.machine, "type": new.domain_type}
        )
    emulators = {e for p in platforms for e in p.emulators}
    if new.emulator and new.emulator != was.emulator and new.emulator not in emulators:
        problems.append(
            _("The emulator must be the one the host names (%(emulators)s), not %(path)s.")
            % {"emulators": ", ".join(sorted(emulators)) or "-", "path": new.emulator}
        )
    problems += path_problems(new, was, roots)
    if set(new.network_disks) - set(was.network_disks):
        problems.append(_("Disks served over the network are set up by a superuser."))
    if set(new.foreign) - set(was.foreign):
        problems.append(
            _(
                "Elements of other XML namespaces (such as qemu:commandline) pass options "
                "straight to the hypervisor; only a superuser may add them."
            )
        )
    if set(new.hostdevs) - set(was.hostdevs) and not allow_hostdev:
        problems.append(_("Passing host devices through to a guest is not allowed on this host."))
    if new.seclabels != was.seclabels:
        problems.append(_("Security labels are the host's to set; leave them as they are."))
    if set(new.scripts) - set(was.scripts):
        problems.append(_("Interface scripts run on the host; only a superuser may add them."))
    return problems


def _same_path(path: str) -> str:
    """`path` as the host resolves its spelling ("//", "/./"); symbolic links aside."""
    return posixpath.normpath(re.sub(r"/+", "/", path))


def taken_paths(paths, taken: frozenset[str]) -> list[str]:
    """Those of `paths` that another domain keeps to itself (`taken`: its disks, logs,
    sockets, as `hypervisor.paths_in_use` reads them), however spelt; the entropy devices
    every guest may read are nobody's."""
    theirs = {_same_path(p) for p in taken}
    return sorted({p for p in paths if p not in HARMLESS_DEVICES and _same_path(p) in theirs})


def taken_path_problems(
    new: domxml.DomainReach, current: domxml.DomainReach | None, taken: frozenset[str]
) -> list[str]:
    """Every host path `new` adds that another domain on the host keeps to itself, in
    plain words: a domain given another's disk (even read-only), log or socket reaches its
    data, whichever team it is of. What the saved configuration already has stays where
    it is (a log file the VM writes is not a disk it may read)."""
    was = set(current.paths) if current is not None else set()
    added = [p for where, p in new.paths if (where, p) not in was]
    return [
        _("%(path)s is in use by another VM on this host; a VM may not use another VM's files.")
        % {"path": path}
        for path in taken_paths(added, taken)
    ]


def path_problems(
    new: domxml.DomainReach, current: domxml.DomainReach | None, roots: tuple[str, ...]
) -> list[str]:
    """Every host path `new` names that lies outside `roots` and was not in `current`
    already, in plain words. The part of the policy templates and approvals go through."""
    was = set(current.paths) if current is not None else set()
    return [
        _(
            "%(path)s (%(where)s) is outside the folders allowed on this host "
            "(%(roots)s); a superuser can allow more."
        )
        % {"path": path, "where": where, "roots": ", ".join(roots) or "-"}
        for where, path in new.paths
        if (where, path) not in was and path not in HARMLESS_DEVICES and not _inside(path, roots)
    ]
