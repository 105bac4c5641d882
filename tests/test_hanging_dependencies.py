"""Redis and PostgreSQL that are down or that hang, as an outside prober would make them: the
user waits on nothing forever.

"Down" is a closed port (connection refused). "Hangs" is a listener that accepts every
connection and never answers (a frozen server, a half-open link through a firewall): what a
client meets then is its own timeout, or none. Each is given to a real web process
(gunicorn, as its unit runs it) in its REDIS_URL or DATABASE_URL, so every Redis client the
panel makes (Celery's broker, the locks, the leases, the liveness marks, the console
tickets) meets it; each page and action must answer within a bound, in words, not with a
500 or a traceback, and an action that needs the task queue says it does not answer and
leaves nothing half done.

The watcher and a worker meet a Redis that hangs for a while through a valve (a relay to
the test Redis that can be shut: nothing passes, the connections stay open) and must
neither write without their leases nor leave an operation untruthful, and go on once it
answers again.
"""

from __future__ import annotations

import contextlib
import http.cookies
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from domains.models import Domain, Operation, OperationStatus, State
from provisioning import services
from provisioning.models import RequestState, VMRequest
from tests.conftest import REPO, RUN_DIR, _free_port, _log_tail, stop_process, subprocess_env
from tests.helpers import client_for, fresh, live, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]

# How long a user may wait for any answer: a few seconds with Redis down (refused at
# once), a bound with Redis hanging (each client's own timeouts, added up).
DOWN_BOUND = 5.0
HANG_BOUND = 10.0


# --- the faults ------------------------------------------------------------------------


class Tarpit:
    """A TCP listener that accepts every connection and never answers a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, name="tarpit", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return  # closed
            self.held.append(conn)  # read nothing, answer nothing, close nothing

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Valve:
    """A TCP relay to `upstream` that can be shut: while shut, nothing passes either way and
    connections are still accepted, as with a Redis that hangs. Opened again, the
    connections that lived through the hang are cut, what they carried lost (a link through
    a firewall that dropped them); new ones pass."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.open = threading.Event()
        self.open.set()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.links: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="valve", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.links.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.open.wait()
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @staticmethod
    def _cut(link: tuple[socket.socket, socket.socket]) -> None:
        for sock in link:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
            sock.close()

    def shut(self) -> None:
        self.open.clear()

    def reopen(self) -> None:
        with self.lock:
            links, self.links = self.links, []
        for link in links:
            self._cut(link)
        self.open.set()

    def close(self) -> None:
        self.sock.close()
        self.reopen()


@pytest.fixture
def tarpit():
    pit = Tarpit()
    yield pit
    pit.close()


@pytest.fixture(params=["down", "hangs"])
def dead_redis(request, tarpit):
    """A REDIS_URL that is down (refused) or hangs (a tarpit), and how long a user may wait
    for any answer with it."""
    if request.param == "down":
        return f"redis://127.0.0.1:{closed_port()}/0", DOWN_BOUND
    return f"redis://127.0.0.1:{tarpit.port}/0", HANG_BOUND


# --- a real web process ------------------------------------------------------------------


@pytest.fixture
def web(transactional_db, hosts):
    """`web(**env)`: gunicorn as its unit runs it, on the test database, with `env` over
    the test environment (REDIS_URL, DATABASE_URL); returns its base URL."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(**env: str) -> str:
        port = _free_port(18500)
        log_path = RUN_DIR / f"web-hang-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"), "vmpanel.wsgi",
                    "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
                    "--workers", "1", "--threads", "4", "--access-logfile", "-",
                    "--no-control-socket",
                ],
                cwd=REPO, env=subprocess_env(**env),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        procs.append((proc, log_path))
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{_log_tail(log_path)}")
            try:
                # Any answer says the worker has booted: /healthz is 503 while the database
                # is away. (Not a static file: a clean checkout has no collected ones, and
                # it was a 404 there for good.)
                return Browser(base, timeout=10).get("/healthz").status in (200, 503)
            except OSError:
                return False

        wait_for(answers, timeout=30, interval=0.1, what="gunicorn answers")
        return base

    yield start
    for proc, _log_path in procs:
        stop_process(proc)


class Answer:
    def __init__(self, status: int, body: str, seconds: float, url: str) -> None:
        self.status, self.body, self.seconds, self.url = status, body, seconds, url

    def __repr__(self) -> str:
        return f"<{self.status} {self.url} in {self.seconds:.1f} s: {self.body[:200]!r}>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """A person's browser against the web process: its cookies (the session, the CSRF
    secret, one-time messages), redirects followed, and each answer timed from the
    request to the last redirect's body."""

    CSRF = "h" * 32  # a CSRF secret of our own, sent as cookie and as form field

    def __init__(self, base: str, user=None, timeout: float = 60) -> None:
        self.base = base
        self.timeout = timeout  # a request that outwaits it fails the test
        self.cookies = {settings.CSRF_COOKIE_NAME: self.CSRF}
        if user is not None:
            # The session is a row in the test database, which the web process reads.
            client = client_for(user)
            self.cookies[settings.SESSION_COOKIE_NAME] = client.cookies[
                settings.SESSION_COOKIE_NAME
            ].value
        self.opener = urllib.request.build_opener(_NoRedirect)

    def _one(self, method: str, url: str, data: dict | None, headers: dict) -> tuple:
        body = None
        headers = {**headers, "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if data is not None:
            body = urllib.parse.urlencode(
                # The secret the cookie holds now (a login rotates it).
                {"csrfmiddlewaretoken": self.cookies.get(settings.CSRF_COOKIE_NAME), **data},
                doseq=True,
            ).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            response = self.opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            response = exc
        with response:
            text = response.read().decode(errors="replace")
            for raw in response.headers.get_all("Set-Cookie") or []:
                jar = http.cookies.SimpleCookie(raw)
                for name, morsel in jar.items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return response.status, response.headers.get("Location"), text

    def request(self, method: str, path: str, data: dict | None = None, **headers) -> Answer:
        started = time.monotonic()
        url = urllib.parse.urljoin(self.base, path)
        status, location, text = self._one(method, url, data, headers)
        while status in (301, 302, 303) and location:
            url = urllib.parse.urljoin(url, location)
            status, location, text = self._one("GET", url, None, {})
        return Answer(status, text, time.monotonic() - started, url)

    def get(self, path: str, **headers) -> Answer:
        return self.request("GET", path, **headers)

    def post(self, path: str, data: dict | None = None, **headers) -> Answer:
        return self.request("POST", path, data or {}, **headers)


def readable(answer: Answer, bound: float, status: int = 200) -> Answer:
    """The answer came within `bound` seconds, with `status` and a page in words."""
    print(f"{answer.seconds:5.2f} s {answer.status} {answer.url}")
    assert answer.seconds <= bound, f"waited {answer.seconds:.1f} s (bound {bound} s): {answer}"
    assert answer.status == status, answer
    assert "Traceback" not in answer.body and "Server Error" not in answer.body, answer
    return answer


QUEUE_DOWN = "The task queue does not answer; nothing was done."
BULK = 8  # VMs ticked for one action


# --- 1 and 2: the web side with Redis down or hanging ---------------------------------


@pytest.fixture
def world(people, hosts, make_domain):
    """What the main pages show: VMs, a template, a request, an operation on record."""
    from tests.test_provisioning_create import make_template

    running = make_domain(state="running")
    shutoff = [make_domain(state="shutoff") for _ in range(1 + BULK)]
    template = make_template(hosts)
    req = services.submit_request(
        people.victor_viewer, people.team_a, template, "asked-for", 1, 256, "testing"
    )
    op = Operation.objects.create(
        kind="start", user=people.olga_operator, domain=running, host=running.host,
        domain_uuid=running.uuid, domain_name=running.name, team=running.team,
        status=OperationStatus.SUCCEEDED, message="Started.",
    )  # fmt: skip
    return running, shutoff, template, req, op


def test_every_main_page_answers_in_words_while_redis_is_away(web, dead_redis, people, world):
    url, bound = dead_redis
    running, _shutoff, _template, req, op = world
    base = web(REDIS_URL=url)
    olga = Browser(base, people.olga_operator)
    root = Browser(base, people.root)

    listing = readable(olga.get("/domains/"), bound)
    assert running.name in listing.body
    # The others as a person's tabs load them, four at a time (the web process's threads):
    # each is timed on its own.
    pages = [
        (olga, path)
        for path in (
            f"/domains/alpha/{running.uuid}/", "/activity/", "/requests/",
            f"/requests/{req.pk}/", "/notifications/", "/teams/", "/teams/team-a/",
            f"/operations/{op.pk}/", "/nav/counts/", f"/domains/alpha/{running.uuid}/usage/",
        )
    ] + [(root, path) for path in ("/templates/", "/hosts/", "/hosts/alpha/")]  # fmt: skip
    with ThreadPoolExecutor(4) as tabs:
        for answer in tabs.map(lambda page: page[0].get(page[1]), pages):
            readable(answer, bound)
    # A self-updating page's poll, as htmx sends it.
    version = re.search(r"since=([0-9a-f]{16})", listing.body).group(1)
    readable(olga.get(f"/domains/?since={version}", HX_Request="true"), bound, 204)
    readable(olga.get("/domains/?since=0000000000000000", HX_Request="true"), bound)

    # The probes: the process and database are fine; the panel cannot work, and says why.
    readable(Browser(base).get("/healthz"), bound)
    ready = readable(Browser(base).get("/readyz"), bound, 503)
    assert '"redis": "fail' in ready.body

    # Logging in and out (with a password hash the web process knows: the tests' own
    # hasher is not among its settings').
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    people.olga_operator.password = PBKDF2PasswordHasher().encode("password", "hangsalt", 1000)
    people.olga_operator.save(update_fields=["password"])
    stranger = Browser(base)
    readable(stranger.get("/login/"), bound)
    signed_in = readable(
        stranger.post("/login/", {"username": "olga_operator", "password": "password"}), bound
    )
    assert signed_in.url.endswith("/domains/"), signed_in
    logged_out = readable(stranger.post("/logout/"), bound)
    assert logged_out.url.endswith("/login/"), logged_out


def test_every_action_says_the_queue_does_not_answer_and_changes_nothing(
    web, dead_redis, people, world, libvirt_hosts, make_domain
):
    url, bound = dead_redis
    _running, shutoff, template, req, _op = world
    base = web(REDIS_URL=url)
    olga = Browser(base, people.olga_operator)
    conn = libvirt_hosts.conn("alpha")

    # Start a VM: its button.
    one = shutoff[0]
    answer = readable(olga.post(f"/domains/alpha/{one.uuid}/do/start/"), bound)
    assert QUEUE_DOWN in answer.body, answer
    assert live(conn, one.uuid).state == 5  # VIR_DOMAIN_SHUTOFF
    assert Operation.objects.get(domain=one).status == OperationStatus.FAILED

    # Several ticked VMs at once.
    picks = [f"alpha/{d.uuid}" for d in shutoff[1:]]
    answer = readable(olga.post("/domains/act/", {"action": "start", "pick": picks}), bound)
    for domain in shutoff[1:]:
        assert f"{domain.name}: {QUEUE_DOWN}" in answer.body, answer
        assert live(conn, domain.uuid).state == 5
        assert fresh(domain).state == State.SHUTOFF
        assert Operation.objects.get(domain=domain).status == OperationStatus.FAILED
    assert "queued (operation" not in answer.body, answer

    # A request needs no queue: it is submitted.
    viewer = Browser(base, people.victor_viewer)
    answer = readable(
        viewer.post(
            "/requests/new/",
            {
                "team": people.team_a.pk,
                "template": template.pk,
                "name": "while-away",
                "vcpus": 1,
                "memory_mib": 256,
                "purpose": "testing",
            },
        ),
        bound,
    )
    assert VMRequest.objects.filter(name="while-away", state=RequestState.SUBMITTED).exists()

    # Its approval needs the queue: said so, and the request waits for a decision again.
    alice = Browser(base, people.alice_admin)
    answer = readable(alice.post(f"/requests/{req.pk}/approve/", {"host": req_host(req)}), bound)
    assert QUEUE_DOWN in answer.body, answer
    req.refresh_from_db()
    assert req.state == RequestState.SUBMITTED, (req.state, req.reason)
    assert not Domain.objects.filter(name="asked-for").exists()
    # Its requester was not told of an approval that did not happen.
    from provisioning.models import Notification

    assert not Notification.objects.filter(user=people.victor_viewer, text__contains="approved")

    # A console: its ticket lives in Redis.
    from tests.test_consoles import _console_domain

    console_vm = _console_domain(make_domain, libvirt_hosts)
    answer = readable(
        olga.post(f"/domains/alpha/{console_vm.uuid}/console/ticket/?kind=serial"), bound, 503
    )
    assert '"error"' in answer.body, answer


def req_host(req: VMRequest) -> int:
    return req.template.hosts.order_by("name").first().pk


CROWD = 40  # pages open at once, each asking every second whether it changed


def test_a_crowd_of_self_updating_pages_is_answered_while_redis_hangs(web, tarpit, people, world):
    """Every open list asks each second whether it changed. With Redis hanging, each ask
    that waits out a Redis timeout holds one of the few web threads meanwhile: a crowd of
    them must not queue every page behind them."""
    base = web(REDIS_URL=f"redis://127.0.0.1:{tarpit.port}/0")
    olga = Browser(base, people.olga_operator)
    listing = readable(olga.get("/domains/"), HANG_BOUND)
    version = re.search(r"since=([0-9a-f]{16})", listing.body).group(1)
    with ThreadPoolExecutor(CROWD) as pool:
        polls = [
            pool.submit(olga.get, f"/domains/?since={version}", HX_Request="true")
            for _ in range(CROWD)
        ]
        page = pool.submit(olga.get, "/activity/")
        for poll in polls:
            readable(poll.result(), HANG_BOUND, 204)
        readable(page.result(), HANG_BOUND)


# --- 2: the watcher and a worker when Redis hangs for a while --------------------------


@pytest.fixture
def valve(redis_server):
    """A valve between the process under test and the test Redis."""
    from tests.conftest import REDIS_PORT

    v = Valve(("127.0.0.1", REDIS_PORT))
    yield v
    v.close()


LEASE = 6  # seconds: the watcher's lease in these tests


def test_a_watcher_that_redis_leaves_hanging_stops_writing_and_goes_on_after(
    start_watcher, valve, make_domain, hosts
):
    start_watcher(600, REDIS_URL=valve.url, VMPANEL_LEASE_SECONDS=str(LEASE))
    seen = make_domain.define("alpha", state="running")
    wait_for(lambda: Domain.objects.filter(uuid=seen).exists(), 3, what="the watcher at work")

    valve.shut()
    shut_at = time.monotonic()
    # No renewal reaches Redis: a third of the lease before it can lapse (the Tenure
    # guard), the watcher stops writing for its hosts, so that another watcher may take
    # them over without two writing at once.
    time.sleep(max(0.0, shut_at + LEASE * 2 / 3 + 0.5 - time.monotonic()))
    unseen = make_domain.define("alpha", state="running", name="while-redis-hangs")
    deadline = time.monotonic() + 3  # an event reaches the inventory within 1 s or so
    while time.monotonic() < deadline:
        assert not Domain.objects.filter(uuid=unseen).exists(), "written without a lease"
        time.sleep(0.05)

    valve.reopen()
    # Redis answers again: the watcher takes its hosts again, and its first full read finds
    # what changed meanwhile; events flow again.
    wait_for(
        lambda: Domain.objects.filter(uuid=unseen).exists(),
        timeout=LEASE + 5,
        what="the change made while Redis hung, in the inventory",
    )
    after = make_domain.define("beta", state="running")
    wait_for(lambda: Domain.objects.filter(uuid=after).exists(), 3, what="events again")


HANG_QUEUE = "hang-q"


@pytest.fixture
def valved_worker(valve, libvirt_hosts, transactional_db):
    """A worker process that reaches Redis (its broker, the VMs' locks) through the valve
    and reads only HANG_QUEUE, so that no other worker of the session takes its tasks."""
    from vmpanel.celery import app

    log_path = RUN_DIR / "worker-valved.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"), "-A", "vmpanel", "worker",
                "--loglevel=INFO", "--concurrency=1", "--pool=prefork", "--without-mingle",
                "--without-gossip", "-Q", HANG_QUEUE, "--hostname", "valved@%h",
            ],
            cwd=REPO, env=subprocess_env(REDIS_URL=valve.url), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{_log_tail(log_path)}")
        replies = app.control.ping(timeout=0.3) or []
        return any("valved@" in worker for reply in replies for worker in reply)

    wait_for(answers, timeout=30, interval=0.1, what="the valved worker answers")
    yield log_path
    stop_process(proc)


def _send(user, domain: Domain, kind: str) -> Operation:
    """An operation on `domain` as its service queues it, its task sent to HANG_QUEUE."""
    import uuid as uuidlib

    op = Operation.objects.create(
        kind=kind, user=user, domain=domain, host=domain.host, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team, task_id=str(uuidlib.uuid4()),
    )  # fmt: skip
    return _resend(op)


def _resend(op: Operation) -> Operation:
    from domains.kinds import KINDS
    from vmpanel.celery import app

    app.send_task(KINDS[op.kind].task, args=[op.pk], task_id=op.task_id, queue=HANG_QUEUE)
    return op


def _status(op: Operation) -> str:
    return Operation.objects.get(pk=op.pk).status


def test_an_operation_waiting_for_its_vms_lock_when_redis_hangs_ends_saying_so(
    valved_worker, valve, people, make_domain, libvirt_hosts
):
    from domains import runner
    from tests.helpers import wait_finished

    domain = make_domain(state="shutoff")
    # Another operation's lock, as a worker holds it (straight in Redis, past the valve).
    held = runner._redis().lock(
        runner.lock_key(domain.host_id, domain.uuid), timeout=60, blocking_timeout=1
    )
    assert held.acquire()
    try:
        op = _send(people.olga_operator, domain, "start")
        wait_for(lambda: _status(op) == OperationStatus.RUNNING, 10, what="claimed")
        valve.shut()
        done = wait_finished(op, timeout=HANG_BOUND)
        assert done.status == OperationStatus.FAILED, (done.status, done.message)
        assert QUEUE_DOWN in done.message, done.message
        assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == 5  # still shut off
    finally:
        valve.reopen()
        held.release()
    # Redis answers again: the worker goes on.
    again = wait_finished(_send(people.olga_operator, domain, "start"), timeout=20)
    assert again.status == OperationStatus.SUCCEEDED, (again.status, again.message)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == 1  # running


def test_an_operation_running_when_redis_hangs_ends_truthfully_and_leaves_the_vm_free(
    valved_worker, valve, people, hosts, make_domain, libvirt_hosts
):
    """A direct kernel boot's phase 1 (the installer) runs while Redis stops answering: it
    ends as it would have, and the VM's lock, whose release Redis never got, does not keep
    the next operation on that VM out."""
    from provisioning.models import Method
    from tests.conftest import broker_at
    from tests.helpers import wait_finished
    from tests.test_provisioning_create import make_template

    template = make_template(hosts, Method.KERNEL)
    # Queued by its service where no worker reads (Redis's database 7), then sent to the
    # valved worker's queue.
    with broker_at(settings.REDIS_URL.rsplit("/", 1)[0] + "/7"):
        op = services.create_domain(
            people.root, template, hosts.alpha, people.team_a, "kern-hang", 1, 256,
            services.CreateChoice(),
        )  # fmt: skip
    _resend(op)
    make_domain.track("alpha", op.domain_uuid)
    conn = libvirt_hosts.conn("alpha")
    wait_for(
        lambda: (facts := live(conn, op.domain_uuid)) is not None and facts.state == 1,
        timeout=15,
        what="phase 1: the installer running",
    )

    valve.shut()
    try:
        conn.lookupByUUIDString(str(op.domain_uuid)).destroy()  # the installer powers off
        done = wait_finished(op, timeout=HANG_BOUND)
        assert done.status == OperationStatus.SUCCEEDED, (done.status, done.message)
        assert live(conn, op.domain_uuid).state == 1  # running, as the record says
        # Its task ends (the release of the VM's lock met the hang: it was never had).
        task_ended = re.compile(rf"provision_domain_task\[{op.task_id}\] (succeeded|raised)")
        wait_for(
            lambda: task_ended.search(valved_worker.read_text(errors="replace")),
            timeout=HANG_BOUND,
            what="the task ended",
        )
    finally:
        valve.reopen()

    domain = Domain.objects.get(host=hosts.alpha, uuid=op.domain_uuid)
    after = wait_finished(_send(people.root, domain, "destroy"), timeout=20)
    assert after.status == OperationStatus.SUCCEEDED, (after.status, after.message)
    assert live(conn, op.domain_uuid).state == 5  # shut off


# --- 3: PostgreSQL that is down or hangs, for the web side -----------------------------


@pytest.mark.parametrize("fault", ["down", "hangs"])
def test_a_page_says_try_again_when_the_database_does_not_answer(web, tarpit, people, fault):
    """The database a web process connects to refuses, or accepts and never answers (a
    frozen server, a failover half done): each page answers within the bound with the
    "try again" page, not a 500, and not a gunicorn thread held for good."""
    port = closed_port() if fault == "down" else tarpit.port
    cookie = Browser("", people.olga_operator).cookies  # made on the test database
    base = web(DATABASE_URL=f"postgres://vmpanel@127.0.0.1:{port}/vmpanel")
    olga = Browser(base, timeout=HANG_BOUND + 20)
    olga.cookies = cookie
    for path in ("/domains/", "/requests/"):
        answer = readable(olga.get(path), HANG_BOUND, 503)
        assert "Try again in a moment" in answer.body, answer
    health = readable(Browser(base, timeout=HANG_BOUND + 20).get("/healthz"), HANG_BOUND, 503)
    assert '"status": "fail"' in health.body, health


def test_while_redis_hangs_the_pages_stop_asking_it_for_a_moment(tarpit, settings, monkeypatch):
    """Every page reads the liveness marks (the banner, the navigation). Once Redis has not
    answered, the next reads of a few seconds do not wait on it again: without that, each
    page waited out the timeout once more. Then it is asked again."""
    from domains import liveness

    settings.REDIS_URL = f"redis://127.0.0.1:{tarpit.port}/0"
    liveness._redis.cache_clear()
    monkeypatch.setattr(liveness, "_quiet_until", 0.0, raising=False)
    try:
        assert liveness.inventory_stale_since() is None  # not known: no banner
        wait_for(lambda: len(tarpit.held) == 1, 5, what="the first read's connection")
        assert liveness.worker_alive() is None
        assert liveness.watcher_silent_seconds() is None
        assert liveness.inventory_stale_since() is None
        time.sleep(0.3)  # time for any further connection to be accepted
        assert len(tarpit.held) == 1, "Redis was asked again at once"

        monkeypatch.setattr(liveness, "_quiet_until", 0.0, raising=False)  # the moment has passed
        assert liveness.worker_alive() is None
        wait_for(lambda: len(tarpit.held) == 2, 5, what="a new read after the moment")
    finally:
        liveness._redis.cache_clear()
