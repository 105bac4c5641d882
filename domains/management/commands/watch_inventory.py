"""The inventory watcher: libvirt lifecycle events plus a periodic full read per host.

Runs for as long as the panel runs. Events refresh the one domain they name within a
moment; the full read catches what events missed (changes while the watcher was down, a
host daemon that restarted). A host that stops answering is retried every pass, and
picked up again when it comes back, without restarting the watcher. Each host is watched
in a thread of its own, so one that hangs stalls nobody else.

Any number of watchers may run, on any machines: each host is owned by one of them at a
time through a lease in Redis, and they share the hosts evenly (`domains/leases.py`). A new
watcher takes its share; a dead one's hosts are taken over within one lease period.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid as uuidlib

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.db import connection as db_connection

from domains import collector, hypervisor, inventory, leases, liveness, outcomes
from domains.collector import HostCollector
from domains.hypervisor import HypervisorError
from domains.models import Host
from domains.runner import adopt_saved_images, recover_orphaned_operations, settle_stale_queued

log = logging.getLogger("domains.watcher")

# How often the watcher looks for operations orphaned by a dead worker.
RECOVERY_SECONDS = 15
# How often usage history is rolled up into coarser tiers and pruned.
ROLL_UP_SECONDS = 60


class HostWatch(threading.Thread):
    """One host, watched in a thread of its own: its events, its full reads, its errors.

    A host that hangs holds only its own thread (every libvirt read is bounded, see
    `hypervisor`), so the other hosts' events and reconciles go on meanwhile. The `Watcher`
    reads the hosts once a pass for all of them and hands each its fresh row (`host`);
    it sets `stopping` when the host is disabled, changed or gone.
    """

    def __init__(
        self,
        host: Host,
        reconcile_seconds: float,
        pass_seconds: float,
        tenure: leases.Tenure | None = None,
    ):
        super().__init__(name=f"watch-{host.name}", daemon=True)
        self.host = host
        self.uri = host.uri
        self.reconcile_seconds = reconcile_seconds
        self.pass_seconds = pass_seconds
        self.events: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        self.registered = False  # a live event registration on this process's connection
        self.last_full = 0.0
        # The host's lease (None: `--once`, no lease): no work without it.
        self.tenure = tenure
        self.last_write = 0.0  # wall clock, the end of the last unit of work
        self.last_pass = 0.0  # wall clock, the end of the last pass (for liveness)

    def may_write(self) -> bool:
        return self.tenure is None or self.tenure.usable()

    def on_event(self, _uri: str, uuid: str) -> None:
        # Runs in libvirt's event thread: only hand the work over.
        self.events.put(uuid)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    close_old_connections()
                    if not self.may_write():
                        # The lease is lost or not renewed in time: another watcher may own
                        # the host by now. The Watcher stops this thread, or renews.
                        self.stopping.wait(0.2)
                        continue
                    self.check_once()
                    self.last_write = time.time()
                    self.drain_events(self.pass_seconds)
                    self.last_pass = time.time()
                except Exception:
                    # A database hiccup must not end the watch of this host.
                    log.exception("watch of %s failed; going on", self.uri)
                    self.stopping.wait(1)
        finally:
            db_connection.close()  # this thread's own database connection

    def check_once(self) -> None:
        """(Re)connect or reconcile as due."""
        host = self.host
        try:
            if not (self.registered and hypervisor.is_alive(host.uri)):
                self.connect(host)
            elif time.monotonic() - self.last_full >= self.reconcile_seconds:
                inventory.reconcile_host(host)
                self.last_full = time.monotonic()
        except HypervisorError as exc:
            if self.registered:
                log.warning("host %s does not answer: %s", host.name, exc.message)
            self.registered = False
            Host.objects.filter(pk=host.pk).update(last_error=exc.message)

    def connect(self, host: Host) -> None:
        """(Re)register for events on `host`, store what it can do and read it in full."""
        hypervisor.forget(host.uri)
        hypervisor.watch_lifecycle(host.uri, self.on_event)
        self.registered = True
        # A new connection may reach another daemon (upgraded, restarted): ask it afresh.
        inventory.store_capabilities(host)
        inventory.reconcile_host(host)
        self.last_full = time.monotonic()
        log.info("watching host %s (%s)", host.name, host.uri)

    def drain_events(self, wait: float) -> None:
        """Refresh the domains named by events that arrive within `wait` seconds."""
        deadline = time.monotonic() + wait
        while not self.stopping.is_set():
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            try:
                pending = {self.events.get(timeout=timeout)}
            except queue.Empty:
                return
            # Gather a burst of events before touching the database.
            while True:
                try:
                    pending.add(self.events.get_nowait())
                except queue.Empty:
                    break
            if not self.may_write():
                return  # no longer surely ours: its next owner reads it in full
            host = self.host
            while pending:
                uuid = pending.pop()
                try:
                    inventory.refresh_domain(host, uuidlib.UUID(uuid))
                except HypervisorError as exc:
                    log.warning("refresh of %s on %s failed: %s", uuid, host.name, exc)
                except Exception:
                    # The database failed it (its connection dropped, say): the events not
                    # done go back, for the next turn on a fresh connection. Lost, they
                    # left their changes out of the inventory until the next full read.
                    for left in (uuid, *pending):
                        self.events.put(left)
                    raise
            self.last_write = time.time()


class Owned:
    """A host this process holds: its lease, its watch and collector threads."""

    def __init__(self, host: Host, tenure: leases.Tenure, watch: HostWatch, collecting):
        self.host = host
        self.tenure = tenure
        self.watch = watch
        self.collector: HostCollector | None = collecting
        self.started_at = time.time()
        self.released = False

    @property
    def threads(self) -> list[threading.Thread]:
        return [t for t in (self.watch, self.collector) if t is not None]

    def stop(self) -> None:
        for thread in self.threads:
            thread.stopping.set()

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def last_write(self) -> float:
        return max([self.started_at, *(t.last_write for t in self.threads)])


class Watcher:
    """Holds the leases of its fair share of the enabled hosts (`leases.py`) and runs a
    `HostWatch` and a `HostCollector` for each; lets go of hosts disabled, changed, gone
    or above its share; now and then (taking turns with other watchers) settles what dead
    workers left running and rolls the usage history up.

    Its leases are renewed by a keeper thread of their own, so a slow pass (a database
    that waits, a recovery that asks a slow host) never lets them lapse.
    """

    def __init__(
        self,
        reconcile_seconds: float,
        pass_seconds: float = 0.5,
        stats: bool = True,
        lease_seconds: float | None = None,
    ):
        self.reconcile_seconds = reconcile_seconds
        self.pass_seconds = pass_seconds
        self.stats = stats
        self.lease_seconds = float(lease_seconds or settings.VMPANEL_LEASE_SECONDS)
        self.board = leases.Board("watcher")
        self.me = leases.process_name()
        self.members: list[str] = [self.me]
        self.owned: dict[int, Owned] = {}
        self.releasing: list[Owned] = []
        self.lock = threading.Lock()  # owned and releasing, between the pass and the keeper
        self.stopping = False
        self.keeper_stop = threading.Event()
        self.last_recovery = 0.0
        self.last_roll_up = 0.0

    # --- leases ---------------------------------------------------------------------

    def keep_leases(self) -> None:
        """Say this process is alive and renew every lease it holds; a lease that was not
        ours any more is marked lost (its threads stop writing at once)."""
        with self.lock:
            held = [o for o in [*self.owned.values(), *self.releasing] if not o.tenure.lost]
        sent = time.monotonic()
        members = self.board.join(self.me, self.lease_seconds)
        renewed = self.board.renew({o.host.pk: o.tenure.value for o in held}, self.lease_seconds)
        self.members = members
        for owned in held:
            if owned.host.pk in renewed:
                owned.tenure.renewed(sent)
            elif not owned.released and not owned.tenure.lost:
                owned.tenure.lost = True
                log.warning("lease of host %s lost; another watcher owns it", owned.host.name)
                self.board.record("lost", owned.host.pk, self.me)

    def keep(self) -> None:
        """The keeper thread: `keep_leases` every sixth of a lease (renewals at most a
        third apart, even with one attempt failing)."""
        while not self.keeper_stop.wait(self.lease_seconds / 6):
            try:
                self.keep_leases()
            except Exception:  # Redis away a moment: the tenures age; the next try renews
                log.exception("lease renewal failed; trying again")

    def take(self, host: Host) -> None:
        sent = time.monotonic()
        value = self.board.acquire(host.pk, self.me, self.lease_seconds)
        if value is None:
            return  # another watcher was quicker
        tenure = leases.Tenure(host.pk, value, self.lease_seconds, sent)
        watch = HostWatch(host, self.reconcile_seconds, self.pass_seconds, tenure)
        collecting = HostCollector(host, tenure) if self.stats else None
        owned = Owned(host, tenure, watch, collecting)
        self.board.record("acquired", host.pk, self.me)
        log.info("host %s taken (lease %s)", host.name, value)
        with self.lock:
            self.owned[host.pk] = owned
        for thread in owned.threads:
            thread.start()

    def let_go(self, owned: Owned, why: str) -> None:
        """Stop the host's threads; its lease is released once they have ended
        (`finish_releases`), so that the next owner never writes beside them."""
        log.info("host %s let go: %s", owned.host.name, why)
        owned.stop()
        with self.lock:
            self.owned.pop(owned.host.pk, None)
            self.releasing.append(owned)

    def finish_releases(self) -> None:
        for owned in list(self.releasing):
            if owned.running():
                continue
            self.board.record(
                "stopped", owned.host.pk, self.me,
                started=owned.started_at, last_write=owned.last_write(),
            )  # fmt: skip
            if not owned.tenure.lost:
                owned.released = True
                self.board.release(owned.host.pk, owned.tenure.value)
            with self.lock:
                self.releasing.remove(owned)
            if not any(o.host.uri == owned.host.uri for o in self.owned.values()):
                hypervisor.forget(owned.host.uri)  # its events are nobody's business here

    # --- the pass ---------------------------------------------------------------------

    def check_hosts(self) -> None:
        hosts = {h.pk: h for h in Host.objects.filter(enabled=True)}
        for pk, owned in list(self.owned.items()):
            host = hosts.get(pk)
            if owned.tenure.lost:
                self.let_go(owned, "lease lost")
            elif host is None:
                self.let_go(owned, "disabled or removed")
            elif host.uri != owned.watch.uri:
                self.let_go(owned, "its URI changed")  # taken again, with the new one
            elif not all(t.is_alive() for t in owned.threads):
                self.let_go(owned, "a thread ended")  # taken again, afresh
            else:
                # This pass's row (a superuser may have changed it).
                owned.watch.host = host
                if owned.collector is not None:
                    owned.collector.host = host
        self.finish_releases()
        # Who is alive now, not at the keeper's last renewal (up to a sixth of a lease
        # ago): a watcher that just joined gets its share at this pass.
        members = self.board.members()
        if self.me in members:
            self.members = members
        owners = self.board.owners(list(hosts))
        releasing = {o.host.pk for o in self.releasing}
        free = [pk for pk, owner in owners.items() if owner is None and pk not in releasing]
        take, release = leases.plan(self.me, self.members, list(hosts), self.owned, free)
        for pk in release:
            self.let_go(self.owned[pk], "above this watcher's share")
        for pk in take:
            self.take(hosts[pk])
        liveness.mark_hosts_fresh(
            {pk: o.watch.last_pass for pk, o in self.owned.items() if o.watch.last_pass},
            [pk for pk in free if pk not in self.owned],
            list(hosts),
        )

    def roll_up(self) -> None:
        """Once a minute, usage history into coarser tiers, and the oldest pruned (by one
        watcher: the first to ask)."""
        if not self.stats or time.monotonic() - self.last_roll_up < ROLL_UP_SECONDS:
            return
        self.last_roll_up = time.monotonic()
        if self.board.take_turn("roll-up", self.me, ROLL_UP_SECONDS * 0.9):
            collector.roll_up()

    def recover_orphans(self) -> None:
        """Now and then, mark failed what dead workers left running, and settle what no
        worker took (by one watcher at a time; workers do it too, and twice is harmless)."""
        if time.monotonic() - self.last_recovery < RECOVERY_SECONDS:
            return
        self.last_recovery = time.monotonic()
        if not self.board.take_turn("recovery", self.me, RECOVERY_SECONDS * 0.9):
            return
        recover_orphaned_operations()
        settle_stale_queued()
        adopt_saved_images()
        outcomes.settle_checking_operations()

    def read_once(self) -> None:
        """Every enabled host read once, one after the other (`--once`; no leases)."""
        for host in Host.objects.filter(enabled=True):
            HostWatch(host, self.reconcile_seconds, self.pass_seconds).check_once()

    def run(self, once: bool = False) -> None:
        hypervisor.start_event_loop()
        if once:
            self.read_once()
            return
        log.info("watcher %s: leases of %g s", self.me, self.lease_seconds)
        try:
            self.keep_leases()  # registered before the first share is worked out
        except Exception:
            log.exception("lease renewal failed; trying again")
        keeper = threading.Thread(target=self.keep, name="lease-keeper", daemon=True)
        keeper.start()
        while not self.stopping:
            try:
                close_old_connections()
                self.check_hosts()
                self.recover_orphans()
                self.roll_up()
                liveness.mark_watcher_beat()
            except Exception:
                # The watcher keeps the test-driver worlds alive and the inventory
                # fresh: a database hiccup must not end it. Log, pause, go on.
                log.exception("watcher pass failed; going on")
                time.sleep(1)
            time.sleep(self.pass_seconds)
        self.shut_down()
        self.keeper_stop.set()
        keeper.join(timeout=5)

    def shut_down(self, wait: float = 5.0) -> None:
        """Let go of every host and release the leases of those whose threads ended in
        time (the others lapse by themselves), then leave: the others take over at once."""
        for owned in list(self.owned.values()):
            self.let_go(owned, "shutting down")
        deadline = time.monotonic() + wait
        while True:
            try:
                self.finish_releases()
            except Exception:
                log.exception("releasing leases failed; they lapse by themselves")
                break
            if not self.releasing or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            self.board.leave(self.me)
        except Exception:
            log.exception("leaving failed; this watcher's registration lapses by itself")


class Command(BaseCommand):
    help = "Keep the domain inventory in step with libvirt on every enabled host."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="read every host once and exit")
        parser.add_argument(
            "--reconcile-seconds",
            type=float,
            default=settings.VMPANEL_RECONCILE_SECONDS,
            help="how often to re-read each host in full",
        )

    def handle(self, *args, **options):
        watcher = Watcher(options["reconcile_seconds"])

        def stop(_signum, _frame):
            watcher.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        watcher.run(once=options["once"])
