"""Benchmark: consoles on a real QEMU guest, through the panel's console proxy.

Prints, in one run:
1. the time from the click on "Screen" (the page asking for its ticket) to the first frame
   drawn on the canvas, in Debian's Chromium (median of 5);
2. a keystroke's round trip on the serial console (a key sent, its echo back from the
   guest's tty) through the proxy's WebSocket, against the same round trip on a direct
   libvirt console stream: the difference is what the proxy adds (median of 50).

Targets (issue 11): first frame <= 1.5 s; added round-trip latency <= 5 ms at the median.
(The round trip is measured on the serial console, whose echo is a byte that can be timed
exactly; a VNC key's effect is a screen change, which cannot.)

    sudo .venv/bin/python bench/console.py

Needs root (scripts/qemuhost.sh's hosts) and /usr/bin/chromium.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import script  # bench/ is first on sys.path when run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_DIR = os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench")
DB_FILE = Path(tempfile.gettempdir()) / "vmpanel-bench-console.sqlite3"
os.environ.setdefault("DATABASE_URL", f"sqlite:///{DB_FILE}")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop, our ORM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PANEL_PORT, PROXY_PORT, REDIS_PORT = free_port(), free_port(), free_port()
os.environ["VMPANEL_REDIS_PORT"] = str(REDIS_PORT)
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"  # the tickets
os.environ["VMPANEL_CONSOLE_PORT"] = str(PROXY_PORT)
os.environ["VMPANEL_CONSOLE_URL"] = f"ws://127.0.0.1:{PROXY_PORT}/console/ws/"


def wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"console bench: nothing listens on {port}")


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("console bench: needs root (a root libvirtd in network namespaces)")
    DB_FILE.unlink(missing_ok=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    from django.contrib.auth.models import User

    from domains import domxml, hypervisor, inventory
    from domains.models import Domain, Host, Membership, Team

    script("qemuhost.sh", "install")
    script("qemu-guest.sh", "build")
    script("redis.sh", "start")
    script("qemuhost.sh", "up", timeout=180)
    procs = []
    try:
        uri = script("qemuhost.sh", "uri", "qa")
        guest = script("qemu-guest.sh", "path")
        log_dir = Path(script("qemuhost.sh", "dir", "qa")) / "log"
        name, guest_uuid = f"bench-{uuid.uuid4().hex[:4]}", str(uuid.uuid4())
        disk = f"/var/lib/libvirt/images/{name}.qcow2"
        hypervisor.create_volume(uri, disk, 64 * 2**20, "qcow2")
        hypervisor.define_xml(
            uri,
            domxml.build_kernel_boot_guest(
                domxml.KernelBootGuest(
                    name=name, uuid=guest_uuid, kernel=f"{guest}/vmlinuz",
                    initrd=f"{guest}/initrd.gz", disk=disk,
                    serial_log=f"/var/log/libvirt/{name}-serial.log", memory_mib=128,
                )
            ),
        )  # fmt: skip
        hypervisor.start(uri, guest_uuid)
        serial_log = log_dir / f"{name}-serial.log"
        deadline = time.monotonic() + 90
        while "GUEST-ALIVE" not in (serial_log.read_text() if serial_log.exists() else ""):
            if time.monotonic() > deadline:
                sys.exit("console bench: the guest did not boot")
            time.sleep(0.5)

        host = Host.objects.create(name="qa", uri=uri)
        inventory.reconcile_host(host)
        team = Team.objects.create(name="Bench", slug="bench")
        Domain.objects.filter(uuid=guest_uuid).update(team=team)
        user = User.objects.create_user("bench-op", password="bench-pass-1234")
        Membership.objects.create(user=user, team=team, role="operator")

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for cmd in (
            ["manage.py", "consoleproxy", "--port", str(PROXY_PORT)],
            ["manage.py", "runserver", "--noreload", f"127.0.0.1:{PANEL_PORT}"],
        ):
            procs.append(
                subprocess.Popen(
                    [sys.executable, *cmd], cwd=ROOT, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        wait_port(PROXY_PORT)
        wait_port(PANEL_PORT)
        first_frame(guest_uuid)
        round_trips(uri, guest_uuid, user)
    finally:
        for proc in procs:
            proc.terminate()
        hypervisor.forget_all()
        script("qemuhost.sh", "down", timeout=180)
        script("redis.sh", "stop")
        DB_FILE.unlink(missing_ok=True)


DRAWN = """() => {
    const c = document.querySelector('[data-console-screen] canvas');
    if (!c || !c.width) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4 * 61) if (d[i] || d[i + 1] || d[i + 2]) return true;
    return false;
}"""


def first_frame(guest_uuid: str) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{PANEL_PORT}"
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/login/")
        page.fill("input[name=username]", "bench-op")
        page.fill("input[name=password]", "bench-pass-1234")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/domains/**")
        for _ in range(5):
            page.goto(f"{base}/domains/qa/{guest_uuid}/")
            start = time.perf_counter()
            page.click("a.button:has-text('Screen')")
            try:
                page.wait_for_function(DRAWN, timeout=15000, polling=20)
            except Exception:
                status = page.locator("[data-console-status]").inner_text()
                sys.exit(f"console bench: no frame; the page says {status!r}")
            times.append(time.perf_counter() - start)
        browser.close()
    median = statistics.median(times)
    print("1. from the click on Screen to the first frame drawn (Chromium, median of 5):")
    print(f"   {median:.2f} s (target <= 1.5 s: {median <= 1.5})")


def round_trips(uri: str, guest_uuid: str, user) -> None:
    from django.test import Client
    from websockets.sync.client import connect

    from domains import hypervisor
    from domains.models import Domain
    from domains.services import consoles

    domain = Domain.objects.select_related("host").get(uuid=guest_uuid)
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    session_key = client.session.session_key

    def timed(send, recv) -> list[float]:
        out = []
        for i in range(50):
            key = bytes([ord("a") + i % 26])
            start = time.perf_counter()
            send(key)
            while key not in recv():
                pass
            out.append((time.perf_counter() - start) * 1000)
        send(b"\r")
        return out

    answer = consoles.open_console(user, domain, "serial", session_key)
    with connect(answer["url"], origin=f"http://127.0.0.1:{PANEL_PORT}") as ws:
        time.sleep(0.5)
        proxied = timed(ws.send, lambda: ws.recv(timeout=5))
    stream = hypervisor.SerialStream(uri, guest_uuid)
    try:
        direct = timed(stream.send, lambda: stream.recv(64))
    finally:
        stream.close()
    p, d = statistics.median(proxied), statistics.median(direct)
    print("2. a keystroke's round trip on the serial console (median of 50):")
    print(f"   through the proxy {p:.2f} ms, direct libvirt stream {d:.2f} ms")
    print(f"   added by the proxy {p - d:.2f} ms (target <= 5 ms: {p - d <= 5})")


if __name__ == "__main__":
    main()
