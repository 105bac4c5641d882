"""Per-host ownership (issue 14): leases in Redis, shared evenly by the live watchers.

The fair share and the plan are pure (unit tests, with an in-memory lease table standing in
for Redis to show that processes converge). Compare-and-renew runs against the session's
real Redis. The integration tests run real `manage.py watch_inventory` processes against
four test-driver hosts, kill or pause one, and read the ownership journal the watchers
keep (who took which host when, and when each last wrote) to show that no host ever had
two owners writing at once.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid as uuidlib
from collections import defaultdict

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.urls import reverse

from domains import leases, liveness
from domains.leases import Board, Tenure, fair_share, plan
from domains.models import Domain, Host
from tests.helpers import client_for, wait_for

# --- fair share and the plan (pure) --------------------------------------------------


def test_fair_share_splits_evenly_and_adds_up():
    members = ["b", "a", "c"]
    shares = {m: fair_share(10, members, m) for m in members}
    assert shares == {"a": 4, "b": 3, "c": 3}  # the remainder to the first in sorted order
    assert fair_share(4, ["x", "y"], "x") == fair_share(4, ["x", "y"], "y") == 2
    assert [fair_share(1, "pqr", m) for m in "pqr"] == [1, 0, 0]
    assert fair_share(0, ["a", "b"], "a") == 0
    # A process counts itself even before its registration is seen.
    assert fair_share(4, ["other"], "me") == 2
    assert fair_share(3, [], "alone") == 3


def _converge(table: dict[int, str | None], members: list[str], rounds: int = 20) -> int:
    """Let each process plan against the shared table until nobody wants to change
    anything; returns the rounds it took. Takes succeed only on free hosts, as SET NX."""
    hosts = sorted(table)
    for n in range(1, rounds + 1):
        changed = False
        for me in random.sample(members, len(members)):
            held = [h for h, o in table.items() if o == me]
            free = [h for h, o in table.items() if o is None]
            take, release = plan(me, members, hosts, held, free)
            for h in release:
                table[h] = None
                changed = True
            for h in take:
                if table[h] is None:
                    table[h] = me
                    changed = True
        if not changed:
            return n
    raise AssertionError(f"no agreement after {rounds} rounds: {table}")


def _assert_even(table: dict[int, str | None], members: list[str]) -> None:
    counts = [sum(1 for o in table.values() if o == m) for m in members]
    assert None not in table.values(), table
    assert set(table.values()) <= set(members)
    assert max(counts) - min(counts) <= 1, counts


def test_processes_converge_to_an_even_split_and_stay():
    random.seed(14)
    table: dict[int, str | None] = dict.fromkeys(range(1, 21))
    members = ["w1"]
    _converge(table, members)
    assert set(table.values()) == {"w1"}  # alone, it holds every host

    members = ["w1", "w2", "w3"]  # two more start: each takes its share
    _converge(table, members)
    _assert_even(table, members)
    before = dict(table)
    _converge(table, members)
    assert table == before  # settled: nothing moves without a reason

    # w2 dies: its leases lapse and it drops out of the live list.
    table = {h: (None if o == "w2" else o) for h, o in table.items()}
    members = ["w1", "w3"]
    _converge(table, members)
    _assert_even(table, members)
    # The survivors kept what they had: only the dead one's hosts moved.
    assert all(table[h] == o for h, o in before.items() if o != "w2")


def test_a_process_above_its_share_lets_go_of_what_it_wants_least():
    take, release = plan("a", ["a", "b"], [1, 2, 3, 4], held=[1, 2, 3, 4], free=[])
    assert take == [] and len(release) == 2
    wanted = sorted([1, 2, 3, 4], key=lambda h: leases.preference("a", h))
    assert sorted(release) == sorted(wanted[:2])
    # Below its share, it takes only free hosts, and only up to its share.
    take, release = plan("b", ["a", "b"], [1, 2, 3, 4], held=[], free=[3, 4, 1])
    assert release == [] and len(take) == 2 and set(take) <= {1, 3, 4}
    # A host no longer to be owned (disabled) does not count as held.
    assert plan("a", ["a"], [1], held=[1, 9], free=[]) == ([], [])


def test_a_tenure_stops_being_usable_before_its_lease_can_lapse():
    tenure = Tenure(host=1, value="me 1.0", seconds=9, sent_at=100.0)
    assert tenure.usable(now=100.0) and tenure.usable(now=105.9)
    assert not tenure.usable(now=106.0)  # a third of the lease left: stop writing
    tenure.renewed(sent_at=106.5)
    assert tenure.usable(now=106.5)
    tenure.lost = True
    assert not tenure.usable(now=106.5)


def test_a_lease_value_says_who_and_since_when():
    assert leases.owner_of(b"kvm-a:1234:ab12cd 1700000000.250000") == (
        "kvm-a:1234:ab12cd",
        1700000000.25,
    )
    assert leases.owner_of(None) is None
    process = leases.Process("kvm-a:1234:ab12cd")
    assert (process.machine, process.pid) == ("kvm-a", "1234")
    assert leases.process_name().split(":")[1] == str(os.getpid())


# --- Redis: set-if-absent, compare-and-renew, compare-and-delete ---------------------


@pytest.fixture
def board(redis_server):
    return Board(f"test-{uuidlib.uuid4().hex[:8]}", redis.Redis.from_url(redis_server))


@pytest.mark.integration
def test_a_lease_is_never_renewed_or_released_by_a_process_that_lost_it(board):
    mine = board.acquire(1, "A", 0.3)
    assert mine is not None and mine.startswith("A ")
    assert board.acquire(1, "B", 0.3) is None  # taken: set only if absent
    assert board.renew({1: mine}, 0.3) == {1}

    time.sleep(0.45)  # A paused past its lease; B takes the host over
    theirs = board.acquire(1, "B", 5)
    assert theirs is not None

    assert board.renew({1: mine}, 5) == set()  # A learns it lost the lease...
    assert not board.release(1, mine)  # ...and cannot take it from B by letting go
    assert board.owners([1, 2]) == {1: ("B", pytest.approx(time.time(), abs=5)), 2: None}
    assert board.client.pttl(board.key(1)) > 4000  # B's expiry untouched by A's renewal
    assert board.release(1, theirs)
    assert board.owners([1]) == {1: None}


@pytest.mark.integration
def test_live_processes_are_those_that_renewed_within_their_lease(board):
    assert board.join("A", 0.3) == ["A"]
    assert board.join("B", 5) == ["A", "B"]
    assert board.members() == ["A", "B"]  # read by anyone, registering nobody
    time.sleep(0.45)
    assert board.members() == ["B"]  # A stopped renewing: no longer counted
    assert board.join("B", 5) == ["B"]
    board.leave("B")
    assert board.join("C", 5) == ["C"]


@pytest.mark.integration
def test_a_job_for_all_is_run_by_one_process_per_period(board):
    assert board.take_turn("roll-up", "A", 0.3)
    assert not board.take_turn("roll-up", "B", 0.3)
    time.sleep(0.4)
    assert board.take_turn("roll-up", "B", 0.3)


# --- the banner and /readyz: a host with no owner for longer than a lease --------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_readyz_and_every_page_say_when_a_host_has_had_no_owner(hosts, people, redis_server):
    client = redis.Redis.from_url(redis_server)
    now = time.time()
    lease = settings.VMPANEL_LEASE_SECONDS
    liveness.mark_watcher_beat()  # a watcher runs, but alpha's owner died long ago
    client.hset(
        liveness.HOST_FRESH_KEY,
        mapping={str(hosts.alpha.pk): now - lease - 20, str(hosts.beta.pk): now},
    )
    client.set(liveness.INVENTORY_FRESH_KEY, now - lease - 20)
    try:
        watcher = Client().get(reverse("readyz")).json()["watcher"]
        assert watcher.startswith("fail: alpha has had no owner for ")
        assert int(watcher.split()[-2]) >= lease + 20
        assert "beta" not in watcher
        page = client_for(people.victor_viewer).get(reverse("domain_list")).content.decode()
        assert "The inventory may be out of date since" in page
        # No watcher holds a lease here: the hosts page says nobody watches them.
        page = client_for(people.root).get(reverse("host_list")).content.decode()
        assert page.count(">nobody<") == 2

        # A watcher took alpha over and passed over it.
        client.hset(liveness.HOST_FRESH_KEY, str(hosts.alpha.pk), time.time())
        client.set(liveness.INVENTORY_FRESH_KEY, time.time())
        assert Client().get(reverse("readyz")).json()["watcher"] == "ok"
        page = client_for(people.victor_viewer).get(reverse("domain_list")).content.decode()
        assert "The inventory may be out of date" not in page
    finally:
        client.delete(liveness.HOST_FRESH_KEY, liveness.INVENTORY_FRESH_KEY)


# --- several watcher processes ---------------------------------------------------------

LEASE = 3  # seconds: short, so that a takeover is quick to watch
OVERLAP_BOUND = 0.25  # seconds two owners of one host may both be writing (measured: 0)
WATCHER_ENV = {"VMPANEL_LEASE_SECONDS": str(LEASE)}


@pytest.fixture
def four_hosts(hosts, libvirt_hosts, make_domain):
    """alpha and beta, and two more test-driver hosts for the test."""
    extra = ("gamma", "delta")
    try:
        for name in extra:
            libvirt_hosts.start(name)
        rows = [
            hosts.alpha,
            hosts.beta,
            *(Host.objects.create(name=n, uri=libvirt_hosts.uri(n)) for n in extra),
        ]
        yield rows
    finally:
        # The test's domains go while their hosts still run (make_domain's own cleanup
        # comes after this one).
        make_domain.cleanup()
        make_domain.made.clear()
        for name in extra:
            libvirt_hosts.stop(name)


def _pid(owner: str) -> int:
    return int(leases.Process(owner).pid)


def _owners(board: Board, hosts: list[Host]) -> dict[str, int | None]:
    """Host name → the pid of the watcher holding its lease."""
    owners = board.owners([h.pk for h in hosts])
    return {h.name: None if owners[h.pk] is None else _pid(owners[h.pk][0]) for h in hosts}


def _split_between(board, hosts, *pids) -> dict[str, int] | None:
    """The owners, once every host is held and the given watchers hold two each."""
    owners = _owners(board, hosts)
    counts = defaultdict(int)
    for pid in owners.values():
        counts[pid] += 1
    return owners if counts == dict.fromkeys(pids, 2) else None


def _overlaps(board: Board, ended: dict[int, float]) -> list[tuple[int, str, str, float]]:
    """From the journal: every time two watchers were both writing for one host, and for
    how long. A watcher's time with a host runs from its taking the lease to its last
    write; one killed wrote until it was killed (`ended`: pid → when)."""
    now = time.time()
    start: dict[tuple[int, str], float] = {}
    spans: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for entry in board.journal():
        key = (int(entry["host"]), entry["owner"])
        if entry["event"] == "acquired":
            start[key] = float(entry["at"])
        elif entry["event"] == "stopped":
            began = start.pop(key, float(entry["started"]))
            spans[key[0]].append((key[1], began, float(entry["last_write"])))
    for (host, owner), began in start.items():
        spans[host].append((owner, began, ended.get(_pid(owner), now)))
    found = []
    for host, held in spans.items():
        for i, (a, a0, a1) in enumerate(held):
            for b, b0, b1 in held[i + 1 :]:
                if a != b and min(a1, b1) - max(a0, b0) > 0:
                    found.append((host, a, b, min(a1, b1) - max(a0, b0)))
    return found


@pytest.fixture
def watcher_board(redis_server):
    board = Board("watcher", redis.Redis.from_url(redis_server))
    board.client.delete(board.journal_key)  # this test's journal only
    return board


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_killed_watchers_hosts_are_taken_over_within_a_lease(
    start_watcher, four_hosts, make_domain, watcher_board, people
):
    board = watcher_board
    first = start_watcher(600, **WATCHER_ENV)
    second = start_watcher(600, **WATCHER_ENV)
    owners = wait_for(
        lambda: _split_between(board, four_hosts, first.pid, second.pid),
        timeout=LEASE + 5,
        what="two hosts each",
    )

    # SIGKILL: no release, no goodbye. Its hosts are free once their leases lapse.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    orphan = next(name for name, pid in owners.items() if pid == first.pid)
    libvirt_host = next(h for h in four_hosts if h.name == orphan)
    # Changed behind the panel's back while nobody watches the host: no event reaches
    # anyone; only the new owner's first full read can find it.
    uuid = make_domain.define(orphan, state="running", name="while-unwatched")

    wait_for(
        lambda: set(_owners(board, four_hosts).values()) == {second.pid},
        timeout=LEASE + 2,
        interval=0.05,
        what="every host owned again, by the survivor",
    )
    wait_for(
        lambda: Domain.objects.filter(host=libvirt_host, uuid=uuid).exists(),
        timeout=max(0.1, killed_at + LEASE + 2 - time.time()),
        interval=0.05,
        what="the change on the dead watcher's host in the inventory",
    )
    took = time.time() - killed_at
    assert took <= LEASE + 2, took
    page = client_for(people.root).get(reverse("domain_list")).content.decode()
    assert "while-unwatched" in page

    # Started again: a new process, which takes its share back.
    third = start_watcher(600, **WATCHER_ENV)
    wait_for(
        lambda: _split_between(board, four_hosts, second.pid, third.pid),
        timeout=LEASE + 5,
        what="the hosts shared again",
    )
    # And the new owners keep the inventory: an event on each host shows.
    for host in four_hosts:
        new = make_domain.define(host.name, state="running")
        wait_for(lambda h=host, u=new: Domain.objects.filter(host=h, uuid=u).exists(), 2)

    assert _overlaps(board, {first.pid: killed_at}) == []
    events = [(e["event"], _pid(e["owner"])) for e in board.journal()]
    assert ("stopped", second.pid) in events  # the survivor let go of two for the newcomer
    # The hosts page says who watches each host.
    page = client_for(people.root).get(reverse("host_list")).content.decode()
    assert f"process {second.pid}" in page and f"process {third.pid}" in page
    page = client_for(people.root).get(reverse("host_detail", args=[orphan])).content.decode()
    assert f"process {_owners(board, four_hosts)[orphan]}" in page
    assert Client().get(reverse("readyz")).json()["watcher"] == "ok"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_paused_watcher_stops_writing_before_its_hosts_are_taken_over(
    start_watcher, four_hosts, watcher_board
):
    """A watcher frozen past its lease (SIGSTOP: a VM paused, a machine swapping) wakes up
    to find its hosts owned by another: it must not write for them, not even once."""
    board = watcher_board
    first = start_watcher(600, **WATCHER_ENV)
    second = start_watcher(600, **WATCHER_ENV)
    wait_for(lambda: _split_between(board, four_hosts, first.pid, second.pid), timeout=LEASE + 5)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: set(_owners(board, four_hosts).values()) == {second.pid},
            timeout=LEASE + 2,
            what="the frozen watcher's hosts taken over",
        )
        # Frozen a second longer, so that a write it made on waking would overlap its
        # successor's by that much (without the guard in `Tenure.usable`, it does).
        time.sleep(1)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    # Awake, it learns at its next renewal that it lost them, and takes its share again.
    wait_for(
        lambda: _split_between(board, four_hosts, first.pid, second.pid),
        timeout=LEASE + 5,
        what="shared again after the pause",
    )
    events = [(e["event"], _pid(e["owner"])) for e in board.journal()]
    assert ("lost", first.pid) in events
    worst = _overlaps(board, {})
    assert all(seconds <= OVERLAP_BOUND for *_, seconds in worst), worst


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_new_watcher_gets_its_share_within_a_pass_or_two(
    start_watcher, four_hosts, watcher_board
):
    """A watcher that joins is given its share at the next pass of the one already there,
    not only when that one next renews its leases (a sixth of a lease later: 5 s here).
    Two watchers starting together split the hosts evenly as soon as both have started."""
    board = watcher_board
    long_lease = {"VMPANEL_LEASE_SECONDS": "30"}
    first = start_watcher(600, **long_lease)
    wait_for(
        lambda: set(_owners(board, four_hosts).values()) == {first.pid},
        timeout=15,
        what="every host held by the first watcher",
    )
    # Just after the first's renewal: the next one is 5 s away.
    renewed = board.client.pttl(board.key(four_hosts[0].pk))
    wait_for(lambda: board.client.pttl(board.key(four_hosts[0].pk)) > renewed, timeout=6)
    second = start_watcher(600, **long_lease)
    wait_for(lambda: _member(board, second.pid), 15, what="the second watcher registered")
    joined = time.monotonic()
    wait_for(
        lambda: _split_between(board, four_hosts, first.pid, second.pid),
        timeout=10,
        interval=0.05,
        what="two hosts each",
    )
    took = time.monotonic() - joined
    assert took < 2.5, f"the newcomer waited {took:.1f} s for its share"


def _member(board: Board, pid: int) -> str | None:
    """The registered name of the watcher process `pid`, once it has joined."""
    for name in board.client.zrange(board.members_key, 0, -1):
        if _pid(name.decode()) == pid:
            return name.decode()
    return None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_watchers_take_the_hosts_again_when_redis_loses_its_data(
    start_watcher, four_hosts, make_domain, watcher_board
):
    """Redis restarted without its data (docs/deploy.md says the watchers take the hosts
    again at once): every lease and registration is gone. Each watcher learns it at its
    next renewal, stops writing, and the hosts are shared out again; the inventory goes
    on, with no host written by two watchers at once."""
    board = watcher_board
    first = start_watcher(600, **WATCHER_ENV)
    second = start_watcher(600, **WATCHER_ENV)
    wait_for(lambda: _split_between(board, four_hosts, first.pid, second.pid), LEASE + 5)

    board.client.flushdb()
    lost_at = time.time()
    wait_for(
        lambda: _split_between(board, four_hosts, first.pid, second.pid),
        timeout=LEASE + 2,
        interval=0.05,
        what="every host owned again, two each",
    )
    assert time.time() - lost_at <= LEASE + 2
    # Both watchers keep their hosts' inventory: a change on each host shows.
    for host in four_hosts:
        new = make_domain.define(host.name, state="running")
        wait_for(lambda h=host, u=new: Domain.objects.filter(host=h, uuid=u).exists(), 3)
    events = [(e["event"], _pid(e["owner"])) for e in board.journal()]
    assert {("lost", first.pid), ("lost", second.pid)} <= set(events)
    worst = _overlaps(board, {})
    assert all(seconds <= OVERLAP_BOUND for *_, seconds in worst), worst
