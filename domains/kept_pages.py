"""Pages and sections rendered once per content and kept: the domain list, the activity
page, and a domain's Usage section (what an open domain page polls).

These are what people leave open (they poll themselves) and what a crowd loads at once;
after `kept_sql` made their queries cheap, rendering was most of their cost. A page is kept
under the facts it shows, as `rows` keeps a row: the view passes what it read from the
database (the rows as frozen copies, the counts, the choices offered), and this module adds
what comes from the request: the full path (every filter and page number), whether htmx
asked for the fragment only, the language and time zone, who is signed in, and the
session's CSRF secret (the page carries a token made from it, valid for that session
only). A fact that changed is a new key, so a kept page never shows anything stale.

Not kept: pages with a message to show once and requests without a CSRF cookie yet (both
still carry their version, so they update themselves), pages while the inventory banner is
up (it shows the time since the watcher's last pass), and anything but a plain 200. Per
process, at most KEPT pages and KEPT sections.

A page that updates itself asks every second whether what it shows changed. The answer
"no" (204) must cost far less than a render, so it is given before the session, the user
and the view are loaded when it can be: every write to a table that pages read bumps one
change count in the database (triggers: a bulk update(), another process, raw SQL alike),
and `PollMiddleware` answers 204 at once when this very request (its path, cookies and
language) was confirmed at the count the database has now. Anything else goes the whole
way: the view reads all the page shows, which stays the truth, and `render_kept` confirms
the version it found at the count read before the view ran.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.messages import get_messages
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

from . import liveness

KEPT = 256


class _Kept:
    """At most `limit` values, the least recently used going first; for many threads."""

    def __init__(self, limit: int = KEPT):
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def get(self, key):
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.limit:
                self._values.popitem(last=False)


_pages = _Kept()
_sections = _Kept()


def page_path(request: HttpRequest) -> str:
    """The request's path and query without `since` (a poll's version of what it shows)."""
    query = request.GET.copy()
    query.pop(SINCE, None)
    return f"{request.path}?{query.urlencode()}" if query else request.path


def _request_facts(request: HttpRequest, partial: bool) -> tuple:
    """What the page shows from the request."""
    user = request.user
    return (
        page_path(request), partial, get_language(),
        timezone.get_current_timezone_name(),
        user.pk, user.get_username(), user.is_superuser, request.META.get("CSRF_COOKIE"),
    )  # fmt: skip


# A page that updates itself polls with `?since=<its version>`: the answer is 204 (nothing
# to swap) while what it shows is unchanged, else the new page, carrying its new version.
SINCE = "since"


def _version(facts: tuple) -> str:
    # Not hash(): Python salts it per process, and a page polls whichever worker answers.
    return hashlib.blake2b(repr(facts).encode(), digest_size=8).hexdigest()


def render_kept(
    request: HttpRequest,
    partial: bool,
    facts: tuple,
    render: Callable[[], HttpResponse],
    live_for: float | None = None,
) -> HttpResponse:
    """`render()`'s answer, or the one kept for the same request facts and `facts` (all the
    view read from the database that the page shows; hashable). `request.page_version` is
    set for the template: what a poll sends back as `since`. `live_for`: `facts` hold a
    read from outside the database (libvirt) that is shared this many seconds, so a poll
    is confirmed unchanged for no longer than that without looking again."""
    request_facts = _request_facts(request, partial)
    # Neither kept nor taken from what is kept, but with a version (so that it updates
    # itself too): a page with a one-time message, one rendered before the session had a
    # CSRF secret (it makes one), and a whole page while the inventory banner is up (it
    # shows the time since; the banner comes and goes with the navigation's counts).
    path, _partial, *who, secret = request_facts
    keep = bool(secret) and not len(get_messages(request))
    if keep and not partial and liveness.watcher_stale():
        keep = False
    key = (*request_facts, *facts)
    hit = _pages.get(key) if keep else None
    # The same for the whole page and its fragment (what a poll asks for), and without
    # the session's secret: only what the page shows.
    version = hit[2] if hit is not None else _version((path, *who, facts))
    _confirm(request, version, live_for)
    if request.GET.get(SINCE) == version:
        return HttpResponse(status=204)  # unchanged: the page keeps what it shows
    if hit is not None:
        # The kept page's CSRF token is valid: it was made from this session's secret. (Not
        # renewing the cookie here is harmless: it lives a year, and a render renews it.)
        response = HttpResponse(hit[0], content_type=hit[1])
        patch_vary_headers(response, ["HX-Request"])
        return response
    request.page_version = version
    response = render()
    if keep and response.status_code == 200 and not response.streaming:
        _pages.put(key, (response.content, response["Content-Type"], version))
    return response


def section(template_name: str, facts: tuple, context: Callable[[], dict]) -> SafeString:
    """`template_name` rendered with `context()`, or as kept for the same `facts` (all the
    section shows; hashable), language and time zone. The section must not depend on the
    request (no CSRF token, no user): it is rendered without one."""
    key = (template_name, get_language(), timezone.get_current_timezone_name(), *facts)
    html = _sections.get(key)
    if html is None:
        html = mark_safe(render_to_string(template_name, context()))  # noqa: S308 (rendered)
        _sections.put(key, html)
    return html


# --- the change count: a poll answered before the session, the user and the view ---------

# What pages read: every table of these apps (and their many-to-many tables), and of these
# models. A write to any of them bumps the count (`track_changes` puts the triggers on).
TRACKED_APPS = ("domains", "provisioning")
TRACKED_MODELS = ("auth.User", "sessions.Session")  # who is signed in, and as whom

COUNT = "vmpanel_change_count"  # SQLite: a table of one row; PostgreSQL: a sequence
# PostgreSQL: a writer holds this advisory lock (shared: writers never wait for each
# other) from its bump to its commit, so a reader that can take it alone knows no bump it
# has seen belongs to a transaction it cannot see yet.
_LOCK = 0x766D7061_6E656C  # "vmpanel"

# Columns the inventory rewrites on every pass although nothing else changed ("seen at"
# times): an UPDATE of these alone does not bump the count, or every open page would go
# the whole way after each pass. The pages that show them are bounded otherwise (a VM
# page's live read: `live_for`). Their tables' UPDATE triggers name every other column,
# so they are made again after every migrate (a new column must be among them).
QUIET_COLUMNS = {"domains_domain": {"last_seen_at"}, "domains_host": {"last_seen_at"}}

_SQLITE_TRACK = """CREATE TRIGGER IF NOT EXISTS "{name}" AFTER {event} ON "{table}"
BEGIN UPDATE vmpanel_change_count SET value = value + 1 WHERE id = 1; END"""
_POSTGRES_BUMP = f"""CREATE OR REPLACE FUNCTION vmpanel_change_count_bump() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN
  PERFORM pg_advisory_xact_lock_shared({_LOCK});
  PERFORM nextval('vmpanel_change_count');
  RETURN NULL;
END $$"""
_POSTGRES_READ = f"""CREATE OR REPLACE FUNCTION vmpanel_change_count_read(
  OUT count bigint, OUT settled boolean) LANGUAGE plpgsql AS $$ BEGIN
  -- The count first, then whether any writer is still in flight: in this order.
  SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO count FROM vmpanel_change_count;
  settled := pg_try_advisory_lock({_LOCK});
  IF settled THEN PERFORM pg_advisory_unlock({_LOCK}); END IF;
END $$"""
_POSTGRES_TRACK = """CREATE TRIGGER vmpanel_change_count
AFTER INSERT OR UPDATE{columns} OR DELETE OR TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION vmpanel_change_count_bump()"""


def _update_columns(conn, cursor, table: str) -> str:
    """ " OF <every column but the quiet ones>" for a table with quiet columns, else ""."""
    quiet = QUIET_COLUMNS.get(table)
    if not quiet:
        return ""
    columns = [c.name for c in conn.introspection.get_table_description(cursor, table)]
    return " OF " + ", ".join(conn.ops.quote_name(c) for c in columns if c not in quiet)


def tracked_tables(apps=django_apps) -> list[str]:
    """The tables whose writes bump the change count (`apps`: a migration's, or the
    project's)."""
    models = [
        model
        for label in TRACKED_APPS
        if label in apps.app_configs
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    ]
    models += [apps.get_model(label) for label in TRACKED_MODELS]
    return sorted({m._meta.db_table for m in models if m._meta.managed and not m._meta.proxy})


def untracked_tables(using=None) -> list[str]:
    """Tracked tables that exist and have no trigger: empty, or a poll may be told
    "unchanged" after a write to one of them."""
    conn = connection if using is None else using
    return sorted(set(_existing(conn, tracked_tables())) - _with_triggers(conn))


def track_changes(conn, apps=django_apps) -> None:
    """Make the change count and put its triggers on every tracked table that exists and
    lacks them. Idempotent: migration 0013 runs it, and so does every `migrate` after it
    (`post_migrate`), which tracks new tables and, on SQLite, tables a migration rebuilt
    (rebuilding drops a table's triggers)."""
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {COUNT} "
                "(id integer PRIMARY KEY CHECK (id = 1), value integer NOT NULL)"
            )
            cursor.execute(f"INSERT OR IGNORE INTO {COUNT} (id, value) VALUES (1, 0)")
        elif conn.vendor == "postgresql":
            cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {COUNT}")
            cursor.execute(_POSTGRES_BUMP)
            cursor.execute(_POSTGRES_READ)
        else:
            return  # no count: every poll goes the whole way
        done = _with_triggers(conn)
        for table in _existing(conn, tracked_tables(apps)):
            columns = _update_columns(conn, cursor, table)
            if table in done and not columns:
                continue
            if conn.vendor == "sqlite":
                for event in ("INSERT", "UPDATE", "DELETE"):
                    name = f"{COUNT}_{event.lower()}_{table}"
                    if columns:
                        cursor.execute(f'DROP TRIGGER IF EXISTS "{name}"')
                    on = f"UPDATE{columns}" if event == "UPDATE" else event
                    cursor.execute(_SQLITE_TRACK.format(name=name, event=on, table=table))
            else:
                quoted = conn.ops.quote_name(table)
                if columns:
                    cursor.execute(f"DROP TRIGGER IF EXISTS {COUNT} ON {quoted}")
                cursor.execute(_POSTGRES_TRACK.format(table=quoted, columns=columns))


def untrack_changes(conn) -> None:
    """Migration 0013 backwards: no triggers, no count."""
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE %s",
                [f"{COUNT}%"],
            )
            for (name,) in cursor.fetchall():
                cursor.execute(f'DROP TRIGGER IF EXISTS "{name}"')
            cursor.execute(f"DROP TABLE IF EXISTS {COUNT}")
        elif conn.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS vmpanel_change_count_bump() CASCADE")
            cursor.execute("DROP FUNCTION IF EXISTS vmpanel_change_count_read()")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {COUNT}")


def _existing(conn, tables: list[str]) -> list[str]:
    present = set(conn.introspection.table_names())
    return [t for t in tables if t in present]


def _with_triggers(conn) -> set[str]:
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            cursor.execute(
                "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE %s "
                "GROUP BY tbl_name HAVING count(*) = 3",
                [f"{COUNT}%"],
            )
        elif conn.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgname = %s",
                [COUNT],
            )
        else:
            return set()
        return {row[0] for row in cursor.fetchall()}


def on_migrate(using, **kwargs) -> None:
    """After every `migrate` (and a test's flush): the count and its triggers where they
    lack, once migration 0013 is applied (domains/apps.py connects it). Also where 0013
    was applied while it was an empty placeholder."""
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    conn = connections[using]
    if ("domains", "0013_change_counter") in MigrationRecorder(conn).applied_migrations():
        track_changes(conn)


def change_count() -> tuple[int, bool] | None:
    """(the change count now, whether a page read from now on sees every write it counts),
    or None when this database keeps none."""
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(f"SELECT value FROM {COUNT} WHERE id = 1")
                row = cursor.fetchone()
                # One transaction bumps and writes: what counts is seen.
                return None if row is None else (row[0], True)
            if connection.vendor == "postgresql":
                cursor.execute("SELECT count, settled FROM vmpanel_change_count_read()")
                return cursor.fetchone()
    except DatabaseError:
        return None  # not migrated yet
    return None


# Polls confirmed unchanged: (the request as sent: host, path, cookies, languages, since)
# -> (the change count then, until when). A few entries an open page.
_confirmed = _Kept(4096)


def _poll_key(request: HttpRequest, since: str) -> tuple:
    """What the answer to a poll depends on in the request itself. The cookies hold the
    session (who, and whether signed in), the CSRF secret (the page's token) and the
    language; a one-time message arrives as a cookie too, and makes another key."""
    meta = request.META
    return (
        meta.get("HTTP_HOST", ""), page_path(request), meta.get("HTTP_COOKIE", ""),
        meta.get("HTTP_ACCEPT_LANGUAGE", ""), since,
    )  # fmt: skip


def _session_expiry(request: HttpRequest) -> float:
    """When the session ends (epoch seconds): database sessions only, else now (a poll
    then always goes the whole way, which checks the session)."""
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        return 0.0
    from django.contrib.sessions.models import Session

    expiry = (
        Session.objects.filter(session_key=request.session.session_key)
        .values_list("expire_date", flat=True)
        .first()
    )
    return expiry.timestamp() if expiry else 0.0


def _confirm(request: HttpRequest, version: str, live_for: float | None) -> None:
    """Remember that `version` is what this request's page shows at the count read before
    its view ran (`PollMiddleware`), for polls to come."""
    count = getattr(request, "change_count", None)
    if count is None:
        return
    until = _session_expiry(request)
    if live_for is not None:
        until = min(until, time.time() + live_for)
    _confirmed.put(_poll_key(request, version), (count, until))


class PollMiddleware:
    """A poll (`?since=<version>`) of a page confirmed unchanged at the change count the
    database has now gets its 204 here, before the session, the user and the view are
    loaded: that confirmation was made for the same cookies (so the same session, signed
    in), and any write since (a role taken away, a session ended, a state changed) has
    bumped the count. Other polls read the count for the view's `render_kept` to confirm
    at; everything else passes untouched. Goes before SessionMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "GET" and SINCE in request.GET:
            counted = change_count()
            if counted is not None:
                count, settled = counted
                hit = _confirmed.get(_poll_key(request, request.GET[SINCE]))
                # (The inventory banner is not in what a poll swaps: it comes and goes
                # with the navigation's counts.)
                if hit is not None and hit[0] == count and time.time() < hit[1]:
                    response = HttpResponse(status=204)
                    patch_vary_headers(response, ["Cookie", "Accept-Language", "HX-Request"])
                    return response
                if settled:
                    request.change_count = count
        return self.get_response(request)
