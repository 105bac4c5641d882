"""The inventory watcher: libvirt lifecycle events plus a periodic full read per host.

Runs for as long as the panel runs. Events refresh the one domain they name within a
moment; the full read catches what events missed (changes while the watcher was down, a
host daemon that restarted). A host that stops answering is retried every pass, and
picked up again when it comes back, without restarting the watcher. Each host is watched
in a thread of its own, so one that hangs stalls nobody else.
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

from domains import collector, hypervisor, inventory, liveness, outcomes
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

    def __init__(self, host: Host, reconcile_seconds: float, pass_seconds: float):
        super().__init__(name=f"watch-{host.name}", daemon=True)
        self.host = host
        self.uri = host.uri
        self.reconcile_seconds = reconcile_seconds
        self.pass_seconds = pass_seconds
        self.events: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        self.registered = False  # a live event registration on this process's connection
        self.last_full = 0.0

    def on_event(self, _uri: str, uuid: str) -> None:
        # Runs in libvirt's event thread: only hand the work over.
        self.events.put(uuid)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    close_old_connections()
                    self.check_once()
                    self.drain_events(self.pass_seconds)
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
            host = self.host
            for uuid in pending:
                try:
                    inventory.refresh_domain(host, uuidlib.UUID(uuid))
                except HypervisorError as exc:
                    log.warning("refresh of %s on %s failed: %s", uuid, host.name, exc)


class Watcher:
    """Starts a `HostWatch` and a `HostCollector` per enabled host, stops those of hosts
    disabled or changed, now and then settles what dead workers left running, and rolls
    the usage history up."""

    def __init__(self, reconcile_seconds: float, pass_seconds: float = 0.5, stats: bool = True):
        self.reconcile_seconds = reconcile_seconds
        self.pass_seconds = pass_seconds
        self.stats = stats
        self.watches: dict[int, HostWatch] = {}
        self.collectors: dict[int, HostCollector] = {}
        self.stopping = False
        self.last_recovery = 0.0
        self.last_roll_up = 0.0

    def check_hosts(self) -> None:
        hosts = {h.pk: h for h in Host.objects.filter(enabled=True)}
        for pk, watch in list(self.watches.items()):
            host = hosts.get(pk)
            if host is None or host.uri != watch.uri or not watch.is_alive():
                # It ends on its own once it sees that; a new one takes over at once.
                watch.stopping.set()
                del self.watches[pk]
            else:
                watch.host = host  # this pass's row (a superuser may have changed it)
        for pk, host in hosts.items():
            if pk not in self.watches:
                watch = HostWatch(host, self.reconcile_seconds, self.pass_seconds)
                self.watches[pk] = watch
                watch.start()
        if not self.stats:
            return
        for pk, collecting in list(self.collectors.items()):
            host = hosts.get(pk)
            if host is None or host.uri != collecting.uri or not collecting.is_alive():
                collecting.stopping.set()
                del self.collectors[pk]
            else:
                collecting.host = host
        for pk, host in hosts.items():
            if pk not in self.collectors:
                self.collectors[pk] = HostCollector(host)
                self.collectors[pk].start()

    def roll_up(self) -> None:
        """Once a minute, usage history into coarser tiers, and the oldest pruned."""
        if not self.stats or time.monotonic() - self.last_roll_up < ROLL_UP_SECONDS:
            return
        self.last_roll_up = time.monotonic()
        collector.roll_up()

    def recover_orphans(self) -> None:
        """Now and then, mark failed what dead workers left running, and settle what no
        worker took."""
        if time.monotonic() - self.last_recovery < RECOVERY_SECONDS:
            return
        self.last_recovery = time.monotonic()
        recover_orphaned_operations()
        settle_stale_queued()
        adopt_saved_images()
        outcomes.settle_checking_operations()

    def read_once(self) -> None:
        """Every enabled host read once, one after the other (`--once`)."""
        for host in Host.objects.filter(enabled=True):
            HostWatch(host, self.reconcile_seconds, self.pass_seconds).check_once()

    def run(self, once: bool = False) -> None:
        hypervisor.start_event_loop()
        if once:
            self.read_once()
            return
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
        for watch in [*self.watches.values(), *self.collectors.values()]:
            watch.stopping.set()


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
